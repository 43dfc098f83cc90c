//! `oauth_provider`: the Rust core behind the `oauth` SQL façade.
//!
//! Protocol state and decisions live in SQL (`sql/*.sql`), where application transactions can see
//! them. Rust supplies what SQL does badly: token material from the OS RNG, constant-time
//! comparison, and URI parsing that must follow RFC 3986 / RFC 8252 exactly.

mod client_assertions;
mod pkce;
mod randomness;
mod refresh_chain;
mod scopes;
mod uris;

::pgrx::pg_module_magic!(name, version);

pgrx::extension_sql_file!("../sql/schema.sql", name = "schema", bootstrap);
pgrx::extension_sql_file!(
    "../sql/internal.sql",
    name = "internal",
    requires = [
        "schema",
        randomness::random_token,
        randomness::secure_equal,
        randomness::token_hash,
        randomness::random_user_code,
        scopes::parse_scope,
        uris::redirect_uri_allowed,
        uris::redirect_uri_problem,
        uris::resource_problem,
        uris::append_query,
        uris::uri_host,
        uris::document_client_id_problem,
        uris::is_loopback_redirect,
        pkce::pkce_s256_matches,
        pkce::pkce_challenge_valid,
        client_assertions::verify_client_assertion,
        client_assertions::jwks_problem,
        client_assertions::jwks_uri_problem,
        client_assertions::client_assertion_signing_algs,
        client_assertions::dpop_signing_algs
    ]
);
pgrx::extension_sql_file!(
    "../sql/trusted_issuers.sql",
    name = "trusted_issuers",
    requires = ["internal"]
);
pgrx::extension_sql_file!(
    "../sql/clients.sql",
    name = "clients",
    requires = ["internal", "trusted_issuers"]
);
pgrx::extension_sql_file!(
    "../sql/authorize.sql",
    name = "authorize",
    requires = ["clients"]
);
pgrx::extension_sql_file!(
    "../sql/tokens.sql",
    name = "tokens",
    requires = [
        "authorize",
        refresh_chain::refresh_token_first,
        refresh_chain::refresh_chain_key,
        refresh_chain::refresh_token_successor,
        refresh_chain::refresh_token_family,
        refresh_chain::refresh_token_generation,
        refresh_chain::refresh_chain_reaches
    ]
);
pgrx::extension_sql_file!(
    "../sql/revocation.sql",
    name = "revocation",
    requires = ["tokens"]
);
pgrx::extension_sql_file!(
    "../sql/client_credentials.sql",
    name = "client_credentials",
    requires = ["revocation"]
);
pgrx::extension_sql_file!(
    "../sql/device.sql",
    name = "device",
    requires = ["client_credentials"]
);
pgrx::extension_sql_file!(
    "../sql/token_exchange.sql",
    name = "token_exchange",
    requires = ["device"]
);
pgrx::extension_sql_file!(
    "../sql/client_documents.sql",
    name = "client_documents",
    requires = ["token_exchange"]
);
pgrx::extension_sql_file!(
    "../sql/client_authentication.sql",
    name = "client_authentication",
    requires = ["client_documents"]
);
pgrx::extension_sql_file!(
    "../sql/resources.sql",
    name = "resources",
    requires = ["client_authentication", uris::resource_key]
);
pgrx::extension_sql_file!(
    "../sql/connected_apps.sql",
    name = "connected_apps",
    requires = ["resources"]
);
pgrx::extension_sql_file!(
    "../sql/sessions.sql",
    name = "sessions",
    requires = ["resources"]
);
pgrx::extension_sql_file!(
    "../sql/events.sql",
    name = "events",
    requires = ["resources"]
);
pgrx::extension_sql_file!(
    "../sql/signing_keys.sql",
    name = "signing_keys",
    requires = ["events"]
);
pgrx::extension_sql_file!(
    "../sql/pushed_requests.sql",
    name = "pushed_requests",
    requires = ["signing_keys"]
);
pgrx::extension_sql_file!(
    "../sql/assertion_grants.sql",
    name = "assertion_grants",
    requires = [
        "pushed_requests",
        client_assertions::assertion_issuer,
        client_assertions::verify_authorization_grant
    ]
);
pgrx::extension_sql_file!(
    "../sql/upstream_tokens.sql",
    name = "upstream_tokens",
    requires = ["sessions"]
);
pgrx::extension_sql_file!("../sql/privileges.sql", name = "privileges", finalize);
