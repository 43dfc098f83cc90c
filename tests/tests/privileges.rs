//! Who may call what: PUBLIC nothing, `oauth_gateway` exactly the gateway functions, no table reads.

use std::collections::BTreeSet;

use oauth_provider_tests::*;

const GATEWAY_FUNCTIONS: &[&str] = &[
    "begin_authorization(jsonb,timestamp with time zone)",
    "push_authorization_request(text,text,jsonb,timestamp with time zone)",
    "begin_device_authorization(text,text,text,text,timestamp with time zone)",
    "approve_device_authorization(text,text,text[],jsonb,timestamp with time zone)",
    "canonical_resource(text)",
    "client_credentials_grant(text,text,text,text,timestamp with time zone,text)",
    "cleanup(timestamp with time zone,integer)",
    "client_jwks_to_fetch(text,text,timestamp with time zone)",
    "continue_authorization(text,text,text,boolean,boolean,timestamp with time zone)",
    "client_logo_uri(text,timestamp with time zone)",
    "declare_resources(text[],timestamp with time zone)",
    "delete_registration(text,text,timestamp with time zone)",
    "deny_authorization(text,text,text,timestamp with time zone)",
    "deny_device_authorization(text,timestamp with time zone)",
    "end_session(uuid,timestamp with time zone)",
    "end_user_session(text,uuid,timestamp with time zone)",
    "end_user_sessions(text,timestamp with time zone)",
    "error_sqlstate(text)",
    "exchange_code(text,text,text,text,text,text,timestamp with time zone,text)",
    "exchange_codes(text[],text[],text[],text[],text[],text[],timestamp with time zone,text[])",
    "exchange_token(text,text,uuid,uuid,text,text,text,text,uuid,timestamp with time zone)",
    "get_authorization_request(text,timestamp with time zone)",
    "get_client(text,timestamp with time zone)",
    "get_device_authorization(text,timestamp with time zone)",
    "get_session(text,timestamp with time zone)",
    "introspect(text,text,text,uuid,uuid,uuid,timestamp with time zone)",
    "issue_code(text,text,text[],jsonb,timestamp with time zone)",
    "list_connected_apps(text,timestamp with time zone)",
    "list_user_sessions(text,timestamp with time zone)",
    "post_logout_redirect(text,text,text,timestamp with time zone)",
    "poll_device_authorization(text,text,text,timestamp with time zone,text)",
    "read_registration(text,text,timestamp with time zone)",
    "record_client_jwks_failure(text,text,text,timestamp with time zone,timestamp with time zone)",
    "record_client_document_failure(text,text,timestamp with time zone,timestamp with time zone,boolean)",
    "register_client(jsonb,timestamp with time zone)",
    "revocations(timestamp with time zone,timestamp with time zone)",
    "revoke_connected_app(text,uuid,timestamp with time zone)",
    "revoke_token(text,text,text,uuid,uuid,uuid,text,timestamp with time zone,timestamp with time zone)",
    "rotate_refresh_token(text,text,text,text,text,timestamp with time zone,text)",
    "rotate_refresh_tokens(text[],text[],text[],text[],text[],timestamp with time zone,text[])",
    "take_events(text,text,interval,integer,timestamp with time zone)",
    "acknowledge_events(text,text,text,timestamp with time zone)",
    "settings()",
    "signing_keys(timestamp with time zone)",
    "start_session(text,text,text,timestamp with time zone,text[],jsonb,interval,timestamp with time zone)",
    "store_client_jwks(text,text,jsonb,timestamp with time zone,timestamp with time zone,timestamp with time zone)",
    "store_client_document(text,jsonb,timestamp with time zone,timestamp with time zone,timestamp with time zone)",
    "update_registration(text,text,jsonb,timestamp with time zone)",
    "userinfo(uuid,uuid,uuid,timestamp with time zone)",
    // The upstream provider's sealed tokens (sql/upstream_tokens.sql).
    "store_upstream_tokens(uuid,uuid,text,bytea,text,timestamp with time zone)",
    "upstream_tokens_for_grant(uuid,timestamp with time zone)",
    "claim_upstream_refresh(uuid,bigint,interval,timestamp with time zone)",
    "release_upstream_refresh(uuid,bigint,timestamp with time zone)",
    "replace_upstream_tokens(uuid,bigint,bytea,text,timestamp with time zone)",
    "forget_upstream_tokens(uuid,bigint,timestamp with time zone)",
    // JWT authorization grants from trusted issuers (sql/assertion_grants.sql).
    "jwt_bearer_grant(text,text,text,text,text,timestamp with time zone)",
    "trusted_issuer_jwks_to_fetch(text,timestamp with time zone)",
    "store_trusted_issuer_jwks(text,text,jsonb,timestamp with time zone,timestamp with time zone,timestamp with time zone)",
    "record_trusted_issuer_jwks_failure(text,text,text,timestamp with time zone,timestamp with time zone)",
];

