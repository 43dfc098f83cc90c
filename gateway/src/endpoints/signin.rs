//! Sign-in through the upstream identity provider, browser sessions, and RP-Initiated Logout.
//!
//! - `/authorize` (with `[upstream]`) binds the pending request to the browser that sent it: a
//!   browser cookie, and a tag over (request, browser) in the consent URL. The consent page opens
//!   only in that browser, so a leaked consent URL cannot be completed by another signed-in user.
//! - `/consent` asks the extension for the next step (`oauth.continue_authorization`): sign in
//!   (first, or again for prompt=login/max_age), the consent page, or straight back to the client
//!   (remembered consent, prompt=none).
//! - Sign-in: PKCE S256, `state` and `nonce` kept in a signed, HttpOnly cookie of this browser;
//!   `/login/callback` checks `state`, RFC 9207 `iss`, then the provider's answer
//!   (`upstream::Provider::complete`) and starts a session (`oauth.start_session`), whose secret
//!   is the session cookie.
//! - `/logout`: OpenID Connect RP-Initiated Logout 1.0: ends the browser's session (not the grants).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};
use rand::RngCore;
use ring::hmac;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::pages;
use crate::app::App;
use crate::db::{NewSession, NextStep, Session};
use crate::error::OAuthError;
use crate::http::{self, Req, Resp};
use crate::upstream::{Failure, NotAllowed, Provider};
use crate::views::{Key, Text};

const BROWSER: &str = "oauth_browser";
const SESSION: &str = "oauth_session";
const LOGIN: &str = "oauth_login";
/// How long a sign-in at the provider may take.
const LOGIN_TTL: u64 = 600;
/// The browser cookie outlives any pending request (an hour at most).
const BROWSER_TTL: u64 = 7 * 86400;

fn secure(app: &App) -> bool {
    app.config.issuer.starts_with("https://")
}

/// `__Host-` on https: the cookie is then the host's own, set with Secure and Path=/, which no
/// sibling domain and no plain-http page can plant or overwrite.
fn cookie_name(app: &App, base: &str) -> String {
    if secure(app) {
        format!("__Host-{base}")
    } else {
        base.to_owned()
    }
}

fn set_cookie(app: &App, base: &str, value: &str, max_age: u64) -> HeaderValue {
    let secure = if secure(app) { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}",
        cookie_name(app, base)
    ))
    .expect("cookie values are base64url")
}

fn clear_cookie(app: &App, base: &str) -> HeaderValue {
    set_cookie(app, base, "", 0)
}

/// The value of cookie `base` (under its prefixed name on https).
pub fn read_cookie(app: &App, headers: &HeaderMap, base: &str) -> Option<String> {
    let name = cookie_name(app, base);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|line| line.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .filter(|v| !v.is_empty() && v.len() <= 4096)
}

fn random() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn tag(app: &App, purpose: &str, message: &str) -> String {
    let tag = hmac::sign(&app.csrf_key, format!("{purpose}\0{message}").as_bytes());
    URL_SAFE_NO_PAD.encode(tag.as_ref())
}

fn tag_valid(app: &App, purpose: &str, message: &str, presented: &str) -> bool {
    let Ok(tag) = URL_SAFE_NO_PAD.decode(presented) else {
        return false;
    };
    hmac::verify(
        &app.csrf_key,
        format!("{purpose}\0{message}").as_bytes(),
        &tag,
    )
    .is_ok()
}

/// The tag binding a pending request to one browser.
fn binding(app: &App, request_id: &str, browser: &str) -> String {
    tag(app, "pending", &format!("{request_id}\0{browser}"))
}

