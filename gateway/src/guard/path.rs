//! The request path as an upstream, or any proxy between, may read it: dot-segments removed
//! (RFC 3986 §5.2.4) so a route is matched on where the request really goes, and no separator
//! hidden from the guard by percent-encoding (`%2F`, `%5C`, `%2E`), which a server that decodes
//! before it normalises would turn into a way out of the route.

/// The path with its dot-segments removed, or `None` when it hides a separator or a dot-segment
/// the guard cannot remove itself (encoded, or with `;` parameters, as in `..;/`).
pub fn normalized(path: &str) -> Option<String> {
    let lower = path.to_ascii_lowercase();
    if ["%2f", "%5c", "%2e", "\\"]
        .iter()
        .any(|hidden| lower.contains(hidden))
    {
        return None;
    }
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut output: Vec<&str> = Vec::with_capacity(segments.len());
    for (at, segment) in segments.iter().enumerate() {
        let last = at + 1 == segments.len();
        match *segment {
            "." => {}
            ".." => {
                output.pop();
            }
            other if matches!(other.split(';').next(), Some("." | "..")) => return None,
            other => {
                output.push(other);
                continue;
            }
        }
        // A path that ends in a dot-segment ends in a slash (RFC 3986 §5.2.4, steps B and C).
        if last {
            output.push("");
        }
    }
    Some(format!("/{}", output.join("/")))
}

#[cfg(test)]
mod tests {
    use super::normalized;

    #[test]
    fn dot_segments_are_removed_as_rfc_3986_says() {
        for (path, expected) in [
            ("/", "/"),
            ("/mcp", "/mcp"),
            ("/mcp/", "/mcp/"),
            ("/mcp/a/b", "/mcp/a/b"),
            ("/mcp/../x", "/x"),
            ("/mcp/x/../../y", "/y"),
            ("/mcp/.", "/mcp/"),
            ("/mcp/..", "/"),
            ("/mcp/./a/./b/..", "/mcp/a/"),
            ("/../../x", "/x"),
            ("/a/b/c/./../../g", "/a/g"),
            ("/mcp//a", "/mcp//a"),
        ] {
            assert_eq!(normalized(path).as_deref(), Some(expected), "{path}");
        }
    }

    #[test]
    fn hidden_separators_and_dots_are_refused() {
        for path in [
            "/mcp/%2e%2e/x",
            "/mcp/%2E./x",
            "/mcp/..%2fx",
            "/mcp/..%2Fx",
            "/mcp/..%5cx",
            "/mcp/a\\b",
            "/mcp/..;/x",
            "/mcp/.;a/x",
        ] {
            assert_eq!(normalized(path), None, "{path}");
        }
    }
}
