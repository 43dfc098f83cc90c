//! The pages a person sees (consent, device verification, connected apps, results and errors),
//! from maud templates: every value is escaped by the template, checked when the gateway compiles,
//! never by hand. Texts are the deployment's [`Strings`]; name, colour and logo its [`Branding`];
//! scopes are described by `[scope_descriptions]`.
//!
//! A page loads nothing from elsewhere except the configured logos (images, by origin): its one
//! stylesheet is inline and allowed by its hash, so the Content-Security-Policy can be
//! `default-src 'none'`. Forms post to this server only (`form-action`), and to where the consent
//! decision redirects: Chromium applies `form-action` to the redirect after a form's POST too.

mod strings;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub use strings::{Key, Strings, Text};

/// `[branding]`: the deployment's own name, colour and logo on every page.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Branding {
    /// Shown at the top of every page and in its title; unset, the issuer's host.
    pub name: Option<String>,
    /// `#rgb` or `#rrggbb`: the top bar, buttons and focus rings.
    pub primary_color: String,
    /// An https image (loaded by the browser from there, so allowed by origin in `img-src`).
    pub logo_url: Option<String>,
}

impl Default for Branding {
    fn default() -> Self {
        Self {
            name: None,
            primary_color: "#1f5fbf".into(),
            logo_url: None,
        }
    }
}

/// What the consent page and the device page ask the user to approve.
pub struct Approval {
    pub client_name: String,
    pub client_id: String,
    /// An https logo of a client an administrator registered (`oauth.client_logo_uri`).
    pub logo_uri: Option<String>,
    pub scopes: Vec<String>,
    pub resource: Option<String>,
    pub loopback_only: bool,
    /// Where the browser goes after the decision (none for a device).
    pub destination: Option<Destination>,
    pub action: String,
    /// The form field naming what is decided (request id or user code).
    pub hidden: (&'static str, String),
    pub csrf: String,
}

/// Where the code goes once the user decided.
pub enum Destination {
    /// An http(s) redirect URI: its host, and its origin (the form may lead there).
    Host { host: String, origin: String },
    /// A private-use URI scheme (RFC 8252 §7.1): whichever program on the device claimed it. What
    /// follows `scheme://` is the application's own choice and names no one (§8.6).
    Scheme(String),
}

impl Destination {
    /// From the redirect URI and the host the extension names for http(s) ones.
    pub fn of(redirect_uri: &str, host: Option<String>) -> Self {
        match host {
            Some(host) => Destination::Host {
                origin: url::Url::parse(redirect_uri)
                    .map(|u| u.origin().ascii_serialization())
                    .unwrap_or_default(),
                host,
            },
            None => Destination::Scheme(redirect_uri.split(':').next().unwrap_or_default().into()),
        }
    }

    /// Any validated redirect target: http(s) ones by their host, others by their scheme.
    pub fn of_uri(uri: &str) -> Self {
        let host = url::Url::parse(uri)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .and_then(|u| u.host_str().map(str::to_owned));
        Self::of(uri, host)
    }