fn with_cookies(mut resp: Resp, cookies: Vec<HeaderValue>) -> Resp {
    for cookie in cookies {
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp
}

fn consent_url(app: &App, request_id: &str, binding: &str) -> String {
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("request_id", request_id)
        .append_pair("binding", binding)
        .finish();
    format!("{}?{query}", app.config.endpoint("/consent"))
}

fn refused_page(title: Key, detail: impl Into<Text>) -> Resp {
    http::page_error(StatusCode::BAD_REQUEST, title.into(), detail.into())
}

fn failure_page(app: &App, failure: Failure) -> Resp {
    match failure {
        Failure::Unavailable(why) => {
            tracing::warn!(%why, "upstream provider unreachable");
            http::page_error(
                StatusCode::SERVICE_UNAVAILABLE,
                Key::sign_in_unavailable_title.into(),
                Key::sign_in_unavailable_detail.into(),
            )
        }
        // The provider's or its answer's fault, as the relying party found it: shown as it is,
        // like the protocol's error descriptions.
        Failure::Refused(why) => {
            tracing::info!(%why, "upstream sign-in refused");
            refused_page(Key::sign_in_failed_title, why)
        }
        Failure::NotAllowed(why) => {
            let reason = match &why {
                NotAllowed::EmailUnverified => {
                    app.views.fill_text(Key::not_allowed_email_unverified, &[])
                }
                NotAllowed::EmailDomain => app.views.fill_text(Key::not_allowed_email_domain, &[]),
                NotAllowed::Claim(claim) => app
                    .views
                    .fill_text(Key::not_allowed_claim, &[("claim", claim)]),
            };
            http::page_error(
                StatusCode::FORBIDDEN,
                Key::sign_in_not_allowed_title.into(),
                app.views
                    .fill_text(Key::sign_in_not_allowed_detail, &[("reason", &reason)])
                    .into(),
            )
        }
    }
}

/// `/authorize`'s last step with an upstream provider: the request is valid and pending; bind it
/// to this browser and go to the consent step, which decides the rest.
pub fn after_authorize(app: &App, headers: &HeaderMap, request_id: &str) -> Resp {
    let (browser, cookies) = match read_cookie(app, headers, BROWSER) {
        Some(browser) => (browser, Vec::new()),
        None => {
            let browser = random();
            let cookie = set_cookie(app, BROWSER, &browser, BROWSER_TTL);
            (browser, vec![cookie])
        }
    };
    let location = consent_url(app, request_id, &binding(app, request_id, &browser));
    with_cookies(http::redirect(&location, StatusCode::FOUND), cookies)
}

/// This browser's session, if its cookie names a live one.
pub async fn current_session(app: &App, headers: &HeaderMap) -> Option<Session> {
    let secret = read_cookie(app, headers, SESSION)?;
    match app.db.get_session(&secret).await {
        Ok(session) => session,
        Err(e) => {
            tracing::warn!(error = %e.description, "session lookup failed");
            None
        }
    }
}

/// The signed-in user of this browser's session cookie, if the session is live.
pub async fn session_user(app: &App, headers: &HeaderMap) -> Option<String> {
    current_session(app, headers).await.map(|s| s.user_id)
}

/// `resp`, telling the browser to drop its session cookie: the session behind it has ended.
pub fn forget_session(app: &App, resp: Resp) -> Resp {
    with_cookies(resp, vec![clear_cookie(app, SESSION)])
}

/// `/consent` with an upstream provider.
pub async fn consent(app: &App, req: Req) -> Resp {
    let session = read_cookie(app, req.headers(), SESSION);
    match *req.method() {
        Method::GET => {}
        Method::POST => {
            // The form's CSRF token names the user and was only issued by a GET that passed the
            // browser check below; the session says who the user is now.
            let user = match &session {
                Some(secret) => app.db.get_session(secret).await,
                None => Ok(None),
            };
            return match user {
                Ok(Some(s)) => {
                    super::consent::decide(app, req, &s.user_id, session.as_deref()).await
                }
                Ok(None) => pages::sign_in_required(),
                Err(e) => pages::failure(&e),
            };
        }
        _ => return pages::method_not_allowed(),
    }
    let params = match pages::query(&req) {
        Ok(p) => p,
        Err(e) => return pages::failure(&e),
    };
    let (Ok(request_id), Ok(presented)) =
        (params.required("request_id"), params.required("binding"))
    else {
        return pages::failure(&OAuthError::invalid_request(
            "request_id and binding are required",
        ));
    };
    let (request_id, presented) = (request_id.to_owned(), presented.to_owned());
    let bound = read_cookie(app, req.headers(), BROWSER).is_some_and(|browser| {
        tag_valid(
            app,
            "pending",
            &format!("{request_id}\0{browser}"),
            &presented,
        )
    });
    if !bound {
        return refused_page(Key::other_browser_title, Key::other_browser_detail);
    }
    let step = app
        .db
        .continue_authorization(
            &request_id,
            session.as_deref(),
            None,
            false,
            app.config.remember_consent,
        )
        .await;
    match step {
        Ok(NextStep::Consent { user_id }) => super::consent::show(app, req, &user_id).await,
        Ok(NextStep::Redirect { location }) => http::redirect(&location, StatusCode::FOUND),
        Ok(NextStep::Refused(e)) => pages::failure(&e),
        Ok(NextStep::Login {
            login_hint,
            max_age,
            force,
        }) => {
            sign_in(
                app,
                Choice {
                    to: Return::Request {
                        request_id,
                        binding: presented,
                    },
                    login_hint,
                    force,
                    max_age,
                    exp: jsonwebtoken::get_current_timestamp() + LOGIN_TTL,
                },
            )
            .await
        }
        Err(e) => pages::failure(&e),
    }
}

/// Where the browser goes once signed in.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Return {
    Request { request_id: String, binding: String },
    Path { path: String },
}

