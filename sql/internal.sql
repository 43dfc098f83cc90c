-- Internal helpers. Not granted to anyone: they run inside the SECURITY DEFINER API functions.

-- plpgsql rather than SQL for this and the other hot helpers: a non-inlined SQL function is parsed
-- and planned on every call, a plpgsql one caches its plans per session.
CREATE FUNCTION oauth._settings() RETURNS oauth.settings
LANGUAGE plpgsql STABLE PARALLEL SAFE
AS $$
DECLARE
    configured oauth.settings;
BEGIN
    SELECT * INTO configured FROM oauth.settings;
    IF NOT FOUND THEN
        SELECT * INTO configured FROM oauth.default_settings;
    END IF;
    RETURN configured;
END
$$;


-- Grant types a client may be registered for. Token exchange (RFC 8693) is not among them: a client
-- may exchange tokens only under an explicit policy (oauth.set_token_exchange_policy).
CREATE FUNCTION oauth._grant_types_supported() RETURNS text[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT '{authorization_code,refresh_token,client_credentials,urn:ietf:params:oauth:grant-type:device_code}'::text[] $$;

-- The SQLSTATE (class OA) of each RFC 6749 / 7591 error, so callers map errors without parsing text.
CREATE FUNCTION oauth.error_sqlstate(error text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $$
    SELECT CASE error
        WHEN 'invalid_request' THEN 'OA400'
        WHEN 'invalid_client' THEN 'OA401'
        WHEN 'invalid_grant' THEN 'OA402'
        WHEN 'unauthorized_client' THEN 'OA403'
        WHEN 'unsupported_grant_type' THEN 'OA404'
        WHEN 'invalid_scope' THEN 'OA405'
        WHEN 'invalid_target' THEN 'OA406'
        WHEN 'access_denied' THEN 'OA407'
        WHEN 'invalid_client_metadata' THEN 'OA408'
        WHEN 'invalid_redirect_uri' THEN 'OA409'
        WHEN 'unsupported_response_type' THEN 'OA410'
        WHEN 'not_found' THEN 'OA411'
        WHEN 'invalid_token' THEN 'OA412'
    END
$$;

CREATE FUNCTION oauth._raise(error text, description text) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = oauth.error_sqlstate(error), MESSAGE = description, HINT = error;
END
$$;

CREATE FUNCTION oauth._error(error text, description text) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN pg_catalog.jsonb_build_object('error', error, 'error_description', description);
END
$$;

CREATE FUNCTION oauth._event(
    kind text, client_id text, user_id text, grant_id uuid, family_id uuid, detail jsonb, now timestamptz
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    INSERT INTO oauth.events (occurred_at, kind, client_id, user_id, grant_id, family_id, detail)
    VALUES (now, kind, client_id, user_id, grant_id, family_id, coalesce(detail, '{}'));
END
$$;

-- A token response's audit event, unless the deployment turned them off (record_token_events).
CREATE FUNCTION oauth._tokens_issued(
    client_id text, user_id text, grant_id uuid, family_id uuid, grant_type text, with_refresh boolean,
    now timestamptz
) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    IF (oauth._settings()).record_token_events THEN
        PERFORM oauth._event('tokens_issued', client_id, user_id, grant_id, family_id,
                             pg_catalog.jsonb_build_object('grant_type', grant_type,
                                                           'refresh_token', with_refresh), now);
    END IF;
END
$$;

CREATE FUNCTION oauth._scope_string(scopes text[]) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN pg_catalog.array_to_string(scopes, ' ');
END
$$;

-- The scopes a token request asks for, resolved against what the client may have: the requested
-- ones when all are allowed, else the configured defaults the client is allowed. `problem` is set
-- (invalid_scope) when the request is malformed, asks for a scope outside `allowed`, or resolves
-- to nothing.
CREATE FUNCTION oauth._resolve_scopes(scope text, allowed text[], OUT scopes text[], OUT problem jsonb)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    scopes := oauth.parse_scope(scope);
    IF scopes IS NULL THEN
        problem := oauth._error('invalid_scope', 'scope is malformed');
    ELSIF pg_catalog.cardinality(scopes) = 0 THEN
        SELECT coalesce(pg_catalog.array_agg(s), '{}') INTO scopes
          FROM pg_catalog.unnest((oauth._settings()).default_scopes) s WHERE s = ANY (allowed);
        IF pg_catalog.cardinality(scopes) = 0 THEN
            problem := oauth._error('invalid_scope', 'scope is required');
        END IF;
    ELSIF NOT scopes <@ allowed THEN
        problem := oauth._error('invalid_scope', pg_catalog.format('scope not allowed: %s',
            (SELECT pg_catalog.string_agg(s, ' ') FROM pg_catalog.unnest(scopes) s WHERE NOT s = ANY (allowed))));
    END IF;
END
$$;

-- The RFC 8707 resource a request ends up with, or why it cannot have one (invalid_target).
-- A request that names none, from a client whose registration allows exactly one resource, gets
-- that one; a client restricted to several must name one. Either way a client restricted to some
-- resources never receives a token without an audience, to which a gateway would give its default.
-- A request that names none from any other client gets the one resource this server lists, when
-- it lists exactly one (RFC 8707 §2 lets a server use a default): claude.ai sends no resource, and
-- a token without an audience would be refused by the one MCP server it is meant for.
-- A named resource is taken in the spelling this server lists it with (oauth._listed_resource:
-- "https://host" for "https://host/", Claude Code's bare origin for the one resource under it),
-- and must be listed, or be one the client is restricted to, once this server lists any
-- (oauth.resources): a token for a resource nobody here serves is refused where it is presented.
CREATE FUNCTION oauth._resolve_target(requested text, allowed_resources text[], OUT target text, OUT problem jsonb)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    listed text;
BEGIN
    target := requested;
    IF target IS NULL AND allowed_resources IS NOT NULL THEN
        IF pg_catalog.cardinality(allowed_resources) <> 1 THEN
            problem := oauth._error('invalid_target', 'resource is required: this client may ask only for particular resources');
            RETURN;
        END IF;
        target := allowed_resources[1];
    ELSIF target IS NULL THEN
        SELECT pg_catalog.min(r.resource) INTO target FROM oauth.resources r HAVING pg_catalog.count(*) = 1;
        RETURN;
    END IF;
    IF oauth.resource_problem(target) IS NOT NULL THEN
        problem := oauth._error('invalid_target', oauth.resource_problem(target));
        RETURN;
    END IF;
    listed := oauth._listed_resource(target);
    IF allowed_resources IS NOT NULL THEN
        IF NOT oauth.resource_key(coalesce(listed, target)) IN (
                SELECT oauth.resource_key(a) FROM pg_catalog.unnest(allowed_resources) a) THEN
            problem := oauth._error('invalid_target', 'resource not allowed for this client');
            RETURN;
        END IF;
    ELSIF listed IS NULL AND EXISTS (SELECT 1 FROM oauth.resources) THEN
        problem := oauth._error('invalid_target', 'resource is not one this server issues tokens for');
        RETURN;
    END IF;
    target := coalesce(listed, target);
END
$$;

-- The client row when client_id/secret authenticate it, else NULL (oauth._client_authentication,
-- which also says why). Volatile: a private_key_jwt assertion is used up by authenticating.
CREATE FUNCTION oauth._authenticate_client(client_id text, client_secret text, now timestamptz)
RETURNS oauth.clients
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN (oauth._client_authentication(client_id, client_secret, now)).client;
END
$$;

-- The client that client_id/secret authenticate, when it may use `grant_type`; otherwise `problem`
-- (invalid_client or unauthorized_client). How every token-endpoint function starts.
CREATE FUNCTION oauth._client_for_grant(
    client_id text, client_secret text, grant_type text, now timestamptz,
    OUT client oauth.clients, OUT problem jsonb
)
LANGUAGE plpgsql
AS $$
DECLARE
    authenticated record;
BEGIN
    authenticated := oauth._client_authentication(client_id, client_secret, now);
    client := authenticated.client;
    problem := authenticated.problem;
    IF problem IS NULL AND NOT grant_type = ANY (client.grant_types) THEN
        problem := oauth._error('unauthorized_client', pg_catalog.format('client may not use the %s grant', grant_type));
    END IF;
END
$$;

-- RFC 9449: a token request's DPoP key (the thumbprint of the key whose proof the gateway checked,
-- NULL without a proof) is usable here, or the problem: a client registered with
-- dpop_bound_access_tokens gets no token without one (§5.2).
CREATE FUNCTION oauth._dpop_problem(client oauth.clients, dpop_jkt text) RETURNS jsonb
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN dpop_jkt IS NOT NULL AND dpop_jkt !~ '^[A-Za-z0-9_-]{43}$' THEN
            oauth._error('invalid_dpop_proof', 'dpop_jkt must be a SHA-256 JWK thumbprint (RFC 7638)')
        WHEN dpop_jkt IS NOT NULL AND NOT (oauth._settings()).dpop_supported THEN
            oauth._error('invalid_dpop_proof', 'this server does not bind tokens to DPoP keys')
        WHEN dpop_jkt IS NULL AND coalesce((client.metadata->>'dpop_bound_access_tokens')::boolean, false) THEN
            oauth._error('invalid_dpop_proof', 'this client''s tokens must be bound to a DPoP key: send a DPoP proof')
    END
$$;

CREATE FUNCTION oauth._notify_revocation(grant_id uuid, family_id uuid) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_catalog.pg_notify('oauth_revocations',
        pg_catalog.jsonb_build_object('grant_id', grant_id, 'family_id', family_id)::text);
END
$$;

-- Revokes one family; true when it was live.
CREATE FUNCTION oauth._revoke_family(family_id uuid, reason text, now timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    family oauth.refresh_families;
BEGIN
    UPDATE oauth.refresh_families f
       SET revoked_at = now, revoked_reason = reason, current_hash = NULL
     WHERE f.family_id = _revoke_family.family_id AND f.revoked_at IS NULL
    RETURNING * INTO family;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM oauth._event('family_revoked', family.client_id, family.user_id, family.grant_id, family.family_id,
                         pg_catalog.jsonb_build_object('reason', reason), now);
    PERFORM oauth._notify_revocation(family.grant_id, family.family_id);
    RETURN true;
END
$$;

-- Revokes a grant, every family under it and its unredeemed codes; true when it was live.
CREATE FUNCTION oauth._revoke_grant(grant_id uuid, reason text, now timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    revoked oauth.grants;
BEGIN
    UPDATE oauth.grants g
       SET revoked_at = now, revoked_reason = reason, updated_at = now
     WHERE g.grant_id = _revoke_grant.grant_id AND g.revoked_at IS NULL
    RETURNING * INTO revoked;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    UPDATE oauth.refresh_families f
       SET revoked_at = now, revoked_reason = reason, current_hash = NULL
     WHERE f.grant_id = revoked.grant_id AND f.revoked_at IS NULL;
    DELETE FROM oauth.codes c WHERE c.grant_id = revoked.grant_id AND c.redeemed_at IS NULL;
    PERFORM oauth._event('grant_revoked', revoked.client_id, revoked.user_id, revoked.grant_id, NULL,
                         pg_catalog.jsonb_build_object('reason', reason), now);
    PERFORM oauth._notify_revocation(revoked.grant_id, NULL);
    RETURN true;
END
$$;

-- Is an access token that names this grant and family still backed by live state?
CREATE FUNCTION oauth._token_live(grant_id uuid, family_id uuid, now timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN EXISTS (
        SELECT 1
          FROM oauth.grants g
          JOIN oauth.clients c ON c.client_id = g.client_id
          LEFT JOIN oauth.refresh_families f ON f.family_id = _token_live.family_id
         WHERE g.grant_id = _token_live.grant_id
           AND g.revoked_at IS NULL
           AND (c.expires_at IS NULL OR c.expires_at > now)
           AND (_token_live.family_id IS NULL OR (f.grant_id = g.grant_id AND f.revoked_at IS NULL)));
END
$$;

-- What the gateway needs to mint tokens after a successful code exchange or rotation.
CREATE FUNCTION oauth._token_response(
    family oauth.refresh_families, props jsonb, auth_time timestamptz, scopes text[],
    nonce text, refresh_token text, now timestamptz
) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN pg_catalog.jsonb_build_object(
        'grant_id', family.grant_id,
        'family_id', family.family_id,
        'user_id', family.user_id,
        'client_id', family.client_id,
        'scope', pg_catalog.array_to_string(scopes, ' '),
        'resource', family.resource,
        'nonce', nonce,
        'auth_time', pg_catalog.floor(pg_catalog.date_part('epoch', auth_time))::bigint,
        'props', props,
        'access_token_ttl', pg_catalog.date_part('epoch', (oauth._settings()).access_token_ttl)::bigint,
        'refresh_token', refresh_token,
        'refresh_expires_in', CASE WHEN refresh_token IS NOT NULL
            THEN pg_catalog.floor(pg_catalog.date_part('epoch', family.expires_at - now))::bigint END);
END
$$;
