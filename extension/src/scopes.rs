//! Scope strings (RFC 6749 §3.3): `scope = scope-token *( SP scope-token )`,
//! `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.

use pgrx::prelude::*;

fn is_scope_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

/// The distinct scope tokens of `scope` in first-seen order; empty for NULL or ''; NULL when the
/// syntax is wrong (double spaces, leading/trailing space, forbidden characters).
#[pg_extern(immutable, parallel_safe)]
fn parse_scope(scope: Option<&str>) -> Option<Vec<String>> {
    let scope = scope.unwrap_or("");
    let mut tokens: Vec<String> = Vec::new();
    if scope.is_empty() {
        return Some(tokens);
    }
    for token in scope.split(' ') {
        if token.is_empty() || !token.bytes().all(is_scope_char) {
            return None;
        }
        if !tokens.iter().any(|t| t == token) {
            tokens.push(token.to_owned());
        }
    }
    Some(tokens)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_syntax_follows_rfc6749_section_3_3() {
        assert_eq!(
            parse_scope(Some("mcp openid mcp")),
            Some(vec!["mcp".into(), "openid".into()])
        );
        assert_eq!(parse_scope(None), Some(vec![]));
        assert_eq!(parse_scope(Some("")), Some(vec![]));
        for bad in ["mcp  openid", " mcp", "mcp ", "a\"b", "a\\b", "é", "a\tb"] {
            assert_eq!(parse_scope(Some(bad)), None, "{bad:?}");
        }
    }
}