/// A sign-in to begin once the user has chosen a provider: carried, signed, in the choice page's
/// links, so that choosing changes nothing but the provider.
#[derive(Serialize, Deserialize)]
struct Choice {
    #[serde(rename = "return")]
    to: Return,
    login_hint: Option<String>,
    force: bool,
    max_age: Option<i64>,
    exp: u64,
}

/// What the login cookie holds: this browser's sign-in in progress.
#[derive(Serialize, Deserialize)]
struct Pending {
    /// The provider's configured name.
    upstream: String,
    state: String,
    nonce: String,
    verifier: String,
    exp: u64,
    #[serde(rename = "return")]
    to: Return,
}

fn callback_url(app: &App) -> String {
    app.config.endpoint("/login/callback")
}

fn signed(app: &App, purpose: &str, value: &impl Serialize) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).expect("serializable"));
    let tag = tag(app, purpose, &payload);
    format!("{payload}.{tag}")
}

fn verified<T: serde::de::DeserializeOwned>(app: &App, purpose: &str, value: &str) -> Option<T> {
    let (payload, presented) = value.split_once('.')?;
    if !tag_valid(app, purpose, payload, presented) {
        return None;
    }
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// To the provider, when there is one; else the choice page, whose links come back to `/login`
/// with the provider chosen.
async fn sign_in(app: &App, choice: Choice) -> Resp {
    match app.upstreams.as_slice() {
        [] => pages::sign_in_required(),
        [only] => begin_login(app, only, choice).await,
        several => {
            let carried = signed(app, "choice", &choice);
            let links: Vec<(String, String)> = several
                .iter()
                .map(|p| {
                    let query = form_urlencoded::Serializer::new(String::new())
                        .append_pair("upstream", &p.name)
                        .append_pair("continue", &carried)
                        .finish();
                    (
                        p.display_name(),
                        format!("{}?{query}", app.config.endpoint("/login")),
                    )
                })
                .collect();
            http::page(StatusCode::OK, app.views.choose_provider(&links))
        }
    }
}

async fn begin_login(app: &App, upstream: &Provider, choice: Choice) -> Resp {
    let Choice {
        to,
        login_hint,
        force,
        max_age,
        ..
    } = choice;
    let login_hint = login_hint.as_deref();
    let md = match upstream.metadata().await {
        Ok(md) => md,
        Err(f) => return failure_page(app, f),
    };
    let pending = Pending {
        upstream: upstream.name.clone(),
        state: random(),
        nonce: random(),
        verifier: random(),
        exp: jsonwebtoken::get_current_timestamp() + LOGIN_TTL,
        to,
    };
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(pending.verifier.as_bytes()));
    let location = upstream.authorization_url(
        &md,
        &callback_url(app),
        &pending.state,
        &pending.nonce,
        &challenge,
        login_hint,
        force,
        max_age,
    );
    let value = signed(app, "login", &pending);
    with_cookies(
        http::redirect(&location, StatusCode::FOUND),
        vec![set_cookie(app, LOGIN, &value, LOGIN_TTL)],
    )
}

