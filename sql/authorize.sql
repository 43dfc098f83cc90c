-- The authorization endpoint's decisions: validate a request, hold it while the user decides,
-- and turn the decision into a redirect carrying a code or an error (with RFC 9207 `iss`).

-- A redirect URL to the client carrying `params` and `iss`.
CREATE FUNCTION oauth._client_redirect(redirect_uri text, params jsonb) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    names text[];
    vals text[];
BEGIN
    SELECT array_agg(key ORDER BY ord), array_agg(value ORDER BY ord) INTO names, vals
      FROM jsonb_each_text(params) WITH ORDINALITY AS p(key, value, ord)
     WHERE value IS NOT NULL;
    RETURN oauth.append_query(redirect_uri, coalesce(names, '{}') || 'iss'::text,
                              coalesce(vals, '{}') || (oauth._settings()).issuer);
END
$$;

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

-- Validates an authorization request (RFC 6749 §4.1.1, RFC 7636, RFC 8707, OIDC Core §3.1.2.1) and
-- stores it for the consent step. `params` maps each parameter name to its value, or to an array
-- of values when the parameter was repeated. Until client_id and redirect_uri are validated an
-- error is never redirected (`"redirect": false`): that would make us an open redirector; nor,
-- for a client no administrator vetted, at all (see _redirect_error). A request that names a
-- request_uri is one the client pushed first (RFC 9126, oauth.push_authorization_request).
CREATE FUNCTION oauth.begin_authorization(params jsonb, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF jsonb_typeof(params) = 'object' AND params ? 'request_uri' THEN
        RETURN oauth._begin_pushed_authorization(params, now);
    END IF;
    RETURN oauth._begin_authorization(params, NULL, NULL, now);
END
$$;

-- The rules of an authorization request, for /authorize and for /par alike: a pushed request
-- (request_uri_hash set) is stored to be taken by its request_uri until pushed_until.
CREATE FUNCTION oauth._begin_authorization(params jsonb, request_uri_hash bytea, pushed_until timestamptz,
                                           now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
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
    -- RFC 9126 §5: a deployment, or a client in its metadata, may require every request pushed.
    IF request_uri_hash IS NULL AND (settings.require_pushed_authorization_requests
            OR coalesce(client.metadata->>'require_pushed_authorization_requests', '') = 'true') THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request',
                                     'authorization requests must be pushed first (PAR)', vetted);
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
    -- user's consent; here every code follows the user's consent, given on the consent step or
    -- remembered from a live grant that already holds the scope (oauth.continue_authorization),
    -- so it is not ignored. Claude sends it.
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
        -- none with another value cannot be honoured (OIDC Core §3.1.2.1). none alone is decided
        -- once the browser's session is known (oauth.continue_authorization).
        IF prompt ~ '\mnone\M' AND prompt <> 'none' THEN
            RETURN oauth._redirect_error(redirect_uri, state, 'login_required', 'prompt=none cannot be combined', vetted);
        END IF;
    END IF;
    IF params->>'max_age' IS NOT NULL AND params->>'max_age' !~ '^[0-9]{1,9}$' THEN
        RETURN oauth._redirect_error(redirect_uri, state, 'invalid_request', 'max_age must be a number of seconds', vetted);
    END IF;

    request_id := oauth.random_token(24);
    INSERT INTO oauth.authorization_requests (request_id, client_id, redirect_uri, redirect_uri_sent, scopes, resource,
                                              state, nonce, code_challenge, prompt, created_at, expires_at,
                                              max_age, login_hint, request_uri_hash, pushed_until)
    VALUES (request_id, client.client_id, redirect_uri, params ? 'redirect_uri', scopes, resource, state,
            params->>'nonce', params->>'code_challenge', prompt, now, now + settings.authorization_request_ttl,
            (params->>'max_age')::integer, params->>'login_hint', request_uri_hash, pushed_until);
    RETURN jsonb_build_object('request_id', request_id, 'client_id', client.client_id,
                              'client_name', client.client_name, 'prompt', prompt);
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

-- What a consent screen shows (client_name names a metadata document's host, see
-- oauth._client_display_name). Raises not_found for an unknown or expired request.
CREATE FUNCTION oauth.get_authorization_request(request_id text, now timestamptz DEFAULT now())
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

-- The pending request, consumed: a request completes at most once (one atomic DELETE decides).
CREATE FUNCTION oauth._take_request(request_id text, now timestamptz) RETURNS oauth.authorization_requests
LANGUAGE plpgsql
AS $$
DECLARE
    taken oauth.authorization_requests;
BEGIN
    DELETE FROM oauth.authorization_requests r
     WHERE r.request_id = _take_request.request_id AND r.expires_at > now
    RETURNING * INTO taken;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such authorization request, or it has expired or was already completed');
    END IF;
    RETURN taken;
END
$$;

-- Records a user's consent: creates the live grant for the user and client, or widens it (scopes
-- accumulate; resource, props and auth_time follow the latest consent; NULL props keep the recorded
-- ones). Concurrent consents for one user and client converge on one live grant (the partial unique index).
CREATE FUNCTION oauth._record_grant(
    user_id text, client_id text, scopes text[], resource text, props jsonb, now timestamptz
) RETURNS uuid
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    granted_id uuid;
BEGIN
    INSERT INTO oauth.grants AS g (subject_type, user_id, client_id, scopes, resource, props, auth_time,
                                   created_at, updated_at)
    VALUES ('user', _record_grant.user_id, _record_grant.client_id, _record_grant.scopes, _record_grant.resource,
            coalesce(_record_grant.props, '{}'), now, now, now)
    ON CONFLICT (subject_type, user_id, client_id) WHERE revoked_at IS NULL DO UPDATE
       SET scopes = (SELECT pg_catalog.array_agg(DISTINCT s ORDER BY s) FROM pg_catalog.unnest(g.scopes || EXCLUDED.scopes) s),
           resource = EXCLUDED.resource, props = coalesce(_record_grant.props, g.props), auth_time = EXCLUDED.auth_time,
           updated_at = EXCLUDED.updated_at
    RETURNING g.grant_id INTO granted_id;
    RETURN granted_id;
