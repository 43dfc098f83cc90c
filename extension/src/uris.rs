//! Redirect URI and resource indicator rules (RFC 6749 §3.1.2, RFC 8252 §7–8, RFC 8707 §2, RFC 9700 §4.1).
//!
//! Redirect URIs are compared as registered strings, byte for byte: parsing and normalising before
//! comparing is how open redirectors are born. The one exception is the RFC 8252 §7.3 loopback
//! rule, where only the port may differ.

use pgrx::prelude::*;
use url::Url;

const MAX_URI_LEN: usize = 2000;
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "[::1]", "localhost"];
/// Schemes that execute or read locally instead of navigating to an application.
const FORBIDDEN_SCHEMES: [&str; 7] = [
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "filesystem",
];

/// A plain-`http` loopback URI split around its port: `http://127.0.0.1:8123/cb` → (`http://127.0.0.1`, `/cb`).
fn split_loopback(uri: &str) -> Option<(&str, &str)> {
    let rest = uri.strip_prefix("http://")?;
    let host = LOOPBACK_HOSTS.iter().find(|h| rest.starts_with(**h))?;
    let after_host = &rest[host.len()..];
    let tail = match after_host.strip_prefix(':') {
        Some(port_and_tail) => {
            let digits = port_and_tail.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 || digits > 5 || port_and_tail[..digits].parse::<u32>().ok()? > 65535 {
                return None;
            }
            &port_and_tail[digits..]
        }
        None => after_host,
    };
    if !(tail.is_empty() || tail.starts_with('/') || tail.starts_with('?')) {
        return None;
    }
    Some((&uri[..7 + host.len()], tail))
}

/// The form a registered URI must already be in, so that byte-for-byte comparison means what it says.
fn canonical_problem(raw: &str, parsed: &Url) -> Option<String> {
    let serialized = parsed.as_str();
    let same = serialized == raw || (parsed.path() == "/" && serialized == format!("{raw}/"));
    (!same).then(|| format!("URI is not in normalized form (expected {serialized})"))
}

fn parse_absolute(uri: &str) -> Result<Url, String> {
    if uri.is_empty() || uri.len() > MAX_URI_LEN {
        return Err(format!("URI must be 1 to {MAX_URI_LEN} characters"));
    }
    if uri.contains('#') {
        return Err("URI must not contain a fragment".into());
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("URI must not contain whitespace or control characters".into());
    }
    let parsed = Url::parse(uri).map_err(|e| format!("URI is not an absolute URI: {e}"))?;
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err("URI must not contain user information".into());
    }
    Ok(parsed)
}

/// Why `uri` cannot be registered as a redirect URI for a client of `application_type`, or NULL.
#[pg_extern(immutable, parallel_safe, strict)]
fn redirect_uri_problem(uri: &str, application_type: &str) -> Option<String> {
    let parsed = match parse_absolute(uri) {
        Ok(parsed) => parsed,
        Err(problem) => return Some(problem),
    };
    if let Some(problem) = canonical_problem(uri, &parsed) {
        return Some(problem);
    }
    match parsed.scheme() {
        "https" => None,
        "http" if split_loopback(uri).is_some() => match application_type {
            "native" => None,
            _ => Some("http redirect URIs are allowed only for native clients on a loopback address".into()),
        },
        "http" => Some("http redirect URIs are allowed only on a loopback address (127.0.0.1, [::1], localhost)".into()),
        scheme if FORBIDDEN_SCHEMES.contains(&scheme) => Some(format!("the {scheme} scheme cannot be a redirect URI")),
        _ if application_type != "native" => Some("private-use URI schemes are allowed only for native clients".into()),
        _ => None,
    }
}

/// True when `uri` is a plain-http loopback redirect URI (RFC 8252 §7.3).
#[pg_extern(immutable, parallel_safe, strict)]
fn is_loopback_redirect(uri: &str) -> bool {
    split_loopback(uri).is_some()
}

