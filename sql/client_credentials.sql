-- grant_type=client_credentials (RFC 6749 §4.4): a confidential client obtains an access token for
-- itself. No user is involved, so no refresh token, no ID token, and no user-bound scope.

-- Scopes that only make sense with a user behind the token.
CREATE FUNCTION oauth._user_only_scopes() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '{openid,offline_access}'::text[] $$;

-- The client's own live grant, created on first use. Reads first, so the steady state writes nothing.
CREATE FUNCTION oauth._client_grant(client oauth.clients, now timestamptz) RETURNS oauth.grants
LANGUAGE plpgsql
AS $$
DECLARE
    found_grant oauth.grants;
BEGIN
    SELECT * INTO found_grant FROM oauth.grants g
     WHERE g.subject_type = 'client' AND g.user_id = client.client_id AND g.client_id = client.client_id
       AND g.revoked_at IS NULL;
    IF FOUND THEN
        RETURN found_grant;
    END IF;
    INSERT INTO oauth.grants (subject_type, user_id, client_id, scopes, auth_time, created_at, updated_at)
    VALUES ('client', client.client_id, client.client_id, client.allowed_scopes, now, now, now)
    ON CONFLICT (subject_type, user_id, client_id) WHERE revoked_at IS NULL DO NOTHING
    RETURNING * INTO found_grant;
    IF NOT FOUND THEN
        -- A concurrent first use created it.
        SELECT * INTO found_grant FROM oauth.grants g
         WHERE g.subject_type = 'client' AND g.user_id = client.client_id AND g.client_id = client.client_id
           AND g.revoked_at IS NULL;
    ELSE
        PERFORM oauth._event('client_grant_created', client.client_id, NULL, found_grant.grant_id, NULL, NULL, now);
    END IF;
    RETURN found_grant;
END
$$;

CREATE FUNCTION oauth.client_credentials_grant(
    client_id text,
    client_secret text,
    scope text,
    resource text,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    resolved record;
    problem jsonb;
    own_grant oauth.grants;
    token_family oauth.refresh_families;
BEGIN
    client := oauth._authenticate_client(client_id, client_secret, now);
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_client', 'client authentication failed');
    END IF;
    IF client.secret_hash IS NULL THEN
        RETURN oauth._error('unauthorized_client', 'client_credentials requires a confidential client');
    END IF;
    IF NOT 'client_credentials' = ANY (client.grant_types) THEN
        RETURN oauth._error('unauthorized_client', 'client may not use the client credentials grant');
    END IF;
    resolved := oauth._resolve_scopes(scope, client.allowed_scopes);
    IF resolved.problem IS NOT NULL THEN
        RETURN resolved.problem;
    END IF;
    IF resolved.scopes && oauth._user_only_scopes() THEN
        RETURN oauth._error('invalid_scope', 'openid and offline_access need a user; client_credentials has none');
    END IF;
    problem := oauth._target_problem(resource, client.allowed_resources);
    IF problem IS NOT NULL THEN
        RETURN problem;
    END IF;

    own_grant := oauth._client_grant(client, now);
    -- Tokens of this grant belong to no family: revoking the grant (or deleting the client) kills them.
    token_family.grant_id := own_grant.grant_id;
    token_family.client_id := client.client_id;
    token_family.user_id := client.client_id;
    token_family.resource := resource;
    RETURN oauth._token_response(token_family, own_grant.props, own_grant.auth_time, resolved.scopes, NULL, NULL, now)
        || jsonb_build_object('subject_type', 'client');
END
$$;
