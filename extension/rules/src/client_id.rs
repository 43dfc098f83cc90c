//! Which client ids are Client ID Metadata Document URLs (draft-ietf-oauth-client-id-metadata-document §3).
//!
//! The gateway fetches such a URL before the extension has seen the document, and the extension
//! decides whether a client id names a document at all: both must draw the same line, or a URL the
//! extension takes for a document could never be fetched (or the reverse).

use url::Url;

/// Why `client_id` is not a metadata-document URL, or `None` when it is one: an https URL in the
/// form the URL standard serializes it to (so one document has one id), with a path beyond `/`,
/// and without user information, query or fragment.
pub fn document_url_problem(client_id: &str) -> Option<&'static str> {
    if !client_id.starts_with("https://") {
        return Some("a client_id URL must be https");
    }
    let Ok(url) = Url::parse(client_id) else {
        return Some("the client_id is not a URL");
    };
    if url.as_str() != client_id {
        return Some("the client_id URL is not in normalized form");
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Some("a client_id URL must not carry userinfo");
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Some("a client_id URL must not have a query or fragment");
    }
    if url.path() == "/" || url.path().is_empty() {
        return Some("a client_id URL must have a path");
    }
    if url.host_str().is_none() {
        return Some("the client_id URL has no host");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::document_url_problem;

    #[test]
    fn document_urls_are_normalized_https_urls_with_a_path() {
        for valid in [
            "https://app.example/client.json",
            "https://app.example:8443/oauth/client",
            "https://claude.ai/oauth/claude-code-client-metadata",
        ] {
            assert_eq!(document_url_problem(valid), None, "{valid}");
        }
        for (invalid, why) in [
            ("http://app.example/client.json", "must be https"),
            ("app.example/client.json", "must be https"),
            ("https://app.example", "normalized form"),
            ("https://app.example/", "must have a path"),
            ("https://user@app.example/client.json", "userinfo"),
            ("https://app.example/client.json?x=1", "query or fragment"),
            ("https://app.example/client.json#f", "query or fragment"),
            ("https://app.example/a/../client.json", "normalized form"),
            ("https://APP.example/client.json", "normalized form"),
            ("https://app.example:443/client.json", "normalized form"),
            ("https://", "not a URL"),
        ] {
            let problem = document_url_problem(invalid);
            assert!(
                problem.is_some_and(|p| p.contains(why)),
                "{invalid}: expected a problem containing {why:?}, got {problem:?}"
            );
        }
    }
}