    /// The CSP source the decision's redirect goes to.
    fn source(&self) -> Option<String> {
        let source = match self {
            Destination::Host { origin, .. } => origin.clone(),
            Destination::Scheme(scheme) => format!("{scheme}:"),
        };
        is_csp_source(&source).then_some(source)
    }
}

/// One live grant on the connected-apps page, with its revoke form's CSRF token.
pub struct ConnectedApp {
    pub grant: crate::db::ConnectedApp,
    pub csrf: String,
}

/// One live browser session on the sessions page.
pub struct SessionEntry {
    pub session: crate::db::UserSession,
    /// The session of the browser showing the page.
    pub current: bool,
}

/// Where the account pages are, for the navigation between them. Without sessions (no upstream
/// provider signs anyone in here) connected apps is the only page, and there is no navigation.
pub struct AccountNav {
    pub apps: String,
    pub sessions: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum AccountPage {
    Apps,
    Sessions,
}

/// A rendered page and the Content-Security-Policy that lets exactly it run.
pub struct Page {
    pub body: String,
    pub csp: String,
}

/// A failure page described before the deployment's texts are at hand (`http::error` has no
/// `App`): rendered with the defaults, carried in the response's extensions, and rendered again
/// with the deployment's strings and branding on its way out (`endpoints::dispatch`).
#[derive(Debug, Clone)]
pub struct Pending {
    pub title: Text,
    pub detail: Text,
}

pub struct Views {
    strings: Strings,
    brand_name: String,
    brand_logo: Option<String>,
    scope_descriptions: BTreeMap<String, String>,
    style: String,
    style_source: String,
}

/// What the built-in scopes let an application do; `[scope_descriptions]` adds and rewords.
fn default_scope_descriptions() -> BTreeMap<String, String> {
    [
        ("openid", "Confirm who you are"),
        ("profile", "See your name and profile"),
        ("email", "See your email address"),
        ("offline_access", "Stay connected while you are away"),
        ("mcp", "Use this server's tools on your behalf"),
    ]
    .into_iter()
    .map(|(s, d)| (s.to_owned(), d.to_owned()))
    .collect()
}

impl Views {
    /// Checks the pages' configuration (at start: a bad colour or logo stops the gateway).
    pub fn new(
        issuer: &str,
        branding: &Branding,
        strings: &Strings,
        scope_descriptions: &BTreeMap<String, String>,
    ) -> Result<Self, String> {
        strings.validate()?;
        let color = parse_color(&branding.primary_color).ok_or_else(|| {
            format!(
                "branding.primary_color {:?} must be #rgb or #rrggbb",
                branding.primary_color
            )
        })?;
        if let Some(logo) = &branding.logo_url
            && https_origin(logo).is_none()
        {
            return Err(format!("branding.logo_url {logo:?} must be an https URL"));
        }
        let brand_name = match &branding.name {
            Some(name) if name.trim().is_empty() || name.chars().count() > 100 => {
                return Err("branding.name must have 1 to 100 characters".into());
            }
            Some(name) => name.clone(),
            None => url::Url::parse(issuer)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
        };
        for (scope, description) in scope_descriptions {
            if scope.is_empty() || scope.contains(' ') || description.trim().is_empty() {
                return Err(format!(
                    "scope_descriptions: {scope:?} needs a scope name and a description"
                ));
            }
        }
        let mut descriptions = default_scope_descriptions();
        descriptions.extend(scope_descriptions.clone());
        let style = include_str!("style.css")
            .trim_end()
            .replace("ON_BRAND", color.on)
            .replace("BRAND", &color.hex);
        let style_source = format!(
            "'sha256-{}'",
            STANDARD.encode(Sha256::digest(style.as_bytes()))
        );
        Ok(Self {
            strings: strings.clone(),
            brand_name,
            brand_logo: branding.logo_url.clone(),
            scope_descriptions: descriptions,
            style,
            style_source,
        })
    }

    /// The defaults, for pages rendered where no configuration is at hand.
    pub fn fallback() -> Arc<Views> {
        static FALLBACK: LazyLock<Arc<Views>> = LazyLock::new(|| {
            Arc::new(
                Views::new(
                    "",
                    &Branding::default(),
                    &Strings::default(),
                    &BTreeMap::new(),
                )
                .expect("the default pages configuration is valid"),
            )
        });
        FALLBACK.clone()
    }

    pub fn strings(&self) -> &Strings {
        &self.strings
    }

    fn text(&self, key: Key) -> &str {
        self.strings.get(key)
    }

