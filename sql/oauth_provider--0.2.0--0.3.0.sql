-- oauth_provider 0.2.0 → 0.3.0. Every row stays; tokens, codes and secrets issued by 0.2.0 keep
-- working. Each section below is one change, with every function it touches written in full (the
-- same text as sql/*.sql), so that an updated database equals a fresh 0.3.0 install.

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
    -- RFC 8707 §2.2: the token request may repeat the authorized resource, never add one.
    IF exchange_code.resource IS NOT NULL AND exchange_code.resource IS DISTINCT FROM redeemed.resource THEN
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