async fn executable_by(admin: &Client, role: &str) -> BTreeSet<String> {
    column::<String>(
        admin,
        "SELECT p.proname || '(' || coalesce((SELECT string_agg(format_type(t, NULL), ',' ORDER BY i)
                                                   FROM unnest(p.proargtypes) WITH ORDINALITY a(t, i)), '') || ')'
               FROM pg_proc p WHERE p.pronamespace = 'oauth'::regnamespace
                AND has_function_privilege($1, p.oid, 'EXECUTE')",
        &[&role],
    )
    .await
    .into_iter()
    .collect()
}

#[tokio::test]
async fn gateway_login_can_execute_exactly_the_gateway_functions_and_read_no_table() {
    let admin = admin().await;
    let login = gateway_config()
        .get_user()
        .expect("gateway URL names a user")
        .to_owned();
    let member: bool = scalar(
        &admin,
        "SELECT pg_has_role($1, 'oauth_gateway', 'MEMBER')",
        &[&login],
    )
    .await;
    assert!(member, "{login} is a member of oauth_gateway");
    let expected: BTreeSet<String> = GATEWAY_FUNCTIONS.iter().map(|s| s.to_string()).collect();
    assert_eq!(executable_by(&admin, "oauth_gateway").await, expected);
    assert_eq!(executable_by(&admin, &login).await, expected);

    let readable: Vec<String> = column(
        &admin,
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = 'oauth'::regnamespace AND c.relkind IN ('r', 'S', 'v')
                AND (has_table_privilege($1, c.oid, 'SELECT') OR has_table_privilege($1, c.oid, 'INSERT')
                     OR has_table_privilege($1, c.oid, 'UPDATE') OR has_table_privilege($1, c.oid, 'DELETE'))",
        &[&login],
    )
    .await;
    assert!(
        readable.is_empty(),
        "gateway can touch tables: {readable:?}"
    );

    let gw = gateway().await;
    for table in [
        "clients",
        "grants",
        "codes",
        "refresh_families",
        "refresh_tokens",
        "authorization_requests",
        "events",
        "settings",
        "default_settings",
        "device_authorizations",
        "token_exchange_policies",
        "client_documents",
        "resources",
        "browser_sessions",
        "signing_keys",
    ] {
        assert_sqlstate(
            gw.query(&format!("SELECT * FROM oauth.{table}"), &[]).await,
            "42501",
            table,
        );
    }
    for call in [
        "SELECT * FROM oauth.create_client('x', '{https://a.example/cb}', '{mcp}')",
        "SELECT oauth.configure(issuer => 'https://evil.example')",
        "SELECT oauth.delete_client('x')",
        "SELECT oauth.revoke_grant(gen_random_uuid())",
        "SELECT * FROM oauth.list_clients()",
        "SELECT * FROM oauth.list_user_grants('u')",
        "SELECT oauth.rotate_client_secret('x')",
        "SELECT oauth.random_token(32)",
        "SELECT oauth.token_hash('x')",
        "SELECT oauth._revoke_grant(gen_random_uuid(), 'x', now())",
        "SELECT oauth._settings()",
        "SELECT oauth.set_token_exchange_policy('x', '{a}', '{b}')",
        "SELECT oauth.remove_token_exchange_policy('x')",
        "SELECT oauth.add_resource('https://evil.example/mcp')",
        "SELECT oauth.remove_resource('https://mcp.example/mcp')",
        "SELECT oauth.random_user_code()",
        "SELECT oauth.add_signing_key('k', 'ES256', '{}', '\\x00', 'x')",
        "SELECT oauth.promote_signing_key('k')",
        "SELECT oauth.drop_signing_key('k', true)",
        "SELECT * FROM oauth.list_signing_keys()",
    ] {
        assert_sqlstate(gw.query(call, &[]).await, "42501", call);
    }
    // And what it is granted works.
    gw.query_one("SELECT oauth.settings()", &[])
        .await
        .expect("settings()");
}

