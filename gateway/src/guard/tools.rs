//! Scopes per MCP request (a route's `tool_scopes`), and the scopes a held scope includes
//! (`scope_hierarchy`).
//!
//! MCP 2026-07-28 (SEP-2243) mirrors a request's JSON-RPC `method` and target name into the
//! `Mcp-Method` and `Mcp-Name` headers so that intermediaries can act without reading bodies, and
//! tells servers to refuse a request whose headers disagree with its body. The guard cannot lean on
//! the headers alone: clients before that revision send none, and an upstream before it does not
//! compare them, so a request could name a harmless tool in its headers and call another in its
//! body. On a route with rules the guard therefore reads the body (bounded), takes the method and
//! name from it, and refuses headers that disagree; the headers themselves reach the upstream
//! untouched.

use std::collections::{BTreeMap, HashMap, HashSet};

use hyper::header::HeaderMap;
use serde_json::Value;

use crate::config::ToolScope;

/// One JSON-RPC request in a body: its method and the tool, prompt or resource it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub method: String,
    pub name: Option<String>,
}

/// The requests a POST body carries (a message or a batch; responses and notifications without
/// `method` carry none), or `None` when it is not JSON-RPC.
pub fn calls(body: &[u8]) -> Option<Vec<Call>> {
    let messages = match serde_json::from_slice(body).ok()? {
        Value::Array(batch) => batch,
        message => vec![message],
    };
    let mut calls = Vec::new();
    for message in &messages {
        let message = message.as_object()?;
        let Some(method) = message.get("method") else {
            continue;
        };
        let params = message.get("params");
        // Mcp-Name mirrors params.name (tools/call, prompts/get) or params.uri (resources/read).
        let name = ["name", "uri"]
            .iter()
            .find_map(|key| params.and_then(|p| p.get(key)).and_then(Value::as_str));
        calls.push(Call {
            method: method.as_str()?.to_owned(),
            name: name.map(str::to_owned),
        });
    }
    Some(calls)
}

/// Why the `Mcp-Method` / `Mcp-Name` headers disagree with the body's `calls`, or `None`. A header
/// describes one request, so with a header present the body must hold exactly that one.
pub fn header_mismatch(headers: &HeaderMap, calls: &[Call]) -> Option<&'static str> {
    let single = |name: &str| -> Result<Option<String>, ()> {
        let mut values = headers.get_all(name).iter();
        let Some(value) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(());
        }
        value.to_str().map(|v| Some(v.to_owned())).map_err(drop)
    };
    let (Ok(method), Ok(name)) = (single("mcp-method"), single("mcp-name")) else {
        return Some("Mcp-Method and Mcp-Name may each be sent once, as text");
    };
    if method.is_none() && name.is_none() {
        return None;
    }
    let [call] = calls else {
        return Some(
            "Mcp-Method and Mcp-Name describe one request, and the body does not hold one",
        );
    };
    if method.is_some_and(|m| m != call.method) {
        return Some("Mcp-Method differs from the method in the body");
    }
    if name.is_some_and(|n| Some(&n) != call.name.as_ref()) {
        return Some("Mcp-Name differs from the name in the body");
    }
    None
}

/// The scopes `calls` need under `rules`, each once, in the rules' order.
pub fn scopes_for<'r>(rules: &'r [ToolScope], calls: &[Call]) -> Vec<&'r str> {
    let mut needed: Vec<&str> = Vec::new();
    for rule in rules {
        let applies = calls.iter().any(|call| {
            glob(&rule.method, &call.method)
                && rule
                    .name
                    .as_ref()
                    .is_none_or(|pattern| call.name.as_ref().is_some_and(|n| glob(pattern, n)))
        });
        if applies {
            for scope in &rule.scopes {
                if !needed.contains(&scope.as_str()) {
                    needed.push(scope);
                }
            }
        }
    }
    needed
}

