-- Browser sessions: who is signed in at the authorization server's pages, after signing in
-- through an upstream identity provider. A row per session, so every gateway reads it and the
-- application can list and end a user's sessions from SQL. The browser holds the session's secret
-- in a cookie; only its SHA-256 digest is stored. And the step between an authorization request
-- and its code: whether the browser must sign in (again), may skip the consent page, or is answered
-- at once (prompt=none).

CREATE TABLE oauth.browser_sessions (
    session_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    secret_hash bytea NOT NULL UNIQUE CHECK (octet_length(secret_hash) = 32),
    user_id text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    -- Who the upstream provider said the user is (its `iss` and `sub`).
    upstream_issuer text,
    upstream_subject text,
    -- When the user last authenticated at the upstream (OIDC Core auth_time, whole seconds).
    auth_time timestamptz NOT NULL,
    amr text[] NOT NULL DEFAULT '{}',
    -- The upstream's claims the deployment passes on (email, name, groups): the grant's props.
    claims jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(claims) = 'object'),
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    ended_at timestamptz
);
CREATE INDEX ON oauth.browser_sessions (user_id);
CREATE INDEX ON oauth.browser_sessions (expires_at);
SELECT pg_catalog.pg_extension_config_dump('oauth.browser_sessions', '');

-- Starts a session for a user the gateway signed in. Returns {"session_id", "secret", "expires_at"};
-- the secret is the cookie's value and is never stored.
CREATE FUNCTION oauth.start_session(
    user_id text,
    upstream_issuer text,
    upstream_subject text,
    auth_time timestamptz,
    amr text[] DEFAULT '{}',
    claims jsonb DEFAULT '{}',
    lifetime interval DEFAULT '12 hours',
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    secret text := oauth.random_token(32);
    started oauth.browser_sessions;
BEGIN
    IF user_id IS NULL OR length(user_id) NOT BETWEEN 1 AND 255 THEN
        PERFORM oauth._raise('invalid_request', 'user_id must be 1 to 255 characters');
    END IF;
    IF lifetime IS NULL OR lifetime NOT BETWEEN interval '1 minute' AND interval '90 days' THEN
        PERFORM oauth._raise('invalid_request', 'a session lives between 1 minute and 90 days');
    END IF;
    IF claims IS NOT NULL AND jsonb_typeof(claims) <> 'object' THEN
        PERFORM oauth._raise('invalid_request', 'claims must be a JSON object');
    END IF;
    -- An authentication in the future is a clock the session must not trust; a few minutes of skew are.
    IF auth_time IS NULL OR auth_time > now + interval '5 minutes' THEN
        PERFORM oauth._raise('invalid_request', 'auth_time must be a past instant');
    END IF;
    INSERT INTO oauth.browser_sessions (secret_hash, user_id, upstream_issuer, upstream_subject, auth_time, amr,
                                        claims, created_at, expires_at)
    VALUES (oauth.token_hash(secret), start_session.user_id, start_session.upstream_issuer,
            start_session.upstream_subject, date_trunc('second', least(start_session.auth_time, now)),
            coalesce(start_session.amr, '{}'),
            coalesce(start_session.claims, '{}'), now, now + lifetime)
    RETURNING * INTO started;
    PERFORM oauth._event('session_started', NULL, started.user_id, NULL, NULL,
                         jsonb_build_object('session_id', started.session_id, 'upstream_issuer', upstream_issuer), now);
    RETURN jsonb_build_object('session_id', started.session_id, 'secret', secret,
                              'expires_at', extract(epoch FROM started.expires_at)::bigint);
END
$$;

-- The live session whose secret the browser presented, or NULL (unknown, expired or ended).
CREATE FUNCTION oauth.get_session(secret text, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    live oauth.browser_sessions;
BEGIN
    IF secret IS NULL OR length(secret) > 256 THEN
        RETURN NULL;
    END IF;
    SELECT * INTO live FROM oauth.browser_sessions s
     WHERE s.secret_hash = oauth.token_hash(get_session.secret) AND s.ended_at IS NULL AND s.expires_at > now;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    RETURN jsonb_build_object(
        'session_id', live.session_id, 'user_id', live.user_id,
        'upstream_issuer', live.upstream_issuer, 'upstream_subject', live.upstream_subject,
        'auth_time', extract(epoch FROM live.auth_time)::bigint, 'amr', to_jsonb(live.amr),
        'claims', live.claims, 'created_at', extract(epoch FROM live.created_at)::bigint,
        'expires_at', extract(epoch FROM live.expires_at)::bigint);
END
$$;

-- Ends one session (signing out): its cookie no longer signs anyone in. The user's grants, and
-- the tokens the user's applications hold, live on: logging out of the pages revokes no consent.
-- False when there was no live session.
CREATE FUNCTION oauth.end_session(session_id uuid, now timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ended oauth.browser_sessions;
BEGIN
    UPDATE oauth.browser_sessions s SET ended_at = now
     WHERE s.session_id = end_session.session_id AND s.ended_at IS NULL AND s.expires_at > now
    RETURNING * INTO ended;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM oauth._event('session_ended', NULL, ended.user_id, NULL, NULL,
                         jsonb_build_object('session_id', ended.session_id), now);
    RETURN true;
END
$$;

-- Ends one of the user's own sessions (a "sign out" button on the user's sessions page): a session
-- id from another user's page ends nothing. False when the user had no such live session.
CREATE FUNCTION oauth.end_user_session(user_id text, session_id uuid, now timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ended oauth.browser_sessions;
BEGIN
    UPDATE oauth.browser_sessions s SET ended_at = now
     WHERE s.session_id = end_user_session.session_id AND s.user_id = end_user_session.user_id
       AND s.ended_at IS NULL AND s.expires_at > now
    RETURNING * INTO ended;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM oauth._event('session_ended', NULL, ended.user_id, NULL, NULL,
                         jsonb_build_object('session_id', ended.session_id), now);
    RETURN true;
END
$$;

-- "Sign out everywhere": ends every live session of the user; how many there were.
CREATE FUNCTION oauth.end_user_sessions(user_id text, now timestamptz DEFAULT now()) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ended integer;
BEGIN
    UPDATE oauth.browser_sessions s SET ended_at = now
     WHERE s.user_id = end_user_sessions.user_id AND s.ended_at IS NULL AND s.expires_at > now;
    GET DIAGNOSTICS ended = ROW_COUNT;
    IF ended > 0 THEN
        PERFORM oauth._event('sessions_ended', NULL, end_user_sessions.user_id, NULL, NULL,
                             jsonb_build_object('sessions', ended), now);
    END IF;
    RETURN ended;
END
$$;

-- The user's live sessions, newest first (a "where you are signed in" page).
CREATE FUNCTION oauth.list_user_sessions(user_id text, now timestamptz DEFAULT now())
RETURNS TABLE (
    session_id uuid, upstream_issuer text, upstream_subject text, auth_time timestamptz, amr text[],
    created_at timestamptz, expires_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.session_id, s.upstream_issuer, s.upstream_subject, s.auth_time, s.amr, s.created_at, s.expires_at
      FROM oauth.browser_sessions s
     WHERE s.user_id = list_user_sessions.user_id AND s.ended_at IS NULL AND s.expires_at > now
     ORDER BY s.created_at DESC, s.session_id;
$$;

-- Whether consent may be taken as given because the user's live grant for the client already
-- holds every requested scope for the same resource. Never for a client whose redirect could be
-- any local program's (loopback) or any app's that claims a scheme (private-use URI schemes,
-- RFC 8252 §8.6): the consent page is the only moment the user sees who is asking.
CREATE FUNCTION oauth._consent_remembered(request oauth.authorization_requests, user_id text) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    IF request.redirect_uri !~* '^https://' OR oauth.is_loopback_redirect(request.redirect_uri) THEN
        RETURN false;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM oauth.clients c, unnest(c.redirect_uris) u
                    WHERE c.client_id = request.client_id AND NOT oauth.is_loopback_redirect(u)) THEN
        RETURN false;
    END IF;
    RETURN EXISTS (
        SELECT 1 FROM oauth.grants g
         WHERE g.subject_type = 'user' AND g.user_id = _consent_remembered.user_id
           AND g.client_id = request.client_id AND g.revoked_at IS NULL
           AND request.scopes <@ g.scopes AND g.resource IS NOT DISTINCT FROM request.resource);
END
$$;

-- An OIDC error for a pending request, which it ends: to the client when it is one an
-- administrator vetted, else {"redirect": false} (see oauth._redirect_error).
CREATE FUNCTION oauth._end_request_with(request oauth.authorization_requests, error text, description text, now timestamptz)
RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    client oauth.clients;
BEGIN
    PERFORM oauth._take_request(request.request_id, now);
    SELECT * INTO client FROM oauth.clients c WHERE c.client_id = request.client_id;
    PERFORM oauth._event('authorization_denied', request.client_id, NULL, NULL, NULL,
                         jsonb_build_object('error', error), now);
    RETURN oauth._redirect_error(request.redirect_uri, request.state, error, description,
        NOT client.registered_dynamically AND NOT coalesce((client.metadata->>'metadata_document')::boolean, false));
END
$$;

-- The step after oauth.begin_authorization, and again after the user signed in or decided, for
-- the gateway's own pages. Who the user is comes from the browser's session (`session_secret`), or
-- from a `user_id` a trusted authenticating proxy named (its authentication time unknown to us,
-- so prompt=login and max_age are the proxy's). Answers one of:
--   {"action": "login", "login_hint", "max_age", "force"}: sign the user in first; `force` when a
--     session exists but is too old (prompt=login, max_age, OIDC Core §3.1.2.1): ask the upstream
--     to authenticate again;
--   {"action": "consent", "user_id"}: show the consent page;
--   {"action": "redirect", "location"}: send the browser to the client, with a code (`consented`,
--     or consent remembered when `remember_consent`) or an error (prompt=none: login_required,
--     consent_required);
--   {"error", "error_description", "redirect": false}: an error the client's unvetted redirect URI
--     may not receive (shown on a page).
-- Raises not_found for an unknown, expired or completed request.
CREATE FUNCTION oauth.continue_authorization(
    request_id text,
    session_secret text DEFAULT NULL,
    user_id text DEFAULT NULL,
    consented boolean DEFAULT false,
    remember_consent boolean DEFAULT false,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    request oauth.authorization_requests;
    session oauth.browser_sessions;
    who text;
    too_old boolean := false;
    answer jsonb;
BEGIN
    SELECT * INTO request FROM oauth.authorization_requests r
     WHERE r.request_id = continue_authorization.request_id AND r.expires_at > now;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such authorization request, or it has expired or was already completed');
    END IF;
    IF session_secret IS NOT NULL THEN
        SELECT * INTO session FROM oauth.browser_sessions s
         WHERE s.secret_hash = oauth.token_hash(session_secret) AND s.ended_at IS NULL AND s.expires_at > now;
        IF FOUND THEN
            who := session.user_id;
            -- prompt=login: a sign-in that happened after the request arrived (the session's own
            -- clock, not the upstream's); max_age: the upstream's auth_time.
            too_old := (coalesce(request.prompt, '') ~ '\mlogin\M' AND session.created_at < request.created_at)
                    OR (request.max_age IS NOT NULL
                        AND session.auth_time < now - make_interval(secs => request.max_age));
        END IF;
    ELSIF user_id IS NOT NULL AND length(user_id) BETWEEN 1 AND 255 THEN
        who := user_id;
    END IF;

    IF who IS NULL OR too_old THEN
        IF request.prompt = 'none' THEN
            RETURN oauth._end_request_with(request, 'login_required', 'the user is not signed in', now);
        END IF;
        RETURN jsonb_build_object('action', 'login', 'login_hint', request.login_hint, 'max_age', request.max_age,
                                  'force', too_old);
    END IF;

    IF consented OR (remember_consent AND coalesce(request.prompt, '') !~ '\mconsent\M'
                     AND oauth._consent_remembered(request, who)) THEN
        request := oauth._take_request(request.request_id, now);
        answer := jsonb_build_object('action', 'redirect', 'location',
            oauth._issue_code_for(request, who, request.scopes,
                                  CASE WHEN session.session_id IS NOT NULL THEN session.claims END,
                                  coalesce(session.auth_time, now), now));
        -- The upstream tokens of this sign-in follow the user into the grant (sql/upstream_tokens.sql).
        PERFORM oauth._attach_upstream_tokens(session.session_id, who, request.client_id, now);
        RETURN answer;
    END IF;
    IF request.prompt = 'none' THEN
        RETURN oauth._end_request_with(request, 'consent_required', 'the user has not consented to this request', now);
    END IF;
    RETURN jsonb_build_object('action', 'consent', 'user_id', who);
END
$$;

-- Where RP-Initiated Logout 1.0 (§3) sends the browser after signing out: `redirect_uri` with
-- `state`, when the client registered it among its post_logout_redirect_uris (compared byte for
-- byte, as redirect URIs are); NULL otherwise, and the browser stays on the server's page.
CREATE FUNCTION oauth.post_logout_redirect(client_id text, redirect_uri text, state text DEFAULT NULL,
                                           now timestamptz DEFAULT now())
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF redirect_uri IS NULL OR NOT EXISTS (
        SELECT 1 FROM oauth.clients c
         WHERE c.client_id = post_logout_redirect.client_id
           AND (c.expires_at IS NULL OR c.expires_at > now)
           AND jsonb_typeof(c.metadata->'post_logout_redirect_uris') = 'array'
           AND c.metadata->'post_logout_redirect_uris' @> jsonb_build_array(redirect_uri)) THEN
        RETURN NULL;
    END IF;
    IF state IS NULL THEN
        RETURN redirect_uri;
    END IF;
    RETURN oauth.append_query(redirect_uri, ARRAY['state'], ARRAY[state]);
END
$$;
