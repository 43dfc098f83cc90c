-- oauth_provider 0.1.0 → 0.2.0. Functions only; no table changes, so every row (clients, grants,
-- codes, refresh families) stays as it is and every token issued by 0.1.0 keeps working.
--
-- * The discovery capabilities come from the extension (oauth._capabilities, merged into
--   oauth.settings()), so the gateway serves what the extension enforces.
-- * Metadata-document client ids are recognised by the same rule the gateway checks before it
--   fetches (oauth.document_client_id_problem, from the oauth_rules crate).
-- * oauth.get_device_authorization also returns the canonical user code, so pages bind their forms
--   to it without knowing how codes are normalized.
-- * Registration without application_type infers "native" when any redirect URI is loopback or a
--   private-use scheme (Cursor and VS Code register such URIs beside https ones).
-- * begin_authorization never redirects an error to a redirect URI no administrator vetted
--   (dynamically registered and metadata-document clients): RFC 9700 §4.11.2.
-- * get_authorization_request names no redirect host for private-use schemes, whose "host" the
--   application chose (x-evil://claude.ai/cb is not claude.ai).
-- * A client restricted to some resources never gets a token without one (which a gateway would
--   give its default audience): a request that names none gets the client's only allowed resource,
--   or invalid_target when it is allowed several (oauth._resolve_target).
-- * A metadata document whose refetch fails keeps serving its last good copy until retry_at, for at
--   most a day after that good fetch (oauth.record_client_document_failure).

\echo Use "ALTER EXTENSION oauth_provider UPDATE TO '0.2.0'" to load this file. \quit

CREATE FUNCTION oauth."document_client_id_problem"(
	"client_id" TEXT /* &str */
) RETURNS TEXT /* core::option::Option<alloc::string::String> */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'document_client_id_problem_wrapper';
REVOKE EXECUTE ON FUNCTION oauth.document_client_id_problem(text) FROM PUBLIC;

-- The same rule the gateway applies before fetching (the oauth_rules crate): a URL it would not
-- fetch is not a document client id here either, and stays an unknown client.
CREATE OR REPLACE FUNCTION oauth._is_document_client_id(client_id text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN client_id IS NOT NULL AND oauth.document_client_id_problem(client_id) IS NULL;
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
        -- _check_client_fields and the clients table's CHECK.
        'token_endpoint_auth_methods_supported', jsonb_build_array('client_secret_basic', 'client_secret_post', 'none'),
        'revocation_endpoint_auth_methods_supported', jsonb_build_array('client_secret_basic', 'client_secret_post', 'none'),
        -- introspect: confidential callers only.
        'introspection_endpoint_auth_methods_supported', jsonb_build_array('client_secret_basic', 'client_secret_post'),
        -- begin_authorization treats https URL client ids as metadata documents.
        'client_id_metadata_document_supported', true,
        -- The longest an access token can live (the settings table's bound on access_token_ttl): a
        -- revocation older than this can no longer concern a presented token.
        'revocation_horizon', 86400)
$$;
REVOKE EXECUTE ON FUNCTION oauth._capabilities() FROM PUBLIC;

CREATE OR REPLACE FUNCTION oauth.settings() RETURNS jsonb
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
        'authorization_request_ttl', floor(date_part('epoch', s.authorization_request_ttl))::bigint)
        || oauth._capabilities()
      FROM oauth._settings() s
$$;

-- A new result column changes the function's type, which CREATE OR REPLACE cannot do.
DROP FUNCTION oauth.get_device_authorization(text, timestamptz);
-- What the verification page shows. Raises not_found for an unknown, expired or decided code.
-- canonical_user_code is the code as stored: what a page binds its form to, so no caller needs to
-- know how typed codes are normalized. (Not named user_code: the argument is.)
CREATE FUNCTION oauth.get_device_authorization(user_code text, now timestamptz DEFAULT now())
RETURNS TABLE (client_id text, client_name text, client_uri text, scopes text[], resource text, expires_at timestamptz,
               canonical_user_code text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.client_id, c.client_name, c.metadata->>'client_uri', d.scopes, d.resource, d.expires_at, d.user_code
      FROM oauth.device_authorizations d
      JOIN oauth.clients c ON c.client_id = d.client_id
     WHERE d.user_code = oauth._normalize_user_code(get_device_authorization.user_code)
       AND d.status = 'pending' AND d.expires_at > now;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such user code, or it has expired or was already used');
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION oauth.get_device_authorization(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.get_device_authorization(text, timestamptz) TO oauth_gateway, oauth_admin;

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
    IF metadata ? 'jwks' OR metadata ? 'jwks_uri' THEN
        problem := oauth._error('invalid_client_metadata', 'jwks and jwks_uri are not supported (no private_key_jwt)');
        RETURN;
    END IF;

    problem := oauth._client_problem(redirect_uris, coalesce(scopes, (oauth._settings()).scopes_supported),
                                     grant_types, method, app_type, NULL);
END
$$;

-- The vetting decides whether an error may be redirected: a new argument, so a new function.
DROP FUNCTION oauth._redirect_error(text, text, text, text);
-- An authorization error that may be sent to the validated redirect URI. Only when an administrator
-- vetted the client: a redirect URI that anyone registered (RFC 7591) or that a metadata document
-- names could be anyone's, and an error sent there before the user did anything would make this
-- server an open redirector (RFC 9700 §4.11.2). Those errors are shown on the server's page.
CREATE FUNCTION oauth._redirect_error(redirect_uri text, state text, error text, description text, vetted boolean)
RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF NOT vetted THEN
        RETURN oauth._error(error, description) || '{"redirect": false}';
    END IF;
    RETURN oauth._error(error, description) || jsonb_build_object(
        'redirect', true,
        'redirect_uri', redirect_uri,
        'state', state,
        'iss', (oauth._settings()).issuer,
        'location', oauth._client_redirect(redirect_uri,
            jsonb_build_object('error', error, 'error_description', description, 'state', state)));
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._redirect_error(text, text, text, text, boolean) FROM PUBLIC;

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
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_scope',
            format('scope not allowed for this client: %s',
                   (SELECT string_agg(s, ' ') FROM unnest(scopes) s WHERE NOT s = ANY (client.allowed_scopes))), vetted);
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

-- What a consent screen shows. Raises not_found for an unknown or expired request.
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
    SELECT c.client_id, c.client_name, c.metadata->>'client_uri', r.scopes, r.resource,
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

-- The RFC 8707 resource a token request ends up with, or why it cannot have one (invalid_target).
-- A request that names none, from a client whose registration allows exactly one resource, gets
-- that one; a client restricted to several must name one. Either way a client restricted to some
-- resources never receives a token without an audience, to which a gateway would give its default.
CREATE FUNCTION oauth._resolve_target(requested text, allowed_resources text[], OUT target text, OUT problem jsonb)
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    target := requested;
    IF target IS NULL AND allowed_resources IS NOT NULL THEN
        IF pg_catalog.cardinality(allowed_resources) <> 1 THEN
            problem := oauth._error('invalid_target', 'resource is required: this client may ask only for particular resources');
            RETURN;
        END IF;
        target := allowed_resources[1];
    END IF;
    problem := oauth._target_problem(target, allowed_resources);
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._resolve_target(text, text[]) FROM PUBLIC;

CREATE OR REPLACE FUNCTION oauth.client_credentials_grant(
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
    -- Tokens of this grant belong to no family: revoking the grant (or deleting the client) kills them.
    RETURN oauth._access_token_response(own_grant, NULL, client.client_id, resolved.scopes, target.target, now);
END
$$;

-- RFC 8628 §3.1–3.2. Answers device_code, user_code (XXXX-XXXX), expires_in and interval; the
-- gateway adds the verification URIs.
CREATE OR REPLACE FUNCTION oauth.begin_device_authorization(
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
    authorized record;
    client oauth.clients;
    resolved record;
    target record;
    device_code text := oauth.random_token(32);
    user_code text;
    ttl interval := (oauth._settings()).authorization_request_ttl;
BEGIN
    authorized := oauth._client_for_grant(client_id, client_secret, 'urn:ietf:params:oauth:grant-type:device_code', now);
    IF authorized.problem IS NOT NULL THEN
        RETURN authorized.problem;
    END IF;
    client := authorized.client;
    resolved := oauth._resolve_scopes(scope, client.allowed_scopes);
    IF resolved.problem IS NOT NULL THEN
        RETURN resolved.problem;
    END IF;
    target := oauth._resolve_target(resource, client.allowed_resources);
    IF target.problem IS NOT NULL THEN
        RETURN target.problem;
    END IF;
    -- ~34.6 bits per code: a collision with a stored code is rare; draw again when it happens.
    FOR attempt IN 1..5 LOOP
        user_code := oauth.random_user_code();
        BEGIN
            INSERT INTO oauth.device_authorizations (device_code_hash, user_code, client_id, scopes, resource,
                                                     created_at, expires_at)
            VALUES (oauth.token_hash(device_code), replace(user_code, '-', ''), client.client_id, resolved.scopes,
                    target.target, now, now + ttl);
            RETURN jsonb_build_object(
                'device_code', device_code,
                'user_code', user_code,
                'expires_in', floor(date_part('epoch', ttl))::bigint,
                'interval', 5);
        EXCEPTION WHEN unique_violation THEN
            NULL;
        END;
    END LOOP;
    RETURN oauth._error('temporarily_unavailable', 'could not allocate a user code; try again');
END
$$;

-- A fetch that failed (no answer, a refused connection, a fetch the gateway's budget refused). When
-- the last fetch of this document was good, less than a day ago, its client keeps serving until
-- retry_at: an unreachable host says nothing new about the document, and refusing the client would
-- let anyone who can make the fetch fail (or spend its budget) lock its users out. A document that
-- answers with unusable content is different: store_client_document records that and the client is
-- refused at once.
CREATE OR REPLACE FUNCTION oauth.record_client_document_failure(
    client_id text, failure text, retry_at timestamptz, now timestamptz DEFAULT now()
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
    INSERT INTO oauth.client_documents AS d (client_id, fetched_at, fresh_until, failure, consecutive_failures)
    VALUES (record_client_document_failure.client_id, now, greatest(record_client_document_failure.retry_at, now),
            pg_catalog.left(coalesce(record_client_document_failure.failure, 'unknown failure'), 300), 1)
    ON CONFLICT (client_id) DO UPDATE
       SET fetched_at = EXCLUDED.fetched_at, fresh_until = EXCLUDED.fresh_until, failure = EXCLUDED.failure,
           consecutive_failures = d.consecutive_failures + 1;
END
$$;
