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

-- What the gateway needs to mint an access token that comes without a refresh token
-- (client_credentials, token exchange): the grant's subject and props, issued to `client_id` for
-- `scopes` and `resource`, bound to `family_id` when there is one.
CREATE FUNCTION oauth._access_token_response(
    granted oauth.grants, family_id uuid, client_id text, scopes text[], resource text, now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    bound oauth.refresh_families;
BEGIN
    bound.family_id := family_id;
    bound.grant_id := granted.grant_id;
    bound.client_id := client_id;
    bound.user_id := granted.user_id;
    bound.resource := resource;
    RETURN oauth._token_response(bound, granted.props, granted.auth_time, scopes, NULL, NULL, now)
        || pg_catalog.jsonb_build_object('subject_type', granted.subject_type);
END
$$;

CREATE FUNCTION oauth.client_credentials_grant(
    client_id text,
    client_secret text,
    scope text,
    resource text,
    now timestamptz DEFAULT now(),
    dpop_jkt text DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    authorized record;
    client oauth.clients;
    resolved record;
    target record;
    own_grant oauth.grants;
BEGIN
    authorized := oauth._client_for_grant(client_id, client_secret, 'client_credentials', now);
    IF authorized.problem IS NOT NULL THEN
        RETURN authorized.problem;
    END IF;
    client := authorized.client;
    -- Evaluated only where DPoP can matter, so the common request pays nothing for it.
    IF (dpop_jkt IS NOT NULL OR client.metadata ? 'dpop_bound_access_tokens')
       AND oauth._dpop_problem(client, dpop_jkt) IS NOT NULL THEN
        RETURN oauth._dpop_problem(client, dpop_jkt);
    END IF;
    resolved := oauth._resolve_scopes(scope, client.allowed_scopes);
    IF resolved.problem IS NOT NULL THEN
        RETURN resolved.problem;
    END IF;
    IF resolved.scopes && oauth._user_only_scopes() THEN
        RETURN oauth._error('invalid_scope', 'openid and offline_access need a user; client_credentials has none');
    END IF;
    target := oauth._resolve_target(resource, client.allowed_resources);
    IF target.problem IS NOT NULL THEN
        RETURN target.problem;
    END IF;

    own_grant := oauth._client_grant(client, now);
    PERFORM oauth._tokens_issued(client.client_id, own_grant.user_id, own_grant.grant_id, NULL,
                                 'client_credentials', false, now);
    -- Tokens of this grant belong to no family: revoking the grant (or deleting the client) kills them.
    RETURN oauth._access_token_response(own_grant, NULL, client.client_id, resolved.scopes, target.target, now);
END
$$;
