-- Privileges, applied last. PUBLIC gets nothing; each role gets exactly the functions it calls.

REVOKE ALL ON ALL TABLES IN SCHEMA oauth FROM PUBLIC;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA oauth FROM PUBLIC;
REVOKE EXECUTE ON ALL FUNCTIONS IN SCHEMA oauth FROM PUBLIC;

GRANT EXECUTE ON FUNCTION
    oauth.settings(),
    oauth.begin_authorization(jsonb, timestamptz),
    oauth.push_authorization_request(text, text, jsonb, timestamptz),
    oauth.exchange_code(text, text, text, text, text, text, timestamptz, text),
    oauth.exchange_codes(text[], text[], text[], text[], text[], text[], timestamptz, text[]),
    oauth.rotate_refresh_token(text, text, text, text, text, timestamptz, text),
    oauth.rotate_refresh_tokens(text[], text[], text[], text[], text[], timestamptz, text[]),
    -- The audit feed's webhook delivery.
    oauth.take_events(text, text, interval, integer, timestamptz),
    oauth.acknowledge_events(text, text, text, timestamptz),
    oauth.register_client(jsonb, timestamptz),
    oauth.revoke_token(text, text, text, uuid, uuid, uuid, text, timestamptz, timestamptz),
    oauth.introspect(text, text, text, uuid, uuid, uuid, timestamptz),
    oauth.userinfo(uuid, uuid, uuid, timestamptz),
    oauth.revocations(timestamptz, timestamptz),
    oauth.get_client(text, timestamptz),
    oauth.read_registration(text, text, timestamptz),
    oauth.update_registration(text, text, jsonb, timestamptz),
    oauth.delete_registration(text, text, timestamptz),
    oauth.client_credentials_grant(text, text, text, text, timestamptz, text),
    oauth.begin_device_authorization(text, text, text, text, timestamptz),
    oauth.poll_device_authorization(text, text, text, timestamptz, text),
    oauth.exchange_token(text, text, uuid, uuid, text, text, text, text, uuid, timestamptz),
    oauth.store_client_document(text, jsonb, timestamptz, timestamptz, timestamptz),
    oauth.client_jwks_to_fetch(text, text, timestamptz),
    oauth.store_client_jwks(text, text, jsonb, timestamptz, timestamptz, timestamptz),
    oauth.record_client_jwks_failure(text, text, text, timestamptz, timestamptz),
    oauth.record_client_document_failure(text, text, timestamptz, timestamptz, boolean),
    -- The built-in consent and device verification pages completes consent on the application's behalf.
    oauth.get_authorization_request(text, timestamptz),
    oauth.issue_code(text, text, text[], jsonb, timestamptz),
    oauth.deny_authorization(text, text, text, timestamptz),
    oauth.get_device_authorization(text, timestamptz),
    oauth.approve_device_authorization(text, text, text[], jsonb, timestamptz),
    oauth.deny_device_authorization(text, timestamptz),
    -- A gateway lists the resources it guards when it starts, and names a token request's resource
    -- as they are listed.
    oauth.declare_resources(text[], timestamptz),
    oauth.canonical_resource(text),
    -- The pages: a vetted client's logo, and the signed-in user's connected apps.
    oauth.client_logo_uri(text, timestamptz),
    oauth.list_connected_apps(text, timestamptz),
    oauth.revoke_connected_app(text, uuid, timestamptz),
    -- Sign-in through an upstream provider: browser sessions and the step after /authorize.
    oauth.start_session(text, text, text, timestamptz, text[], jsonb, interval, timestamptz),
    oauth.get_session(text, timestamptz),
    oauth.end_session(uuid, timestamptz),
    oauth.end_user_session(text, uuid, timestamptz),
    oauth.end_user_sessions(text, timestamptz),
    oauth.list_user_sessions(text, timestamptz),
    oauth.continue_authorization(text, text, text, boolean, boolean, timestamptz),
    oauth.post_logout_redirect(text, text, text, timestamptz),
    -- The upstream provider's tokens, sealed by the gateway (sql/upstream_tokens.sql).
    oauth.store_upstream_tokens(uuid, uuid, text, bytea, text, timestamptz),
    oauth.upstream_tokens_for_grant(uuid, timestamptz),
    oauth.claim_upstream_refresh(uuid, bigint, interval, timestamptz),
    oauth.release_upstream_refresh(uuid, bigint, timestamptz),
    oauth.replace_upstream_tokens(uuid, bigint, bytea, text, timestamptz),
    oauth.forget_upstream_tokens(uuid, bigint, timestamptz),
    -- The shared signing keys, sealed: every gateway loads and reloads them.
    oauth.signing_keys(timestamptz),
    -- JWT authorization grants from trusted issuers (sql/assertion_grants.sql) and their keys.
    oauth.jwt_bearer_grant(text, text, text, text, text, timestamptz),
    oauth.trusted_issuer_jwks_to_fetch(text, timestamptz),
    oauth.store_trusted_issuer_jwks(text, text, jsonb, timestamptz, timestamptz, timestamptz),
    oauth.record_trusted_issuer_jwks_failure(text, text, text, timestamptz, timestamptz),
    oauth.error_sqlstate(text)
