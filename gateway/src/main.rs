//! `oauth-gateway`: serve, keys generate, client create|list|delete, migrate.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use oauth_gateway::Config;
use oauth_gateway::config::{KeyConfig, LogFormat, RateLimits, RouteConfig};
use oauth_gateway::db::admin;
use oauth_gateway::keyring::Kek;
use oauth_gateway::keys::{Alg, generate_pem};

#[derive(Parser)]
#[command(
    version,
    about = "OAuth 2.1 / OpenID Connect gateway for the oauth_provider PostgreSQL extension"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// TOML configuration file (keys as in `Config`); flags and environment override it.
    #[arg(long, env = "OAUTH_CONFIG")]
    config: Option<PathBuf>,
    #[arg(long, env = "OAUTH_ISSUER")]
    issuer: Option<String>,
    #[arg(long, env = "OAUTH_LISTEN")]
    listen: Option<std::net::SocketAddr>,
    /// Connection string of a role that is a member of `oauth_gateway`.
    #[arg(long, env = "OAUTH_DATABASE_URL")]
    database_url: Option<String>,
    /// A direct connection for the revocation feed (behind a pooler in transaction mode).
    #[arg(long, env = "OAUTH_FEED_DATABASE_URL")]
    feed_database_url: Option<String>,
    /// `false` behind a pooler in transaction mode: no named prepared statements.
    #[arg(long, env = "OAUTH_STATEMENT_CACHE")]
    statement_cache: Option<bool>,
    /// Signing key `ALG:PATH` (repeatable; the first signs).
    #[arg(long = "key", env = "OAUTH_KEYS", value_delimiter = ',')]
    keys: Vec<String>,
    #[arg(long, env = "OAUTH_LOGIN_URL")]
    login_url: Option<String>,
    #[arg(long, env = "OAUTH_DEV_MODE")]
    dev_mode: bool,
    #[arg(long, env = "OAUTH_DEV_USER")]
    dev_user: Option<String>,
    #[arg(long, env = "OAUTH_DEV_AUTO_APPROVE")]
    dev_auto_approve: bool,
    #[arg(long, env = "OAUTH_TRUSTED_USER_HEADER")]
    trusted_user_header: Option<String>,
    /// Sign users in through this OpenID provider (its issuer URL; `[upstream]` in the config
    /// file for a plain OAuth 2.0 provider and the other settings).
    #[arg(long, env = "OAUTH_UPSTREAM_ISSUER")]
    upstream_issuer: Option<String>,
    #[arg(long, env = "OAUTH_UPSTREAM_CLIENT_ID")]
    upstream_client_id: Option<String>,
    #[arg(long, env = "OAUTH_UPSTREAM_CLIENT_SECRET", hide_env_values = true)]
    upstream_client_secret: Option<String>,
    /// Skip the consent page when the user's live grant already covers the request.
    #[arg(long, env = "OAUTH_REMEMBER_CONSENT")]
    remember_consent: bool,
    /// DPoP proofs must carry a nonce this server handed out (RFC 9449 §8).
    #[arg(long, env = "OAUTH_DPOP_REQUIRE_NONCE")]
    dpop_require_nonce: bool,
    #[arg(long, env = "OAUTH_POOL_SIZE")]
    pool_size: Option<usize>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served, apart from the public listener.
    #[arg(long, env = "OAUTH_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// `text` or `json` (one JSON object per line).
    #[arg(long, env = "OAUTH_LOG_FORMAT")]
    log_format: Option<String>,
    /// Switch every rate limit off (benchmarks).
    #[arg(long, env = "OAUTH_NO_RATE_LIMITS")]
    no_rate_limits: bool,
    /// Protected route `PREFIX=UPSTREAM` (repeatable), requiring scope `mcp`; use the config file
    /// for other scopes or an explicit resource.
    #[arg(long = "route", env = "OAUTH_ROUTES", value_delimiter = ',')]
    routes: Vec<String>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, String> {
        let mut config = match &self.config {
            Some(path) => Config::from_toml(
                &std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
            )
            .map_err(|e| format!("{}: {e}", path.display()))?,
            None => Config::default(),
        };
        if let Some(v) = &self.issuer {
            config.issuer = v.clone();
        }
        if let Some(v) = self.listen {
            config.listen = v;
        }
        if let Some(v) = &self.database_url {
            config.database_url = v.clone();
        }
        if let Some(v) = &self.feed_database_url {
            config.feed_database_url = Some(v.clone());
        }
        if let Some(v) = self.statement_cache {
            config.statement_cache = v;
        }
        if !self.keys.is_empty() {
            config.keys = self
                .keys
                .iter()
                .map(|spec| {
                    let (alg, path) = spec
                        .split_once(':')
                        .ok_or(format!("--key {spec}: expected ALG:PATH"))?;
                    let alg = <Alg as clap::ValueEnum>::from_str(alg, true)
                        .map_err(|e| format!("--key {spec}: {e}"))?;
                    Ok(KeyConfig {
                        path: path.into(),
                        alg,
                        kid: None,
                    })
                })
                .collect::<Result<_, String>>()?;
        }
        // From the environment only: a flag would show in `ps`.
        if let Ok(kek) = std::env::var("OAUTH_KEY_ENCRYPTION_KEY") {
            config.key_encryption_key = Some(kek);
        }
        if let Some(v) = &self.login_url {
            config.login_url = Some(v.clone());
        }
        config.dev_mode |= self.dev_mode;
        config.dev_auto_approve |= self.dev_auto_approve;
        if let Some(v) = &self.dev_user {
            config.dev_user = Some(v.clone());
        }
        if let Some(v) = &self.trusted_user_header {
            config.trusted_user_header = Some(v.clone());
        }
        if self.upstream_issuer.is_some()
            || self.upstream_client_id.is_some()
            || self.upstream_client_secret.is_some()
        {
            let upstream = config.upstream.get_or_insert_with(Default::default);
            if let Some(v) = &self.upstream_issuer {
                upstream.issuer = Some(v.clone());
            }
            if let Some(v) = &self.upstream_client_id {
                upstream.client_id = v.clone();
            }
            if let Some(v) = &self.upstream_client_secret {
                upstream.client_secret = Some(v.clone());
            }
            // A provider on this machine over http, in development only.
            upstream.allow_http |= config.dev_mode;
        }
        // From the environment only, like the key-encryption key.
        if let Ok(key) = std::env::var("OAUTH_UPSTREAM_TOKEN_ENCRYPTION_KEY")
            && let Some(upstream) = config.upstream.as_mut()
        {
            upstream.token_encryption_key = Some(key);
        }
        config.remember_consent |= self.remember_consent;
        config.dpop_require_nonce |= self.dpop_require_nonce;
        if let Some(v) = self.pool_size {
            config.pool_size = v;
        }
        if let Some(v) = self.metrics_listen {
            config.metrics_listen = Some(v);
        }
        if let Some(v) = &self.log_format {
            config.log_format = match v.as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => return Err(format!("--log-format {other}: expected text or json")),
            };
        }
        if self.no_rate_limits {
            config.rate_limits = RateLimits::off();
        }
        for spec in &self.routes {
            let (prefix, upstream) = spec
                .split_once('=')
                .ok_or(format!("--route {spec}: expected PREFIX=UPSTREAM"))?;
            config.routes.push(RouteConfig {
                prefix: prefix.to_owned(),
                upstream: upstream.to_owned(),
                ..RouteConfig::default()
            });
        }
        Ok(config)
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve the OAuth/OIDC endpoints.
    Serve(ConfigArgs),
    /// Signing keys.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Clients, through the application/admin SQL functions.
    Client {
        /// An administrator's connection string (member of oauth_admin, or the extension owner).
        #[arg(long, env = "OAUTH_ADMIN_DATABASE_URL")]
        admin_database_url: String,
        #[command(subcommand)]
        command: ClientCommand,
    },
    /// Create or upgrade the extension and set the issuer (as an administrator).
    Migrate {
        #[arg(long, env = "OAUTH_ADMIN_DATABASE_URL")]
        admin_database_url: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a new private key (PKCS#8 PEM, mode 0600).
    Generate {
        #[arg(long, value_enum, ignore_case = true, default_value = "RS256")]
        alg: Alg,
        #[arg(long)]
        out: PathBuf,
    },
    /// Print a new key-encryption key, for `key_encryption_key` (keys kept in the database).
    Kek,
    /// Publish a new key in the database (sealed): in the JWKS now, signing once promoted and its
    /// lead has passed.
    Add {
        #[command(flatten)]
        shared: SharedKeysArgs,
        #[arg(long, value_enum, ignore_case = true, default_value = "ES256")]
        alg: Alg,
        /// Seconds between publishing and signing: longer than relying parties cache the JWKS
        /// plus the gateways' reload interval (0 only for a deployment's first key).
        #[arg(long, default_value_t = 3600)]
        lead: u64,
        /// An existing private key (PEM) instead of a new one: moving key files into the database.
        #[arg(long)]
        from_pem: Option<PathBuf>,
        /// Promote it at once (it signs when its lead has passed).
        #[arg(long)]
        promote: bool,
        /// The gateways' `jwks_max_age` and `keys_reload_interval`, which the lead must exceed.
        #[arg(long, env = "OAUTH_JWKS_MAX_AGE", default_value_t = 300)]
        jwks_max_age: u64,
        #[arg(long, env = "OAUTH_KEYS_RELOAD_INTERVAL", default_value_t = 10)]
        keys_reload_interval: u64,
    },
    /// Let a published key sign (from its earliest time); the key of its algorithm that signed
    /// until then retires, published until every token it signed has expired.
    Promote {
        #[command(flatten)]
        shared: SharedKeysArgs,
        /// A kid is base64url, so one in 64 begins with `-`: never an option here.
        #[arg(allow_hyphen_values = true)]
        kid: String,
    },
    /// Remove a key from the JWKS once no token it signed can be in use (`--force`: now, after a
    /// compromise; its tokens stop verifying).
    Drop {
        #[command(flatten)]
        shared: SharedKeysArgs,
        #[arg(allow_hyphen_values = true)]
        kid: String,
        #[arg(long)]
        force: bool,
    },
    /// Every key in the database and its state.
    List {
        #[command(flatten)]
        shared: SharedKeysArgs,
    },
}

#[derive(clap::Args)]
struct SharedKeysArgs {
    /// An administrator's connection string (member of oauth_admin, or the extension owner).
    #[arg(long, env = "OAUTH_ADMIN_DATABASE_URL")]
    admin_database_url: String,
}

#[derive(Subcommand)]
enum ClientCommand {
    Create {
        #[arg(long)]
        name: String,
        #[arg(long = "redirect-uri", required = true)]
        redirect_uris: Vec<String>,
        #[arg(long = "scope", default_values = ["mcp"])]
        scopes: Vec<String>,
        /// A public client (PKCE only, no secret).
        #[arg(long)]
        public: bool,
        #[arg(long, default_value = "web")]
        application_type: String,
    },
    List,
    Delete {
        client_id: String,
    },
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve(args) => {
            let config = args.load()?;
            init_logs(config.log_format);
            let app = oauth_gateway::build(config).await?;
            let handle = oauth_gateway::serve(app.clone()).await?;
            tracing::info!(addr = %handle.addr, issuer = %app.config.issuer, "oauth-gateway listening");
            println!(
                "oauth-gateway listening on http://{} (issuer {})",
                handle.addr, app.config.issuer
            );
            shutdown_signal().await;
            tracing::info!("shutting down: draining in-flight requests");
            handle.shutdown(std::time::Duration::from_secs(10)).await;
            Ok(())
        }
        Command::Keys { command } => manage_keys(command).await,
        Command::Migrate {
            admin_database_url,
            config,
        } => {
            let config = config.load()?;
            let db = admin::connect(&admin_database_url).await?;
            admin::install(&db, &config.issuer).await?;
            println!(
                "oauth_provider is installed and its issuer is {}",
                config.issuer
            );
            Ok(())
        }
        Command::Client {
            admin_database_url,
            command,
        } => {
            let db = admin::connect(&admin_database_url).await?;
            manage_clients(&db, command).await
        }
    }
}