#[tokio::test]
async fn oauth_admin_gets_the_application_functions_and_reads_no_secret() {
    let admin = admin().await;
    let functions = executable_by(&admin, "oauth_admin").await;
    for f in [
        "configure(text,interval,interval,interval,interval,text[],text[],boolean,interval,interval,interval,boolean,boolean,interval,boolean,boolean)",
        "create_client(text,text[],text[],text,text[],text,text[],jsonb,timestamp with time zone)",
        "update_client(text,text,text[],text[],text[],text[],jsonb,timestamp with time zone)",
        "rotate_client_secret(text,timestamp with time zone)",
        "delete_client(text,timestamp with time zone)",
        "list_clients()",
        "list_user_grants(text)",
        "revoke_grant(uuid,text,timestamp with time zone)",
        "cleanup(timestamp with time zone,integer)",
        "issue_code(text,text,text[],jsonb,timestamp with time zone)",
        "add_resource(text,timestamp with time zone)",
        "remove_resource(text)",
        "add_signing_key(text,text,jsonb,bytea,text,interval,timestamp with time zone)",
        "promote_signing_key(text,timestamp with time zone)",
        "drop_signing_key(text,boolean,timestamp with time zone)",
        "list_signing_keys(timestamp with time zone)",
        "add_trusted_issuer(text,text,text[],text[],jsonb,text,text[],text[],text,text[],timestamp with time zone,timestamp with time zone)",
        "update_trusted_issuer(text,text[],text[],jsonb,text,text[],text[],text,text[],timestamp with time zone,timestamp with time zone)",
        "remove_trusted_issuer(text,timestamp with time zone)",
        "list_trusted_issuers()",
    ] {
        assert!(
            functions.contains(f),
            "oauth_admin lacks {f}: {functions:?}"
        );
    }
    for f in [
        "exchange_code",
        "rotate_refresh_token",
        "rotate_refresh_tokens",
        "register_client",
        "random_token",
        "_revoke_grant",
        "declare_resources",
        "jwt_bearer_grant",
    ] {
        assert!(
            !functions.iter().any(|g| g.starts_with(&format!("{f}("))),
            "oauth_admin may call {f}"
        );
    }
    let secret_visible: bool = scalar(
        &admin,
        "SELECT has_column_privilege('oauth_admin', 'oauth.clients', 'secret_hash', 'SELECT')",
        &[],
    )
    .await;
    assert!(!secret_visible);
}

#[tokio::test]
async fn a_role_outside_oauth_gateway_can_call_nothing_and_read_nothing() {
    let admin = admin().await;
    let role = unique("outsider");
    admin
        .batch_execute(&format!("CREATE ROLE {role} NOLOGIN"))
        .await
        .unwrap();
    let outsider = connect(&admin_config()).await;
    outsider
        .batch_execute(&format!("SET ROLE {role}"))
        .await
        .unwrap();
    let client = confidential_client(&admin).await;
    for call in [
        "SELECT oauth.settings()",
        "SELECT oauth.begin_authorization('{}')",
        "SELECT oauth.exchange_code('a', 'b', 'c', 'd', 'e', NULL)",
        "SELECT oauth.rotate_refresh_token('a', 'b', 'c', NULL, NULL)",
        "SELECT oauth.register_client('{}')",
        "SELECT oauth.revoke_token('a', 'b', 'c', NULL, NULL)",
        "SELECT oauth.introspect('a', 'b', 'c', NULL, NULL)",
        "SELECT oauth.userinfo(gen_random_uuid(), NULL)",
        "SELECT oauth.get_client('a')",
        "SELECT oauth.issue_code('a', 'b')",
        "SELECT oauth.random_token(32)",
        "SELECT * FROM oauth.clients",
        "SELECT * FROM oauth.grants",
        "SELECT * FROM oauth.refresh_families",
    ] {
        assert_sqlstate(outsider.query(call, &[]).await, "42501", call);
    }
    // Every user-facing function is SECURITY DEFINER with a pinned search_path.
    let unpinned: Vec<String> = column(
        &admin,
        "SELECT proname FROM pg_proc WHERE pronamespace = 'oauth'::regnamespace AND prosecdef
                AND NOT coalesce(proconfig @> '{\"search_path=pg_catalog, pg_temp\"}', false)",
        &[],
    )
    .await;
    assert!(
        unpinned.is_empty(),
        "SECURITY DEFINER without pinned search_path: {unpinned:?}"
    );
    for f in GATEWAY_FUNCTIONS
        .iter()
        .filter(|f| !f.starts_with("error_sqlstate"))
    {
        let name = f.split('(').next().unwrap();
        let definer: bool = scalar(
            &admin,
            "SELECT bool_and(prosecdef) FROM pg_proc WHERE pronamespace = 'oauth'::regnamespace AND proname = $1",
            &[&name],
        )
        .await;
        assert!(definer, "{name} is SECURITY DEFINER");
    }
    let _ = client;
    drop(outsider);
    admin
        .batch_execute(&format!("DROP ROLE {role}"))
        .await
        .unwrap();
}
