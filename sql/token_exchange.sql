-- Token exchange (RFC 8693), opt-in per client: an MCP server that received a user's access token
-- exchanges it for one with a narrower audience and scope, to call another service on the user's
-- behalf. The new token stays bound to the user's grant and family, so revoking them revokes it.

-- Which exchanges a client may perform. No row: none.
CREATE TABLE oauth.token_exchange_policies (
    client_id text PRIMARY KEY REFERENCES oauth.clients ON DELETE CASCADE,
    -- Audiences of the subject tokens this client may present: the resources it serves.
    subject_audiences text[] NOT NULL CHECK (cardinality(subject_audiences) > 0),
    -- Audiences it may obtain tokens for.
    target_audiences text[] NOT NULL CHECK (cardinality(target_audiences) > 0),
    -- Upper bound on the scopes of exchanged tokens; NULL: those of the subject token.
    scopes text[],
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
SELECT pg_catalog.pg_extension_config_dump('oauth.token_exchange_policies', '');

CREATE FUNCTION oauth.set_token_exchange_policy(
    client_id text,
    subject_audiences text[],
    target_audiences text[],
    scopes text[] DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    client oauth.clients;
BEGIN
    SELECT * INTO client FROM oauth.clients c WHERE c.client_id = set_token_exchange_policy.client_id;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such client');
    END IF;
    IF client.token_endpoint_auth_method = 'none' THEN
        PERFORM oauth._raise('invalid_client_metadata', 'token exchange requires a confidential client');
    END IF;
    IF coalesce(cardinality(subject_audiences), 0) = 0 OR array_position(subject_audiences, NULL) IS NOT NULL
       OR coalesce(cardinality(target_audiences), 0) = 0 OR array_position(target_audiences, NULL) IS NOT NULL THEN
        PERFORM oauth._raise('invalid_request', 'subject_audiences and target_audiences must each list at least one audience');
    END IF;
    IF scopes IS NOT NULL AND (array_position(scopes, NULL) IS NOT NULL
                               OR NOT scopes <@ (oauth._settings()).scopes_supported) THEN
        PERFORM oauth._raise('invalid_scope', 'scopes must be supported scope names');
    END IF;
    INSERT INTO oauth.token_exchange_policies AS p (client_id, subject_audiences, target_audiences, scopes,
                                                    created_at, updated_at)
    VALUES (client.client_id, set_token_exchange_policy.subject_audiences, set_token_exchange_policy.target_audiences,
            set_token_exchange_policy.scopes, now, now)
    ON CONFLICT (client_id) DO UPDATE
       SET subject_audiences = EXCLUDED.subject_audiences, target_audiences = EXCLUDED.target_audiences,
           scopes = EXCLUDED.scopes, updated_at = EXCLUDED.updated_at;
    PERFORM oauth._event('token_exchange_policy_set', client.client_id, NULL, NULL, NULL,
                         jsonb_build_object('subject_audiences', to_jsonb(subject_audiences),
                                            'target_audiences', to_jsonb(target_audiences),
                                            'scopes', to_jsonb(scopes)), now);
END
$$;

CREATE FUNCTION oauth.remove_token_exchange_policy(client_id text, now timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM oauth.token_exchange_policies p WHERE p.client_id = remove_token_exchange_policy.client_id;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM oauth._event('token_exchange_policy_removed', remove_token_exchange_policy.client_id, NULL, NULL, NULL,
                         NULL, now);
    RETURN true;
END
$$;

-- The gateway verified the subject token (signature, issuer, expiry) and passes its claims: the
-- grant and family it names, its audience, its scope and its jti. `audience` is the requested
-- target (the RFC 8693 `resource` or `audience` parameter).
CREATE FUNCTION oauth.exchange_token(
    client_id text,
    client_secret text,
    subject_grant_id uuid,
    subject_family_id uuid,
    subject_audience text,
    subject_scope text,
    audience text,
    scope text,
    subject_jti uuid DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    policy oauth.token_exchange_policies;
    subject_scopes text[] := oauth.parse_scope(subject_scope);
    ceiling text[];
    requested text[];
    granted oauth.grants;
BEGIN
    client := oauth._authenticate_client(client_id, client_secret, now);
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_client', 'client authentication failed');
    END IF;
    SELECT * INTO policy FROM oauth.token_exchange_policies p WHERE p.client_id = client.client_id;
    IF NOT FOUND OR client.token_endpoint_auth_method = 'none' THEN
        RETURN oauth._error('unauthorized_client', 'client may not exchange tokens');
    END IF;
    IF subject_grant_id IS NULL OR subject_scopes IS NULL THEN
        RETURN oauth._error('invalid_request', 'subject_token is invalid');
    END IF;
    IF subject_audience IS NULL OR NOT subject_audience = ANY (policy.subject_audiences) THEN
        RETURN oauth._error('invalid_request', 'subject_token was not issued to an audience this client serves');
    END IF;
    IF audience IS NULL THEN
        RETURN oauth._error('invalid_request', 'resource or audience is required');
    END IF;
    IF NOT audience = ANY (policy.target_audiences) THEN
        RETURN oauth._error('invalid_target', 'this client may not obtain tokens for that audience');
    END IF;
    IF NOT oauth._access_token_live(subject_grant_id, subject_family_id, subject_jti, now) THEN
        RETURN oauth._error('invalid_request', 'subject_token has been revoked');
    END IF;

    -- A delegated token never carries more than the subject token, the policy and a non-user grant allow.
    SELECT coalesce(array_agg(s), '{}') INTO ceiling FROM unnest(subject_scopes) s
     WHERE (policy.scopes IS NULL OR s = ANY (policy.scopes)) AND NOT s = ANY (oauth._user_only_scopes());
    requested := oauth.parse_scope(scope);
    IF requested IS NULL THEN
        RETURN oauth._error('invalid_scope', 'scope is malformed');
    END IF;
    IF cardinality(requested) = 0 THEN
        requested := ceiling;
    END IF;
    IF cardinality(requested) = 0 OR NOT requested <@ ceiling THEN
        RETURN oauth._error('invalid_scope', 'scope exceeds what the subject token and the policy allow');
    END IF;

    SELECT * INTO granted FROM oauth.grants g WHERE g.grant_id = subject_grant_id;
    PERFORM oauth._event('token_exchanged', client.client_id, granted.user_id, granted.grant_id, subject_family_id,
                         jsonb_build_object('subject_audience', subject_audience, 'audience', audience,
                                            'scopes', to_jsonb(requested)), now);
    RETURN oauth._access_token_response(granted, subject_family_id, client.client_id, requested, audience, now);
END
$$;