fn pending_login(app: &App, headers: &HeaderMap) -> Option<Pending> {
    let value = read_cookie(app, headers, LOGIN)?;
    let pending: Pending = verified(app, "login", &value)?;
    (pending.exp > jsonwebtoken::get_current_timestamp()).then_some(pending)
}

/// A path of this server to return to after signing in (never another origin).
fn local_path(app: &App, path: &str) -> Option<String> {
    let base = app.config.base_path();
    (path.starts_with(&format!("{base}/"))
        && !path.starts_with("//")
        && !path.contains(['\\', '\r', '\n'])
        && path.len() <= 512)
        .then(|| path.to_owned())
}

/// `/login?return_to=/path`: sign in without an authorization request (the account pages);
/// `/login?upstream=<name>&continue=…`: the choice page's links, the sign-in it carries begun at
/// the chosen provider.
pub async fn login(app: &App, req: Req) -> Resp {
    if *req.method() != Method::GET {
        return pages::method_not_allowed();
    }
    let params = match pages::query(&req) {
        Ok(p) => p,
        Err(e) => return pages::failure(&e),
    };
    let now = jsonwebtoken::get_current_timestamp();
    let choice = match get(&params, "continue") {
        Some(carried) => match verified::<Choice>(app, "choice", carried) {
            Some(choice) if choice.exp > now => choice,
            _ => return refused_page(Key::sign_in_expired_title, Key::sign_in_expired_detail),
        },
        None => {
            let base = app.config.base_path();
            let default = format!("{base}/");
            let path = get(&params, "return_to")
                .and_then(|p| local_path(app, p))
                .unwrap_or(default);
            Choice {
                to: Return::Path { path },
                login_hint: None,
                force: false,
                max_age: None,
                exp: now + LOGIN_TTL,
            }
        }
    };
    match get(&params, "upstream").map(|name| app.upstream(name)) {
        Some(Some(provider)) => begin_login(app, provider, choice).await,
        // An unknown name (a link from an older configuration): choose again.
        Some(None) | None => sign_in(app, choice).await,
    }
}