async fn manage_keys(command: KeysCommand) -> Result<(), String> {
    match command {
        KeysCommand::Generate { alg, out } => {
            let pem = generate_pem(alg)?;
            write_private(&out, pem.as_bytes())?;
            println!("wrote {} key to {}", alg.name(), out.display());
        }
        KeysCommand::Kek => println!("{}", Kek::generate()),
        KeysCommand::Add {
            shared,
            alg,
            lead,
            from_pem,
            promote,
            jwks_max_age,
            keys_reload_interval,
        } => {
            // Read from the environment only, never a flag: a flag shows in `ps`.
            let kek = std::env::var("OAUTH_KEY_ENCRYPTION_KEY").map_err(|_| {
                "OAUTH_KEY_ENCRYPTION_KEY must hold the deployment's key-encryption key".to_owned()
            })?;
            let kek = Kek::parse(&kek)?;
            let pem = match from_pem {
                Some(path) => {
                    std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => generate_pem(alg)?.into_bytes(),
            };
            let sealed = oauth_gateway::keyring::seal_pem(&kek, &pem, alg)?;
            let db = admin::connect(&shared.admin_database_url).await?;
            let published = admin::list_signing_keys(&db).await?;
            let safe_lead = jwks_max_age + keys_reload_interval;
            if lead < safe_lead && published.iter().any(|k| k[2] != "expired") {
                return Err(format!(
                    "a lead of {lead} s is shorter than relying parties may cache the JWKS \
                     ({jwks_max_age} s) plus the gateways' reload interval ({keys_reload_interval} s): \
                     tokens signed by the new key would fail where the old JWKS is cached; \
                     use --lead {safe_lead} or more"
                ));
            }
            let signs_not_before =
                admin::add_signing_key(&db, &sealed, std::time::Duration::from_secs(lead)).await?;
            println!(
                "added {} key {} (published now, may sign from {signs_not_before})",
                alg.name(),
                sealed.kid
            );
            if promote {
                let from = admin::promote_signing_key(&db, &sealed.kid).await?;
                println!("promoted {}: signs from {from}", sealed.kid);
            }
        }
        KeysCommand::Promote { shared, kid } => {
            let db = admin::connect(&shared.admin_database_url).await?;
            let from = admin::promote_signing_key(&db, &kid).await?;
            println!("promoted {kid}: signs from {from}");
        }
        KeysCommand::Drop { shared, kid, force } => {
            let db = admin::connect(&shared.admin_database_url).await?;
            let dropped = admin::drop_signing_key(&db, &kid, force).await?;
            println!("{}", if dropped { "dropped" } else { "no such key" });
        }
        KeysCommand::List { shared } => {
            let db = admin::connect(&shared.admin_database_url).await?;
            println!(
                "kid\talg\tstate\tpublished_at\tsigns_not_before\tsigns_from\tretired_at\tpublished_until"
            );
            for key in admin::list_signing_keys(&db).await? {
                println!("{}", key.join("\t"));
            }
        }
    }
    Ok(())
}

async fn manage_clients(db: &tokio_postgres::Client, command: ClientCommand) -> Result<(), String> {
    match command {
        ClientCommand::Create {
            name,
            redirect_uris,
            scopes,
            public,
            application_type,
        } => {
            let new = admin::NewClient {
                name: &name,
                redirect_uris: &redirect_uris,
                scopes: &scopes,
                token_endpoint_auth_method: if public {
                    "none"
                } else {
                    "client_secret_basic"
                },
                application_type: &application_type,
            };
            let (id, secret) = admin::create_client(db, &new).await?;
            println!("client_id={id}");
            if let Some(secret) = secret {
                println!("client_secret={secret}");
            }
        }
        ClientCommand::List => {
            for client in admin::list_clients(db).await? {
                println!(
                    "{}\t{}\t{}",
                    client.client_id, client.client_name, client.token_endpoint_auth_method
                );
            }
        }
        ClientCommand::Delete { client_id } => {
            let deleted = admin::delete_client(db, &client_id).await?;
            println!("{}", if deleted { "deleted" } else { "no such client" });
        }
    }
    Ok(())
}

fn write_private(path: &std::path::Path, contents: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    file.write_all(contents)
        .map_err(|e| format!("{}: {e}", path.display()))
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Logs to stderr, as text or one JSON object per line (with the request's span fields: id,
/// method, path, peer). What is logged never holds a token, code, secret or verifier, in either
/// format (gateway/tests/operations.rs reads both).
fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "oauth_gateway=info,warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => logs.try_init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(_)) {
        init_logs(LogFormat::Text);
    }
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oauth-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kid_beginning_with_a_hyphen_is_a_kid() {
        for args in [
            ["keys", "promote", "--admin-database-url", "x", "-iXq2"].as_slice(),
            [
                "keys",
                "drop",
                "--admin-database-url",
                "x",
                "-iXq2",
                "--force",
            ]
            .as_slice(),
        ] {
            let cli =
                Cli::try_parse_from(std::iter::once("oauth-gateway").chain(args.iter().copied()));
            let Ok(Cli {
                command:
                    Command::Keys {
                        command: KeysCommand::Promote { kid, .. } | KeysCommand::Drop { kid, .. },
                    },
                ..
            }) = cli
            else {
                panic!("{args:?} did not parse as a key command");
            };
            assert_eq!(kid, "-iXq2");
        }
    }
}