/// Whether `text` matches `pattern`, where `*` matches any run of characters.
fn glob(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let middle: Vec<&str> = parts.collect();
    let Some((last, inner)) = middle.split_last() else {
        return rest.is_empty();
    };
    for part in inner {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// For each scope, every scope it includes (itself too), following `hierarchy` transitively.
pub fn implied(hierarchy: &BTreeMap<String, Vec<String>>) -> HashMap<String, HashSet<String>> {
    hierarchy
        .keys()
        .map(|top| {
            let mut reached: HashSet<String> = HashSet::from([top.clone()]);
            let mut pending = vec![top.clone()];
            while let Some(scope) = pending.pop() {
                for below in hierarchy.get(&scope).into_iter().flatten() {
                    if reached.insert(below.clone()) {
                        pending.push(below.clone());
                    }
                }
            }
            (top.clone(), reached)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    fn rule(method: &str, name: Option<&str>, scopes: &[&str]) -> ToolScope {
        ToolScope {
            method: method.into(),
            name: name.map(Into::into),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn globs_match_runs_of_any_characters() {
        for (pattern, text, matches) in [
            ("delete_*", "delete_file", true),
            ("delete_*", "delete_", true),
            ("delete_*", "undelete_file", false),
            ("*", "anything", true),
            ("tools/call", "tools/call", true),
            ("tools/call", "tools/callx", false),
            ("*_admin_*", "x_admin_y", true),
            ("a*b*c", "abc", true),
            ("a*b*c", "acb", false),
            ("a*a", "a", false),
        ] {
            assert_eq!(glob(pattern, text), matches, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn calls_are_read_from_messages_and_batches() {
        let body = br#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"delete_x","arguments":{}}}"#;
        assert_eq!(
            calls(body),
            Some(vec![Call {
                method: "tools/call".into(),
                name: Some("delete_x".into())
            }])
        );
        let batch = br#"[{"jsonrpc":"2.0","method":"notifications/initialized"},{"jsonrpc":"2.0","id":2,"method":"resources/read","params":{"uri":"file:///a"}},{"jsonrpc":"2.0","id":3,"result":{}}]"#;
        let read = calls(batch).unwrap();
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].name.as_deref(), Some("file:///a"));
        assert_eq!(calls(b"not json"), None);
        assert_eq!(calls(b"[1]"), None);
        assert_eq!(calls(br#"{"method": 5}"#), None);
    }

    #[test]
    fn rules_add_scopes_for_the_calls_they_match() {
        let rules = [
            rule("tools/call", Some("delete_*"), &["mcp:write"]),
            rule("tools/call", Some("admin_*"), &["mcp:admin", "mcp:write"]),
            rule("resources/*", None, &["mcp:read"]),
        ];
        let call = |method: &str, name: Option<&str>| Call {
            method: method.into(),
            name: name.map(Into::into),
        };
        assert_eq!(
            scopes_for(&rules, &[call("tools/call", Some("delete_x"))]),
            ["mcp:write"]
        );
        assert!(scopes_for(&rules, &[call("tools/call", Some("read_x"))]).is_empty());
        assert!(scopes_for(&rules, &[call("tools/call", None)]).is_empty());
        assert_eq!(
            scopes_for(
                &rules,
                &[
                    call("tools/call", Some("admin_y")),
                    call("tools/call", Some("delete_x")),
                    call("resources/read", Some("file:///a"))
                ]
            ),
            ["mcp:write", "mcp:admin", "mcp:read"]
        );
    }

    #[test]
    fn headers_must_agree_with_the_one_request_in_the_body() {
        let one = [Call {
            method: "tools/call".into(),
            name: Some("delete_x".into()),
        }];
        let headers = |pairs: &[(&'static str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.append(*name, HeaderValue::from_str(value).unwrap());
            }
            map
        };
        assert_eq!(header_mismatch(&headers(&[]), &one), None);
        assert_eq!(header_mismatch(&headers(&[]), &[]), None);
        let agreeing = headers(&[("mcp-method", "tools/call"), ("mcp-name", "delete_x")]);
        assert_eq!(header_mismatch(&agreeing, &one), None);
        for disagreeing in [
            headers(&[("mcp-method", "tools/list")]),
            headers(&[("mcp-method", "tools/call"), ("mcp-name", "read_x")]),
            headers(&[("mcp-name", "read_x")]),
            headers(&[("mcp-method", "tools/call"), ("mcp-method", "tools/call")]),
        ] {
            assert!(
                header_mismatch(&disagreeing, &one).is_some(),
                "{disagreeing:?}"
            );
        }
        assert!(header_mismatch(&agreeing, &[one[0].clone(), one[0].clone()]).is_some());
    }

    #[test]
    fn a_scope_includes_what_the_hierarchy_puts_under_it_transitively() {
        let hierarchy = BTreeMap::from([
            ("mcp:admin".to_owned(), vec!["mcp:write".to_owned()]),
            ("mcp:write".to_owned(), vec!["mcp:read".to_owned()]),
            ("loop".to_owned(), vec!["loop".to_owned()]),
        ]);
        let implied = implied(&hierarchy);
        assert_eq!(
            implied["mcp:admin"],
            HashSet::from(["mcp:admin", "mcp:write", "mcp:read"].map(String::from))
        );
        assert!(!implied["mcp:write"].contains("mcp:admin"));
        assert_eq!(implied["loop"].len(), 1);
    }
}
