-- oauth_provider 0.2.0 → 0.3.0. Every row stays; tokens, codes and secrets issued by 0.2.0 keep
-- working. Each section below is one change, with every function it touches written in full (the
-- same text as sql/*.sql), so that an updated database equals a fresh 0.3.0 install.

\echo Use "ALTER EXTENSION oauth_provider UPDATE TO '0.3.0'" to load this file. \quit

-- id_token_signed_response_alg (issue 10 item 5)
-- Each client's ID tokens are signed in its registered id_token_signed_response_alg (OIDC
-- Registration §2; RS256 when it names none): registration, metadata documents and the
-- administrator's metadata refuse anything but RS256, ES256 and EdDSA (the rule is in
-- oauth._registration_fields, in its shared section), and the code exchange and the device poll
-- tell the gateway the algorithm.

-- OIDC Registration §2 id_token_signed_response_alg, when the metadata names one: an asymmetric
-- algorithm the gateway can sign with. "none" would let anyone forge a client's ID tokens. One
-- rule for registrations, metadata documents and administrators' metadata.
CREATE FUNCTION oauth._id_token_alg_problem(metadata jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF metadata ? 'id_token_signed_response_alg'
       AND (jsonb_typeof(metadata->'id_token_signed_response_alg') <> 'string'
            OR (metadata->>'id_token_signed_response_alg') NOT IN ('RS256', 'ES256', 'EdDSA')) THEN
        RETURN oauth._error('invalid_client_metadata',
            'id_token_signed_response_alg must be one of RS256, ES256, EdDSA');
    END IF;
    RETURN NULL;
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._id_token_alg_problem(jsonb) FROM PUBLIC;

-- The algorithm of a client's ID tokens: RS256 when it named none (OIDC Registration §2), and for
-- metadata an administrator stored before 0.3.0 checked it.
CREATE FUNCTION oauth._id_token_alg(metadata jsonb) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF metadata ? 'id_token_signed_response_alg' AND oauth._id_token_alg_problem(metadata) IS NULL THEN
        RETURN metadata->>'id_token_signed_response_alg';
    END IF;
    RETURN 'RS256';
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._id_token_alg(jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oauth.create_client(
    client_name text,
    redirect_uris text[],
    allowed_scopes text[],
    token_endpoint_auth_method text DEFAULT 'client_secret_basic',
    grant_types text[] DEFAULT '{authorization_code,refresh_token}',
    application_type text DEFAULT 'web',
    allowed_resources text[] DEFAULT NULL,
    metadata jsonb DEFAULT '{}',
    now timestamptz DEFAULT now()
) RETURNS TABLE (client_id text, client_secret text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem jsonb;
    new_id text := oauth.random_token(16);
    secret text;
BEGIN
    IF client_name IS NULL OR length(client_name) NOT BETWEEN 1 AND 200 THEN
        PERFORM oauth._raise('invalid_client_metadata', 'client_name must be 1 to 200 characters');
    END IF;
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        PERFORM oauth._raise('invalid_client_metadata', 'metadata must be a JSON object');
    END IF;
    problem := coalesce(oauth._id_token_alg_problem(metadata),
                        oauth._client_problem(redirect_uris, allowed_scopes, grant_types, token_endpoint_auth_method,
                                              application_type, allowed_resources),
                        oauth._client_keys_problem(token_endpoint_auth_method, metadata));
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise(problem->>'error', problem->>'error_description');
    END IF;
    -- A private_key_jwt client's keys are in its metadata (jwks or jwks_uri); it has no secret.
    IF token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post') THEN
        secret := oauth.random_token(32);
    END IF;
    INSERT INTO oauth.clients (client_id, secret_hash, client_name, redirect_uris, allowed_scopes, grant_types,
                               token_endpoint_auth_method, application_type, allowed_resources, metadata,
                               created_at, updated_at)
    VALUES (new_id, oauth.token_hash(secret), create_client.client_name, create_client.redirect_uris,
            create_client.allowed_scopes, create_client.grant_types, create_client.token_endpoint_auth_method,
            create_client.application_type, create_client.allowed_resources, create_client.metadata, now, now);
    PERFORM oauth._event('client_created', new_id, NULL, NULL, NULL, NULL, now);
    client_id := new_id;
    client_secret := secret;
    RETURN NEXT;
END
$$;

-- NULL arguments keep the current value.
CREATE OR REPLACE FUNCTION oauth.update_client(
    client_id text,
    client_name text DEFAULT NULL,
    redirect_uris text[] DEFAULT NULL,
    allowed_scopes text[] DEFAULT NULL,
    grant_types text[] DEFAULT NULL,
    allowed_resources text[] DEFAULT NULL,
    metadata jsonb DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    existing oauth.clients;
    problem jsonb;
BEGIN
    SELECT * INTO existing FROM oauth.clients c WHERE c.client_id = update_client.client_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such client');
    END IF;
    existing.client_name := coalesce(update_client.client_name, existing.client_name);
    existing.redirect_uris := coalesce(update_client.redirect_uris, existing.redirect_uris);
    existing.allowed_scopes := coalesce(update_client.allowed_scopes, existing.allowed_scopes);
    existing.grant_types := coalesce(update_client.grant_types, existing.grant_types);
    existing.allowed_resources := coalesce(update_client.allowed_resources, existing.allowed_resources);
    existing.metadata := coalesce(update_client.metadata, existing.metadata);
    IF length(existing.client_name) NOT BETWEEN 1 AND 200 THEN
        PERFORM oauth._raise('invalid_client_metadata', 'client_name must be 1 to 200 characters');
    END IF;
    IF jsonb_typeof(existing.metadata) <> 'object' THEN
        PERFORM oauth._raise('invalid_client_metadata', 'metadata must be a JSON object');
    END IF;
    problem := coalesce(oauth._id_token_alg_problem(existing.metadata),
                        oauth._client_problem(existing.redirect_uris, existing.allowed_scopes, existing.grant_types,
                                              existing.token_endpoint_auth_method, existing.application_type,
                                              existing.allowed_resources),
                        oauth._client_keys_problem(existing.token_endpoint_auth_method, existing.metadata));
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise(problem->>'error', problem->>'error_description');
    END IF;
    UPDATE oauth.clients c
       SET client_name = existing.client_name, redirect_uris = existing.redirect_uris,
           allowed_scopes = existing.allowed_scopes, grant_types = existing.grant_types,
           allowed_resources = existing.allowed_resources, metadata = existing.metadata, updated_at = now
     WHERE c.client_id = update_client.client_id;
    PERFORM oauth._event('client_updated', update_client.client_id, NULL, NULL, NULL, NULL, now);
END
$$;

CREATE OR REPLACE FUNCTION oauth.exchange_code(
    client_id text,
    client_secret text,
    code text,
    code_verifier text,
    redirect_uri text,
    resource text,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    authorized record;
    client oauth.clients;
    redeemed oauth.codes;
    previous oauth.codes;
    granted oauth.grants;
    opened record;
    -- Named before redemption so that the one redeeming statement also records what it will issue.
    new_family_id uuid := gen_random_uuid();
BEGIN
    authorized := oauth._client_for_grant(client_id, client_secret, 'authorization_code', now);
    IF authorized.problem IS NOT NULL THEN
        RETURN authorized.problem;
    END IF;
    client := authorized.client;
    IF code IS NULL OR code = '' THEN
        RETURN oauth._error('invalid_request', 'code is required');
    END IF;
    IF code_verifier IS NULL OR code_verifier = '' THEN
        RETURN oauth._error('invalid_request', 'code_verifier is required (PKCE)');
    END IF;

    -- Single use is decided here, by one statement: of concurrent redemptions exactly one sees
    -- redeemed_at IS NULL. A failed check below still burns the code, so a verifier cannot be guessed.
    UPDATE oauth.codes c SET redeemed_at = now, family_id = new_family_id
     WHERE c.code_hash = oauth.token_hash(exchange_code.code) AND c.redeemed_at IS NULL
    RETURNING * INTO redeemed;
    IF NOT FOUND THEN
        SELECT * INTO previous FROM oauth.codes c WHERE c.code_hash = oauth.token_hash(exchange_code.code);
        IF FOUND AND previous.client_id = client.client_id THEN
            -- RFC 6749 §4.1.2: a replayed code revokes what it issued.
            IF previous.family_id IS NOT NULL THEN
                PERFORM oauth._revoke_family(previous.family_id, 'code_replayed', now);
            END IF;
            PERFORM oauth._event('code_replayed', previous.client_id, previous.user_id, previous.grant_id,
                                 previous.family_id, NULL, now);
        END IF;
        RETURN oauth._error('invalid_grant', 'code is invalid, expired or already used');
    END IF;
    IF redeemed.client_id <> client.client_id THEN
        RETURN oauth._error('invalid_grant', 'code was issued to another client');
    END IF;
    IF redeemed.expires_at <= now THEN
        RETURN oauth._error('invalid_grant', 'code is invalid, expired or already used');
    END IF;
    IF redeemed.redirect_uri_sent OR exchange_code.redirect_uri IS NOT NULL THEN
        IF exchange_code.redirect_uri IS DISTINCT FROM redeemed.redirect_uri THEN
            RETURN oauth._error('invalid_grant', 'redirect_uri does not match the authorization request');
        END IF;
    END IF;
    IF NOT oauth.pkce_s256_matches(code_verifier, redeemed.code_challenge) THEN
        RETURN oauth._error('invalid_grant', 'code_verifier does not match the code_challenge');
    END IF;
    -- RFC 8707 §2.2: the token request may repeat the authorized resource, never add one; in any
    -- spelling this server lists it under (Claude Code repeats the bare origin it authorized with).
    IF exchange_code.resource IS NOT NULL
       AND oauth.canonical_resource(exchange_code.resource) IS DISTINCT FROM redeemed.resource THEN
        RETURN oauth._error('invalid_target', 'resource was not part of the authorization request');
    END IF;
    SELECT * INTO granted FROM oauth.grants g WHERE g.grant_id = redeemed.grant_id AND g.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_grant', 'the grant behind this code has been revoked');
    END IF;

    opened := oauth._open_family(redeemed, 'refresh_token' = ANY (client.grant_types), now);
    -- The client's row is at hand here, so the gateway learns how to sign the ID token without
    -- another query (and rotation, which issues none, never asks).
    RETURN oauth._token_response(opened.family, granted.props, granted.auth_time, redeemed.scopes,
                                 redeemed.nonce, opened.refresh_token, now)
        || jsonb_build_object('id_token_signed_response_alg', oauth._id_token_alg(client.metadata));
END
$$;

-- RFC 8628 §3.4–3.5: the device polls. Answers authorization_pending, slow_down, access_denied,
-- expired_token, or, once approved, the tokens (exactly once).
CREATE OR REPLACE FUNCTION oauth.poll_device_authorization(
    client_id text,
    client_secret text,
    device_code text,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    authorized record;
    client oauth.clients;
    polled record;
    issued_from oauth.codes;
    granted oauth.grants;
    opened record;
    new_family_id uuid := gen_random_uuid();
BEGIN
    authorized := oauth._client_for_grant(client_id, client_secret, 'urn:ietf:params:oauth:grant-type:device_code', now);
    IF authorized.problem IS NOT NULL THEN
        RETURN authorized.problem;
    END IF;
    client := authorized.client;
    IF device_code IS NULL OR device_code = '' THEN
        RETURN oauth._error('invalid_request', 'device_code is required');
    END IF;

    -- One statement records the poll, enforces the interval and redeems an approved authorization:
    -- concurrent polls serialise on the row lock, so exactly one of them sees 'approved'.
    WITH before AS (
        SELECT d.* FROM oauth.device_authorizations d
         WHERE d.device_code_hash = oauth.token_hash(poll_device_authorization.device_code)
           AND d.client_id = client.client_id
           FOR UPDATE)
    UPDATE oauth.device_authorizations d
       SET last_polled_at = now,
           poll_interval = CASE WHEN before.status = 'pending'
                                     AND before.last_polled_at > now - make_interval(secs => before.poll_interval)
                                THEN before.poll_interval + 5 ELSE before.poll_interval END,
           status = CASE WHEN before.status = 'approved' AND before.expires_at > now THEN 'redeemed' ELSE before.status END,
           family_id = CASE WHEN before.status = 'approved' AND before.expires_at > now
                            THEN new_family_id ELSE before.family_id END
      FROM before
     WHERE d.device_code_hash = before.device_code_hash
    RETURNING before.status AS previous_status, before.last_polled_at AS previous_poll,
              before.poll_interval AS previous_interval, d.*
      INTO polled;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_grant', 'device_code is invalid');
    END IF;
    IF polled.previous_status = 'redeemed' THEN
        -- A device code is single use; a replay revokes what it issued (as for authorization codes).
        PERFORM oauth._revoke_family(polled.family_id, 'device_code_replayed', now);
        RETURN oauth._error('invalid_grant', 'device_code was already used');
    END IF;
    IF polled.expires_at <= now THEN
        RETURN oauth._error('expired_token', 'the device code has expired; start again');
    END IF;
    IF polled.previous_status = 'denied' THEN
        RETURN oauth._error('access_denied', 'the user denied the request');
    END IF;
    IF polled.previous_status = 'pending' THEN
        IF polled.poll_interval > polled.previous_interval THEN
            RETURN oauth._error('slow_down', pg_catalog.format('poll at most every %s seconds', polled.poll_interval))
                || jsonb_build_object('interval', polled.poll_interval);
        END IF;
        RETURN oauth._error('authorization_pending', 'the user has not yet decided');
    END IF;

    SELECT * INTO granted FROM oauth.grants g WHERE g.grant_id = polled.grant_id AND g.revoked_at IS NULL;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_grant', 'the grant behind this device code has been revoked');
    END IF;
    issued_from.family_id := polled.family_id;
    issued_from.grant_id := polled.grant_id;
    issued_from.client_id := polled.client_id;
    issued_from.user_id := polled.user_id;
    issued_from.scopes := polled.scopes;
    issued_from.resource := polled.resource;
    opened := oauth._open_family(issued_from, 'refresh_token' = ANY (client.grant_types), now);
    RETURN oauth._token_response(opened.family, granted.props, granted.auth_time, polled.scopes, NULL,
                                 opened.refresh_token, now)
        || jsonb_build_object('id_token_signed_response_alg', oauth._id_token_alg(client.metadata));
END
$$;
-- end of id_token_signed_response_alg (issue 10 item 5)

-- shared: oauth._registration_fields (whole body copied from sql/clients.sql)
-- RFC 7591 client metadata, checked field by field for type and value; unknown fields are ignored
-- (§2). application_type defaults to "native" when any redirect URI is loopback or a private-use
-- scheme, else "web". Only a native app can receive those (RFC 8252 §7), and it may list claimed
-- https URIs beside them (§7.2): Cursor registers cursor://, https:// and http://localhost URIs
-- together and VS Code a loopback and an https URI, both without application_type. An explicit
-- "web" still refuses them. Shared by registration and RFC 7592 updates.
CREATE OR REPLACE FUNCTION oauth._registration_fields(
    metadata jsonb,
    OUT problem jsonb, OUT client_name text, OUT redirect_uris text[], OUT grant_types text[],
    OUT method text, OUT app_type text, OUT extra jsonb
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    field text;
    scopes text[];
BEGIN
    grant_types := '{authorization_code,refresh_token}';
    method := 'client_secret_basic';
    extra := '{}';
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        problem := oauth._error('invalid_client_metadata', 'the registration request must be a JSON object');
        RETURN;
    END IF;

    IF metadata ? 'redirect_uris' THEN
        IF jsonb_typeof(metadata->'redirect_uris') <> 'array'
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(metadata->'redirect_uris') e WHERE jsonb_typeof(e) <> 'string') THEN
            problem := oauth._error('invalid_redirect_uri', 'redirect_uris must be an array of strings');
            RETURN;
        END IF;
        SELECT coalesce(array_agg(e), '{}') INTO redirect_uris FROM jsonb_array_elements_text(metadata->'redirect_uris') e;
    ELSE
        redirect_uris := '{}';
    END IF;

    IF metadata ? 'token_endpoint_auth_method' THEN
        IF jsonb_typeof(metadata->'token_endpoint_auth_method') <> 'string' THEN
            problem := oauth._error('invalid_client_metadata', 'token_endpoint_auth_method must be a string');
            RETURN;
        END IF;
        method := metadata->>'token_endpoint_auth_method';
    END IF;

    IF metadata ? 'grant_types' THEN
        IF jsonb_typeof(metadata->'grant_types') <> 'array'
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(metadata->'grant_types') e WHERE jsonb_typeof(e) <> 'string') THEN
            problem := oauth._error('invalid_client_metadata', 'grant_types must be an array of strings');
            RETURN;
        END IF;
        SELECT array_agg(DISTINCT e ORDER BY e) INTO grant_types FROM jsonb_array_elements_text(metadata->'grant_types') e;
    END IF;
    -- Anyone may register: a self-registered machine client would get tokens no user ever approved.
    -- client_credentials clients are made by an administrator (oauth.create_client).
    IF 'client_credentials' = ANY (grant_types) THEN
        problem := oauth._error('invalid_client_metadata',
            'client_credentials cannot be registered; an administrator creates such clients');
        RETURN;
    END IF;

    IF metadata ? 'response_types' THEN
        IF jsonb_typeof(metadata->'response_types') <> 'array'
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(metadata->'response_types') e WHERE e <> '"code"') THEN
            problem := oauth._error('invalid_client_metadata', 'response_types may only contain "code"');
            RETURN;
        END IF;
    END IF;

    -- A registered scope list would limit nothing (anyone may register again asking for more), and
    -- MCP clients register with the scope of their first challenge, then step up (403
    -- insufficient_scope): a registered client may use every supported scope. The field is still
    -- checked, so that a malformed or unsupported scope is reported.
    IF metadata ? 'scope' THEN
        IF jsonb_typeof(metadata->'scope') <> 'string' THEN
            problem := oauth._error('invalid_client_metadata', 'scope must be a string');
            RETURN;
        END IF;
        scopes := oauth.parse_scope(metadata->>'scope');
        IF scopes IS NULL THEN
            problem := oauth._error('invalid_client_metadata', 'scope is not a space-separated list of scope tokens');
            RETURN;
        END IF;
    END IF;

    IF metadata ? 'application_type' THEN
        IF jsonb_typeof(metadata->'application_type') <> 'string' THEN
            problem := oauth._error('invalid_client_metadata', 'application_type must be a string');
            RETURN;
        END IF;
        app_type := metadata->>'application_type';
    ELSIF EXISTS (
        SELECT 1 FROM unnest(redirect_uris) u
         WHERE oauth.is_loopback_redirect(u) OR u !~* '^https?:') THEN
        app_type := 'native';
    ELSE
        app_type := 'web';
    END IF;

    IF metadata ? 'client_name' THEN
        IF jsonb_typeof(metadata->'client_name') <> 'string' OR length(metadata->>'client_name') NOT BETWEEN 1 AND 200 THEN
            problem := oauth._error('invalid_client_metadata', 'client_name must be a string of 1 to 200 characters');
            RETURN;
        END IF;
        client_name := metadata->>'client_name';
    END IF;

    -- Informational URIs are shown to users, so they must be web URLs, never script.
    FOREACH field IN ARRAY ARRAY['client_uri', 'logo_uri', 'tos_uri', 'policy_uri'] LOOP
        IF metadata ? field THEN
            IF jsonb_typeof(metadata->field) <> 'string' OR oauth.resource_problem(metadata->>field) IS NOT NULL
               OR (metadata->>field) !~ '^https?://' THEN
                problem := oauth._error('invalid_client_metadata', format('%s must be an http(s) URL', field));
                RETURN;
            END IF;
            extra := extra || jsonb_build_object(field, metadata->field);
        END IF;
    END LOOP;
    FOREACH field IN ARRAY ARRAY['software_id', 'software_version'] LOOP
        IF metadata ? field THEN
            IF jsonb_typeof(metadata->field) <> 'string' OR length(metadata->>field) > 200 THEN
                problem := oauth._error('invalid_client_metadata', format('%s must be a string of at most 200 characters', field));
                RETURN;
            END IF;
            extra := extra || jsonb_build_object(field, metadata->field);
        END IF;
    END LOOP;
    IF metadata ? 'contacts' THEN
        IF jsonb_typeof(metadata->'contacts') <> 'array' OR jsonb_array_length(metadata->'contacts') > 10
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(metadata->'contacts') e
                       WHERE jsonb_typeof(e) <> 'string' OR length(e #>> '{}') > 200) THEN
            problem := oauth._error('invalid_client_metadata', 'contacts must be an array of at most 10 strings');
            RETURN;
        END IF;
        extra := extra || jsonb_build_object('contacts', metadata->'contacts');
    END IF;
    problem := oauth._id_token_alg_problem(metadata);
    IF problem IS NOT NULL THEN
        RETURN;
    END IF;
    IF metadata ? 'id_token_signed_response_alg' THEN
        extra := extra || jsonb_build_object('id_token_signed_response_alg', metadata->'id_token_signed_response_alg');
    END IF;
    -- private_key_jwt (RFC 7523 §2.2): the client's public keys, inline or at a URL, and the one
    -- algorithm it may sign with; no other method takes keys.
    problem := oauth._client_keys_problem(method, metadata);
    IF problem IS NOT NULL THEN
        RETURN;
    END IF;
    extra := extra || coalesce((SELECT jsonb_object_agg(f.key, f.value) FROM jsonb_each(metadata) f
                                 WHERE f.key IN ('jwks', 'jwks_uri', 'token_endpoint_auth_signing_alg')), '{}');

    problem := oauth._client_problem(redirect_uris, coalesce(scopes, (oauth._settings()).scopes_supported),
                                     grant_types, method, app_type, NULL);
END
$$;

-- revocation of exchanged access tokens (issue 10 item 13)
-- A client that received a token by token exchange can revoke it (RFC 7009 §2.1): the token stands
-- on another client's grant and family, so its jti is listed (oauth.revoked_access_tokens) until it
-- expires. revoke_token, introspect, userinfo and exchange_token take the access token's jti (and
-- revoke_token its client_id and exp); revocations() lists revoked jtis for resynchronising gateways.
CREATE TABLE oauth.revoked_access_tokens (
    jti uuid PRIMARY KEY,
    -- The client the token was issued to, which revoked it.
    client_id text NOT NULL,
    revoked_at timestamptz NOT NULL,
    -- The token's exp: past it there is no token left to refuse.
    expires_at timestamptz NOT NULL
);
CREATE INDEX ON oauth.revoked_access_tokens (expires_at);
CREATE INDEX ON oauth.revoked_access_tokens (revoked_at);
SELECT pg_catalog.pg_extension_config_dump('oauth.revoked_access_tokens', '');
REVOKE ALL ON oauth.revoked_access_tokens FROM PUBLIC;

-- Is an access token still backed by live state: its grant and family, and not revoked by itself?
CREATE OR REPLACE FUNCTION oauth._access_token_live(grant_id uuid, family_id uuid, jti uuid, now timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN oauth._token_live(grant_id, family_id, now)
       AND NOT EXISTS (SELECT 1 FROM oauth.revoked_access_tokens t WHERE t.jti = _access_token_live.jti);
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._access_token_live(uuid, uuid, uuid, timestamptz) FROM PUBLIC;

-- Lists one access token as revoked and tells the gateways; true when it was not listed yet.
CREATE OR REPLACE FUNCTION oauth._revoke_access_token(
    jti uuid, client_id text, grant_id uuid, family_id uuid, expires_at timestamptz, now timestamptz
) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    -- No access token outlives this, whatever exp a caller passes.
    horizon interval := pg_catalog.make_interval(secs => (oauth._capabilities() ->> 'revocation_horizon')::integer);
    granted oauth.grants;
BEGIN
    INSERT INTO oauth.revoked_access_tokens (jti, client_id, revoked_at, expires_at)
    VALUES (_revoke_access_token.jti, _revoke_access_token.client_id, now,
            LEAST(coalesce(_revoke_access_token.expires_at, now + horizon), now + horizon))
    ON CONFLICT ON CONSTRAINT revoked_access_tokens_pkey DO NOTHING;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    SELECT * INTO granted FROM oauth.grants g WHERE g.grant_id = _revoke_access_token.grant_id;
    PERFORM oauth._event('access_token_revoked', _revoke_access_token.client_id, granted.user_id,
                         _revoke_access_token.grant_id, _revoke_access_token.family_id,
                         pg_catalog.jsonb_build_object('jti', _revoke_access_token.jti, 'reason', 'revoked_by_client'),
                         now);
    -- The jti alone: a gateway that knows nothing of per-token revocation would read a grant_id
    -- without a family_id as the revocation of the whole grant.
    PERFORM pg_catalog.pg_notify('oauth_revocations',
        pg_catalog.jsonb_build_object('jti', _revoke_access_token.jti)::text);
    RETURN true;
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._revoke_access_token(uuid, text, uuid, uuid, timestamptz, timestamptz) FROM PUBLIC;

DROP FUNCTION oauth.revoke_token(text, text, text, uuid, uuid, timestamptz);
-- RFC 7009. The token is either an opaque refresh token or the claims of an access token whose
-- signature the gateway verified: grant_id, family_id, jti, client_id (token_client_id) and exp
-- (token_expires_at). A client can revoke only the tokens issued to it (§2.1); anything else
-- (unknown, another client's, already revoked) succeeds without effect, as an invalid token does
-- (§2.2). An access token takes its family with it, or the client's own grant when it has no
-- family; one the client received by token exchange stands on another client's family and grant,
-- which stay live: that token alone is revoked.
CREATE OR REPLACE FUNCTION oauth.revoke_token(
    client_id text,
    client_secret text,
    refresh_token text,
    grant_id uuid,
    family_id uuid,
    jti uuid DEFAULT NULL,
    token_client_id text DEFAULT NULL,
    token_expires_at timestamptz DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    target uuid;
BEGIN
    client := oauth._authenticate_client(client_id, client_secret, now);
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_client', 'client authentication failed');
    END IF;
    IF refresh_token IS NOT NULL THEN
        SELECT f.family_id INTO target
          FROM oauth.refresh_tokens t JOIN oauth.refresh_families f ON f.family_id = t.family_id
         WHERE t.token_hash = oauth.token_hash(refresh_token) AND f.client_id = client.client_id;
        IF target IS NOT NULL THEN
            PERFORM oauth._revoke_family(target, 'revoked_by_client', now);
        END IF;
        RETURN '{}'::jsonb;
    END IF;
    -- Without the client_id claim, ownership is the family's or grant's alone.
    IF token_client_id IS NOT NULL AND token_client_id <> client.client_id THEN
        RETURN '{}'::jsonb;
    END IF;
    IF revoke_token.family_id IS NOT NULL THEN
        SELECT f.family_id INTO target FROM oauth.refresh_families f
         WHERE f.family_id = revoke_token.family_id AND f.grant_id = revoke_token.grant_id
           AND f.client_id = client.client_id;
        IF target IS NOT NULL THEN
            PERFORM oauth._revoke_family(target, 'revoked_by_client', now);
            RETURN '{}'::jsonb;
        END IF;
    ELSIF revoke_token.grant_id IS NOT NULL THEN
        -- An access token without a family was issued on the client's own grant (client_credentials).
        -- Revocation takes that grant with it (RFC 7009 §2.1 allows it): every token issued on it
        -- dies, and the client's next request opens a new grant.
        SELECT g.grant_id INTO target FROM oauth.grants g
         WHERE g.grant_id = revoke_token.grant_id AND g.subject_type = 'client'
           AND g.client_id = client.client_id;
        IF target IS NOT NULL THEN
            PERFORM oauth._revoke_grant(target, 'revoked_by_client', now);
            RETURN '{}'::jsonb;
        END IF;
    END IF;
    -- Issued to this client on a family or grant that is not its own: by token exchange.
    IF revoke_token.jti IS NOT NULL AND token_client_id = client.client_id THEN
        PERFORM oauth._revoke_access_token(revoke_token.jti, client.client_id, revoke_token.grant_id,
                                           revoke_token.family_id, token_expires_at, now);
    END IF;
    RETURN '{}'::jsonb;
END
$$;
REVOKE EXECUTE ON FUNCTION oauth.revoke_token(text, text, text, uuid, uuid, uuid, text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.revoke_token(text, text, text, uuid, uuid, uuid, text, timestamptz, timestamptz) TO oauth_gateway;

DROP FUNCTION oauth.introspect(text, text, text, uuid, uuid, timestamptz);
-- RFC 7662 data. The caller authenticates as a client. For an access token the gateway verified
-- signature and expiry and passes its grant_id/family_id/jti; for a refresh token, the token itself.
CREATE OR REPLACE FUNCTION oauth.introspect(
    client_id text,
    client_secret text,
    refresh_token text,
    grant_id uuid,
    family_id uuid,
    jti uuid DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    answer jsonb;
BEGIN
    client := oauth._authenticate_client(client_id, client_secret, now);
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_client', 'client authentication failed');
    END IF;
    -- A public client authenticates with its id alone, which anyone can copy: it may not probe tokens.
    IF client.token_endpoint_auth_method = 'none' THEN
        RETURN oauth._error('invalid_client', 'introspection requires a confidential client');
    END IF;
    IF refresh_token IS NOT NULL THEN
        SELECT jsonb_build_object(
                   'active', true, 'token_type', 'refresh_token', 'grant_id', f.grant_id, 'family_id', f.family_id,
                   'user_id', f.user_id, 'client_id', f.client_id, 'scope', oauth._scope_string(f.scopes),
                   'resource', f.resource, 'props', g.props,
                   'iat', floor(date_part('epoch', coalesce(f.rotated_at, f.created_at)))::bigint,
                   'exp', floor(date_part('epoch', f.expires_at))::bigint)
          INTO answer
          FROM oauth.refresh_tokens t
          JOIN oauth.refresh_families f ON f.family_id = t.family_id
          JOIN oauth.grants g ON g.grant_id = f.grant_id
         WHERE t.token_hash = oauth.token_hash(refresh_token) AND f.current_hash = t.token_hash
           AND f.revoked_at IS NULL AND g.revoked_at IS NULL
           AND f.expires_at > now;
    ELSIF oauth._access_token_live(introspect.grant_id, introspect.family_id, introspect.jti, now) THEN
        SELECT jsonb_build_object('active', true, 'token_type', 'access_token', 'grant_id', g.grant_id,
                                  'family_id', introspect.family_id, 'user_id', g.user_id,
                                  'client_id', g.client_id, 'props', g.props)
          INTO answer
          FROM oauth.grants g WHERE g.grant_id = introspect.grant_id;
    END IF;
    RETURN coalesce(answer, '{"active": false}'::jsonb);
END
$$;
REVOKE EXECUTE ON FUNCTION oauth.introspect(text, text, text, uuid, uuid, uuid, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.introspect(text, text, text, uuid, uuid, uuid, timestamptz) TO oauth_gateway;

DROP FUNCTION oauth.userinfo(uuid, uuid, timestamptz);
-- Claims source for the userinfo endpoint: live only while the access token's grant and family are,
-- and the token (its jti) was not revoked by itself.
CREATE OR REPLACE FUNCTION oauth.userinfo(grant_id uuid, family_id uuid, jti uuid DEFAULT NULL, now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb;
BEGIN
    IF oauth._access_token_live(userinfo.grant_id, userinfo.family_id, userinfo.jti, now) THEN
        SELECT jsonb_build_object('active', true, 'user_id', g.user_id, 'client_id', g.client_id,
                                  'scope', oauth._scope_string(g.scopes), 'props', g.props)
          INTO answer
          FROM oauth.grants g WHERE g.grant_id = userinfo.grant_id;
    END IF;
    RETURN coalesce(answer, '{"active": false}'::jsonb);
END
$$;
REVOKE EXECUTE ON FUNCTION oauth.userinfo(uuid, uuid, uuid, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.userinfo(uuid, uuid, uuid, timestamptz) TO oauth_gateway;

DROP FUNCTION oauth.exchange_token(text, text, uuid, uuid, text, text, text, text, timestamptz);
-- The gateway verified the subject token (signature, issuer, expiry) and passes its claims: the
-- grant and family it names, its audience, its scope and its jti. `audience` is the requested
-- target (the RFC 8693 `resource` or `audience` parameter).
CREATE OR REPLACE FUNCTION oauth.exchange_token(
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
REVOKE EXECUTE ON FUNCTION oauth.exchange_token(text, text, uuid, uuid, text, text, text, text, uuid, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.exchange_token(text, text, uuid, uuid, text, text, text, text, uuid, timestamptz) TO oauth_gateway;

-- Removes what can no longer matter, in batches that skip rows other transactions hold, so it can
-- run while traffic flows. Returns the number of rows removed; call until it returns 0.
CREATE OR REPLACE FUNCTION oauth.cleanup(now timestamptz DEFAULT now(), batch_size integer DEFAULT 1000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    retention interval := (oauth._settings()).revoked_retention;
    removed bigint := 0;
    n bigint;
BEGIN
    DELETE FROM oauth.authorization_requests WHERE request_id IN (
        SELECT request_id FROM oauth.authorization_requests WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Redeemed codes are kept until they expire, so that a replay is still recognised.
    DELETE FROM oauth.codes WHERE code_hash IN (
        SELECT code_hash FROM oauth.codes WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Device codes, like authorization codes, are kept until they expire so that a replay is recognised.
    DELETE FROM oauth.device_authorizations WHERE device_code_hash IN (
        SELECT device_code_hash FROM oauth.device_authorizations WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Failed metadata-document fetches once their negative caching is over: anyone can make us
    -- record one per URL they invent, so they must not accumulate.
    DELETE FROM oauth.client_documents WHERE client_id IN (
        SELECT client_id FROM oauth.client_documents WHERE failure IS NOT NULL AND fresh_until <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Expired families, and revoked ones once their audit retention is over (their tokens cascade).
    DELETE FROM oauth.refresh_families WHERE family_id IN (
        SELECT family_id FROM oauth.refresh_families
         WHERE expires_at <= now OR revoked_at <= now - retention
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Used client assertions once they are past their exp: they are refused then anyway.
    DELETE FROM oauth.client_assertion_jtis WHERE (client_id, jti) IN (
        SELECT client_id, jti FROM oauth.client_assertion_jtis WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Key sets fetched from a jwks_uri no client uses any more.
    DELETE FROM oauth.client_jwks WHERE client_id IN (
        SELECT k.client_id FROM oauth.client_jwks k JOIN oauth.clients c ON c.client_id = k.client_id
         WHERE c.token_endpoint_auth_method <> 'private_key_jwt' OR c.metadata->>'jwks_uri' IS DISTINCT FROM k.jwks_uri
         LIMIT batch_size FOR UPDATE OF k SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Access tokens revoked one by one, once the token itself has expired.
    DELETE FROM oauth.revoked_access_tokens WHERE jti IN (
        SELECT jti FROM oauth.revoked_access_tokens WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    DELETE FROM oauth.grants WHERE grant_id IN (
        SELECT grant_id FROM oauth.grants WHERE revoked_at <= now - retention
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Registered clients past their lifetime: revoke what they hold (notifying gateways), then remove.
    PERFORM oauth.delete_client(c.client_id, now) FROM (
        SELECT client_id FROM oauth.clients WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED) c;
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Clients made from metadata documents whose copy went stale longer than `retention` ago and
    -- that hold no live grant: anyone can have us keep one per URL they serve. Nothing is lost: the
    -- next authorization fetches the document again.
    PERFORM oauth.delete_client(c.client_id, now) FROM (
        SELECT c.client_id FROM oauth.clients c
          LEFT JOIN oauth.client_documents d ON d.client_id = c.client_id
         WHERE c.metadata @> '{"metadata_document": true}'
           AND coalesce(d.fresh_until, c.updated_at) <= now - retention
           AND NOT EXISTS (SELECT 1 FROM oauth.grants g WHERE g.client_id = c.client_id AND g.revoked_at IS NULL)
         LIMIT batch_size FOR UPDATE OF c SKIP LOCKED) c;
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;
    RETURN removed;
END
$$;

-- What gateways need to rebuild their revoked set after (re)connecting to the revocation feed:
-- every grant, family and single access token (jti) revoked since `since` (older revocations
-- concern only expired tokens).
CREATE OR REPLACE FUNCTION oauth.revocations(since timestamptz, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN jsonb_build_object(
        'grants', coalesce((SELECT jsonb_agg(g.grant_id) FROM oauth.grants g
                             WHERE g.revoked_at > since AND g.revoked_at <= now), '[]'),
        'families', coalesce((SELECT jsonb_agg(f.family_id) FROM oauth.refresh_families f
                               WHERE f.revoked_at > since AND f.revoked_at <= now), '[]'),
        'access_tokens', coalesce((SELECT jsonb_agg(t.jti) FROM oauth.revoked_access_tokens t
                                    WHERE t.revoked_at > since AND t.revoked_at <= now), '[]'));
END
$$;
-- end of revocation of exchanged access tokens (issue 10 item 13)

-- metadata documents: a negatively cached fetch failure reads like the first (issue 10 item 9)
-- Why no document came (a refused connection, a failed TLS handshake, a status) is recorded for the
-- operator but no longer told to the browser when the failure is served from the negative cache;
-- what a document's content gets wrong still is. Failures recorded before 0.3.0 count as fetch
-- failures (not shown) until the next fetch.
ALTER TABLE oauth.client_documents ADD COLUMN failure_shown boolean NOT NULL DEFAULT false;

DROP FUNCTION oauth.record_client_document_failure(text, text, timestamptz, timestamptz);
-- A fetch that failed (no answer, a refused connection, a fetch the gateway's budget refused), or
-- with `shown`, an answer that is no document (its content type, size or JSON). When
-- the last fetch of this document was good, less than a day ago, its client keeps serving until
-- retry_at: an unreachable host says nothing new about the document, and refusing the client would
-- let anyone who can make the fetch fail (or spend its budget) lock its users out. A document that
-- answers with unusable content is different: store_client_document records that and the client is
-- refused at once.
CREATE FUNCTION oauth.record_client_document_failure(
    client_id text, failure text, retry_at timestamptz, now timestamptz DEFAULT now(), shown boolean DEFAULT false
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF NOT oauth._is_document_client_id(record_client_document_failure.client_id) THEN
        PERFORM oauth._raise('invalid_request', 'not a client metadata document URL');
    END IF;
    UPDATE oauth.client_documents d
       SET fresh_until = greatest(record_client_document_failure.retry_at, now),
           consecutive_failures = d.consecutive_failures + 1
     WHERE d.client_id = record_client_document_failure.client_id
       AND d.failure IS NULL AND d.fetched_at > now - interval '1 day';
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO oauth.client_documents AS d (client_id, fetched_at, fresh_until, failure, consecutive_failures,
                                             failure_shown)
    VALUES (record_client_document_failure.client_id, now, greatest(record_client_document_failure.retry_at, now),
            pg_catalog.left(coalesce(record_client_document_failure.failure, 'unknown failure'), 300), 1,
            coalesce(record_client_document_failure.shown, false))
    ON CONFLICT (client_id) DO UPDATE
       SET fetched_at = EXCLUDED.fetched_at, fresh_until = EXCLUDED.fresh_until, failure = EXCLUDED.failure,
           consecutive_failures = d.consecutive_failures + 1, failure_shown = EXCLUDED.failure_shown;
END
$$;
REVOKE EXECUTE ON FUNCTION oauth.record_client_document_failure(text, text, timestamptz, timestamptz, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.record_client_document_failure(text, text, timestamptz, timestamptz, boolean) TO oauth_gateway;

-- NULL when the client's document is fresh and valid, or when no document is involved. Otherwise
-- what begin_authorization answers: `{"fetch_client_document": url}` when it must be (re)fetched
-- first, or invalid_client while a recent failure is negatively cached.
CREATE OR REPLACE FUNCTION oauth._client_document_state(client_id text, now timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    known oauth.client_documents;
BEGIN
    -- A client row no document made (an administrator's that happens to have an https id) is used
    -- as registered: the document at that URL is not authoritative for it, and asking for it could
    -- only end in store_client_document's refusal to take the row over, negatively cached, which
    -- would lock the administrator's client out of authorization.
    IF EXISTS (SELECT 1 FROM oauth.clients c
                WHERE c.client_id = _client_document_state.client_id
                  AND NOT c.metadata @> '{"metadata_document": true}') THEN
        RETURN NULL;
    END IF;
    SELECT * INTO known FROM oauth.client_documents d WHERE d.client_id = _client_document_state.client_id;
    IF NOT FOUND OR known.fresh_until <= now THEN
        RETURN pg_catalog.jsonb_build_object('fetch_client_document', client_id);
    END IF;
    IF known.failure IS NOT NULL AND known.failure_shown THEN
        RETURN oauth._error('invalid_client', 'client metadata document unusable: ' || known.failure);
    ELSIF known.failure IS NOT NULL THEN
        -- The gateway's words for a document that could not be fetched, so that a negatively cached
        -- failure reads like the first one.
        RETURN oauth._error('invalid_client', 'the client''s metadata document could not be fetched');
    END IF;
    RETURN NULL;
END
$$;

-- Validates a fetched document and makes (or updates) its client. Returns {} or the error, which is
-- also recorded as the negatively cached failure until `retry_at`.
CREATE OR REPLACE FUNCTION oauth.store_client_document(
    client_id text, document jsonb, fresh_until timestamptz, retry_at timestamptz, now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    problem jsonb;
    fields record;
BEGIN
    IF NOT oauth._is_document_client_id(client_id) THEN
        RETURN oauth._error('invalid_request', 'not a client metadata document URL');
    END IF;
    IF document IS NULL OR jsonb_typeof(document) <> 'object' THEN
        problem := oauth._error('invalid_client_metadata', 'the document is not a JSON object');
    ELSIF document->'client_id' IS DISTINCT FROM to_jsonb(store_client_document.client_id) THEN
        problem := oauth._error('invalid_client_metadata', 'the document''s client_id differs from its URL');
    ELSIF document ? 'client_secret' OR document ? 'client_secret_expires_at' THEN
        problem := oauth._error('invalid_client_metadata', 'a client metadata document must not carry a secret');
    ELSE
        -- RFC 7591 defaults to client_secret_basic, which a public document cannot use.
        fields := oauth._registration_fields('{"token_endpoint_auth_method": "none"}'::jsonb || document);
        problem := fields.problem;
        IF problem IS NULL AND fields.method <> 'none' THEN
            problem := oauth._error('invalid_client_metadata',
                'token_endpoint_auth_method must be "none" (private_key_jwt is not supported)');
        ELSIF problem IS NULL AND cardinality(fields.redirect_uris) = 0 THEN
            problem := oauth._error('invalid_redirect_uri', 'the document lists no redirect_uris');
        END IF;
    END IF;
    IF problem IS NOT NULL THEN
        PERFORM oauth.record_client_document_failure(client_id, problem->>'error_description', retry_at, now, true);
        RETURN problem;
    END IF;

    INSERT INTO oauth.clients AS c (client_id, client_name, redirect_uris, allowed_scopes, grant_types,
                                    token_endpoint_auth_method, application_type, metadata, created_at, updated_at)
    VALUES (store_client_document.client_id, coalesce(fields.client_name, oauth.uri_host(store_client_document.client_id)),
            fields.redirect_uris, (oauth._settings()).scopes_supported, fields.grant_types, 'none', fields.app_type,
            fields.extra || '{"metadata_document": true}', now, now)
    ON CONFLICT (client_id) DO UPDATE
       SET client_name = EXCLUDED.client_name, redirect_uris = EXCLUDED.redirect_uris,
           allowed_scopes = EXCLUDED.allowed_scopes, grant_types = EXCLUDED.grant_types,
           application_type = EXCLUDED.application_type, metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
     -- Never take over an administrator's or a registration's client that happens to use this id.
     WHERE c.metadata @> '{"metadata_document": true}';
    IF NOT FOUND THEN
        problem := oauth._error('invalid_client', 'client_id is taken by a client that is not a metadata document');
        PERFORM oauth.record_client_document_failure(client_id, problem->>'error_description', retry_at, now, true);
        RETURN problem;
    END IF;
    INSERT INTO oauth.client_documents AS d (client_id, fetched_at, fresh_until, failure, consecutive_failures)
    VALUES (store_client_document.client_id, now, greatest(fresh_until, now), NULL, 0)
    ON CONFLICT (client_id) DO UPDATE
       SET fetched_at = EXCLUDED.fetched_at, fresh_until = EXCLUDED.fresh_until, failure = NULL,
           consecutive_failures = 0;
    PERFORM oauth._event('client_document_stored', client_id, NULL, NULL, NULL, NULL, now);
    RETURN '{}'::jsonb;
END
$$;

-- end of metadata documents (issue 10 item 9)

-- private_key_jwt (issue 11 item 1)
-- Client authentication by a JWT the client signs with a key it publishes (RFC 7523 §2.2, RFC
-- 7521 §4.2): oauth.verify_client_assertion (Rust) checks it, oauth._client_authentication uses
-- up its jti (oauth.client_assertion_jtis), keys at a jwks_uri are fetched by the gateway and kept
-- in oauth.client_jwks. Registration, administrators' clients and metadata documents (which
-- negotiate it from token_endpoint_auth_methods_supported) take jwks or jwks_uri; such a client
-- has no secret and is confidential. Rows stay as they are: the CHECKs only widen.
-- This section also holds the whole current bodies of functions other sections define too
-- (create_client, update_client, introspect, exchange_token, cleanup, store_client_document):
-- whoever changes one of those later copies it here as well.

CREATE FUNCTION oauth."verify_client_assertion"(
	"assertion" TEXT, /* Option < & str > */
	"jwks" jsonb, /* Option < JsonB > */
	"client_id" TEXT, /* Option < & str > */
	"issuer" TEXT, /* Option < & str > */
	"token_endpoint" TEXT, /* Option < & str > */
	"signing_alg" TEXT, /* Option < & str > */
	"now" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS jsonb /* JsonB */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_client_assertion_wrapper';
CREATE FUNCTION oauth."jwks_problem"(
	"jwks" jsonb /* JsonB */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'jwks_problem_wrapper';
CREATE FUNCTION oauth."jwks_uri_problem"(
	"jwks_uri" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'jwks_uri_problem_wrapper';
CREATE FUNCTION oauth."client_assertion_signing_algs"() RETURNS TEXT[] /* Vec < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'client_assertion_signing_algs_wrapper';
REVOKE EXECUTE ON FUNCTION oauth.verify_client_assertion(text, jsonb, text, text, text, text, timestamptz),
    oauth.jwks_problem(jsonb), oauth.jwks_uri_problem(text), oauth.client_assertion_signing_algs() FROM PUBLIC;

ALTER TABLE oauth.clients DROP CONSTRAINT clients_token_endpoint_auth_method_check;
ALTER TABLE oauth.clients ADD CONSTRAINT clients_token_endpoint_auth_method_check
    CHECK (token_endpoint_auth_method IN ('none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'));
ALTER TABLE oauth.clients DROP CONSTRAINT clients_check;
ALTER TABLE oauth.clients ADD CONSTRAINT clients_check
    CHECK ((token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post')) = (secret_hash IS NOT NULL));

-- Assertions already used (RFC 7523 §3 item 7), until they could no longer be accepted anyway.
CREATE TABLE oauth.client_assertion_jtis (
    client_id text NOT NULL,
    jti text NOT NULL,
    -- The assertion's exp plus the tolerated clock skew.
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX ON oauth.client_assertion_jtis (expires_at);
SELECT pg_catalog.pg_extension_config_dump('oauth.client_assertion_jtis', '');

-- The key sets of clients that publish them at a jwks_uri, as a gateway last fetched them.
CREATE TABLE oauth.client_jwks (
    client_id text PRIMARY KEY REFERENCES oauth.clients ON DELETE CASCADE,
    -- Where this copy came from: for a client whose jwks_uri changed, it is no copy.
    jwks_uri text NOT NULL,
    -- The last good copy (NULL until one was fetched) and when it was fetched.
    jwks jsonb,
    fetched_at timestamptz,
    -- The last fetch, good or failed: a key the copy lacks is looked for at most once a minute.
    attempted_at timestamptz NOT NULL,
    -- Until then no fetch is asked for: the copy is fresh, or a failure is negatively cached.
    fresh_until timestamptz NOT NULL,
    -- Why the last fetch failed; NULL when it succeeded.
    failure text
);
SELECT pg_catalog.pg_extension_config_dump('oauth.client_jwks', '');


REVOKE ALL ON oauth.client_assertion_jtis, oauth.client_jwks FROM PUBLIC;
GRANT SELECT ON oauth.client_jwks TO oauth_admin;

-- Why a client's key metadata is unacceptable (invalid_client_metadata), or NULL. private_key_jwt
-- needs exactly one of jwks and jwks_uri (RFC 7591 §2 forbids both) and may name the one algorithm
-- its assertions use; the other methods have no use for keys. One rule for administrators'
-- clients, registrations and metadata documents.
CREATE FUNCTION oauth._client_keys_problem(method text, metadata jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    problem text;
BEGIN
    IF method IS DISTINCT FROM 'private_key_jwt' THEN
        IF metadata ? 'jwks' OR metadata ? 'jwks_uri' OR metadata ? 'token_endpoint_auth_signing_alg' THEN
            RETURN oauth._error('invalid_client_metadata',
                'jwks, jwks_uri and token_endpoint_auth_signing_alg go with token_endpoint_auth_method private_key_jwt');
        END IF;
        RETURN NULL;
    END IF;
    IF (metadata ? 'jwks') = (metadata ? 'jwks_uri') THEN
        RETURN oauth._error('invalid_client_metadata', 'private_key_jwt needs exactly one of jwks and jwks_uri');
    END IF;
    IF metadata ? 'jwks' THEN
        problem := oauth.jwks_problem(metadata->'jwks');
    ELSIF pg_catalog.jsonb_typeof(metadata->'jwks_uri') <> 'string' THEN
        problem := 'jwks_uri must be a string';
    ELSE
        problem := oauth.jwks_uri_problem(metadata->>'jwks_uri');
    END IF;
    IF problem IS NULL AND metadata ? 'token_endpoint_auth_signing_alg'
       AND (pg_catalog.jsonb_typeof(metadata->'token_endpoint_auth_signing_alg') <> 'string'
            OR NOT (metadata->>'token_endpoint_auth_signing_alg') = ANY (oauth.client_assertion_signing_algs())) THEN
        problem := 'token_endpoint_auth_signing_alg must be one of '
            || pg_catalog.array_to_string(oauth.client_assertion_signing_algs(), ', ');
    END IF;
    IF problem IS NOT NULL THEN
        RETURN oauth._error('invalid_client_metadata', problem);
    END IF;
    RETURN NULL;
END
$$;

-- The key set a private_key_jwt client's assertions are verified with: its inline jwks, or the
-- copy of its jwks_uri while that is fresh. When a refetch failed, the last good copy keeps
-- serving until the failure's retry time, for at most a day after it was fetched (as metadata
-- documents do): an unreachable host says nothing new about the keys. NULL: no usable keys.
CREATE FUNCTION oauth._client_keys(client oauth.clients, now timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    fetched oauth.client_jwks;
BEGIN
    IF client.metadata ? 'jwks' THEN
        RETURN client.metadata->'jwks';
    END IF;
    SELECT * INTO fetched FROM oauth.client_jwks k
     WHERE k.client_id = client.client_id AND k.jwks_uri = client.metadata->>'jwks_uri';
    IF NOT FOUND OR fetched.jwks IS NULL OR fetched.fresh_until <= now OR fetched.fetched_at <= now - interval '1 day' THEN
        RETURN NULL;
    END IF;
    RETURN fetched.jwks;
END
$$;

-- Client authentication (RFC 6749 §2.3): the client row when client_id and client_secret
-- authenticate it, else the invalid_client error saying why. A public client (method none)
-- presents nothing; a secret client its secret; a private_key_jwt client an assertion (RFC 7523
-- §3), which is good once: its jti is recorded by the one INSERT that decides between two requests
-- presenting it together.
CREATE FUNCTION oauth._client_authentication(
    client_id text, client_secret text, now timestamptz, OUT client oauth.clients, OUT problem jsonb
)
LANGUAGE plpgsql
AS $$
DECLARE
    found_client oauth.clients;
    issuer text;
    verified jsonb;
BEGIN
    problem := oauth._error('invalid_client', 'client authentication failed');
    IF client_id IS NULL OR client_id = '' THEN
        RETURN;
    END IF;
    SELECT * INTO found_client FROM oauth.clients c WHERE c.client_id = _client_authentication.client_id;
    IF NOT FOUND OR (found_client.expires_at IS NOT NULL AND found_client.expires_at <= now) THEN
        RETURN;
    END IF;
    IF found_client.token_endpoint_auth_method = 'none' THEN
        IF client_secret IS NOT NULL AND client_secret <> '' THEN
            RETURN;
        END IF;
    ELSIF found_client.token_endpoint_auth_method = 'private_key_jwt' THEN
        -- The audiences naming this server: its issuer and its token endpoint (the gateway's
        -- route, issuer + /token), the two RFC 7523 §3 clients use.
        issuer := (oauth._settings()).issuer;
        verified := oauth.verify_client_assertion(
            client_secret, oauth._client_keys(found_client, now), found_client.client_id, issuer,
            pg_catalog.rtrim(issuer, '/') || '/token', found_client.metadata->>'token_endpoint_auth_signing_alg', now);
        IF verified ? 'problem' THEN
            problem := oauth._error('invalid_client', 'client authentication failed: ' || (verified->>'problem'));
            RETURN;
        END IF;
        INSERT INTO oauth.client_assertion_jtis (client_id, jti, expires_at)
        VALUES (found_client.client_id, verified->>'jti', pg_catalog.to_timestamp((verified->>'replay_until')::bigint))
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            problem := oauth._error('invalid_client',
                'client authentication failed: this client assertion was already used (its jti)');
            RETURN;
        END IF;
    ELSIF client_secret IS NULL
          OR NOT oauth.secure_equal(oauth.token_hash(client_secret), found_client.secret_hash) THEN
        RETURN;
    END IF;
    client := found_client;
    problem := NULL;
END
$$;

-- The jwks_uri a gateway should fetch before authenticating `client_id` again with
-- `client_assertion`, or NULL: when the client's keys live at a jwks_uri and there is no fresh
-- copy, or the copy lacks the key the assertion names (the client rotated its keys) and was not
-- fetched within the last minute (else anyone could have us fetch on every request).
CREATE FUNCTION oauth.client_jwks_to_fetch(client_id text, client_assertion text, now timestamptz DEFAULT now())
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    fetched oauth.client_jwks;
BEGIN
    SELECT * INTO client FROM oauth.clients c
     WHERE c.client_id = client_jwks_to_fetch.client_id AND c.token_endpoint_auth_method = 'private_key_jwt'
       AND c.metadata ? 'jwks_uri' AND (c.expires_at IS NULL OR c.expires_at > now);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO fetched FROM oauth.client_jwks k
     WHERE k.client_id = client.client_id AND k.jwks_uri = client.metadata->>'jwks_uri';
    IF NOT FOUND OR fetched.fresh_until <= now THEN
        RETURN client.metadata->>'jwks_uri';
    END IF;
    -- Only whether the copy has the assertion's key matters here, not the other checks.
    IF oauth._client_keys(client, now) IS NOT NULL AND fetched.attempted_at <= now - interval '1 minute'
       AND (oauth.verify_client_assertion(client_assertion, fetched.jwks, client.client_id, '', '', NULL, now)
            ->> 'unknown_key')::boolean THEN
        RETURN client.metadata->>'jwks_uri';
    END IF;
    RETURN NULL;
END
$$;

-- A fetch of a client's jwks_uri that gave no usable key set: the last good copy, if any, serves
-- until retry_at (see oauth._client_keys), and no fetch is asked for before.
CREATE FUNCTION oauth.record_client_jwks_failure(
    client_id text, jwks_uri text, failure text, retry_at timestamptz, now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM oauth.clients c
     WHERE c.client_id = record_client_jwks_failure.client_id AND c.token_endpoint_auth_method = 'private_key_jwt'
       AND c.metadata->>'jwks_uri' = record_client_jwks_failure.jwks_uri;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO oauth.client_jwks AS k (client_id, jwks_uri, jwks, fetched_at, attempted_at, fresh_until, failure)
    VALUES (record_client_jwks_failure.client_id, record_client_jwks_failure.jwks_uri, NULL, NULL, now,
            greatest(record_client_jwks_failure.retry_at, now),
            left(coalesce(record_client_jwks_failure.failure, 'unknown failure'), 300))
    ON CONFLICT (client_id) DO UPDATE
       SET attempted_at = EXCLUDED.attempted_at, fresh_until = EXCLUDED.fresh_until, failure = EXCLUDED.failure,
           -- A copy of another URL is no copy of this one.
           jwks = CASE WHEN k.jwks_uri = EXCLUDED.jwks_uri THEN k.jwks END,
           fetched_at = CASE WHEN k.jwks_uri = EXCLUDED.jwks_uri THEN k.fetched_at END,
           jwks_uri = EXCLUDED.jwks_uri;
END
$$;

-- Stores the key set a gateway fetched from a client's jwks_uri, fresh until `fresh_until` (at
-- most a day). Returns {} or why the set is unusable (invalid_client), which is then recorded as
-- a failure until `retry_at`.
CREATE FUNCTION oauth.store_client_jwks(
    client_id text, jwks_uri text, jwks jsonb, fresh_until timestamptz, retry_at timestamptz,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    problem text;
BEGIN
    PERFORM 1 FROM oauth.clients c
     WHERE c.client_id = store_client_jwks.client_id AND c.token_endpoint_auth_method = 'private_key_jwt'
       AND c.metadata->>'jwks_uri' = store_client_jwks.jwks_uri;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_request', 'no private_key_jwt client has this jwks_uri');
    END IF;
    IF store_client_jwks.jwks IS NULL OR jsonb_typeof(store_client_jwks.jwks) <> 'object' THEN
        problem := 'the key set is not a JSON object';
    ELSE
        problem := oauth.jwks_problem(store_client_jwks.jwks);
    END IF;
    IF problem IS NOT NULL THEN
        PERFORM oauth.record_client_jwks_failure(store_client_jwks.client_id, store_client_jwks.jwks_uri, problem,
                                                 retry_at, now);
        RETURN oauth._error('invalid_client', 'the client''s jwks_uri is unusable: ' || problem);
    END IF;
    INSERT INTO oauth.client_jwks AS k (client_id, jwks_uri, jwks, fetched_at, attempted_at, fresh_until, failure)
    VALUES (store_client_jwks.client_id, store_client_jwks.jwks_uri, store_client_jwks.jwks, now, now,
            least(greatest(store_client_jwks.fresh_until, now), now + interval '1 day'), NULL)
    ON CONFLICT (client_id) DO UPDATE
       SET jwks_uri = EXCLUDED.jwks_uri, jwks = EXCLUDED.jwks, fetched_at = EXCLUDED.fetched_at,
           attempted_at = EXCLUDED.attempted_at, fresh_until = EXCLUDED.fresh_until, failure = NULL;
    PERFORM oauth._event('client_jwks_stored', store_client_jwks.client_id, NULL, NULL, NULL,
                         jsonb_build_object('jwks_uri', store_client_jwks.jwks_uri), now);
    RETURN '{}'::jsonb;
END
$$;

REVOKE EXECUTE ON FUNCTION oauth._client_keys_problem(text, jsonb), oauth._client_keys(oauth.clients, timestamptz),
    oauth._client_authentication(text, text, timestamptz),
    oauth.client_jwks_to_fetch(text, text, timestamptz),
    oauth.store_client_jwks(text, text, jsonb, timestamptz, timestamptz, timestamptz),
    oauth.record_client_jwks_failure(text, text, text, timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    oauth.client_jwks_to_fetch(text, text, timestamptz),
    oauth.store_client_jwks(text, text, jsonb, timestamptz, timestamptz, timestamptz),
    oauth.record_client_jwks_failure(text, text, text, timestamptz, timestamptz)
TO oauth_gateway;

-- The client row when client_id/secret authenticate it, else NULL (oauth._client_authentication,
-- which also says why). Volatile: a private_key_jwt assertion is used up by authenticating.
CREATE OR REPLACE FUNCTION oauth._authenticate_client(client_id text, client_secret text, now timestamptz)
RETURNS oauth.clients
LANGUAGE plpgsql
AS $$
BEGIN
    RETURN (oauth._client_authentication(client_id, client_secret, now)).client;
END
$$;

-- The client that client_id/secret authenticate, when it may use `grant_type`; otherwise `problem`
-- (invalid_client or unauthorized_client). How every token-endpoint function starts.
CREATE OR REPLACE FUNCTION oauth._client_for_grant(
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

-- Why a client definition is unacceptable, as an error object, or NULL. One rule set for
-- administrator-created and dynamically registered clients.
CREATE OR REPLACE FUNCTION oauth._client_problem(
    redirect_uris text[], allowed_scopes text[], grant_types text[], token_endpoint_auth_method text,
    application_type text, allowed_resources text[]
) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    uri text;
    problem text;
    unsupported text[];
BEGIN
    IF application_type IS NULL OR application_type NOT IN ('web', 'native') THEN
        RETURN oauth._error('invalid_client_metadata', 'application_type must be "web" or "native"');
    END IF;
    IF token_endpoint_auth_method IS NULL
       OR token_endpoint_auth_method NOT IN ('none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt') THEN
        RETURN oauth._error('invalid_client_metadata',
            'token_endpoint_auth_method must be one of none, client_secret_basic, client_secret_post, private_key_jwt');
    END IF;
    IF grant_types IS NULL OR pg_catalog.cardinality(grant_types) = 0
       OR NOT grant_types <@ oauth._grant_types_supported() THEN
        RETURN oauth._error('invalid_client_metadata', pg_catalog.format('grant_types must be drawn from %s',
            pg_catalog.array_to_string(oauth._grant_types_supported(), ', ')));
    END IF;
    IF 'refresh_token' = ANY (grant_types)
       AND NOT grant_types && '{authorization_code,urn:ietf:params:oauth:grant-type:device_code}'::text[] THEN
        RETURN oauth._error('invalid_client_metadata',
            'refresh_token needs a grant that issues refresh tokens (authorization_code or device_code)');
    END IF;
    -- No user is present to approve a client_credentials token, so only a client that proves who
    -- it is (a secret or a private_key_jwt assertion) may obtain one.
    IF 'client_credentials' = ANY (grant_types) AND token_endpoint_auth_method = 'none' THEN
        RETURN oauth._error('invalid_client_metadata', 'client_credentials requires a confidential client');
    END IF;
    IF redirect_uris IS NULL OR array_position(redirect_uris, NULL) IS NOT NULL THEN
        RETURN oauth._error('invalid_redirect_uri', 'redirect_uris must be a list of URIs');
    END IF;
    IF pg_catalog.cardinality(redirect_uris) = 0 AND 'authorization_code' = ANY (grant_types) THEN
        RETURN oauth._error('invalid_redirect_uri', 'at least one redirect URI is required');
    END IF;
    IF pg_catalog.cardinality(redirect_uris) > 20 THEN
        RETURN oauth._error('invalid_redirect_uri', 'at most 20 redirect URIs may be registered');
    END IF;
    FOREACH uri IN ARRAY redirect_uris LOOP
        problem := oauth.redirect_uri_problem(uri, application_type);
        IF problem IS NOT NULL THEN
            RETURN oauth._error('invalid_redirect_uri', pg_catalog.format('redirect URI %s: %s', pg_catalog.left(uri, 200), problem));
        END IF;
    END LOOP;
    IF allowed_scopes IS NULL OR pg_catalog.array_position(allowed_scopes, NULL) IS NOT NULL THEN
        RETURN oauth._error('invalid_client_metadata', 'scopes must be a list of scope names');
    END IF;
    SELECT pg_catalog.array_agg(s) INTO unsupported
      FROM pg_catalog.unnest(allowed_scopes) s
     WHERE NOT s = ANY ((oauth._settings()).scopes_supported);
    IF unsupported IS NOT NULL THEN
        RETURN oauth._error('invalid_client_metadata',
            pg_catalog.format('unsupported scope(s): %s', pg_catalog.array_to_string(unsupported, ' ')));
    END IF;
    IF allowed_resources IS NOT NULL THEN
        FOREACH uri IN ARRAY allowed_resources LOOP
            problem := oauth.resource_problem(uri);
            IF problem IS NOT NULL THEN
                RETURN oauth._error('invalid_client_metadata', problem);
            END IF;
        END LOOP;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION oauth.create_client(
    client_name text,
    redirect_uris text[],
    allowed_scopes text[],
    token_endpoint_auth_method text DEFAULT 'client_secret_basic',
    grant_types text[] DEFAULT '{authorization_code,refresh_token}',
    application_type text DEFAULT 'web',
    allowed_resources text[] DEFAULT NULL,
    metadata jsonb DEFAULT '{}',
    now timestamptz DEFAULT now()
) RETURNS TABLE (client_id text, client_secret text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    problem jsonb;
    new_id text := oauth.random_token(16);
    secret text;
BEGIN
    IF client_name IS NULL OR length(client_name) NOT BETWEEN 1 AND 200 THEN
        PERFORM oauth._raise('invalid_client_metadata', 'client_name must be 1 to 200 characters');
    END IF;
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' THEN
        PERFORM oauth._raise('invalid_client_metadata', 'metadata must be a JSON object');
    END IF;
    problem := coalesce(oauth._id_token_alg_problem(metadata),
                        oauth._client_problem(redirect_uris, allowed_scopes, grant_types, token_endpoint_auth_method,
                                              application_type, allowed_resources),
                        oauth._client_keys_problem(token_endpoint_auth_method, metadata));
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise(problem->>'error', problem->>'error_description');
    END IF;
    -- A private_key_jwt client's keys are in its metadata (jwks or jwks_uri); it has no secret.
    IF token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post') THEN
        secret := oauth.random_token(32);
    END IF;
    INSERT INTO oauth.clients (client_id, secret_hash, client_name, redirect_uris, allowed_scopes, grant_types,
                               token_endpoint_auth_method, application_type, allowed_resources, metadata,
                               created_at, updated_at)
    VALUES (new_id, oauth.token_hash(secret), create_client.client_name, create_client.redirect_uris,
            create_client.allowed_scopes, create_client.grant_types, create_client.token_endpoint_auth_method,
            create_client.application_type, create_client.allowed_resources, create_client.metadata, now, now);
    PERFORM oauth._event('client_created', new_id, NULL, NULL, NULL, NULL, now);
    client_id := new_id;
    client_secret := secret;
    RETURN NEXT;
END
$$;

-- NULL arguments keep the current value.
CREATE OR REPLACE FUNCTION oauth.update_client(
    client_id text,
    client_name text DEFAULT NULL,
    redirect_uris text[] DEFAULT NULL,
    allowed_scopes text[] DEFAULT NULL,
    grant_types text[] DEFAULT NULL,
    allowed_resources text[] DEFAULT NULL,
    metadata jsonb DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    existing oauth.clients;
    problem jsonb;
BEGIN
    SELECT * INTO existing FROM oauth.clients c WHERE c.client_id = update_client.client_id FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such client');
    END IF;
    existing.client_name := coalesce(update_client.client_name, existing.client_name);
    existing.redirect_uris := coalesce(update_client.redirect_uris, existing.redirect_uris);
    existing.allowed_scopes := coalesce(update_client.allowed_scopes, existing.allowed_scopes);
    existing.grant_types := coalesce(update_client.grant_types, existing.grant_types);
    existing.allowed_resources := coalesce(update_client.allowed_resources, existing.allowed_resources);
    existing.metadata := coalesce(update_client.metadata, existing.metadata);
    IF length(existing.client_name) NOT BETWEEN 1 AND 200 THEN
        PERFORM oauth._raise('invalid_client_metadata', 'client_name must be 1 to 200 characters');
    END IF;
    IF jsonb_typeof(existing.metadata) <> 'object' THEN
        PERFORM oauth._raise('invalid_client_metadata', 'metadata must be a JSON object');
    END IF;
    problem := coalesce(oauth._id_token_alg_problem(existing.metadata),
                        oauth._client_problem(existing.redirect_uris, existing.allowed_scopes, existing.grant_types,
                                              existing.token_endpoint_auth_method, existing.application_type,
                                              existing.allowed_resources),
                        oauth._client_keys_problem(existing.token_endpoint_auth_method, existing.metadata));
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise(problem->>'error', problem->>'error_description');
    END IF;
    UPDATE oauth.clients c
       SET client_name = existing.client_name, redirect_uris = existing.redirect_uris,
           allowed_scopes = existing.allowed_scopes, grant_types = existing.grant_types,
           allowed_resources = existing.allowed_resources, metadata = existing.metadata, updated_at = now
     WHERE c.client_id = update_client.client_id;
    PERFORM oauth._event('client_updated', update_client.client_id, NULL, NULL, NULL, NULL, now);
END
$$;

CREATE OR REPLACE FUNCTION oauth.rotate_client_secret(client_id text, now timestamptz DEFAULT now()) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret text := oauth.random_token(32);
BEGIN
    UPDATE oauth.clients c SET secret_hash = oauth.token_hash(secret), updated_at = now
     WHERE c.client_id = rotate_client_secret.client_id AND c.secret_hash IS NOT NULL;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no client with a secret has this client_id');
    END IF;
    PERFORM oauth._event('client_secret_rotated', rotate_client_secret.client_id, NULL, NULL, NULL, NULL, now);
    RETURN secret;
END
$$;

-- RFC 7591 dynamic registration. The answer carries the client secret (confidential clients) and
-- the RFC 7592 registration access token, each shown this once.
CREATE OR REPLACE FUNCTION oauth.register_client(metadata jsonb, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings oauth.settings := oauth._settings();
    fields record;
    new_client oauth.clients;
    secret text;
    registration_token text := oauth.random_token(32);
BEGIN
    IF NOT settings.registration_enabled THEN
        RETURN oauth._error('access_denied', 'dynamic client registration is disabled');
    END IF;
    fields := oauth._registration_fields(metadata);
    IF fields.problem IS NOT NULL THEN
        RETURN fields.problem;
    END IF;
    IF fields.method IN ('client_secret_basic', 'client_secret_post') THEN
        secret := oauth.random_token(32);
    END IF;
    INSERT INTO oauth.clients (client_id, secret_hash, client_name, redirect_uris, allowed_scopes, grant_types,
                               token_endpoint_auth_method, application_type, metadata, registered_dynamically,
                               registration_token_hash, created_at, updated_at, expires_at)
    VALUES (oauth.random_token(16), oauth.token_hash(secret),
            coalesce(fields.client_name, oauth.uri_host(fields.redirect_uris[1]), 'unnamed client'),
            fields.redirect_uris, settings.scopes_supported, fields.grant_types, fields.method, fields.app_type,
            fields.extra, true, oauth.token_hash(registration_token), now, now, now + settings.registered_client_ttl)
    RETURNING * INTO new_client;
    PERFORM oauth._event('client_registered', new_client.client_id, NULL, NULL, NULL, NULL, now);
    RETURN oauth._registration_json(new_client)
        || jsonb_build_object('registration_access_token', registration_token)
        || CASE WHEN secret IS NOT NULL THEN jsonb_build_object('client_secret', secret) ELSE '{}' END;
END
$$;

-- RFC 7592 §2.2: replace the registration with `metadata` (every field; omitted ones take their
-- defaults). client_id must be repeated; a client_secret, if sent, must be the current one. The
-- client keeps its id, secret and registration access token; narrowing redirect URIs or grant types
-- leaves existing grants alone (they stay revocable through oauth.revoke_grant).
CREATE OR REPLACE FUNCTION oauth.update_registration(
    client_id text, registration_access_token text, metadata jsonb, now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients := oauth._registered_client(client_id, registration_access_token, now);
    fields record;
BEGIN
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_token', 'the registration access token is invalid for this client');
    END IF;
    IF metadata IS NULL OR jsonb_typeof(metadata) <> 'object' OR metadata->'client_id' IS DISTINCT FROM to_jsonb(client.client_id) THEN
        RETURN oauth._error('invalid_client_metadata', 'client_id must be repeated in the update request');
    END IF;
    IF metadata ? 'client_secret' AND (client.secret_hash IS NULL OR jsonb_typeof(metadata->'client_secret') <> 'string'
       OR NOT oauth.secure_equal(oauth.token_hash(metadata->>'client_secret'), client.secret_hash)) THEN
        RETURN oauth._error('invalid_client_metadata', 'client_secret does not match');
    END IF;
    fields := oauth._registration_fields(metadata);
    IF fields.problem IS NOT NULL THEN
        RETURN fields.problem;
    END IF;
    -- The credential stays what it is (none, a secret, or keys: those may be replaced); switching
    -- between them means registering anew.
    IF (fields.method IN ('client_secret_basic', 'client_secret_post')) <> (client.secret_hash IS NOT NULL)
       OR (fields.method = 'private_key_jwt') <> (client.token_endpoint_auth_method = 'private_key_jwt') THEN
        RETURN oauth._error('invalid_client_metadata',
            'token_endpoint_auth_method cannot change between none, a secret and private_key_jwt; register a new client');
    END IF;
    UPDATE oauth.clients c
       SET client_name = coalesce(fields.client_name, oauth.uri_host(fields.redirect_uris[1]), 'unnamed client'),
           redirect_uris = fields.redirect_uris, grant_types = fields.grant_types,
           token_endpoint_auth_method = fields.method, application_type = fields.app_type,
           metadata = fields.extra, updated_at = now
     WHERE c.client_id = client.client_id
    RETURNING * INTO client;
    PERFORM oauth._event('client_updated', client.client_id, NULL, NULL, NULL,
                         '{"via": "registration_endpoint"}', now);
    RETURN oauth._registration_json(client);
END
$$;

-- What the functions in this schema accept, for the discovery document: each list is the rule the
-- named check enforces, so metadata cannot promise what the extension refuses.
CREATE OR REPLACE FUNCTION oauth._capabilities() RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        -- The token endpoint's grants: the registrable ones, and token exchange under a policy.
        'grant_types_supported',
            to_jsonb(oauth._grant_types_supported() || 'urn:ietf:params:oauth:grant-type:token-exchange'::text),
        -- begin_authorization: response_type=code only, answered in the query, PKCE S256 only.
        'response_types_supported', jsonb_build_array('code'),
        'response_modes_supported', jsonb_build_array('query'),
        'code_challenge_methods_supported', jsonb_build_array('S256'),
        -- _client_problem and the clients table's CHECK.
        'token_endpoint_auth_methods_supported',
            jsonb_build_array('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'),
        'revocation_endpoint_auth_methods_supported',
            jsonb_build_array('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'),
        -- introspect: confidential callers only.
        'introspection_endpoint_auth_methods_supported',
            jsonb_build_array('client_secret_basic', 'client_secret_post', 'private_key_jwt'),
        -- What oauth.verify_client_assertion accepts (RFC 8414 §2), at every endpoint that
        -- authenticates clients.
        'token_endpoint_auth_signing_alg_values_supported', to_jsonb(oauth.client_assertion_signing_algs()),
        'revocation_endpoint_auth_signing_alg_values_supported', to_jsonb(oauth.client_assertion_signing_algs()),
        'introspection_endpoint_auth_signing_alg_values_supported', to_jsonb(oauth.client_assertion_signing_algs()),
        -- begin_authorization treats https URL client ids as metadata documents.
        'client_id_metadata_document_supported', true,
        -- The longest an access token can live (the settings table's bound on access_token_ttl): a
        -- revocation older than this can no longer concern a presented token.
        'revocation_horizon', 86400)
$$;

-- Validates a fetched document and makes (or updates) its client. Returns {} or the error, which is
-- also recorded as the negatively cached failure until `retry_at`. A document cannot hold a secret:
-- its client authenticates with private_key_jwt when it declares that method, or lists it among
-- token_endpoint_auth_methods_supported and gives its keys (ChatGPT does both), else with none
-- when it declares or lists that; anything else is refused.
CREATE OR REPLACE FUNCTION oauth.store_client_document(
    client_id text, document jsonb, fresh_until timestamptz, retry_at timestamptz, now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    problem jsonb;
    fields record;
    offered jsonb;
    method text;
BEGIN
    IF NOT oauth._is_document_client_id(client_id) THEN
        RETURN oauth._error('invalid_request', 'not a client metadata document URL');
    END IF;
    IF document IS NULL OR jsonb_typeof(document) <> 'object' THEN
        problem := oauth._error('invalid_client_metadata', 'the document is not a JSON object');
    ELSIF document->'client_id' IS DISTINCT FROM to_jsonb(store_client_document.client_id) THEN
        problem := oauth._error('invalid_client_metadata', 'the document''s client_id differs from its URL');
    ELSIF document ? 'client_secret' OR document ? 'client_secret_expires_at' THEN
        problem := oauth._error('invalid_client_metadata', 'a client metadata document must not carry a secret');
    ELSIF document ? 'token_endpoint_auth_method' AND jsonb_typeof(document->'token_endpoint_auth_method') <> 'string' THEN
        problem := oauth._error('invalid_client_metadata', 'token_endpoint_auth_method must be a string');
    ELSIF document ? 'token_endpoint_auth_methods_supported'
          AND (jsonb_typeof(document->'token_endpoint_auth_methods_supported') <> 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(document->'token_endpoint_auth_methods_supported') e
                           WHERE jsonb_typeof(e) <> 'string')) THEN
        problem := oauth._error('invalid_client_metadata', 'token_endpoint_auth_methods_supported must be an array of strings');
    ELSE
        offered := coalesce(document->'token_endpoint_auth_methods_supported', '[]');
        -- Without a declared method a document is public (RFC 7591's client_secret_basic default
        -- needs a secret no document can hold).
        method := CASE
            WHEN document->>'token_endpoint_auth_method' = 'private_key_jwt'
                 OR (offered ? 'private_key_jwt' AND (document ? 'jwks' OR document ? 'jwks_uri')) THEN 'private_key_jwt'
            WHEN coalesce(document->>'token_endpoint_auth_method', 'none') = 'none' OR offered ? 'none' THEN 'none'
        END;
        IF method IS NULL THEN
            problem := oauth._error('invalid_client_metadata',
                'token_endpoint_auth_method must be "none" or "private_key_jwt" (a metadata document cannot hold a secret)');
        ELSE
            -- A public client has no use for keys it may list for other purposes.
            fields := oauth._registration_fields(
                CASE WHEN method = 'none' THEN document - 'jwks' - 'jwks_uri' - 'token_endpoint_auth_signing_alg'
                     ELSE document END
                || jsonb_build_object('token_endpoint_auth_method', method));
            problem := fields.problem;
            IF problem IS NULL AND cardinality(fields.redirect_uris) = 0 THEN
                problem := oauth._error('invalid_redirect_uri', 'the document lists no redirect_uris');
            END IF;
        END IF;
    END IF;
    IF problem IS NOT NULL THEN
        PERFORM oauth.record_client_document_failure(client_id, problem->>'error_description', retry_at, now, true);
        RETURN problem;
    END IF;

    INSERT INTO oauth.clients AS c (client_id, client_name, redirect_uris, allowed_scopes, grant_types,
                                    token_endpoint_auth_method, application_type, metadata, created_at, updated_at)
    VALUES (store_client_document.client_id, coalesce(fields.client_name, oauth.uri_host(store_client_document.client_id)),
            fields.redirect_uris, (oauth._settings()).scopes_supported, fields.grant_types, fields.method, fields.app_type,
            fields.extra || '{"metadata_document": true}', now, now)
    ON CONFLICT (client_id) DO UPDATE
       SET client_name = EXCLUDED.client_name, redirect_uris = EXCLUDED.redirect_uris,
           allowed_scopes = EXCLUDED.allowed_scopes, grant_types = EXCLUDED.grant_types,
           token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method,
           application_type = EXCLUDED.application_type, metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
     -- Never take over an administrator's or a registration's client that happens to use this id.
     WHERE c.metadata @> '{"metadata_document": true}';
    IF NOT FOUND THEN
        problem := oauth._error('invalid_client', 'client_id is taken by a client that is not a metadata document');
        PERFORM oauth.record_client_document_failure(client_id, problem->>'error_description', retry_at, now, true);
        RETURN problem;
    END IF;
    INSERT INTO oauth.client_documents AS d (client_id, fetched_at, fresh_until, failure, consecutive_failures)
    VALUES (store_client_document.client_id, now, greatest(fresh_until, now), NULL, 0)
    ON CONFLICT (client_id) DO UPDATE
       SET fetched_at = EXCLUDED.fetched_at, fresh_until = EXCLUDED.fresh_until, failure = NULL,
           consecutive_failures = 0;
    PERFORM oauth._event('client_document_stored', client_id, NULL, NULL, NULL, NULL, now);
    RETURN '{}'::jsonb;
END
$$;

-- RFC 7662 data. The caller authenticates as a client. For an access token the gateway verified
-- signature and expiry and passes its grant_id/family_id/jti; for a refresh token, the token itself.
CREATE OR REPLACE FUNCTION oauth.introspect(
    client_id text,
    client_secret text,
    refresh_token text,
    grant_id uuid,
    family_id uuid,
    jti uuid DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    answer jsonb;
BEGIN
    client := oauth._authenticate_client(client_id, client_secret, now);
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_client', 'client authentication failed');
    END IF;
    -- A public client authenticates with its id alone, which anyone can copy: it may not probe tokens.
    IF client.token_endpoint_auth_method = 'none' THEN
        RETURN oauth._error('invalid_client', 'introspection requires a confidential client');
    END IF;
    IF refresh_token IS NOT NULL THEN
        SELECT jsonb_build_object(
                   'active', true, 'token_type', 'refresh_token', 'grant_id', f.grant_id, 'family_id', f.family_id,
                   'user_id', f.user_id, 'client_id', f.client_id, 'scope', oauth._scope_string(f.scopes),
                   'resource', f.resource, 'props', g.props,
                   'iat', floor(date_part('epoch', coalesce(f.rotated_at, f.created_at)))::bigint,
                   'exp', floor(date_part('epoch', f.expires_at))::bigint)
          INTO answer
          FROM oauth.refresh_families f
          JOIN oauth.grants g ON g.grant_id = f.grant_id
         WHERE f.family_id = oauth._refresh_token_family(refresh_token)
           AND oauth.secure_equal(f.current_hash, oauth.token_hash(refresh_token))
           AND f.revoked_at IS NULL AND g.revoked_at IS NULL
           AND f.expires_at > now;
    ELSIF oauth._access_token_live(introspect.grant_id, introspect.family_id, introspect.jti, now) THEN
        SELECT jsonb_build_object('active', true, 'token_type', 'access_token', 'grant_id', g.grant_id,
                                  'family_id', introspect.family_id, 'user_id', g.user_id,
                                  'client_id', g.client_id, 'props', g.props)
          INTO answer
          FROM oauth.grants g WHERE g.grant_id = introspect.grant_id;
    END IF;
    RETURN coalesce(answer, '{"active": false}'::jsonb);
END
$$;

-- Removes what can no longer matter, in batches that skip rows other transactions hold, so it can
-- run while traffic flows. Returns the number of rows removed; call until it returns 0.
CREATE OR REPLACE FUNCTION oauth.cleanup(now timestamptz DEFAULT now(), batch_size integer DEFAULT 1000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    retention interval := (oauth._settings()).revoked_retention;
    removed bigint := 0;
    n bigint;
BEGIN
    DELETE FROM oauth.authorization_requests WHERE request_id IN (
        SELECT request_id FROM oauth.authorization_requests WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Redeemed codes are kept until they expire, so that a replay is still recognised.
    DELETE FROM oauth.codes WHERE code_hash IN (
        SELECT code_hash FROM oauth.codes WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Device codes, like authorization codes, are kept until they expire so that a replay is recognised.
    DELETE FROM oauth.device_authorizations WHERE device_code_hash IN (
        SELECT device_code_hash FROM oauth.device_authorizations WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Failed metadata-document fetches once their negative caching is over: anyone can make us
    -- record one per URL they invent, so they must not accumulate.
    DELETE FROM oauth.client_documents WHERE client_id IN (
        SELECT client_id FROM oauth.client_documents WHERE failure IS NOT NULL AND fresh_until <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Expired families, and revoked ones once their audit retention is over (their tokens cascade).
    DELETE FROM oauth.refresh_families WHERE family_id IN (
        SELECT family_id FROM oauth.refresh_families
         WHERE expires_at <= now OR revoked_at <= now - retention
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Used client assertions once they are past their exp: they are refused then anyway.
    DELETE FROM oauth.client_assertion_jtis WHERE (client_id, jti) IN (
        SELECT client_id, jti FROM oauth.client_assertion_jtis WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Key sets fetched from a jwks_uri no client uses any more.
    DELETE FROM oauth.client_jwks WHERE client_id IN (
        SELECT k.client_id FROM oauth.client_jwks k JOIN oauth.clients c ON c.client_id = k.client_id
         WHERE c.token_endpoint_auth_method <> 'private_key_jwt' OR c.metadata->>'jwks_uri' IS DISTINCT FROM k.jwks_uri
         LIMIT batch_size FOR UPDATE OF k SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Access tokens revoked one by one, once the token itself has expired.
    DELETE FROM oauth.revoked_access_tokens WHERE jti IN (
        SELECT jti FROM oauth.revoked_access_tokens WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    DELETE FROM oauth.grants WHERE grant_id IN (
        SELECT grant_id FROM oauth.grants WHERE revoked_at <= now - retention
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Registered clients past their lifetime: revoke what they hold (notifying gateways), then remove.
    PERFORM oauth.delete_client(c.client_id, now) FROM (
        SELECT client_id FROM oauth.clients WHERE expires_at <= now
         LIMIT batch_size FOR UPDATE SKIP LOCKED) c;
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Clients made from metadata documents whose copy went stale longer than `retention` ago and
    -- that hold no live grant: anyone can have us keep one per URL they serve. Nothing is lost: the
    -- next authorization fetches the document again.
    PERFORM oauth.delete_client(c.client_id, now) FROM (
        SELECT c.client_id FROM oauth.clients c
          LEFT JOIN oauth.client_documents d ON d.client_id = c.client_id
         WHERE c.metadata @> '{"metadata_document": true}'
           AND coalesce(d.fresh_until, c.updated_at) <= now - retention
           AND NOT EXISTS (SELECT 1 FROM oauth.grants g WHERE g.client_id = c.client_id AND g.revoked_at IS NULL)
         LIMIT batch_size FOR UPDATE OF c SKIP LOCKED) c;
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;
    RETURN removed;
END
$$;

CREATE OR REPLACE FUNCTION oauth.set_token_exchange_policy(
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

-- The gateway verified the subject token (signature, issuer, expiry) and passes its claims: the
-- grant and family it names, its audience, its scope and its jti. `audience` is the requested
-- target (the RFC 8693 `resource` or `audience` parameter).
CREATE OR REPLACE FUNCTION oauth.exchange_token(
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

-- end of private_key_jwt (issue 11 item 1)

-- refresh tokens as a chain (issue 12, issue 11 item 4)
-- A refresh token now names its family and generation, and each successor is HMAC(chain_key,
-- predecessor) (extension/src/refresh_chain.rs): a rotation is one UPDATE of the family's row, no
-- row per token is written, concurrent presentations of one token within refresh_reuse_grace
-- (now 5 seconds by default) all get the same successor, and an earlier token is proven genuine
-- by deriving forward to the live one. Tokens issued before 0.3.0 keep working: they are found
-- through oauth.refresh_tokens (kept, no longer written) and rotate into chained tokens; every
-- existing family gets its own chain key. An operator's own oauth.settings row keeps the grace it
-- has (0 was the old default): `SELECT oauth.configure(refresh_reuse_grace => '5 seconds')`.
CREATE FUNCTION oauth."refresh_chain_key"() RETURNS bytea /* Vec < u8 > */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_chain_key_wrapper';
CREATE FUNCTION oauth."refresh_chain_reaches"(
	"chain_key" bytea, /* & [u8] */
	"family_id" uuid, /* pgrx :: Uuid */
	"generation" INT, /* i32 */
	"token" TEXT, /* & str */
	"steps" INT, /* i32 */
	"live_hash" bytea /* & [u8] */
) RETURNS bool /* bool */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_chain_reaches_wrapper';
CREATE FUNCTION oauth."refresh_token_family"(
	"token" TEXT /* & str */
) RETURNS uuid /* Option < pgrx :: Uuid > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_token_family_wrapper';
CREATE FUNCTION oauth."refresh_token_first"(
	"family_id" uuid /* pgrx :: Uuid */
) RETURNS TEXT /* String */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_token_first_wrapper';
CREATE FUNCTION oauth."refresh_token_generation"(
	"token" TEXT /* & str */
) RETURNS INT /* Option < i32 > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_token_generation_wrapper';
CREATE FUNCTION oauth."refresh_token_successor"(
	"chain_key" bytea, /* & [u8] */
	"family_id" uuid, /* pgrx :: Uuid */
	"generation" INT, /* i32 */
	"token" TEXT /* & str */
) RETURNS TEXT /* String */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'refresh_token_successor_wrapper';
REVOKE EXECUTE ON FUNCTION oauth.refresh_chain_key(), oauth.refresh_chain_reaches(bytea, uuid, integer, text, integer, bytea),
    oauth.refresh_token_family(text), oauth.refresh_token_first(uuid), oauth.refresh_token_generation(text),
    oauth.refresh_token_successor(bytea, uuid, integer, text) FROM PUBLIC;

ALTER TABLE oauth.refresh_families ADD COLUMN chain_key bytea CHECK (octet_length(chain_key) = 32);
UPDATE oauth.refresh_families SET chain_key = oauth.refresh_chain_key();
ALTER TABLE oauth.refresh_families ALTER COLUMN chain_key SET NOT NULL;

ALTER TABLE oauth.default_settings ALTER COLUMN refresh_reuse_grace SET DEFAULT '5 seconds';
ALTER TABLE oauth.settings ALTER COLUMN refresh_reuse_grace SET DEFAULT '5 seconds';
UPDATE oauth.default_settings SET refresh_reuse_grace = '5 seconds' WHERE refresh_reuse_grace = '0';

-- Opens a family for a redeemed code; with a refresh token when the client may refresh.
CREATE OR REPLACE FUNCTION oauth._open_family(code oauth.codes, with_refresh boolean, now timestamptz,
                                   OUT family oauth.refresh_families, OUT refresh_token text)
LANGUAGE plpgsql
AS $$
BEGIN
    IF with_refresh THEN
        refresh_token := oauth.refresh_token_first(code.family_id);
    END IF;
    INSERT INTO oauth.refresh_families (family_id, grant_id, client_id, user_id, scopes, resource, current_hash,
                                        created_at, expires_at, chain_key)
    VALUES (code.family_id, code.grant_id, code.client_id, code.user_id, code.scopes, code.resource, oauth.token_hash(refresh_token),
            now, now + (oauth._settings()).refresh_token_ttl, oauth.refresh_chain_key())
    RETURNING * INTO family;
END
$$;

-- The family a refresh token belongs to, unverified: the one it names, or for a token issued before
-- 0.3.0 the one oauth.refresh_tokens lists. Callers prove the token with oauth._refresh_token_age.
CREATE FUNCTION oauth._refresh_token_family(refresh_token text) RETURNS uuid
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(oauth.refresh_token_family(refresh_token),
                    (SELECT t.family_id FROM oauth.refresh_tokens t WHERE t.token_hash = oauth.token_hash(refresh_token)))
$$;

-- How many rotations ago `refresh_token` was the family's live token: 0 for the live token, 1 for
-- the one it replaced, and so on; NULL when this family never issued it (a forgery naming the
-- family, or a token older than the chain is followed). Proof, not a hint: the chain from the
-- presented token must reach current_hash.
CREATE FUNCTION oauth._refresh_token_age(family oauth.refresh_families, refresh_token text) RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    generation integer := oauth.refresh_token_generation(refresh_token);
    steps integer;
BEGIN
    IF family.current_hash IS NULL OR refresh_token IS NULL THEN
        RETURN NULL;
    END IF;
    IF oauth.secure_equal(oauth.token_hash(refresh_token), family.current_hash) THEN
        RETURN 0;
    END IF;
    IF generation IS NULL THEN
        -- Issued before 0.3.0: its row is the proof and says which generation it was.
        SELECT family.generation - t.generation INTO steps FROM oauth.refresh_tokens t
         WHERE t.token_hash = oauth.token_hash(refresh_token) AND t.family_id = family.family_id;
        RETURN CASE WHEN steps >= 1 THEN steps END;
    ELSIF oauth.refresh_token_family(refresh_token) IS DISTINCT FROM family.family_id THEN
        RETURN NULL;
    END IF;
    steps := family.generation - generation;
    IF steps < 1 OR NOT oauth.refresh_chain_reaches(family.chain_key, family.family_id, generation, refresh_token,
                                                      steps, family.current_hash) THEN
        RETURN NULL;
    END IF;
    RETURN steps;
END
$$;

REVOKE EXECUTE ON FUNCTION oauth._refresh_token_family(text), oauth._refresh_token_age(oauth.refresh_families, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oauth.rotate_refresh_token(
    client_id text,
    client_secret text,
    refresh_token text,
    scope text,
    resource text,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    authorized record;
    client oauth.clients;
    requested text[];
    named_family uuid;
    family oauth.refresh_families;
    rotated record;
    granted oauth.grants;
    age integer;
    grace interval;
BEGIN
    authorized := oauth._client_for_grant(client_id, client_secret, 'refresh_token', now);
    IF authorized.problem IS NOT NULL THEN
        RETURN authorized.problem;
    END IF;
    client := authorized.client;
    IF refresh_token IS NULL OR refresh_token = '' THEN
        RETURN oauth._error('invalid_request', 'refresh_token is required');
    END IF;
    requested := oauth.parse_scope(scope);
    IF requested IS NULL THEN
        RETURN oauth._error('invalid_scope', 'scope is malformed');
    END IF;
    named_family := oauth._refresh_token_family(refresh_token);
    -- The resource as this server lists it, as the code exchange compares it.
    rotate_refresh_token.resource := oauth.canonical_resource(rotate_refresh_token.resource);

    -- Rotation is decided by this one statement on the family's one row: the live token is swapped
    -- for its successor only if the presented token is still that live token, so concurrent
    -- rotations of one token cannot both succeed. Scope may narrow (this response only) and the
    -- resource may repeat.
    UPDATE oauth.refresh_families f
       SET current_hash = oauth.token_hash(
               oauth.refresh_token_successor(f.chain_key, f.family_id, f.generation + 1, refresh_token)),
           previous_hash = f.current_hash, generation = f.generation + 1, rotated_at = now
      FROM oauth.grants g
     WHERE f.family_id = named_family
       AND f.current_hash = oauth.token_hash(refresh_token)
       AND g.grant_id = f.grant_id
       AND f.client_id = client.client_id
       AND f.revoked_at IS NULL AND g.revoked_at IS NULL
       AND f.expires_at > now
       AND requested <@ f.scopes
       AND (rotate_refresh_token.resource IS NULL OR rotate_refresh_token.resource = f.resource)
    RETURNING f AS family, g.props, g.auth_time,
              oauth.refresh_token_successor(f.chain_key, f.family_id, f.generation, refresh_token) AS successor
    INTO rotated;
    IF FOUND THEN
        family := rotated.family;
        RETURN oauth._token_response(family, rotated.props, rotated.auth_time,
            CASE WHEN cardinality(requested) = 0 THEN family.scopes ELSE requested END, NULL,
            rotated.successor, now);
    END IF;

    -- Not rotated: say why, and treat a genuine token that is no longer live as stolen.
    SELECT * INTO family FROM oauth.refresh_families f WHERE f.family_id = named_family;
    age := oauth._refresh_token_age(family, refresh_token);
    IF age IS NULL THEN
        RETURN oauth._error('invalid_grant', 'refresh token is invalid');
    END IF;
    IF family.client_id <> client.client_id THEN
        RETURN oauth._error('invalid_grant', 'refresh token was issued to another client');
    END IF;
    IF family.revoked_at IS NOT NULL THEN
        RETURN oauth._error('invalid_grant', 'refresh token has been revoked');
    END IF;
    IF family.expires_at <= now THEN
        RETURN oauth._error('invalid_grant', 'refresh token has expired');
    END IF;
    IF age = 0 THEN
        IF NOT requested <@ family.scopes THEN
            RETURN oauth._error('invalid_scope', 'scope exceeds what was granted');
        END IF;
        IF rotate_refresh_token.resource IS NOT NULL AND rotate_refresh_token.resource IS DISTINCT FROM family.resource THEN
            RETURN oauth._error('invalid_target', 'resource differs from the one this token is bound to');
        END IF;
        RETURN oauth._error('invalid_grant', 'the grant has been revoked');
    END IF;

    -- The token the last rotation retired, presented again within the window after that rotation:
    -- a parallel request that lost the race, or a retry of a lost response. It gets the live token
    -- (its successor, derived again, not a new one), so there is never a second live successor and
    -- nothing is written; the window does not move. Switched on explicitly: a concurrent request
    -- whose transaction began before the rotation committed carries an earlier now(), so
    -- `rotated_at > now - '0'` alone would let it through.
    grace := (oauth._settings()).refresh_reuse_grace;
    IF age = 1 AND grace > interval '0' AND family.rotated_at > now - grace
       AND requested <@ family.scopes
       AND (rotate_refresh_token.resource IS NULL OR rotate_refresh_token.resource = family.resource) THEN
        SELECT * INTO granted FROM oauth.grants g WHERE g.grant_id = family.grant_id AND g.revoked_at IS NULL;
        IF FOUND THEN
            RETURN oauth._token_response(family, granted.props, granted.auth_time,
                CASE WHEN cardinality(requested) = 0 THEN family.scopes ELSE requested END, NULL,
                oauth.refresh_token_successor(family.chain_key, family.family_id, family.generation, refresh_token),
                now);
        END IF;
    END IF;

    -- Otherwise an earlier token came back: reuse (OAuth 2.1 §4.3.1). Revoke the family and the grant.
    PERFORM oauth._event('refresh_reused', family.client_id, family.user_id, family.grant_id, family.family_id,
                         pg_catalog.jsonb_build_object('rotations_ago', age), now);
    PERFORM oauth._revoke_family(family.family_id, 'refresh_token_reused', now);
    PERFORM oauth._revoke_grant(family.grant_id, 'refresh_token_reused', now);
    RETURN oauth._error('invalid_grant', 'refresh token was already used; the grant has been revoked');
END
$$;

-- RFC 7009. The token is either an opaque refresh token or the claims of an access token whose
-- signature the gateway verified: grant_id, family_id, jti, client_id (token_client_id) and exp
-- (token_expires_at). A client can revoke only the tokens issued to it (§2.1); anything else
-- (unknown, another client's, already revoked) succeeds without effect, as an invalid token does
-- (§2.2). An access token takes its family with it, or the client's own grant when it has no
-- family; one the client received by token exchange stands on another client's family and grant,
-- which stay live: that token alone is revoked.
CREATE OR REPLACE FUNCTION oauth.revoke_token(
    client_id text,
    client_secret text,
    refresh_token text,
    grant_id uuid,
    family_id uuid,
    jti uuid DEFAULT NULL,
    token_client_id text DEFAULT NULL,
    token_expires_at timestamptz DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    target uuid;
BEGIN
    client := oauth._authenticate_client(client_id, client_secret, now);
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_client', 'client authentication failed');
    END IF;
    IF refresh_token IS NOT NULL THEN
        -- Any token the family issued (live or rotated) revokes it; one it never issued does nothing.
        SELECT f.family_id INTO target FROM oauth.refresh_families f
         WHERE f.family_id = oauth._refresh_token_family(refresh_token) AND f.client_id = client.client_id
           AND oauth._refresh_token_age(f, refresh_token) IS NOT NULL;
        IF target IS NOT NULL THEN
            PERFORM oauth._revoke_family(target, 'revoked_by_client', now);
        END IF;
        RETURN '{}'::jsonb;
    END IF;
    -- Without the client_id claim, ownership is the family's or grant's alone.
    IF token_client_id IS NOT NULL AND token_client_id <> client.client_id THEN
        RETURN '{}'::jsonb;
    END IF;
    IF revoke_token.family_id IS NOT NULL THEN
        SELECT f.family_id INTO target FROM oauth.refresh_families f
         WHERE f.family_id = revoke_token.family_id AND f.grant_id = revoke_token.grant_id
           AND f.client_id = client.client_id;
        IF target IS NOT NULL THEN
            PERFORM oauth._revoke_family(target, 'revoked_by_client', now);
            RETURN '{}'::jsonb;
        END IF;
    ELSIF revoke_token.grant_id IS NOT NULL THEN
        -- An access token without a family was issued on the client's own grant (client_credentials).
        -- Revocation takes that grant with it (RFC 7009 §2.1 allows it): every token issued on it
        -- dies, and the client's next request opens a new grant.
        SELECT g.grant_id INTO target FROM oauth.grants g
         WHERE g.grant_id = revoke_token.grant_id AND g.subject_type = 'client'
           AND g.client_id = client.client_id;
        IF target IS NOT NULL THEN
            PERFORM oauth._revoke_grant(target, 'revoked_by_client', now);
            RETURN '{}'::jsonb;
        END IF;
    END IF;
    -- Issued to this client on a family or grant that is not its own: by token exchange.
    IF revoke_token.jti IS NOT NULL AND token_client_id = client.client_id THEN
        PERFORM oauth._revoke_access_token(revoke_token.jti, client.client_id, revoke_token.grant_id,
                                           revoke_token.family_id, token_expires_at, now);
    END IF;
    RETURN '{}'::jsonb;
END
$$;

-- RFC 7662 data. The caller authenticates as a client. For an access token the gateway verified
-- signature and expiry and passes its grant_id/family_id/jti; for a refresh token, the token itself.
CREATE OR REPLACE FUNCTION oauth.introspect(
    client_id text,
    client_secret text,
    refresh_token text,
    grant_id uuid,
    family_id uuid,
    jti uuid DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    answer jsonb;
BEGIN
    client := oauth._authenticate_client(client_id, client_secret, now);
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_client', 'client authentication failed');
    END IF;
    -- A public client authenticates with its id alone, which anyone can copy: it may not probe tokens.
    IF client.token_endpoint_auth_method = 'none' THEN
        RETURN oauth._error('invalid_client', 'introspection requires a confidential client');
    END IF;
    IF refresh_token IS NOT NULL THEN
        SELECT jsonb_build_object(
                   'active', true, 'token_type', 'refresh_token', 'grant_id', f.grant_id, 'family_id', f.family_id,
                   'user_id', f.user_id, 'client_id', f.client_id, 'scope', oauth._scope_string(f.scopes),
                   'resource', f.resource, 'props', g.props,
                   'iat', floor(date_part('epoch', coalesce(f.rotated_at, f.created_at)))::bigint,
                   'exp', floor(date_part('epoch', f.expires_at))::bigint)
          INTO answer
          FROM oauth.refresh_families f
          JOIN oauth.grants g ON g.grant_id = f.grant_id
         WHERE f.family_id = oauth._refresh_token_family(refresh_token)
           AND oauth.secure_equal(f.current_hash, oauth.token_hash(refresh_token))
           AND f.revoked_at IS NULL AND g.revoked_at IS NULL
           AND f.expires_at > now;
    ELSIF oauth._access_token_live(introspect.grant_id, introspect.family_id, introspect.jti, now) THEN
        SELECT jsonb_build_object('active', true, 'token_type', 'access_token', 'grant_id', g.grant_id,
                                  'family_id', introspect.family_id, 'user_id', g.user_id,
                                  'client_id', g.client_id, 'props', g.props)
          INTO answer
          FROM oauth.grants g WHERE g.grant_id = introspect.grant_id;
    END IF;
    RETURN coalesce(answer, '{"active": false}'::jsonb);
END
$$;

-- end of refresh tokens as a chain

-- real clients (issue 11 items 5-9)
-- Resources (RFC 8707) this server issues tokens for are listed in oauth.resources: gateways
-- declare their routes' resources at start (oauth.declare_resources), administrators add others
-- (oauth.add_resource, oauth.remove_resource). Once any is listed, /authorize and /token refuse an
-- unlisted one (invalid_target); "https://host" and "https://host/" are one resource
-- (oauth.resource_key); a bare origin names the one resource listed under it (Claude Code); a
-- request without a resource gets the one listed resource when there is exactly one (claude.ai).
-- Nothing is listed after this update, so every resource stays accepted until a gateway starts.
-- An authorization request for scopes the client may not have gets those it may have (RFC 6749
-- §3.3). A metadata document's client is named with its host on consent pages and in
-- list_user_grants.

CREATE FUNCTION oauth."resource_key"(
	"uri" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'resource_key_wrapper';
REVOKE EXECUTE ON FUNCTION oauth.resource_key(text) FROM PUBLIC;

CREATE TABLE oauth.resources (
    -- The spelling tokens carry (`aud`): the one the resource was first listed with.
    resource text PRIMARY KEY,
    -- oauth.resource_key(resource): one row per resource however it is spelled, so that
    -- "https://mcp.example" and "https://mcp.example/" cannot both be listed.
    resource_key text NOT NULL UNIQUE,
    added_by text NOT NULL CHECK (added_by IN ('gateway', 'administrator')),
    created_at timestamptz NOT NULL,
    -- When a gateway last declared it (NULL while only an administrator listed it).
    declared_at timestamptz
);
SELECT pg_catalog.pg_extension_config_dump('oauth.resources', '');
REVOKE ALL ON oauth.resources FROM PUBLIC;
GRANT SELECT ON oauth.resources TO oauth_admin;

-- "https://host" when `key` (a resource key) is a bare origin, "https://host/" with neither path
-- nor query; else NULL.
CREATE FUNCTION oauth._bare_origin(key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN pg_catalog.substring(key, '^([a-z][a-z0-9+.-]*://[^/?#]+)/$');
END
$$;

-- The listed resource `requested` names, spelled as it was listed, or NULL: the same resource
-- however spelled (RFC 3986 §6.2.3: "https://host" and "https://host/" are one), or, for a bare
-- origin that is not listed itself, the one resource listed under that origin. Claude Code asks
-- for its MCP server's origin plus "/" although the protected-resource metadata names
-- "https://host/mcp": when exactly one listed resource lives at that origin the client can only
-- mean it, and a token for it is narrower than the one asked for (good at one resource of the
-- origin, not at any), so nothing is granted that was not asked for. With two resources at the
-- origin the request is ambiguous and stays unlisted.
CREATE FUNCTION oauth._listed_resource(requested text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    key text := oauth.resource_key(requested);
    origin text := oauth._bare_origin(key);
    listed text;
BEGIN
    IF key IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT r.resource INTO listed FROM oauth.resources r WHERE r.resource_key = key;
    IF FOUND OR origin IS NULL THEN
        RETURN listed;
    END IF;
    SELECT pg_catalog.min(r.resource) INTO listed FROM oauth.resources r
     WHERE pg_catalog.starts_with(r.resource_key, origin || '/')
    HAVING pg_catalog.count(*) = 1;
    RETURN listed;
END
$$;

-- The resource a token request names, as this server lists it (oauth._listed_resource), or the
-- request's own value when it names nothing listed. The gateway passes the `resource` of code
-- exchanges and refreshes through it, so that a client repeating at /token the spelling it used at
-- /authorize (Claude Code's bare origin) repeats the resource it was granted (RFC 8707 §2.2).
CREATE FUNCTION oauth.canonical_resource(resource text) RETURNS text
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce(oauth._listed_resource(resource), resource);
END
$$;

-- Lists `resource`; true when it was not listed yet (under any spelling).
CREATE FUNCTION oauth._list_resource(resource text, added_by text, now timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    problem text := CASE WHEN resource IS NULL THEN 'resource is required' ELSE oauth.resource_problem(resource) END;
    inserted boolean;
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise('invalid_request', problem);
    END IF;
    INSERT INTO oauth.resources AS r (resource, resource_key, added_by, created_at, declared_at)
    VALUES (_list_resource.resource, oauth.resource_key(_list_resource.resource), _list_resource.added_by, now,
            CASE WHEN _list_resource.added_by = 'gateway' THEN now END)
    ON CONFLICT (resource_key) DO UPDATE
       SET declared_at = CASE WHEN EXCLUDED.added_by = 'gateway' THEN EXCLUDED.declared_at ELSE r.declared_at END
    RETURNING (xmax = 0) INTO inserted;
    RETURN inserted;
END
$$;

-- A gateway lists what it guards when it starts: its routes' resource identifiers and its default
-- audience. It only adds: gateways with different routes may share one database and none knows
-- what the others guard, so what no gateway guards any more is the administrator's to remove
-- (oauth.remove_resource). The gateway signs every token already; saying what it guards widens
-- nothing it could not do.
CREATE FUNCTION oauth.declare_resources(resources text[], now timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    declared text;
BEGIN
    IF resources IS NULL OR cardinality(resources) > 100 THEN
        PERFORM oauth._raise('invalid_request', 'resources must be a list of at most 100 resource indicators');
    END IF;
    FOREACH declared IN ARRAY resources LOOP
        PERFORM oauth._list_resource(declared, 'gateway', now);
    END LOOP;
END
$$;

-- An administrator lists a resource no gateway guards (a resource server of the application's own
-- that accepts this server's tokens). False when it was listed already.
CREATE FUNCTION oauth.add_resource(resource text, now timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN oauth._list_resource(resource, 'administrator', now);
END
$$;

-- Removes a listed resource, however spelled; false when it was not listed. Tokens already issued
-- for it stay valid until they expire; a gateway that still guards it lists it again at its next
-- start.
CREATE FUNCTION oauth.remove_resource(resource text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM oauth.resources r WHERE r.resource_key = oauth.resource_key(remove_resource.resource);
    RETURN FOUND;
END
$$;

REVOKE EXECUTE ON FUNCTION oauth._bare_origin(text), oauth._listed_resource(text), oauth.canonical_resource(text),
    oauth._list_resource(text, text, timestamptz), oauth.declare_resources(text[], timestamptz),
    oauth.add_resource(text, timestamptz), oauth.remove_resource(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.declare_resources(text[], timestamptz), oauth.canonical_resource(text) TO oauth_gateway;
GRANT EXECUTE ON FUNCTION oauth.add_resource(text, timestamptz), oauth.remove_resource(text) TO oauth_admin;

-- _resolve_target decides what _target_problem did.
DROP FUNCTION oauth._target_problem(text, text[]);

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
CREATE OR REPLACE FUNCTION oauth._resolve_target(requested text, allowed_resources text[], OUT target text, OUT problem jsonb)
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

-- The name a user is shown for a client. A metadata document's client_name is whatever the
-- document claims, and one document serves every installation of its client (every ChatGPT user
-- shares one client_id), so the host that publishes it, which is what vouches for it, is named
-- with it: "ChatGPT (chatgpt.com)".
CREATE FUNCTION oauth._client_display_name(client oauth.clients) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    host text;
BEGIN
    IF NOT coalesce((client.metadata->>'metadata_document')::boolean, false) THEN
        RETURN client.client_name;
    END IF;
    host := oauth.uri_host(client.client_id);
    IF host IS NULL OR client.client_name = host THEN
        RETURN client.client_name;
    END IF;
    RETURN pg_catalog.format('%s (%s)', client.client_name, host);
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._client_display_name(oauth.clients) FROM PUBLIC;

-- Validates an authorization request (RFC 6749 §4.1.1, RFC 7636, RFC 8707, OIDC Core §3.1.2.1) and
-- stores it for the consent step. `params` maps each parameter name to its value, or to an array
-- of values when the parameter was repeated. Until client_id and redirect_uri are validated an
-- error is never redirected (`"redirect": false`): that would make us an open redirector; nor,
-- for a client no administrator vetted, at all (see _redirect_error).
CREATE OR REPLACE FUNCTION oauth.begin_authorization(params jsonb, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings oauth.settings := oauth._settings();
    client oauth.clients;
    name text;
    redirect_uri text;
    state text;
    scopes text[];
    resource text;
    prompt text;
    request_id text;
    document_state jsonb;
    vetted boolean;
    target record;
BEGIN
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RETURN oauth._error('invalid_request', 'missing parameters') || '{"redirect": false}';
    END IF;
    FOREACH name IN ARRAY ARRAY['client_id', 'redirect_uri'] LOOP
        IF jsonb_typeof(params->name) = 'array' THEN
            RETURN oauth._error('invalid_request', format('%s is repeated', name)) || '{"redirect": false}';
        END IF;
    END LOOP;
    IF coalesce(params->>'client_id', '') = '' THEN
        RETURN oauth._error('invalid_request', 'client_id is required') || '{"redirect": false}';
    END IF;
    IF oauth._is_document_client_id(params->>'client_id') THEN
        document_state := oauth._client_document_state(params->>'client_id', now);
        IF document_state IS NOT NULL THEN
            RETURN document_state || '{"redirect": false}';
        END IF;
    END IF;
    SELECT * INTO client FROM oauth.clients c WHERE c.client_id = params->>'client_id'
       AND (c.expires_at IS NULL OR c.expires_at > now);
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_client', 'unknown client') || '{"redirect": false}';
    END IF;
    vetted := NOT client.registered_dynamically AND NOT coalesce((client.metadata->>'metadata_document')::boolean, false);

    redirect_uri := params->>'redirect_uri';
    IF redirect_uri IS NULL THEN
        -- Only an unambiguous registration lets the parameter be omitted; a loopback one needs its port.
        IF cardinality(client.redirect_uris) <> 1 OR oauth.is_loopback_redirect(client.redirect_uris[1]) THEN
            RETURN oauth._error('invalid_request', 'redirect_uri is required') || '{"redirect": false}';
        END IF;
        redirect_uri := client.redirect_uris[1];
    ELSIF NOT oauth.redirect_uri_allowed(client.redirect_uris, redirect_uri) THEN
        RETURN oauth._error('invalid_request', 'redirect_uri is not registered for this client') || '{"redirect": false}';
    END IF;

    -- From here on errors go back to the client.
    IF jsonb_typeof(params->'state') = 'array' THEN
        RETURN oauth._redirect_error(redirect_uri, NULL, 'invalid_request', 'state is repeated', vetted);
    END IF;
    state := params->>'state';
    FOR name IN SELECT key FROM jsonb_each(params) WHERE jsonb_typeof(value) = 'array' ORDER BY key LOOP
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', format('%s is repeated', name), vetted);
    END LOOP;
    FOR name IN SELECT key FROM jsonb_each(params) WHERE jsonb_typeof(value) <> 'string' OR length(value #>> '{}') > 2048 ORDER BY key LOOP
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', format('%s is not a string of at most 2048 characters', name), vetted);
    END LOOP;
    IF params ? 'request' THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'request_not_supported', 'request objects are not supported', vetted);
    END IF;
    IF params ? 'request_uri' THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'request_uri_not_supported', 'request_uri is not supported', vetted);
    END IF;
    IF params->>'response_type' IS NULL THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', 'response_type is required', vetted);
    END IF;
    IF params->>'response_type' <> 'code' THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'unsupported_response_type', 'only response_type=code is supported', vetted);
    END IF;
    IF coalesce(params->>'response_mode', 'query') <> 'query' THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', 'only response_mode=query is supported', vetted);
    END IF;
    IF NOT 'authorization_code' = ANY (client.grant_types) THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'unauthorized_client', 'client may not use the authorization code grant', vetted);
    END IF;
    IF params->>'code_challenge' IS NULL THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', 'code_challenge is required (PKCE)', vetted);
    END IF;
    IF coalesce(params->>'code_challenge_method', 'plain') <> 'S256' THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', 'code_challenge_method must be S256', vetted);
    END IF;
    IF NOT oauth.pkce_challenge_valid(params->>'code_challenge') THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', 'code_challenge is not a base64url SHA-256 digest', vetted);
    END IF;

    -- offline_access (OIDC Core §11) is a scope like any other here: granted when the client may
    -- have it, and it changes nothing, since a refresh token comes with every code exchange of a
    -- client registered for the refresh_token grant and never to one that is not. OIDC asks that
    -- it be ignored without prompt=consent, so that a refresh token is never issued without the
    -- user's consent; here every request goes through the application's consent step (silent
    -- authorization, prompt=none, is refused), so it is not ignored. Claude sends it.
    IF params ? 'scope' THEN
        scopes := oauth.parse_scope(params->>'scope');
        IF scopes IS NULL THEN
            RETURN oauth._redirect_error(redirect_uri, state, 'invalid_scope', 'scope is malformed', vetted);
        END IF;
    END IF;
    IF scopes IS NULL OR cardinality(scopes) = 0 THEN
        SELECT coalesce(array_agg(s), '{}') INTO scopes FROM unnest(settings.default_scopes) s WHERE s = ANY (client.allowed_scopes);
        IF cardinality(scopes) = 0 THEN
            RETURN oauth._redirect_error(redirect_uri, state, 'invalid_scope', 'scope is required', vetted);
        END IF;
    ELSIF NOT scopes <@ client.allowed_scopes THEN
        -- RFC 6749 §3.3 lets the server ignore part of the requested scope, and the token response
        -- says what was granted. claude.ai asks for every scopes_supported value whatever the
        -- client may have (a client an administrator created for it with fewer): it gets the
        -- scopes it may have, and the consent page shows only those. Nothing outside the client's
        -- scopes is ever granted; a request for none of them is still refused.
        SELECT coalesce(array_agg(s ORDER BY ord), '{}') INTO scopes
          FROM unnest(scopes) WITH ORDINALITY AS r(s, ord) WHERE s = ANY (client.allowed_scopes);
        IF cardinality(scopes) = 0 THEN
            RETURN oauth._redirect_error(redirect_uri, state, 'invalid_scope',
                'none of the requested scopes is allowed for this client', vetted);
        END IF;
    END IF;

    target := oauth._resolve_target(params->>'resource', client.allowed_resources);
    IF target.problem IS NOT NULL THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_target', target.problem->>'error_description', vetted);
    END IF;
    resource := target.target;

    prompt := params->>'prompt';
    IF prompt IS NOT NULL THEN
        IF prompt !~ '^(none|login|consent|select_account)( (none|login|consent|select_account))*$' THEN
            RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', 'prompt has an unsupported value', vetted);
        END IF;
        -- The user is always shown the application's login/consent step; silent authorization is not offered.
        IF prompt ~ '\mnone\M' THEN
            RETURN oauth._redirect_error(redirect_uri, state, 'login_required', 'prompt=none is not supported', vetted);
        END IF;
    END IF;

    request_id := oauth.random_token(24);
    INSERT INTO oauth.authorization_requests (request_id, client_id, redirect_uri, redirect_uri_sent, scopes, resource,
                                              state, nonce, code_challenge, prompt, created_at, expires_at)
    VALUES (request_id, client.client_id, redirect_uri, params ? 'redirect_uri', scopes, resource, state,
            params->>'nonce', params->>'code_challenge', prompt, now, now + settings.authorization_request_ttl);
    RETURN jsonb_build_object('request_id', request_id, 'client_id', client.client_id,
                              'client_name', client.client_name, 'prompt', prompt);
END
$$;

-- What a consent screen shows (client_name names a metadata document's host, see
-- oauth._client_display_name). Raises not_found for an unknown or expired request.
CREATE OR REPLACE FUNCTION oauth.get_authorization_request(request_id text, now timestamptz DEFAULT now())
RETURNS TABLE (
    client_id text, client_name text, client_uri text, scopes text[], resource text,
    redirect_uri text, redirect_host text, prompt text, expires_at timestamptz,
    -- Every registered redirect URI is loopback: any local program could be this client.
    loopback_only boolean
)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- redirect_host only for http(s): in x-app://claude.ai/cb the "host" is whatever the app wrote,
    -- and the scheme is what decides which program receives the code (RFC 8252 §8.6).
    RETURN QUERY
    SELECT c.client_id, oauth._client_display_name(c), c.metadata->>'client_uri', r.scopes, r.resource,
           r.redirect_uri, CASE WHEN r.redirect_uri ~* '^https?://' THEN oauth.uri_host(r.redirect_uri) END,
           r.prompt, r.expires_at,
           NOT EXISTS (SELECT 1 FROM unnest(c.redirect_uris) u WHERE NOT oauth.is_loopback_redirect(u))
      FROM oauth.authorization_requests r
      JOIN oauth.clients c ON c.client_id = r.client_id
     WHERE r.request_id = get_authorization_request.request_id AND r.expires_at > now;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such authorization request, or it has expired');
    END IF;
END
$$;

-- What the verification page shows (client_name names a metadata document's host, see
-- oauth._client_display_name). Raises not_found for an unknown, expired or decided code.
-- canonical_user_code is the code as stored: what a page binds its form to, so no caller needs to
-- know how typed codes are normalized. (Not named user_code: the argument is.)
CREATE OR REPLACE FUNCTION oauth.get_device_authorization(user_code text, now timestamptz DEFAULT now())
RETURNS TABLE (client_id text, client_name text, client_uri text, scopes text[], resource text, expires_at timestamptz,
               canonical_user_code text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.client_id, oauth._client_display_name(c), c.metadata->>'client_uri', d.scopes, d.resource, d.expires_at,
           d.user_code
      FROM oauth.device_authorizations d
      JOIN oauth.clients c ON c.client_id = d.client_id
     WHERE d.user_code = oauth._normalize_user_code(get_device_authorization.user_code)
       AND d.status = 'pending' AND d.expires_at > now;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such user code, or it has expired or was already used');
    END IF;
END
$$;

-- The user's "connected apps": live grants, a metadata document's client named with its host
-- (oauth._client_display_name), since every user of, say, ChatGPT shares its one client_id.
CREATE OR REPLACE FUNCTION oauth.list_user_grants(user_id text) RETURNS TABLE (
    grant_id uuid, client_id text, client_name text, scopes text[], resource text, props jsonb,
    metadata jsonb, auth_time timestamptz, created_at timestamptz, updated_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.grant_id, g.client_id, oauth._client_display_name(c), g.scopes, g.resource, g.props, g.metadata,
           g.auth_time, g.created_at, g.updated_at
      FROM oauth.grants g JOIN oauth.clients c ON c.client_id = g.client_id
     WHERE g.subject_type = 'user' AND g.user_id = list_user_grants.user_id AND g.revoked_at IS NULL
     ORDER BY g.created_at, g.grant_id
$$;

-- end of real clients (issue 11 items 5-9)