    /// `key`'s text with each `{name}` replaced by its markup, the words around it escaped.
    fn fill(&self, key: Key, parts: &[(&str, Markup)]) -> Markup {
        let mut out = String::new();
        let mut rest = self.text(key);
        while let Some(open) = rest.find('{') {
            let Some(close) = rest[open..].find('}').map(|c| open + c) else {
                break;
            };
            out.push_str(&html! { (&rest[..open]) }.into_string());
            let name = &rest[open + 1..close];
            match parts.iter().find(|(n, _)| *n == name) {
                Some((_, markup)) => out.push_str(&markup.0),
                None => out.push_str(&html! { (&rest[open..=close]) }.into_string()),
            }
            rest = &rest[close + 1..];
        }
        out.push_str(&html! { (rest) }.into_string());
        PreEscaped(out)
    }

    /// `key`'s text with `{name}`s replaced by plain text (for attributes, and for pages described
    /// as words before they are rendered, `Text::Raw`).
    pub fn fill_text(&self, key: Key, parts: &[(&str, &str)]) -> String {
        parts
            .iter()
            .fold(self.text(key).to_owned(), |text, (n, v)| {
                text.replace(&format!("{{{n}}}"), v)
            })
    }

    /// Every page: language, viewport, title, the inline style, the brand bar, then `main`.
    fn layout(
        &self,
        title: &str,
        images: &[Option<&str>],
        form_targets: &[String],
        content: Markup,
    ) -> Page {
        let brand_logo = self
            .brand_logo
            .as_deref()
            .filter(|l| https_origin(l).is_some());
        let body = html! {
            (DOCTYPE)
            html lang=(self.text(Key::lang)) {
                head {
                    meta charset="utf-8";
                    meta name="viewport" content="width=device-width, initial-scale=1";
                    meta name="referrer" content="no-referrer";
                    title { (title) " – " (self.brand_name) }
                    style { (PreEscaped(&self.style)) }
                }
                body {
                    header.brand {
                        @if let Some(logo) = brand_logo {
                            img src=(logo) alt="";
                        }
                        span { (self.brand_name) }
                    }
                    main { (content) }
                }
            }
        };
        let mut img: Vec<String> = images
            .iter()
            .flatten()
            .chain(brand_logo.as_ref())
            .filter_map(|u| https_origin(u))
            .collect();
        img.sort();
        img.dedup();
        let mut form_action = vec!["'self'".to_owned()];
        form_action.extend(form_targets.iter().cloned());
        let csp = format!(
            "default-src 'none'; style-src {}; img-src {}; form-action {}; frame-ancestors 'none'; base-uri 'none'",
            self.style_source,
            if img.is_empty() {
                "'none'".to_owned()
            } else {
                img.join(" ")
            },
            form_action.join(" "),
        );
        Page {
            body: body.into_string(),
            csp,
        }
    }

    /// A result or failure: a heading and what it means.
    pub fn message(&self, title: &Text, detail: &Text) -> Page {
        let title = title.resolve(&self.strings);
        self.layout(
            title,
            &[],
            &[],
            html! {
                div.card {
                    h1 { (title) }
                    p { (detail.resolve(&self.strings)) }
                }
            },
        )
    }

    fn scope_list(&self, scopes: &[String]) -> Markup {
        html! {
            ul.scopes {
                @for scope in scopes {
                    li {
                        @if let Some(description) = self.scope_descriptions.get(scope) {
                            (description) " "
                            span.muted { "(" code { (scope) } ")" }
                        } @else {
                            code { (scope) }
                        }
                    }
                }
            }
        }
    }