/// Whether a presented redirect URI is one of the registered ones: exact match, or a loopback
/// registration that differs from it only in the port.
#[pg_extern(immutable, parallel_safe, strict)]
fn redirect_uri_allowed(registered: Vec<Option<String>>, presented: &str) -> bool {
    let registered = || registered.iter().flatten().map(String::as_str);
    if registered().any(|r| r == presented) {
        return true;
    }
    let Some(presented_parts) = split_loopback(presented) else {
        return false;
    };
    // The presented URI must itself be a valid URI; the registered one was validated at registration.
    if parse_absolute(presented).is_err() {
        return false;
    }
    registered().any(|r| split_loopback(r) == Some(presented_parts))
}

/// Why `uri` cannot be a resource indicator (RFC 8707 §2: absolute URI without fragment), or NULL.
#[pg_extern(immutable, parallel_safe, strict)]
fn resource_problem(uri: &str) -> Option<String> {
    let parsed = match parse_absolute(uri) {
        Ok(parsed) => parsed,
        Err(problem) => return Some(format!("resource: {problem}")),
    };
    match parsed.scheme() {
        "https" | "http" => None,
        other => Some(format!("resource: the {other} scheme is not supported")),
    }
}

/// The one spelling every equivalent form of a resource indicator shares, or NULL for what is not
/// a resource indicator: scheme and host in lower case, a default port dropped, an empty path as
/// `/`, dot-segments removed (RFC 3986 §6.2.2–6.2.3, which RFC 8707 §2 defers to). So
/// `https://MCP.example:443` and `https://mcp.example/` name one resource; the spelling a
/// resource was registered with is still what tokens carry.
#[pg_extern(immutable, parallel_safe, strict)]
fn resource_key(uri: &str) -> Option<String> {
    if resource_problem(uri).is_some() {
        return None;
    }
    Url::parse(uri).ok().map(String::from)
}

/// `uri` with form-encoded parameters appended to its query, leaving the registered string intact.
#[pg_extern(immutable, parallel_safe, strict)]
fn append_query(uri: &str, names: Vec<Option<String>>, values: Vec<Option<String>>) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (name, value) in names.iter().zip(values.iter()) {
        if let (Some(name), Some(value)) = (name, value) {
            query.append_pair(name, value);
        }
    }
    let query = query.finish();
    let separator = match uri.find('?') {
        None => "?",
        Some(pos) if pos + 1 == uri.len() || uri.ends_with('&') => "",
        Some(_) => "&",
    };
    format!("{uri}{separator}{query}")
}

/// The host a consent screen shows for a URI (NULL for URIs without one, such as private-use schemes).
#[pg_extern(immutable, parallel_safe, strict)]
fn uri_host(uri: &str) -> Option<String> {
    Url::parse(uri).ok()?.host_str().map(str::to_owned)
}