/// `/login/callback`: the provider's answer (RFC 6749 §4.1.2).
pub async fn callback(app: &App, req: Req) -> Resp {
    if !app.has_upstream() {
        return pages::sign_in_required();
    }
    let clear = vec![clear_cookie(app, LOGIN)];
    let params = match pages::query(&req) {
        Ok(p) => p,
        Err(e) => return with_cookies(pages::failure(&e), clear),
    };
    let Some((pending, upstream)) = pending_login(app, req.headers())
        .and_then(|p| app.upstream(&p.upstream).cloned().map(|u| (p, u)))
    else {
        return refused_page(Key::sign_in_expired_title, Key::sign_in_expired_detail);
    };
    let state_matches = get(&params, "state").is_some_and(|s| {
        bool::from(subtle::ConstantTimeEq::ct_eq(
            s.as_bytes(),
            pending.state.as_bytes(),
        ))
    });
    if !state_matches {
        return with_cookies(
            refused_page(Key::sign_in_mismatch_title, Key::start_again_detail),
            clear,
        );
    }
    let md = match upstream.metadata().await {
        Ok(md) => md,
        Err(f) => return with_cookies(failure_page(app, f), clear),
    };
    // RFC 9207 §2.4: the response names the provider that sent it (mix-up attacks).
    match (get(&params, "iss"), &md.issuer) {
        (Some(iss), Some(issuer)) if iss != issuer => {
            return with_cookies(
                failure_page(
                    app,
                    Failure::Refused("the answer came from another provider (iss)".into()),
                ),
                clear,
            );
        }
        (None, Some(_)) if md.iss_parameter_supported => {
            return with_cookies(
                failure_page(
                    app,
                    Failure::Refused("the provider's answer does not name it (iss)".into()),
                ),
                clear,
            );
        }
        _ => {}
    }
    if let Some(error) = get(&params, "error") {
        let description = get(&params, "error_description").unwrap_or_default();
        return with_cookies(
            refused_page(
                Key::sign_in_refused_by_provider_title,
                format!("{error}: {description}"),
            ),
            clear,
        );
    }
    let Some(code) = get(&params, "code") else {
        return with_cookies(
            refused_page(Key::sign_in_failed_title, Key::sign_in_no_code_detail),
            clear,
        );
    };
    let identity = match upstream
        .complete(
            &md,
            code,
            &pending.verifier,
            &callback_url(app),
            &pending.nonce,
        )
        .await
    {
        Ok(identity) => identity,
        Err(f) => return with_cookies(failure_page(app, f), clear),
    };
    let claims = Value::Object(identity.props.clone());
    let started = app
        .db
        .start_session(&NewSession {
            user_id: &identity.user_id,
            upstream_issuer: &identity.issuer,
            upstream_subject: &identity.subject,
            auth_time: identity.auth_time,
            amr: &identity.amr,
            claims: &claims,
            lifetime_seconds: upstream.config.session_lifetime,
        })
        .await;
    let started = match started {
        Ok(started) => started,
        Err(e) => return with_cookies(pages::failure(&e), clear),
    };
    if let Some(tokens) = &identity.tokens
        && let Err(e) = crate::upstream::UpstreamTokens::store(
            &app.db,
            &upstream,
            started.session_id,
            &identity.user_id,
            tokens,
        )
        .await
    {
        // Signed in without them, the user's grants would reach their MCP server without the
        // provider's token: better to say so now than to fail every call later.
        let _ = app.db.end_session(started.session_id).await;
        return with_cookies(pages::failure(&e), clear);
    }
    tracing::info!(user = %identity.user_id, session = %started.session_id, upstream = %upstream.name, "signed in");
    let lifetime = (started.expires_at - jsonwebtoken::get_current_timestamp() as i64).max(0);
    let location = match pending.to {
        Return::Request {
            request_id,
            binding,
        } => consent_url(app, &request_id, &binding),
        Return::Path { path } => format!("{}{path}", app.config.origin()),
    };
    with_cookies(
        http::redirect(&location, StatusCode::SEE_OTHER),
        vec![
            clear_cookie(app, LOGIN),
            set_cookie(app, SESSION, &started.secret, lifetime as u64),
        ],
    )
}