TO oauth_gateway;

GRANT EXECUTE ON FUNCTION
    oauth.settings(),
    oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean, interval, interval,
                    interval, boolean, boolean, interval, boolean, boolean),
    oauth.create_client(text, text[], text[], text, text[], text, text[], jsonb, timestamptz),
    oauth.update_client(text, text, text[], text[], text[], text[], jsonb, timestamptz),
    oauth.rotate_client_secret(text, timestamptz),
    oauth.delete_client(text, timestamptz),
    oauth.list_clients(),
    oauth.get_client(text, timestamptz),
    oauth.get_authorization_request(text, timestamptz),
    oauth.issue_code(text, text, text[], jsonb, timestamptz),
    oauth.deny_authorization(text, text, text, timestamptz),
    oauth.get_device_authorization(text, timestamptz),
    oauth.approve_device_authorization(text, text, text[], jsonb, timestamptz),
    oauth.deny_device_authorization(text, timestamptz),
    oauth.set_token_exchange_policy(text, text[], text[], text[], timestamptz),
    oauth.remove_token_exchange_policy(text, timestamptz),
    oauth.list_user_grants(text),
    oauth.revoke_grant(uuid, text, timestamptz),
    oauth.client_logo_uri(text, timestamptz),
    oauth.list_connected_apps(text, timestamptz),
    oauth.revoke_connected_app(text, uuid, timestamptz),
    oauth.cleanup(timestamptz, integer),
    oauth.add_resource(text, timestamptz),
    oauth.remove_resource(text),
    oauth.end_session(uuid, timestamptz),
    oauth.end_user_session(text, uuid, timestamptz),
    oauth.end_user_sessions(text, timestamptz),
    oauth.list_user_sessions(text, timestamptz),
    oauth.list_events(bigint, text, text, timestamptz, timestamptz, integer),
    oauth.take_events(text, text, interval, integer, timestamptz),
    oauth.acknowledge_events(text, text, text, timestamptz),
    oauth.add_signing_key(text, text, jsonb, bytea, text, interval, timestamptz),
    oauth.promote_signing_key(text, timestamptz),
    oauth.drop_signing_key(text, boolean, timestamptz),
    oauth.list_signing_keys(timestamptz),
    oauth.signing_keys(timestamptz),
    oauth.add_trusted_issuer(text, text, text[], text[], jsonb, text, text[], text[], text, text[], timestamptz,
                             timestamptz),
    oauth.update_trusted_issuer(text, text[], text[], jsonb, text, text[], text[], text, text[], timestamptz,
                                timestamptz),
    oauth.remove_trusted_issuer(text, timestamptz),
    oauth.list_trusted_issuers(),
    oauth.error_sqlstate(text)
TO oauth_admin;

-- Applications read consent and audit rows in their own queries (secret digests stay hidden).
GRANT SELECT ON oauth.grants, oauth.events, oauth.token_exchange_policies, oauth.client_documents,
    oauth.client_jwks, oauth.resources, oauth.event_consumers, oauth.trusted_issuers, oauth.trusted_issuer_jwks
    TO oauth_admin;
GRANT SELECT (client_id, client_name, redirect_uris, allowed_scopes, grant_types, token_endpoint_auth_method,
              application_type, allowed_resources, metadata, registered_dynamically, created_at, updated_at,
              expires_at)
    ON oauth.clients TO oauth_admin;
GRANT SELECT (session_id, user_id, upstream_issuer, upstream_subject, auth_time, amr, claims, created_at, expires_at,
              ended_at)
    ON oauth.browser_sessions TO oauth_admin;

-- scheduled cleanup: a gateway holding the cleanup advisory lock runs it (oauth_admin keeps it too).
GRANT EXECUTE ON FUNCTION oauth.cleanup(timestamptz, integer) TO oauth_gateway;