    /// The consent page, or the device page's approval step.
    pub fn approval(&self, approval: &Approval, user: &str) -> Page {
        // A URL client_id (Client ID Metadata Document) is only as trustworthy as its host: show
        // it first, since the name is whatever the document claims.
        let document_host = approval
            .client_id
            .strip_prefix("https://")
            .and_then(|rest| rest.split('/').next());
        let logo = approval
            .logo_uri
            .as_deref()
            .filter(|l| https_origin(l).is_some());
        let client_id = html! { code { (approval.client_id) } };
        let identity = match document_host {
            Some(host) => self.fill(
                Key::published_by,
                &[
                    ("host", html! { strong.host { (host) } }),
                    ("client_id", client_id),
                ],
            ),
            None => self.fill(Key::client_id_line, &[("client_id", client_id)]),
        };
        let caution = |body: Markup| {
            html! {
                p.warning role="note" { strong { (self.text(Key::caution)) } " " (body) }
            }
        };
        let scheme = |scheme: &str| html! { strong { (scheme) ":" } };
        let warning = match &approval.destination {
            _ if approval.loopback_only => Some(caution(self.fill(Key::loopback_warning, &[]))),
            Some(Destination::Scheme(s)) => Some(caution(
                self.fill(Key::scheme_warning, &[("scheme", scheme(s))]),
            )),
            _ => None,
        };
        let destination = match &approval.destination {
            Some(Destination::Host { host, .. }) => {
                Some(self.fill(Key::sent_to_host, &[("host", html! { strong { (host) } })]))
            }
            Some(Destination::Scheme(s)) => {
                Some(self.fill(Key::sent_to_scheme, &[("scheme", scheme(s))]))
            }
            None => None,
        };
        let content = html! {
            div.card {
                div.client {
                    @if let Some(logo) = logo {
                        img src=(logo) alt=(self.fill_text(Key::client_logo_alt, &[("client", &approval.client_name)]));
                    }
                    h1 {
                        (self.fill(Key::consent_heading, &[("client", html! { em { (approval.client_name) } })]))
                    }
                }
                p { (identity) }
                @if let Some(warning) = warning { (warning) }
                p { (self.fill(Key::signed_in_as, &[("user", html! { strong { (user) } })])) }
                @if let Some(destination) = destination { p { (destination) } }
                @if let Some(resource) = &approval.resource {
                    p { (self.fill(Key::for_resource, &[("resource", html! { strong { code { (resource) } } })])) }
                }
                h2 { (self.text(Key::asks_for)) }
                (self.scope_list(&approval.scopes))
                form method="post" action=(approval.action) {
                    input type="hidden" name=(approval.hidden.0) value=(approval.hidden.1);
                    input type="hidden" name="csrf_token" value=(approval.csrf);
                    div.actions {
                        button.primary type="submit" name="decision" value="approve" { (self.text(Key::allow)) }
                        button type="submit" name="decision" value="deny" { (self.text(Key::deny)) }
                    }
                }
            }
        };
        let targets: Vec<String> = approval
            .destination
            .as_ref()
            .and_then(Destination::source)
            .into_iter()
            .collect();
        self.layout(self.text(Key::consent_title), &[logo], &targets, content)
    }

    /// The device page's first step: the code the device shows.
    pub fn device_entry(&self, action: &str) -> Page {
        let title = self.text(Key::device_title);
        self.layout(
            title,
            &[],
            &[],
            html! {
                div.card {
                    h1 { (title) }
                    p { (self.text(Key::device_prompt)) }
                    form method="get" action=(action) {
                        label for="user_code" { (self.text(Key::device_code_label)) }
                        input #user_code type="text" name="user_code" autocomplete="off"
                            autocapitalize="characters" spellcheck="false" placeholder="XXXX-XXXX"
                            maxlength="20" required;
                        div.actions {
                            button.primary type="submit" { (self.text(Key::device_continue)) }
                        }
                    }
                }
            },
        )
    }

    /// Links between the account pages; the page shown is marked for screen readers.
    fn account_nav(&self, nav: &AccountNav, here: AccountPage) -> Markup {
        let Some(sessions) = &nav.sessions else {
            return html! {};
        };
        let links = [
            (AccountPage::Apps, &nav.apps, Key::apps_title),
            (AccountPage::Sessions, sessions, Key::sessions_title),
        ];
        html! {
            nav aria-label=(self.text(Key::navigation)) {
                ul {
                    @for (page, href, text) in links {
                        li {
                            a href=(href) aria-current=[(page == here).then_some("page")] { (self.text(text)) }
                        }
                    }
                }
            }
        }
    }