END
$$;

-- What an application passes when it completes consent; raises OA400.
CREATE FUNCTION oauth._check_consent(user_id text, props jsonb) RETURNS void
LANGUAGE plpgsql IMMUTABLE
AS $$
BEGIN
    IF user_id IS NULL OR pg_catalog.length(user_id) NOT BETWEEN 1 AND 255 THEN
        PERFORM oauth._raise('invalid_request', 'user_id must be 1 to 255 characters');
    END IF;
    IF props IS NOT NULL AND pg_catalog.jsonb_typeof(props) <> 'object' THEN
        PERFORM oauth._raise('invalid_request', 'props must be a JSON object');
    END IF;
END
$$;

-- The scopes the user consented to: all requested ones when `granted` is NULL, else a non-empty
-- subset of them (OA405 otherwise).
CREATE FUNCTION oauth._consented_scopes(granted text[], requested text[]) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    chosen text[] := coalesce(granted, requested);
BEGIN
    IF pg_catalog.array_position(chosen, NULL) IS NOT NULL OR NOT chosen <@ requested THEN
        PERFORM oauth._raise('invalid_scope', 'granted scopes must be a subset of the requested scopes');
    END IF;
    IF pg_catalog.cardinality(chosen) = 0 THEN
        PERFORM oauth._raise('invalid_scope', 'at least one scope must be granted');
    END IF;
    RETURN chosen;
END
$$;

-- A code for a request taken from the pending ones: records (or widens) the user's grant, with
-- the time the user last authenticated (the ID token's auth_time), and returns the client's
-- redirect carrying the code, `state` and `iss`.
CREATE FUNCTION oauth._issue_code_for(
    request oauth.authorization_requests, user_id text, chosen_scopes text[], props jsonb,
    auth_time timestamptz, now timestamptz
) RETURNS text
LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    granted_id uuid;
    code text := oauth.random_token(32);
BEGIN
    granted_id := oauth._record_grant(_issue_code_for.user_id, request.client_id, chosen_scopes, request.resource,
                                      _issue_code_for.props, now);
    UPDATE oauth.grants g SET auth_time = coalesce(_issue_code_for.auth_time, now) WHERE g.grant_id = granted_id;

    INSERT INTO oauth.codes (code_hash, client_id, grant_id, user_id, redirect_uri, redirect_uri_sent, scopes,
                             resource, nonce, code_challenge, created_at, expires_at)
    VALUES (oauth.token_hash(code), request.client_id, granted_id, _issue_code_for.user_id, request.redirect_uri,
            request.redirect_uri_sent, chosen_scopes, request.resource, request.nonce, request.code_challenge,
            now, now + (oauth._settings()).code_ttl);
    PERFORM oauth._event('consent_granted', request.client_id, _issue_code_for.user_id, granted_id, NULL,
                         jsonb_build_object('scopes', to_jsonb(chosen_scopes), 'resource', request.resource), now);
    RETURN oauth._client_redirect(request.redirect_uri, jsonb_build_object('code', code, 'state', request.state));
END
$$;

-- Completes consent: records (or widens) the user's grant for the client and returns the
-- redirect URL carrying a fresh code, `state` and `iss`.
CREATE FUNCTION oauth.issue_code(
    request_id text,
    user_id text,
    granted_scopes text[] DEFAULT NULL,
    -- NULL keeps what an earlier consent recorded (a new grant starts with {}).
    props jsonb DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    request oauth.authorization_requests;
BEGIN
    PERFORM oauth._check_consent(user_id, props);
    request := oauth._take_request(request_id, now);
    RETURN oauth._issue_code_for(request, issue_code.user_id,
                                 oauth._consented_scopes(granted_scopes, request.scopes), issue_code.props, now, now);
END
$$;

CREATE FUNCTION oauth.deny_authorization(
    request_id text,
    error text DEFAULT 'access_denied',
    error_description text DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request oauth.authorization_requests;
BEGIN
    -- OIDC Core §3.1.2.6 codes an application's login step may answer with, plus access_denied.
    IF error IS NULL OR error NOT IN ('access_denied', 'login_required', 'consent_required', 'interaction_required',
                                      'account_selection_required', 'temporarily_unavailable', 'server_error') THEN
        PERFORM oauth._raise('invalid_request', 'unsupported authorization error code');
    END IF;
    request := oauth._take_request(request_id, now);
    PERFORM oauth._event('authorization_denied', request.client_id, NULL, NULL, NULL,
                         jsonb_build_object('error', error), now);
    RETURN oauth._client_redirect(request.redirect_uri,
        jsonb_build_object('error', error, 'error_description', error_description, 'state', request.state));
END
$$;
