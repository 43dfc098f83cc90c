-- Clients: registration by an administrator (SQL) or by the client itself (RFC 7591), and lookup.

-- Why a client definition is unacceptable, as an error object, or NULL. One rule set for
-- administrator-created and dynamically registered clients.
CREATE FUNCTION oauth._client_problem(
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

CREATE FUNCTION oauth.create_client(
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
CREATE FUNCTION oauth.update_client(
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

CREATE FUNCTION oauth.rotate_client_secret(client_id text, now timestamptz DEFAULT now()) RETURNS text
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

-- Revokes every grant (and so every token) of the client, then removes it.
CREATE FUNCTION oauth.delete_client(client_id text, now timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    live_grant uuid;
BEGIN
    PERFORM 1 FROM oauth.clients c WHERE c.client_id = delete_client.client_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    FOR live_grant IN SELECT g.grant_id FROM oauth.grants g
                       WHERE g.client_id = delete_client.client_id AND g.revoked_at IS NULL LOOP
        PERFORM oauth._revoke_grant(live_grant, 'client_deleted', now);
    END LOOP;
    DELETE FROM oauth.clients c WHERE c.client_id = delete_client.client_id;
    -- A cached metadata document would otherwise stand for a client that no longer exists.
    DELETE FROM oauth.client_documents d WHERE d.client_id = delete_client.client_id;
    PERFORM oauth._event('client_deleted', delete_client.client_id, NULL, NULL, NULL, NULL, now);
    RETURN true;
END
$$;

CREATE FUNCTION oauth.list_clients() RETURNS TABLE (
    client_id text, client_name text, redirect_uris text[], allowed_scopes text[], grant_types text[],
    token_endpoint_auth_method text, application_type text, allowed_resources text[], metadata jsonb,
    registered_dynamically boolean, created_at timestamptz, updated_at timestamptz, expires_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT c.client_id, c.client_name, c.redirect_uris, c.allowed_scopes, c.grant_types,
           c.token_endpoint_auth_method, c.application_type, c.allowed_resources, c.metadata,
           c.registered_dynamically, c.created_at, c.updated_at, c.expires_at
      FROM oauth.clients c
     ORDER BY c.created_at, c.client_id
$$;

-- Public metadata of a live client, for the gateway (consent page, registration echo).
CREATE FUNCTION oauth._client_json(client oauth.clients) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN client.metadata || jsonb_build_object(
        'client_id', client.client_id,
        'client_name', client.client_name,
        'redirect_uris', to_jsonb(client.redirect_uris),
        'scope', oauth._scope_string(client.allowed_scopes),
        'grant_types', to_jsonb(client.grant_types),
        'response_types', '["code"]'::jsonb,
        'token_endpoint_auth_method', client.token_endpoint_auth_method,
        'application_type', client.application_type,
        'client_id_issued_at', floor(date_part('epoch', client.created_at))::bigint);
END
$$;

CREATE FUNCTION oauth.get_client(client_id text, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    found_client oauth.clients;
BEGIN
    SELECT * INTO found_client FROM oauth.clients c
     WHERE c.client_id = get_client.client_id AND (c.expires_at IS NULL OR c.expires_at > now);
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_client', 'unknown client');
    END IF;
    RETURN oauth._client_json(found_client);
END
$$;

-- RFC 7591 client metadata, checked field by field for type and value; unknown fields are ignored
-- (§2). application_type defaults to "native" when any redirect URI is loopback or a private-use
-- scheme, else "web". Only a native app can receive those (RFC 8252 §7), and it may list claimed
-- https URIs beside them (§7.2): Cursor registers cursor://, https:// and http://localhost URIs
-- together and VS Code a loopback and an https URI, both without application_type. An explicit
-- "web" still refuses them. Shared by registration and RFC 7592 updates.
CREATE FUNCTION oauth._registration_fields(
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
    -- RFC 9126 §6: a client may ask that its requests be accepted only when pushed.
    IF metadata ? 'require_pushed_authorization_requests' THEN
        IF jsonb_typeof(metadata->'require_pushed_authorization_requests') <> 'boolean' THEN
            problem := oauth._error('invalid_client_metadata', 'require_pushed_authorization_requests must be a boolean');
            RETURN;
        END IF;
        extra := extra || jsonb_build_object('require_pushed_authorization_requests',
                                             metadata->'require_pushed_authorization_requests');
    END IF;
    -- RFC 9449 §5.2: a client may ask that every token it gets be bound to a DPoP key.
    IF metadata ? 'dpop_bound_access_tokens' THEN
        IF jsonb_typeof(metadata->'dpop_bound_access_tokens') <> 'boolean' THEN
            problem := oauth._error('invalid_client_metadata', 'dpop_bound_access_tokens must be a boolean');
            RETURN;
        END IF;
        IF (metadata->>'dpop_bound_access_tokens')::boolean AND NOT (oauth._settings()).dpop_supported THEN
            problem := oauth._error('invalid_client_metadata', 'this server does not bind tokens to DPoP keys');
            RETURN;
        END IF;
        extra := extra || jsonb_build_object('dpop_bound_access_tokens', metadata->'dpop_bound_access_tokens');
    END IF;

    problem := oauth._client_problem(redirect_uris, coalesce(scopes, (oauth._settings()).scopes_supported),
                                     grant_types, method, app_type, NULL);
    IF problem IS NOT NULL THEN
        RETURN;
    END IF;
    -- RP-Initiated Logout 1.0 §3.1: where /logout may send the browser afterwards. The same rules as
    -- redirect URIs (an unchecked one would make /logout an open redirector), compared byte for byte.
    IF metadata ? 'post_logout_redirect_uris' THEN
        IF jsonb_typeof(metadata->'post_logout_redirect_uris') <> 'array'
           OR jsonb_array_length(metadata->'post_logout_redirect_uris') > 20
           OR EXISTS (SELECT 1 FROM jsonb_array_elements(metadata->'post_logout_redirect_uris') e
                       WHERE jsonb_typeof(e) <> 'string') THEN
            problem := oauth._error('invalid_client_metadata',
                                    'post_logout_redirect_uris must be an array of at most 20 URIs');
            RETURN;
        END IF;
        FOR field IN SELECT e FROM jsonb_array_elements_text(metadata->'post_logout_redirect_uris') e LOOP
            IF oauth.redirect_uri_problem(field, app_type) IS NOT NULL THEN
                problem := oauth._error('invalid_client_metadata', format('post_logout_redirect_uri %s: %s',
                                        left(field, 200), oauth.redirect_uri_problem(field, app_type)));
                RETURN;
            END IF;
        END LOOP;
        extra := extra || jsonb_build_object('post_logout_redirect_uris', metadata->'post_logout_redirect_uris');
    END IF;
END
$$;

-- RFC 7591 dynamic registration. The answer carries the client secret (confidential clients) and
-- the RFC 7592 registration access token, each shown this once.
CREATE FUNCTION oauth.register_client(metadata jsonb, now timestamptz DEFAULT now()) RETURNS jsonb
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

CREATE FUNCTION oauth._registration_json(client oauth.clients) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN oauth._client_json(client) || jsonb_build_object('client_secret_expires_at',
        coalesce(floor(date_part('epoch', client.expires_at))::bigint, 0));
END
$$;

-- The dynamically registered client that `registration_access_token` configures, or NULL. An
-- unknown client and a wrong token are indistinguishable to the caller (RFC 7592 §2: 401 for both).
CREATE FUNCTION oauth._registered_client(client_id text, registration_access_token text, now timestamptz)
RETURNS oauth.clients
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    client oauth.clients;
BEGIN
    SELECT * INTO client FROM oauth.clients c
     WHERE c.client_id = _registered_client.client_id AND c.registration_token_hash IS NOT NULL
       AND (c.expires_at IS NULL OR c.expires_at > now);
    IF NOT FOUND OR registration_access_token IS NULL
       OR NOT oauth.secure_equal(oauth.token_hash(registration_access_token), client.registration_token_hash) THEN
        RETURN NULL;
    END IF;
    RETURN client;
END
$$;

-- RFC 7592 §2.1: read the current registration.
CREATE FUNCTION oauth.read_registration(client_id text, registration_access_token text, now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients := oauth._registered_client(client_id, registration_access_token, now);
BEGIN
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_token', 'the registration access token is invalid for this client');
    END IF;
    RETURN oauth._registration_json(client);
END
$$;

-- RFC 7592 §2.2: replace the registration with `metadata` (every field; omitted ones take their
-- defaults). client_id must be repeated; a client_secret, if sent, must be the current one. The
-- client keeps its id, secret and registration access token; narrowing redirect URIs or grant types
-- leaves existing grants alone (they stay revocable through oauth.revoke_grant).
CREATE FUNCTION oauth.update_registration(
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

-- RFC 7592 §2.3: the client deregisters itself; everything it holds is revoked (oauth.delete_client).
CREATE FUNCTION oauth.delete_registration(client_id text, registration_access_token text, now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients := oauth._registered_client(client_id, registration_access_token, now);
BEGIN
    IF client.client_id IS NULL THEN
        RETURN oauth._error('invalid_token', 'the registration access token is invalid for this client');
    END IF;
    PERFORM oauth.delete_client(client.client_id, now);
    RETURN '{}'::jsonb;
END
$$;

-- Operator settings; NULL keeps the current value.
CREATE FUNCTION oauth.configure(
    issuer text DEFAULT NULL,
    access_token_ttl interval DEFAULT NULL,
    code_ttl interval DEFAULT NULL,
    refresh_token_ttl interval DEFAULT NULL,
    refresh_reuse_grace interval DEFAULT NULL,
    scopes_supported text[] DEFAULT NULL,
    default_scopes text[] DEFAULT NULL,
    registration_enabled boolean DEFAULT NULL,
    registered_client_ttl interval DEFAULT NULL,
    authorization_request_ttl interval DEFAULT NULL,
    event_retention interval DEFAULT NULL,
    record_token_events boolean DEFAULT NULL,
    require_pushed_authorization_requests boolean DEFAULT NULL,
    pushed_request_ttl interval DEFAULT NULL,
    dpop_supported boolean DEFAULT NULL,
    announce_events boolean DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF issuer IS NOT NULL AND (oauth.resource_problem(issuer) IS NOT NULL OR issuer ~ '[?]' OR issuer !~ '^https?://') THEN
        PERFORM oauth._raise('invalid_request', 'issuer must be an http(s) URL without query or fragment');
    END IF;
    INSERT INTO oauth.settings SELECT * FROM oauth.default_settings ON CONFLICT DO NOTHING;
    UPDATE oauth.settings s SET
        issuer = coalesce(configure.issuer, s.issuer),
        access_token_ttl = coalesce(configure.access_token_ttl, s.access_token_ttl),
        code_ttl = coalesce(configure.code_ttl, s.code_ttl),
        refresh_token_ttl = coalesce(configure.refresh_token_ttl, s.refresh_token_ttl),
        refresh_reuse_grace = coalesce(configure.refresh_reuse_grace, s.refresh_reuse_grace),
        scopes_supported = coalesce(configure.scopes_supported, s.scopes_supported),
        default_scopes = coalesce(configure.default_scopes, s.default_scopes),
        registration_enabled = coalesce(configure.registration_enabled, s.registration_enabled),
        registered_client_ttl = coalesce(configure.registered_client_ttl, s.registered_client_ttl),
        authorization_request_ttl = coalesce(configure.authorization_request_ttl, s.authorization_request_ttl),
        event_retention = coalesce(configure.event_retention, s.event_retention),
        record_token_events = coalesce(configure.record_token_events, s.record_token_events),
        require_pushed_authorization_requests = coalesce(configure.require_pushed_authorization_requests,
                                                         s.require_pushed_authorization_requests),
        pushed_request_ttl = coalesce(configure.pushed_request_ttl, s.pushed_request_ttl),
        dpop_supported = coalesce(configure.dpop_supported, s.dpop_supported),
        announce_events = coalesce(configure.announce_events, s.announce_events);
    RETURN oauth.settings();
END
$$;

-- What the functions in this schema accept, for the discovery document: each list is the rule the
-- named check enforces, so metadata cannot promise what the extension refuses.
CREATE FUNCTION oauth._capabilities() RETURNS jsonb
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

CREATE FUNCTION oauth.settings() RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'issuer', s.issuer,
        'access_token_ttl', floor(date_part('epoch', s.access_token_ttl))::bigint,
        'code_ttl', floor(date_part('epoch', s.code_ttl))::bigint,
        'refresh_token_ttl', floor(date_part('epoch', s.refresh_token_ttl))::bigint,
        'refresh_reuse_grace', floor(date_part('epoch', s.refresh_reuse_grace))::bigint,
        'scopes_supported', to_jsonb(s.scopes_supported),
        'default_scopes', to_jsonb(s.default_scopes),
        'registration_enabled', s.registration_enabled,
        'registered_client_ttl', floor(date_part('epoch', s.registered_client_ttl))::bigint,
        'authorization_request_ttl', floor(date_part('epoch', s.authorization_request_ttl))::bigint,
        'event_retention', floor(date_part('epoch', s.event_retention))::bigint,
        'record_token_events', s.record_token_events,
        'require_pushed_authorization_requests', s.require_pushed_authorization_requests,
        'pushed_request_ttl', floor(date_part('epoch', s.pushed_request_ttl))::bigint,
        'dpop_supported', s.dpop_supported,
        'announce_events', s.announce_events,
        -- What the gateway's proof check accepts (oauth_rules::dpop), when DPoP is on.
        'dpop_signing_alg_values_supported',
            CASE WHEN s.dpop_supported THEN to_jsonb(oauth.dpop_signing_algs()) ELSE '[]'::jsonb END)
        || oauth._with_assertion_grants(oauth._capabilities())
      FROM oauth._settings() s
$$;

