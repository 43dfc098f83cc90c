-- The device authorization grant (RFC 8628): a device without a browser shows a user code; the
-- user approves on another device (the built-in page or the application's own, completing with
-- oauth.approve_device_authorization); the device polls the token endpoint with its device code.

CREATE TABLE oauth.device_authorizations (
    device_code_hash bytea PRIMARY KEY,
    -- Normalised: the 8 letters without the dash.
    user_code text NOT NULL UNIQUE CHECK (user_code ~ '^[BCDFGHJKLMNPQRSTVWXZ]{8}$'),
    client_id text NOT NULL REFERENCES oauth.clients ON DELETE CASCADE,
    scopes text[] NOT NULL,
    resource text,
    -- Seconds the device must wait between polls; each too-early poll adds 5 (RFC 8628 §3.5).
    poll_interval integer NOT NULL DEFAULT 5,
    status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'denied', 'redeemed')),
    user_id text,
    grant_id uuid REFERENCES oauth.grants ON DELETE CASCADE,
    -- What the redemption issued, so that a replayed device code can revoke it.
    family_id uuid,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    last_polled_at timestamptz,
    decided_at timestamptz
) WITH (fillfactor = 70);
CREATE INDEX ON oauth.device_authorizations (expires_at);
CREATE INDEX ON oauth.device_authorizations (client_id);
SELECT pg_catalog.pg_extension_config_dump('oauth.device_authorizations', '');

-- What users type: case, spaces and dashes do not matter.
CREATE FUNCTION oauth._normalize_user_code(user_code text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN pg_catalog.upper(pg_catalog.regexp_replace(coalesce(user_code, ''), '[\s-]', '', 'g'));
END
$$;

-- RFC 8628 §3.1–3.2. Answers device_code, user_code (XXXX-XXXX), expires_in and interval; the
-- gateway adds the verification URIs.
CREATE FUNCTION oauth.begin_device_authorization(
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

-- What the verification page shows (client_name names a metadata document's host, see
-- oauth._client_display_name). Raises not_found for an unknown, expired or decided code.
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

-- The pending authorization behind a user code, locked; one decision per code.
CREATE FUNCTION oauth._take_device_authorization(user_code text, now timestamptz)
RETURNS oauth.device_authorizations
LANGUAGE plpgsql
AS $$
DECLARE
    taken oauth.device_authorizations;
BEGIN
    SELECT * INTO taken FROM oauth.device_authorizations d
     WHERE d.user_code = oauth._normalize_user_code(_take_device_authorization.user_code)
       AND d.status = 'pending' AND d.expires_at > now
       FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such user code, or it has expired or was already used');
    END IF;
    RETURN taken;
END
$$;

-- The user approved: records (or widens) the grant, like oauth.issue_code. Returns the grant id.
CREATE FUNCTION oauth.approve_device_authorization(
    user_code text,
    user_id text,
    granted_scopes text[] DEFAULT NULL,
    props jsonb DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pending oauth.device_authorizations;
    chosen_scopes text[];
    granted_id uuid;
BEGIN
    PERFORM oauth._check_consent(user_id, props);
    pending := oauth._take_device_authorization(user_code, now);
    chosen_scopes := oauth._consented_scopes(granted_scopes, pending.scopes);
    granted_id := oauth._record_grant(approve_device_authorization.user_id, pending.client_id, chosen_scopes,
                                      pending.resource, props, now);
    UPDATE oauth.device_authorizations d
       SET status = 'approved', user_id = approve_device_authorization.user_id, grant_id = granted_id,
           scopes = chosen_scopes, decided_at = now
     WHERE d.device_code_hash = pending.device_code_hash;
    PERFORM oauth._event('consent_granted', pending.client_id, approve_device_authorization.user_id, granted_id, NULL,
                         jsonb_build_object('scopes', to_jsonb(chosen_scopes), 'resource', pending.resource,
                                            'flow', 'device'), now);
    RETURN granted_id;
END
$$;

CREATE FUNCTION oauth.deny_device_authorization(user_code text, now timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    pending oauth.device_authorizations := oauth._take_device_authorization(user_code, now);
BEGIN
    UPDATE oauth.device_authorizations d SET status = 'denied', decided_at = now
     WHERE d.device_code_hash = pending.device_code_hash;
    PERFORM oauth._event('authorization_denied', pending.client_id, NULL, NULL, NULL, '{"flow": "device"}', now);
END
$$;

-- RFC 8628 §3.4–3.5: the device polls. Answers authorization_pending, slow_down, access_denied,
-- expired_token, or, once approved, the tokens (exactly once).
CREATE FUNCTION oauth.poll_device_authorization(
    client_id text,
    client_secret text,
    device_code text,
    now timestamptz DEFAULT now(),
    dpop_jkt text DEFAULT NULL
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
    -- Evaluated only where DPoP can matter, so the common request pays nothing for it.
    IF (dpop_jkt IS NOT NULL OR client.metadata ? 'dpop_bound_access_tokens')
       AND oauth._dpop_problem(client, dpop_jkt) IS NOT NULL THEN
        RETURN oauth._dpop_problem(client, dpop_jkt);
    END IF;
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
    opened := oauth._open_family(issued_from, 'refresh_token' = ANY (client.grant_types), now,
                                 CASE WHEN client.token_endpoint_auth_method = 'none' THEN dpop_jkt END);
    PERFORM oauth._tokens_issued(polled.client_id, polled.user_id, polled.grant_id, polled.family_id,
                                 'urn:ietf:params:oauth:grant-type:device_code', opened.refresh_token IS NOT NULL, now);
    RETURN oauth._token_response(opened.family, granted.props, granted.auth_time, polled.scopes, NULL,
                                 opened.refresh_token, now)
        || jsonb_build_object('id_token_signed_response_alg', oauth._id_token_alg(client.metadata));
END
$$;