    /// The signed-in user's live grants, each with a revoke button.
    pub fn connected_apps(
        &self,
        user: &str,
        apps: &[ConnectedApp],
        action: &str,
        nav: &AccountNav,
    ) -> Page {
        let title = self.text(Key::apps_title);
        let logos: Vec<Option<&str>> = apps.iter().map(|a| a.grant.logo_uri.as_deref()).collect();
        let content = html! {
            (self.account_nav(nav, AccountPage::Apps))
            h1 { (title) }
            p { (self.fill(Key::signed_in_as, &[("user", html! { strong { (user) } })])) }
            p { (self.text(Key::apps_intro)) }
            @if apps.is_empty() {
                p.card { (self.text(Key::apps_none)) }
            }
            @for app in apps {
                @let grant = &app.grant;
                @let heading = format!("app-{}", grant.grant_id);
                section.card aria-labelledby=(heading) {
                    div.client {
                        @if let Some(logo) = grant.logo_uri.as_deref().filter(|l| https_origin(l).is_some()) {
                            img src=(logo) alt="";
                        }
                        h2 id=(heading) { (grant.client_name) }
                    }
                    dl {
                        dt { (self.text(Key::apps_returns_to)) }
                        dd { (grant.redirect_hosts.join(", ")) " " span.muted { "(" code { (grant.client_id) } ")" } }
                        @if let Some(resource) = &grant.resource {
                            dt { (self.text(Key::apps_resource)) }
                            dd { code { (resource) } }
                        }
                        dt { (self.text(Key::apps_granted)) }
                        dd { time datetime=(grant.granted_at.0) { (grant.granted_at.1) } }
                        dt { (self.text(Key::apps_last_used)) }
                        dd {
                            @match &grant.last_used_at {
                                Some((machine, readable)) => time datetime=(machine) { (readable) },
                                None => (self.text(Key::apps_never_used)),
                            }
                        }
                        dt { (self.text(Key::apps_access)) }
                        dd { (self.scope_list(&grant.scopes)) }
                    }
                    form method="post" action=(action) {
                        input type="hidden" name="grant_id" value=(grant.grant_id.to_string());
                        input type="hidden" name="csrf_token" value=(app.csrf);
                        button type="submit" aria-label=(self.fill_text(Key::apps_revoke, &[("client", &grant.client_name)])) {
                            (self.text(Key::apps_revoke_button))
                        }
                    }
                }
            }
            @if !apps.is_empty() {
                p.muted { (self.text(Key::apps_last_used_note)) }
            }
        };
        self.layout(title, &logos, &[], content)
    }

    /// The signed-in user's live browser sessions, each with a sign-out button, and "sign out
    /// everywhere". Every form carries the same token (`csrf`, bound to the user): which session
    /// a form may end is decided by the user's own list, not by the token.
    pub fn sessions(
        &self,
        user: &str,
        sessions: &[SessionEntry],
        csrf: &str,
        action: &str,
        nav: &AccountNav,
    ) -> Page {
        let title = self.text(Key::sessions_title);
        let form = |session: &str, button: Markup| {
            html! {
                form method="post" action=(action) {
                    input type="hidden" name="session" value=(session);
                    input type="hidden" name="csrf_token" value=(csrf);
                    (button)
                }
            }
        };
        let content = html! {
            (self.account_nav(nav, AccountPage::Sessions))
            h1 { (title) }
            p { (self.fill(Key::signed_in_as, &[("user", html! { strong { (user) } })])) }
            p { (self.text(Key::sessions_intro)) }
            @if sessions.is_empty() {
                p.card { (self.text(Key::sessions_none)) }
            }
            @for entry in sessions {
                @let session = &entry.session;
                @let heading = format!("session-{}", session.session_id);
                section.card aria-labelledby=(heading) {
                    h2 id=(heading) {
                        @if entry.current {
                            (self.text(Key::sessions_this_browser))
                        } @else {
                            (self.text(Key::sessions_other_browser))
                        }
                    }
                    dl {
                        dt { (self.text(Key::sessions_started)) }
                        dd { time datetime=(session.started_at.0) { (session.started_at.1) } }
                        @if let Some(issuer) = &session.upstream_issuer {
                            dt { (self.text(Key::sessions_through)) }
                            dd {
                                (provider_name(issuer))
                                @if !session.amr.is_empty() {
                                    " " span.muted { "(" code { (session.amr.join(", ")) } ")" }
                                }
                            }
                        }
                        dt { (self.text(Key::sessions_expires)) }
                        dd { time datetime=(session.expires_at.0) { (session.expires_at.1) } }
                    }
                    @let label = if entry.current {
                        self.text(Key::sessions_sign_out_this).to_owned()
                    } else {
                        self.fill_text(Key::sessions_sign_out, &[("time", &session.started_at.1)])
                    };
                    (form(&session.session_id.to_string(), html! {
                        button type="submit" aria-label=(label) { (self.text(Key::sessions_sign_out_button)) }
                    }))
                }
            }
            @if !sessions.is_empty() {
                div.card {
                    p { (self.text(Key::sessions_everywhere_note)) }
                    (form(EVERYWHERE, html! {
                        button.primary type="submit" { (self.text(Key::sessions_everywhere_button)) }
                    }))
                }
            }
        };
        self.layout(title, &[], &[], content)
    }

