//! Scope strings (RFC 6749 §3.3): `scope = scope-token *( SP scope-token )`,
//! `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`.

use pgrx::prelude::*;

fn is_scope_char(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

/// Longest scope string and most tokens accepted. Scope strings arrive before any authentication
/// (registration, the token endpoint), so their cost must be bounded; real clients send a few
/// dozen short tokens.
pub const MAX_SCOPE_BYTES: usize = 4096;
pub const MAX_SCOPE_TOKENS: usize = 256;

/// The distinct scope tokens of `scope` in first-seen order; empty for NULL or ''; NULL when the
/// syntax is wrong (double spaces, leading/trailing space, forbidden characters) or the string is
/// longer than [`MAX_SCOPE_BYTES`] or has more than [`MAX_SCOPE_TOKENS`] tokens. Linear time.
#[pg_extern(immutable, parallel_safe)]
fn parse_scope(scope: Option<&str>) -> Option<Vec<String>> {
    let scope = scope.unwrap_or("");
    let mut tokens: Vec<String> = Vec::new();
    if scope.is_empty() {
        return Some(tokens);
    }
    if scope.len() > MAX_SCOPE_BYTES {
        return None;
    }
    let mut seen = std::collections::HashSet::new();
    for (index, token) in scope.split(' ').enumerate() {
        if index >= MAX_SCOPE_TOKENS || token.is_empty() || !token.bytes().all(is_scope_char) {
            return None;
        }
        if seen.insert(token) {
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

    #[test]
    fn scope_strings_are_bounded_in_length_and_token_count() {
        let at_most = vec!["s"; MAX_SCOPE_TOKENS].join(" ");
        assert_eq!(parse_scope(Some(&at_most)), Some(vec!["s".to_owned()]));
        let too_many = vec!["s"; MAX_SCOPE_TOKENS + 1].join(" ");
        assert_eq!(parse_scope(Some(&too_many)), None);
        let too_long = "s".repeat(MAX_SCOPE_BYTES + 1);
        assert_eq!(parse_scope(Some(&too_long)), None);
        assert_eq!(
            parse_scope(Some(&"s".repeat(MAX_SCOPE_BYTES))).map(|t| t.len()),
            Some(1)
        );
    }
}