/// Why `client_id` is not a Client ID Metadata Document URL, or NULL: the rule the gateway applies
/// before fetching, from the same crate.
#[pg_extern(immutable, parallel_safe, strict)]
fn document_client_id_problem(client_id: &str) -> Option<String> {
    oauth_rules::client_id::document_url_problem(client_id).map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(list: &[&str]) -> Vec<Option<String>> {
        list.iter().map(|s| Some(s.to_string())).collect()
    }

    #[test]
    fn loopback_port_may_differ_but_nothing_else() {
        let r = reg(&["http://127.0.0.1/callback", "https://app.example/cb"]);
        assert!(redirect_uri_allowed(
            r.clone(),
            "http://127.0.0.1:53124/callback"
        ));
        assert!(redirect_uri_allowed(r.clone(), "http://127.0.0.1/callback"));
        assert!(!redirect_uri_allowed(
            r.clone(),
            "http://127.0.0.1:53124/callback/"
        ));
        assert!(!redirect_uri_allowed(
            r.clone(),
            "http://localhost:53124/callback"
        ));
        assert!(!redirect_uri_allowed(
            r.clone(),
            "http://127.0.0.1:99999/callback"
        ));
        assert!(!redirect_uri_allowed(
            r.clone(),
            "http://127.0.0.1:1/callback#x"
        ));
        assert!(!redirect_uri_allowed(r.clone(), "https://APP.example/cb"));
        assert!(!redirect_uri_allowed(r, "https://app.example/cb/"));
    }

    #[test]
    fn registration_rules() {
        assert_eq!(redirect_uri_problem("https://app.example/cb", "web"), None);
        assert_eq!(redirect_uri_problem("https://app.example", "web"), None);
        assert_eq!(
            redirect_uri_problem("http://localhost:3000/cb", "native"),
            None
        );
        assert_eq!(
            redirect_uri_problem(
                "cursor://anysphere.cursor-retrieval/oauth/callback",
                "native"
            ),
            None
        );
        for bad in [
            "http://localhost:3000/cb#frag",
            "https://good@evil.example/cb",
            "https://evil%2Eexample/cb",
            "HTTPS://app.example/cb",
            "/relative",
            "javascript:alert(1)",
            "http://app.example/cb",
        ] {
            assert!(redirect_uri_problem(bad, "native").is_some(), "{bad}");
        }
        assert!(redirect_uri_problem("http://localhost:3000/cb", "web").is_some());
        assert!(redirect_uri_problem("myapp:/cb", "web").is_some());
    }

    #[test]
    fn equivalent_spellings_of_a_resource_share_one_key() {
        for (a, b) in [
            ("https://mcp.example", "https://mcp.example/"),
            ("https://MCP.example:443/mcp", "https://mcp.example/mcp"),
            ("http://127.0.0.1:80", "http://127.0.0.1/"),
            ("https://mcp.example/a/../mcp", "https://mcp.example/mcp"),
        ] {
            assert_eq!(resource_key(a), resource_key(b), "{a} and {b}");
        }
        assert_ne!(
            resource_key("https://mcp.example/mcp"),
            resource_key("https://mcp.example/mcp/")
        );
        assert_ne!(
            resource_key("https://mcp.example:8443/"),
            resource_key("https://mcp.example/")
        );
        assert_eq!(resource_key("/mcp"), None);
        assert_eq!(resource_key("urn:x:y"), None);
        assert_eq!(resource_key("https://mcp.example/#f"), None);
    }

    #[test]
    fn query_is_appended_without_touching_the_registered_string() {
        let names = reg(&["code", "state"]);
        let values = reg(&["a b", "x&y"]);
        assert_eq!(
            append_query("https://a.example/cb", names.clone(), values.clone()),
            "https://a.example/cb?code=a+b&state=x%26y"
        );
        assert_eq!(
            append_query("https://a.example/cb?k=v", names, values),
            "https://a.example/cb?k=v&code=a+b&state=x%26y"
        );
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 4096, ..ProptestConfig::default() })]

        /// Whatever is presented, only a registered URI (or its loopback port variant) matches.
        #[test]
        fn only_registered_uris_match(presented in "\\PC{0,120}", port in 1u32..65536) {
            let registered = vec![Some("http://127.0.0.1/cb".to_owned()), Some("https://app.example/cb".to_owned())];
            if redirect_uri_allowed(registered.clone(), &presented) {
                let loopback_variant = presented == format!("http://127.0.0.1:{port}/cb")
                    || presented.starts_with("http://127.0.0.1:") && presented.ends_with("/cb");
                prop_assert!(registered.iter().flatten().any(|r| r == &presented) || loopback_variant, "{}", presented);
            }
            let variant = format!("http://127.0.0.1:{}/cb", port);
            prop_assert!(redirect_uri_allowed(registered, &variant));
        }

        /// Validation and host extraction never panic on arbitrary input.
        #[test]
        fn uri_rules_never_panic(uri in "\\PC{0,200}") {
            let _ = redirect_uri_problem(&uri, "native");
            let _ = redirect_uri_problem(&uri, "web");
            let _ = resource_problem(&uri);
            let _ = resource_key(&uri);
            let _ = uri_host(&uri);
            let _ = is_loopback_redirect(&uri);
        }
    }
}