    /// RP-Initiated Logout without a hint that names the user: a form, so that a link alone signs
    /// no one out. `hidden` carries the request's parameters on to the POST.
    pub fn confirm_sign_out(
        &self,
        user: &str,
        action: &str,
        hidden: &[(&str, &str)],
        csrf: &str,
        destination: Option<&str>,
    ) -> Page {
        let title = self.text(Key::sign_out_title);
        let content = html! {
            div.card {
                h1 { (title) }
                p { (self.fill(Key::signed_in_as, &[("user", html! { strong { (user) } })])) }
                p.muted { (self.text(Key::sign_out_note)) }
                form method="post" action=(action) {
                    @for (name, value) in hidden {
                        input type="hidden" name=(name) value=(value);
                    }
                    input type="hidden" name="csrf_token" value=(csrf);
                    div.actions {
                        button.primary type="submit" { (self.text(Key::sign_out_button)) }
                    }
                }
            }
        };
        // The form's answer redirects to the client's post-logout URI, and Chromium holds that
        // redirect to form-action too.
        let targets: Vec<String> = destination
            .map(Destination::of_uri)
            .as_ref()
            .and_then(Destination::source)
            .into_iter()
            .collect();
        self.layout(title, &[], &targets, content)
    }
}

impl Views {
    /// The sign-in choice, when several upstream providers are configured: a link per provider
    /// (each a plain link, so keyboard and screen reader reach it like any other), in a list
    /// named by the page's heading.
    pub fn choose_provider(&self, choices: &[(String, String)]) -> Page {
        let title = self.text(Key::choose_provider_title);
        let content = html! {
            div.card {
                h1 #choose-provider { (title) }
                p { (self.text(Key::choose_provider_intro)) }
                ul.choices aria-labelledby="choose-provider" {
                    @for (name, href) in choices {
                        li {
                            a.button href=(href) {
                                (self.fill(Key::sign_in_with, &[("provider", html! { (name) })]))
                            }
                        }
                    }
                }
            }
        };
        self.layout(title, &[], &[], content)
    }
}

/// The sessions form's value for "sign out everywhere" (a session is named by its UUID).
pub const EVERYWHERE: &str = "everywhere";

/// A provider as a person knows it: its host (and port, if it has one), else what it is called.
fn provider_name(issuer: &str) -> String {
    url::Url::parse(issuer)
        .ok()
        .and_then(|u| {
            let host = u.host_str()?.to_owned();
            Some(match u.port() {
                Some(port) => format!("{host}:{port}"),
                None => host,
            })
        })
        .unwrap_or_else(|| issuer.to_owned())
}

struct Color {
    hex: String,
    /// Black or white, whichever reads better on the colour.
    on: &'static str,
}

fn parse_color(text: &str) -> Option<Color> {
    let digits = text.strip_prefix('#')?;
    if !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let channel = |s: &str| u8::from_str_radix(s, 16).ok();
    let (r, g, b) = match digits.len() {
        3 => {
            let d: Vec<String> = digits.chars().map(|c| format!("{c}{c}")).collect();
            (channel(&d[0])?, channel(&d[1])?, channel(&d[2])?)
        }
        6 => (
            channel(&digits[0..2])?,
            channel(&digits[2..4])?,
            channel(&digits[4..6])?,
        ),
        _ => return None,
    };
    // WCAG relative luminance: white text below the point where black reads better.
    let linear = |c: u8| {
        let c = f64::from(c) / 255.0;
        if c <= 0.039_28 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
    Some(Color {
        hex: format!("#{r:02x}{g:02x}{b:02x}"),
        on: if luminance > 0.179 { "#000" } else { "#fff" },
    })
}

/// The origin of an https URL with a host and no credentials (what `img-src` allows).
fn https_origin(text: &str) -> Option<String> {
    let url = url::Url::parse(text).ok()?;
    (url.scheme() == "https"
        && url.host_str().is_some()
        && url.username().is_empty()
        && url.password().is_none())
    .then(|| url.origin().ascii_serialization())
    .filter(|origin| is_csp_source(origin))
}

/// Whether `source` can stand in a CSP directive as one source (no separators, no quotes).
fn is_csp_source(source: &str) -> bool {
    !source.is_empty()
        && source
            .chars()
            .all(|c| c.is_ascii_graphic() && !matches!(c, ';' | ',' | '\'' | '"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn views() -> Arc<Views> {
        Views::fallback()
    }

    fn approval(client_id: &str, loopback_only: bool) -> Approval {
        Approval {
            client_name: "Claude <script>alert(1)</script>".into(),
            client_id: client_id.into(),
            logo_uri: None,
            scopes: vec!["mcp".into(), "x:<b>".into()],
            resource: Some("https://mcp.example.com/mcp".into()),
            loopback_only,
            destination: Some(Destination::of(
                "https://app.example/cb",
                Some("app.example".into()),
            )),
            action: "https://auth.example/consent".into(),
            hidden: ("request_id", "r1\"><x".into()),
            csrf: "c1".into(),
        }
    }

    #[test]
    fn a_metadata_document_client_is_introduced_by_its_host() {
        let page = views()
            .approval(
                &approval("https://claude.ai/oauth/client.json", false),
                "alice",
            )
            .body;
        assert!(
            page.contains("published by <strong class=\"host\">claude.ai</strong>"),
            "{page}"
        );
        assert!(!page.contains("Caution"));
        assert!(
            !page.contains("<script>"),
            "client-supplied names are escaped"
        );
        assert!(page.contains("&lt;script&gt;"));
        assert!(!page.contains("<b>"));
        assert!(page.contains("value=\"r1&quot;&gt;&lt;x\""));
    }

    #[test]
    fn a_loopback_only_client_carries_a_warning() {
        let page = views().approval(&approval("abc123", true), "alice").body;
        assert!(page.contains("Caution"));
        assert!(page.contains("Client <code>abc123</code>"));
        assert!(!page.contains("published by"));
    }

    #[test]
    fn a_private_use_scheme_is_named_by_its_scheme_with_a_warning_and_allowed_as_form_target() {
        let page = views().approval(
            &Approval {
                destination: Some(Destination::of("x-evil://claude.ai/cb", None)),
                ..approval("abc123", false)
            },
            "alice",
        );
        assert!(
            page.body.contains("<strong>x-evil:</strong> links"),
            "{}",
            page.body
        );
        assert!(page.body.contains("Caution"));
        assert!(!page.body.contains("app.example"));
        assert!(
            page.csp.contains("form-action 'self' x-evil:"),
            "{}",
            page.csp
        );
    }

    #[test]
    fn the_sign_out_form_may_lead_to_the_clients_post_logout_uri_only() {
        let confirm = |destination| {
            views()
                .confirm_sign_out("alice", "https://as.example/logout", &[], "t", destination)
                .csp
        };
        let csp = confirm(Some("http://127.0.0.1:6019/signed-out?state=x"));
        assert!(
            csp.contains("form-action 'self' http://127.0.0.1:6019;"),
            "{csp}"
        );
        let csp = confirm(Some("com.example.app:/signed-out"));
        assert!(
            csp.contains("form-action 'self' com.example.app:;"),
            "{csp}"
        );
        let csp = confirm(None);
        assert!(csp.contains("form-action 'self';"), "{csp}");
    }

    #[test]
    fn the_style_is_allowed_by_its_hash_and_nothing_else_loads() {
        let page = views().approval(&approval("abc123", false), "alice");
        let style = page
            .body
            .split("<style>")
            .nth(1)
            .and_then(|s| s.split("</style>").next())
            .unwrap();
        let hash = STANDARD.encode(Sha256::digest(style.as_bytes()));
        assert!(
            page.csp.contains(&format!("style-src 'sha256-{hash}'")),
            "{}",
            page.csp
        );
        assert!(page.csp.starts_with("default-src 'none';"));
        assert!(page.csp.contains("img-src 'none'"));
        assert!(page.csp.contains("form-action 'self' https://app.example;"));
        assert!(!page.body.contains(" style="));
        assert!(page.body.contains("<html lang=\"en\">"));
        assert!(page.body.contains("name=\"viewport\""));
    }

    #[test]
    fn branding_is_checked_and_a_vetted_logo_is_allowed_by_origin() {
        let ok = |b: Branding| {
            Views::new(
                "https://auth.example",
                &b,
                &Strings::default(),
                &BTreeMap::new(),
            )
        };
        assert!(
            ok(Branding {
                primary_color: "red".into(),
                ..Branding::default()
            })
            .is_err()
        );
        assert!(
            ok(Branding {
                primary_color: "#12345".into(),
                ..Branding::default()
            })
            .is_err()
        );
        assert!(
            ok(Branding {
                logo_url: Some("http://a.example/l.png".into()),
                ..Branding::default()
            })
            .is_err()
        );
        assert!(
            ok(Branding {
                name: Some(" ".into()),
                ..Branding::default()
            })
            .is_err()
        );
        let views = ok(Branding {
            name: Some("Acme <MCP>".into()),
            primary_color: "#fc0".into(),
            logo_url: Some("https://cdn.acme.example/logo.svg".into()),
        })
        .unwrap();
        let page = views.approval(
            &Approval {
                logo_uri: Some("https://vetted.example/logo.png".into()),
                ..approval("abc123", false)
            },
            "alice",
        );
        assert!(page.body.contains("Acme &lt;MCP&gt;"));
        assert!(page.body.contains("--brand:#ffcc00;--on-brand:#000"));
        assert!(
            page.body
                .contains("src=\"https://vetted.example/logo.png\"")
        );
        assert!(
            page.csp
                .contains("img-src https://cdn.acme.example https://vetted.example;"),
            "{}",
            page.csp
        );
    }

    #[test]
    fn scopes_are_described_from_configuration() {
        let descriptions =
            BTreeMap::from([("mcp:write".to_owned(), "Change your <files>".to_owned())]);
        let views = Views::new(
            "https://a.example",
            &Branding::default(),
            &Strings::default(),
            &descriptions,
        )
        .unwrap();
        let page = views
            .approval(
                &Approval {
                    scopes: vec!["mcp".into(), "mcp:write".into(), "other".into()],
                    ..approval("abc123", false)
                },
                "alice",
            )
            .body;
        assert!(page.contains("Change your &lt;files&gt;"), "{page}");
        assert!(page.contains("Use this server"));
        assert!(page.contains("<li><code>other</code></li>"));
    }
}