/// `/logout`: OpenID Connect RP-Initiated Logout 1.0 §2-3. An `id_token_hint` this server
/// issued names the client (and must be for the signed-in user); `post_logout_redirect_uri` is
/// followed only when that client registered it. Without a hint the user confirms with a form
/// (a cross-site link alone cannot sign anyone out).
pub async fn logout(app: &App, req: Req) -> Resp {
    let headers = req.headers().clone();
    let (params, posted) = match *req.method() {
        Method::GET => (pages::query(&req), false),
        Method::POST => (
            http::read_form(req, app.config.body_limits())
                .await
                .map(|(_, p)| p),
            true,
        ),
        _ => return pages::method_not_allowed(),
    };
    let params = match params {
        Ok(p) => p,
        Err(e) => return pages::failure(&e),
    };
    let secret = read_cookie(app, &headers, SESSION);
    let session = match &secret {
        Some(secret) => match app.db.get_session(secret).await {
            Ok(session) => session,
            Err(e) => return pages::failure(&e),
        },
        None => None,
    };
    let hint = get(&params, "id_token_hint").map(|t| id_token_hint(app, t));
    let hint = match hint {
        Some(Some(claims)) => Some(claims),
        Some(None) => {
            return refused_page(
                Key::sign_out_refused_title,
                "The id_token_hint is not an ID token this server issued.",
            );
        }
        None => None,
    };
    let hint_client = hint.as_ref().and_then(|c| match &c["aud"] {
        Value::String(aud) => Some(aud.clone()),
        Value::Array(auds) => auds.first().and_then(Value::as_str).map(str::to_owned),
        _ => None,
    });
    let client_id = match (get(&params, "client_id"), hint_client) {
        (Some(sent), Some(hinted)) if sent != hinted => {
            return refused_page(
                Key::sign_out_refused_title,
                "client_id is not the client the id_token_hint was issued to.",
            );
        }
        (_, Some(hinted)) => Some(hinted),
        (sent, None) => sent.map(str::to_owned),
    };
    let destination = match (get(&params, "post_logout_redirect_uri"), &client_id) {
        (Some(uri), Some(client_id)) => {
            match app
                .db
                .post_logout_redirect(client_id, uri, get(&params, "state"))
                .await
            {
                Ok(Some(location)) => Some(location),
                Ok(None) => {
                    return refused_page(
                        Key::sign_out_refused_title,
                        "post_logout_redirect_uri is not registered for this client.",
                    );
                }
                Err(e) => return pages::failure(&e),
            }
        }
        (Some(_), None) => {
            return refused_page(
                Key::sign_out_refused_title,
                "post_logout_redirect_uri needs client_id or id_token_hint.",
            );
        }
        _ => None,
    };
    let hinted_user = hint
        .as_ref()
        .and_then(|c| c["sub"].as_str())
        .zip(session.as_ref())
        .is_some_and(|(sub, s)| sub == s.user_id);
    let confirmed = posted
        && session.as_ref().is_some_and(|s| {
            get(&params, "csrf_token")
                .is_some_and(|t| tag_valid(app, "logout", &s.session_id.to_string(), t))
        });
    if let Some(s) = &session {
        if !(hinted_user || confirmed) {
            return confirm_logout(
                app,
                &params,
                &s.session_id.to_string(),
                &s.user_id,
                destination.as_deref(),
            );
        }
        if let Err(e) = app.db.end_session(s.session_id).await {
            return pages::failure(&e);
        }
        tracing::info!(session = %s.session_id, "signed out");
    }
    let resp = match destination {
        Some(location) => http::redirect(&location, StatusCode::SEE_OTHER),
        None => pages::message(Key::signed_out_title, Key::signed_out_detail),
    };
    with_cookies(resp, vec![clear_cookie(app, SESSION)])
}

/// One parameter's value; a repeated or empty one counts as absent.
fn get<'a>(params: &'a http::Params, name: &str) -> Option<&'a str> {
    params.single(name).ok().flatten()
}

fn confirm_logout(
    app: &App,
    params: &http::Params,
    session_id: &str,
    user: &str,
    destination: Option<&str>,
) -> Resp {
    let hidden: Vec<(&str, &str)> = [
        "post_logout_redirect_uri",
        "state",
        "client_id",
        "id_token_hint",
    ]
    .into_iter()
    .filter_map(|name| Some((name, get(params, name)?)))
    .collect();
    http::page(
        StatusCode::OK,
        app.views.confirm_sign_out(
            user,
            &app.config.endpoint("/logout"),
            &hidden,
            &tag(app, "logout", session_id),
            destination,
        ),
    )
}

/// The claims of an ID token this server signed (expired ones too: RP-Initiated Logout §2
/// expects hints past their `exp`), or None.
fn id_token_hint(app: &App, token: &str) -> Option<Value> {
    crate::jwt::install_provider();
    if token.len() > 8192 {
        return None;
    }
    let header = jsonwebtoken::decode_header(token).ok()?;
    // An access token of ours is signed by the same keys; only an ID token is a hint.
    if header
        .typ
        .as_deref()
        .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
    {
        return None;
    }
    let keys = app.keys.load();
    let key = keys.find(header.kid.as_deref()?)?;
    if key.alg.jsonwebtoken() != header.alg {
        return None;
    }
    let mut validation = jsonwebtoken::Validation::new(header.alg);
    validation.set_issuer(&[app.config.issuer.as_str()]);
    validation.validate_exp = false;
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["iss", "sub", "aud"]);
    jsonwebtoken::decode::<Value>(token, &key.decoding_key(), &validation)
        .ok()
        .map(|d| d.claims)
}
