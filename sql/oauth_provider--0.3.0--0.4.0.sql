-- oauth_provider 0.3.0 → 0.4.0. Every row stays; tokens, codes and secrets issued by 0.3.0 keep
-- working. Each section below is one change, with every function it touches written in full (the
-- same text as sql/*.sql), so that an updated database equals a fresh 0.4.0 install.

\echo Use "ALTER EXTENSION oauth_provider UPDATE TO '0.4.0'" to load this file. \quit

-- coalesced refreshes (issue 12)

-- Concurrent refreshes that the gateway coalesced: each element is decided by
-- oauth.rotate_refresh_token exactly as a call of its own would be, in one transaction, so a burst
-- costs one round trip and one commit instead of one per request. Answers come back as a jsonb
-- array in the order of the arguments; an expected failure is that element's own answer and does
-- not touch the others. Families are rotated in the order of their ids, so batches running on
-- different connections lock rows in one order and cannot deadlock each other.
CREATE FUNCTION oauth.rotate_refresh_tokens(
    client_ids text[],
    client_secrets text[],
    refresh_tokens text[],
    scopes text[],
    resources text[],
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(refresh_tokens);
    answers jsonb[];
    i integer;
BEGIN
    IF cardinality(client_ids) IS DISTINCT FROM n OR cardinality(client_secrets) IS DISTINCT FROM n
       OR cardinality(scopes) IS DISTINCT FROM n OR cardinality(resources) IS DISTINCT FROM n THEN
        PERFORM oauth._raise('invalid_request', 'the batch''s arrays differ in length');
    END IF;
    answers := array_fill(NULL::jsonb, ARRAY[n]);
    FOR i IN SELECT t.i FROM unnest(refresh_tokens) WITH ORDINALITY AS t(token, i)
              ORDER BY oauth._refresh_token_family(t.token) NULLS LAST, t.i
    LOOP
        answers[i] := oauth.rotate_refresh_token(client_ids[i], client_secrets[i], refresh_tokens[i],
                                                 scopes[i], resources[i], now);
    END LOOP;
    RETURN to_jsonb(answers);
END
$$;
REVOKE EXECUTE ON FUNCTION oauth.rotate_refresh_tokens(text[], text[], text[], text[], text[], timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.rotate_refresh_tokens(text[], text[], text[], text[], text[], timestamptz) TO oauth_gateway;

-- connected apps
-- The pages: a vetted client's logo (oauth.client_logo_uri) and the signed-in user's connected apps
-- (oauth.list_connected_apps, oauth.revoke_connected_app). New functions only, as in sql/connected_apps.sql.

CREATE FUNCTION oauth._client_logo_uri(client oauth.clients) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN NOT client.registered_dynamically
         AND NOT coalesce((client.metadata->>'metadata_document')::boolean, false)
         AND jsonb_typeof(client.metadata->'logo_uri') = 'string'
         AND client.metadata->>'logo_uri' ~ '^https://[^\s"''<>\\]+$'
        THEN client.metadata->>'logo_uri'
    END
$$;

-- The logo a consent or device page may show for this client (NULL: none).
CREATE FUNCTION oauth.client_logo_uri(client_id text, now timestamptz DEFAULT now()) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT oauth._client_logo_uri(c)
      FROM oauth.clients c
     WHERE c.client_id = client_logo_uri.client_id AND (c.expires_at IS NULL OR c.expires_at > now)
$$;

-- The signed-in user's connected apps: each live grant with what the page shows. redirect_hosts
-- are where the app receives its codes (an http(s) redirect URI's host, a private-use scheme as
-- "scheme:"). last_used_at is the last time the app was issued tokens under the grant (a code
-- exchanged or a refresh token rotated); using an access token is not recorded anywhere, so an app
-- that holds a long-lived access token may have used it since. NULL: no token issued yet.
CREATE FUNCTION oauth.list_connected_apps(user_id text, now timestamptz DEFAULT now()) RETURNS TABLE (
    grant_id uuid, client_id text, client_name text, redirect_hosts text[], logo_uri text,
    scopes text[], resource text, granted_at timestamptz, last_used_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.grant_id, g.client_id, oauth._client_display_name(c),
           ARRAY(SELECT DISTINCT CASE WHEN u ~* '^https?://' THEN oauth.uri_host(u)
                                      ELSE pg_catalog.split_part(u, ':', 1) || ':' END
                   FROM unnest(c.redirect_uris) u
                  ORDER BY 1),
           oauth._client_logo_uri(c), g.scopes, g.resource, g.created_at,
           (SELECT max(coalesce(f.rotated_at, f.created_at)) FROM oauth.refresh_families f
             WHERE f.grant_id = g.grant_id AND coalesce(f.rotated_at, f.created_at) <= list_connected_apps.now)
      FROM oauth.grants g JOIN oauth.clients c ON c.client_id = g.client_id
     WHERE g.subject_type = 'user' AND g.user_id = list_connected_apps.user_id AND g.revoked_at IS NULL
       AND g.created_at <= list_connected_apps.now
     ORDER BY g.created_at DESC, g.grant_id
$$;

-- The user disconnects an app: oauth.revoke_grant, for a live grant of this user only (a grant id
-- from another user's page revokes nothing). False when there was no such live grant.
CREATE FUNCTION oauth.revoke_connected_app(user_id text, grant_id uuid, now timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM oauth.grants g
     WHERE g.grant_id = revoke_connected_app.grant_id AND g.user_id = revoke_connected_app.user_id
       AND g.subject_type = 'user' AND g.revoked_at IS NULL
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN oauth.revoke_grant(revoke_connected_app.grant_id, 'revoked_by_user', now);
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._client_logo_uri(oauth.clients) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION oauth.client_logo_uri(text, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION oauth.list_connected_apps(text, timestamptz) FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION oauth.revoke_connected_app(text, uuid, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    oauth.client_logo_uri(text, timestamptz),
    oauth.list_connected_apps(text, timestamptz),
    oauth.revoke_connected_app(text, uuid, timestamptz)
TO oauth_gateway, oauth_admin;
-- end connected apps

-- browser sessions
-- Sign-in through an upstream provider (issue 13): oauth.browser_sessions and its functions, the
-- step after /authorize (oauth.continue_authorization: prompt, max_age, remembered consent), and
-- max_age/login_hint kept with a pending request. As in sql/sessions.sql and sql/authorize.sql.
ALTER TABLE oauth.authorization_requests ADD COLUMN max_age integer, ADD COLUMN login_hint text;

-- oauth.begin_authorization keeps max_age and login_hint with the pending request: its final form
-- is in the section "pushed authorization requests" below.

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
CREATE OR REPLACE FUNCTION oauth.issue_code(
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
        RETURN jsonb_build_object('action', 'redirect', 'location',
            oauth._issue_code_for(request, who, request.scopes,
                                  CASE WHEN session.session_id IS NOT NULL THEN session.claims END,
                                  coalesce(session.auth_time, now), now));
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
-- shared: oauth._registration_fields (whole body copied from sql/clients.sql): dynamic registration,
-- RFC 7592 updates and metadata documents keep post_logout_redirect_uris and (RFC 9126 §6)
-- require_pushed_authorization_requests.
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
REVOKE ALL ON oauth.browser_sessions FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION
    oauth._issue_code_for(oauth.authorization_requests, text, text[], jsonb, timestamptz, timestamptz),
    oauth.start_session(text, text, text, timestamptz, text[], jsonb, interval, timestamptz),
    oauth.get_session(text, timestamptz),
    oauth.end_session(uuid, timestamptz),
    oauth.end_user_session(text, uuid, timestamptz),
    oauth.end_user_sessions(text, timestamptz),
    oauth.list_user_sessions(text, timestamptz),
    oauth._consent_remembered(oauth.authorization_requests, text),
    oauth._end_request_with(oauth.authorization_requests, text, text, timestamptz),
    oauth.continue_authorization(text, text, text, boolean, boolean, timestamptz),
    oauth.post_logout_redirect(text, text, text, timestamptz)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    oauth.start_session(text, text, text, timestamptz, text[], jsonb, interval, timestamptz),
    oauth.get_session(text, timestamptz),
    oauth.continue_authorization(text, text, text, boolean, boolean, timestamptz),
    oauth.post_logout_redirect(text, text, text, timestamptz)
TO oauth_gateway;
GRANT EXECUTE ON FUNCTION
    oauth.end_session(uuid, timestamptz),
    oauth.end_user_session(text, uuid, timestamptz),
    oauth.end_user_sessions(text, timestamptz),
    oauth.list_user_sessions(text, timestamptz)
TO oauth_gateway, oauth_admin;
GRANT SELECT (session_id, user_id, upstream_issuer, upstream_subject, auth_time, amr, claims, created_at, expires_at,
              ended_at)
    ON oauth.browser_sessions TO oauth_admin;
-- end browser sessions

-- scheduled cleanup
-- Gateways run oauth.cleanup on a schedule, one at a time (an advisory lock): the gateway role may call it.
GRANT EXECUTE ON FUNCTION oauth.cleanup(timestamptz, integer) TO oauth_gateway;
-- end scheduled cleanup

-- refresh token family lookup without re-planning (issue 12)

-- The family a refresh token belongs to, unverified: the one it names, or for a token issued before
-- 0.3.0 the one oauth.refresh_tokens lists. Callers prove the token with oauth._refresh_token_age.
-- PL/pgSQL, not SQL: a SQL function with a sub-select is never inlined, so each call parsed and
-- planned its body again (a sixth of the database's time per refresh, by profile); PL/pgSQL keeps
-- the plan for the session.
CREATE OR REPLACE FUNCTION oauth._refresh_token_family(refresh_token text) RETURNS uuid
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    named uuid := oauth.refresh_token_family(refresh_token);
BEGIN
    IF named IS NULL THEN
        SELECT t.family_id INTO named FROM oauth.refresh_tokens t WHERE t.token_hash = oauth.token_hash(refresh_token);
    END IF;
    RETURN named;
END
$$;

-- audit feed delivery (issue 14)
ALTER TABLE oauth.events ADD COLUMN xid xid8;
ALTER TABLE oauth.events ALTER COLUMN xid SET DEFAULT pg_catalog.pg_current_xact_id();
CREATE INDEX events_delivery_order ON oauth.events (xid, event_id);
CREATE INDEX events_user ON oauth.events (user_id, event_id) WHERE user_id IS NOT NULL;
CREATE INDEX events_client ON oauth.events (client_id, event_id) WHERE client_id IS NOT NULL;

-- Where each consumer stands, and who may deliver to it now (a lease, renewed while delivering).
CREATE TABLE oauth.event_consumers (
    consumer text PRIMARY KEY CHECK (length(consumer) BETWEEN 1 AND 200),
    delivered_xid xid8 NOT NULL,
    delivered_event_id bigint NOT NULL DEFAULT 0,
    holder text,
    lease_until timestamptz,
    delivered_at timestamptz
);
SELECT pg_catalog.pg_extension_config_dump('oauth.event_consumers', '');

CREATE FUNCTION oauth._announce_events() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- One notification per statement, naming the highest id it wrote; listeners read from SQL.
    -- Only where the deployment asked for them (settings.announce_events: notifying commits cannot
    -- share a WAL flush), and never for token responses alone (one per refresh halved the rotation
    -- rate). Everything can be read by polling (take_events, list_events).
    IF (oauth._settings()).announce_events AND EXISTS (SELECT 1 FROM inserted e WHERE e.kind <> 'tokens_issued') THEN
        PERFORM pg_catalog.pg_notify('oauth_events', (SELECT pg_catalog.max(e.event_id) FROM inserted e)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER announce_events AFTER INSERT ON oauth.events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION oauth._announce_events();

-- Events for the application's own reading: by user, client and time, after an id, oldest first.
CREATE FUNCTION oauth.list_events(
    after_id bigint DEFAULT 0,
    user_id text DEFAULT NULL,
    client_id text DEFAULT NULL,
    since timestamptz DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    max_rows integer DEFAULT 100
) RETURNS TABLE (event_id bigint, occurred_at timestamptz, kind text, client_id text, user_id text,
                 grant_id uuid, family_id uuid, detail jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.event_id, e.occurred_at, e.kind, e.client_id, e.user_id, e.grant_id, e.family_id, e.detail
      FROM oauth.events e
     WHERE e.event_id > coalesce(list_events.after_id, 0)
       AND (list_events.user_id IS NULL OR e.user_id = list_events.user_id)
       AND (list_events.client_id IS NULL OR e.client_id = list_events.client_id)
       AND (list_events.since IS NULL OR e.occurred_at >= list_events.since)
       AND (list_events.until IS NULL OR e.occurred_at < list_events.until)
     ORDER BY e.event_id
     LIMIT least(greatest(coalesce(list_events.max_rows, 100), 1), 10000)
$$;

-- The next events for `consumer`, if `holder` holds (or now takes) its lease: {"held": false} while
-- another holder's lease runs, else {"held": true, "events": [...]} in delivery order, each with the
-- position to acknowledge. A consumer seen for the first time starts at the events committed from
-- now on (older ones stay readable with oauth.list_events).
CREATE FUNCTION oauth.take_events(
    consumer text,
    holder text,
    lease interval,
    max_rows integer,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settled xid8 := pg_snapshot_xmin(pg_current_snapshot());
    standing oauth.event_consumers;
    batch jsonb;
BEGIN
    IF consumer IS NULL OR holder IS NULL OR lease IS NULL OR lease <= interval '0' THEN
        PERFORM oauth._raise('invalid_request', 'consumer, holder and a positive lease are required');
    END IF;
    INSERT INTO oauth.event_consumers AS c (consumer, delivered_xid)
    VALUES (take_events.consumer, settled)
    ON CONFLICT ON CONSTRAINT event_consumers_pkey DO NOTHING;
    UPDATE oauth.event_consumers c
       SET holder = take_events.holder, lease_until = now + lease
     WHERE c.consumer = take_events.consumer
       AND (c.holder IS NULL OR c.holder = take_events.holder OR c.lease_until <= now)
    RETURNING * INTO standing;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('held', false);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'event_id', e.event_id, 'occurred_at', e.occurred_at, 'kind', e.kind,
               'client_id', e.client_id, 'user_id', e.user_id, 'grant_id', e.grant_id,
               'family_id', e.family_id, 'detail', e.detail,
               'position', e.xid::text || ':' || e.event_id::text) ORDER BY e.xid, e.event_id), '[]')
      INTO batch
      FROM (SELECT * FROM oauth.events e
             WHERE (e.xid, e.event_id) > (standing.delivered_xid, standing.delivered_event_id)
               AND e.xid < settled
             ORDER BY e.xid, e.event_id
             LIMIT least(greatest(coalesce(max_rows, 100), 1), 1000)) e;
    RETURN jsonb_build_object('held', true, 'events', batch);
END
$$;

-- `holder` has delivered everything up to `through` (a position as take_events gave it): the consumer moves
-- there. False when the lease is no longer this holder's (another delivers now) or the position is
-- behind the consumer's.
CREATE FUNCTION oauth.acknowledge_events(
    consumer text,
    holder text,
    through text,
    now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    through_xid xid8;
    through_id bigint;
BEGIN
    IF through IS NULL OR through !~ '^[0-9]{1,20}:[0-9]{1,18}$' THEN
        PERFORM oauth._raise('invalid_request', 'the position is malformed');
    END IF;
    through_xid := split_part(through, ':', 1)::xid8;
    through_id := split_part(through, ':', 2)::bigint;
    UPDATE oauth.event_consumers c
       SET delivered_xid = through_xid, delivered_event_id = through_id, delivered_at = now
     WHERE c.consumer = acknowledge_events.consumer
       AND c.holder = acknowledge_events.holder AND c.lease_until > now
       AND (through_xid, through_id) > (c.delivered_xid, c.delivered_event_id);
    RETURN FOUND;
END
$$;

REVOKE ALL ON oauth.event_consumers FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION oauth._announce_events(), oauth.list_events(bigint, text, text, timestamptz, timestamptz, integer),
    oauth.take_events(text, text, interval, integer, timestamptz), oauth.acknowledge_events(text, text, text, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.take_events(text, text, interval, integer, timestamptz),
    oauth.acknowledge_events(text, text, text, timestamptz) TO oauth_gateway;
GRANT EXECUTE ON FUNCTION oauth.list_events(bigint, text, text, timestamptz, timestamptz, integer),
    oauth.take_events(text, text, interval, integer, timestamptz), oauth.acknowledge_events(text, text, text, timestamptz)
    TO oauth_admin;
GRANT SELECT ON oauth.event_consumers TO oauth_admin;
-- end audit feed delivery

-- signing keys
-- Signing keys shared by every gateway through the database and rotated without breaking a token
-- in flight or a relying party's cached JWKS (issue 14). New table and functions only, as in
-- sql/signing_keys.sql.
CREATE TABLE oauth.signing_keys (
    kid text PRIMARY KEY CHECK (kid ~ '^[A-Za-z0-9_.-]{1,100}$'),
    alg text NOT NULL CHECK (alg IN ('RS256', 'ES256', 'EdDSA')),
    public_jwk jsonb NOT NULL CHECK (jsonb_typeof(public_jwk) = 'object' AND NOT public_jwk ? 'd'),
    sealed_private_key bytea NOT NULL CHECK (octet_length(sealed_private_key) BETWEEN 29 AND 16384),
    sealed_with text NOT NULL CHECK (length(sealed_with) BETWEEN 1 AND 100),
    published_at timestamptz NOT NULL,
    signs_not_before timestamptz NOT NULL,
    signs_from timestamptz,
    CHECK (signs_not_before >= published_at),
    CHECK (signs_from IS NULL OR signs_from >= signs_not_before)
);
SELECT pg_catalog.pg_extension_config_dump('oauth.signing_keys', '');

-- How long a retired key stays published: the longest an access or ID token lives (access_token_ttl
-- is at most one day, and an ID token lives as long as its access token), plus the time a gateway
-- may go on signing with it before it sees its successor and the verifiers' clock leeway.
CREATE FUNCTION oauth._signing_key_afterlife() RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$ SELECT interval '1 day 5 minutes' $$;

-- Each key with its state at `now`: 'next' (published, not signing yet), 'current' (the latest
-- promoted key of its algorithm whose signs_from has come), 'retired' (a later key of its
-- algorithm signs; `published_until` says when it leaves the JWKS) or 'expired' (past that).
CREATE FUNCTION oauth._signing_key_states(now timestamptz)
RETURNS TABLE (kid text, alg text, state text, published_at timestamptz, signs_not_before timestamptz,
               signs_from timestamptz, retired_at timestamptz, published_until timestamptz)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.kid, k.alg,
           CASE WHEN k.signs_from IS NULL OR k.signs_from > now THEN 'next'
                WHEN successor.signs_from IS NULL THEN 'current'
                WHEN successor.signs_from + oauth._signing_key_afterlife() > now THEN 'retired'
                ELSE 'expired' END,
           k.published_at, k.signs_not_before, k.signs_from, successor.signs_from,
           successor.signs_from + oauth._signing_key_afterlife()
      FROM oauth.signing_keys k
      LEFT JOIN LATERAL (
            SELECT min(later.signs_from) AS signs_from
              FROM oauth.signing_keys later
             WHERE later.alg = k.alg AND later.kid <> k.kid
               AND later.signs_from <= now
               AND (later.signs_from, later.kid) > (k.signs_from, k.kid)
      ) successor ON k.signs_from IS NOT NULL
$$;

-- What a gateway loads (and reloads every few seconds): the published keys, sealed, with their
-- state. Current keys first, the most recently promoted first: that one signs access tokens, and
-- an ID token is signed by the current key of its client's algorithm.
CREATE FUNCTION oauth.signing_keys(now timestamptz DEFAULT now())
RETURNS TABLE (kid text, alg text, state text, public_jwk jsonb, sealed_private_key bytea,
               sealed_with text, signs_from timestamptz, published_until timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.kid, s.alg, s.state, k.public_jwk, k.sealed_private_key, k.sealed_with, s.signs_from,
           s.published_until
      FROM oauth._signing_key_states(signing_keys.now) s
      JOIN oauth.signing_keys k USING (kid)
     WHERE s.state <> 'expired'
     ORDER BY s.state <> 'current', s.signs_from DESC NULLS LAST, s.kid
$$;

-- Every key and its state, for the operator (`oauth-gateway keys list`): nothing sealed.
CREATE FUNCTION oauth.list_signing_keys(now timestamptz DEFAULT now())
RETURNS TABLE (kid text, alg text, state text, published_at timestamptz, signs_not_before timestamptz,
               signs_from timestamptz, retired_at timestamptz, published_until timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT * FROM oauth._signing_key_states(list_signing_keys.now) s
     ORDER BY s.published_at, s.kid
$$;

-- Publishes a new key. Once promoted it may sign from `now + publish_lead` on: the lead must be
-- longer than relying parties may cache the JWKS (the gateway's jwks_max_age) plus the gateways'
-- reload interval, so every cached key set holds it before any token it signs exists. A zero lead
-- is for a deployment's first key, which no relying party can have cached without.
CREATE FUNCTION oauth.add_signing_key(
    kid text,
    alg text,
    public_jwk jsonb,
    sealed_private_key bytea,
    sealed_with text,
    publish_lead interval DEFAULT '1 hour',
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    added oauth.signing_keys;
BEGIN
    IF publish_lead IS NULL OR publish_lead < '0' THEN
        PERFORM oauth._raise('invalid_request', 'publish_lead must not be negative');
    END IF;
    IF public_jwk ? 'd' OR public_jwk ? 'p' OR public_jwk ? 'k' THEN
        PERFORM oauth._raise('invalid_request', 'public_jwk holds private key material');
    END IF;
    INSERT INTO oauth.signing_keys AS k (kid, alg, public_jwk, sealed_private_key, sealed_with, published_at,
                                        signs_not_before)
    VALUES (add_signing_key.kid, add_signing_key.alg, add_signing_key.public_jwk,
            add_signing_key.sealed_private_key, add_signing_key.sealed_with, now, now + publish_lead)
    ON CONFLICT DO NOTHING
    RETURNING * INTO added;
    IF added.kid IS NULL THEN
        PERFORM oauth._raise('invalid_request', 'a signing key with this kid exists');
    END IF;
    PERFORM oauth._event('signing_key_added', NULL, NULL, NULL, NULL,
                         jsonb_build_object('kid', added.kid, 'alg', added.alg,
                                            'signs_not_before', added.signs_not_before), now);
    RETURN jsonb_build_object('kid', added.kid, 'alg', added.alg, 'published_at', added.published_at,
                              'signs_not_before', added.signs_not_before);
END
$$;

-- Promotes a published key: it signs from its signs_not_before, or now if that has passed, and the
-- key of its algorithm that signed until then is retired at that moment. A retired or already
-- promoted key is refused: signing again with a key whose retirement relying parties may have seen
-- (and whose tokens' afterlife was counted from it) would be a second life nobody planned for.
CREATE FUNCTION oauth.promote_signing_key(kid text, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    promoted oauth.signing_keys;
BEGIN
    -- One promotion at a time, so two keys of one algorithm cannot be promoted to the same instant
    -- from two sessions each seeing the other still unpromoted.
    LOCK TABLE oauth.signing_keys IN SHARE ROW EXCLUSIVE MODE;
    UPDATE oauth.signing_keys k
       SET signs_from = greatest(promote_signing_key.now, k.signs_not_before,
                                 (SELECT max(other.signs_from) + interval '1 microsecond'
                                    FROM oauth.signing_keys other WHERE other.alg = k.alg))
     WHERE k.kid = promote_signing_key.kid AND k.signs_from IS NULL
    RETURNING * INTO promoted;
    IF promoted.kid IS NULL THEN
        IF EXISTS (SELECT 1 FROM oauth.signing_keys k WHERE k.kid = promote_signing_key.kid) THEN
            PERFORM oauth._raise('invalid_request', 'this signing key was promoted already');
        END IF;
        PERFORM oauth._raise('not_found', 'no such signing key');
    END IF;
    PERFORM oauth._event('signing_key_promoted', NULL, NULL, NULL, NULL,
                         jsonb_build_object('kid', promoted.kid, 'alg', promoted.alg,
                                            'signs_from', promoted.signs_from), now);
    RETURN jsonb_build_object('kid', promoted.kid, 'alg', promoted.alg, 'signs_from', promoted.signs_from);
END
$$;

-- Removes a key from the JWKS for good. Refused while a token it signed may still be in use (a
-- current key, or a retired one before its published_until) unless `force`: after a key leaked,
-- its tokens must stop verifying at once. A key that never signed may always go.
CREATE FUNCTION oauth.drop_signing_key(kid text, force boolean DEFAULT false, now timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    key_state record;
BEGIN
    SELECT * INTO key_state FROM oauth._signing_key_states(now) s WHERE s.kid = drop_signing_key.kid;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF NOT force AND key_state.state = 'current' THEN
        PERFORM oauth._raise('invalid_request',
            'this key signs tokens now: promote its successor first (or force, after a compromise)');
    END IF;
    IF NOT force AND key_state.state = 'retired' THEN
        PERFORM oauth._raise('invalid_request',
            format('tokens this key signed may be in use until %s (or force, after a compromise)',
                   key_state.published_until));
    END IF;
    DELETE FROM oauth.signing_keys k WHERE k.kid = drop_signing_key.kid;
    PERFORM oauth._event('signing_key_dropped', NULL, NULL, NULL, NULL,
                         jsonb_build_object('kid', key_state.kid, 'alg', key_state.alg,
                                            'state', key_state.state, 'forced', force), now);
    RETURN true;
END
$$;

REVOKE ALL ON oauth.signing_keys FROM PUBLIC;
REVOKE EXECUTE ON FUNCTION oauth._signing_key_afterlife(), oauth._signing_key_states(timestamptz),
    oauth.signing_keys(timestamptz), oauth.list_signing_keys(timestamptz),
    oauth.add_signing_key(text, text, jsonb, bytea, text, interval, timestamptz),
    oauth.promote_signing_key(text, timestamptz), oauth.drop_signing_key(text, boolean, timestamptz)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.signing_keys(timestamptz) TO oauth_gateway;
GRANT EXECUTE ON FUNCTION oauth.add_signing_key(text, text, jsonb, bytea, text, interval, timestamptz),
    oauth.promote_signing_key(text, timestamptz), oauth.drop_signing_key(text, boolean, timestamptz),
    oauth.list_signing_keys(timestamptz), oauth.signing_keys(timestamptz)
    TO oauth_admin;
-- end signing keys

-- event retention and token events
-- Every token response is an audit event (`tokens_issued`, its grant type in `detail`), unless the
-- deployment turns them off (settings.record_token_events); oauth.cleanup removes events older
-- than settings.event_retention that no live consumer still waits for (issue 14). Two settings
-- columns (appended, as in sql/schema.sql), oauth._tokens_issued, and every function that reads the
-- settings, in full. The token functions that call oauth._tokens_issued are replaced in the DPoP
-- section below (their signatures changed there).
ALTER TABLE oauth.default_settings
    ADD COLUMN event_retention interval NOT NULL DEFAULT '30 days',
    ADD CONSTRAINT default_settings_event_retention_check CHECK (event_retention >= '1 hour'),
    ADD COLUMN record_token_events boolean NOT NULL DEFAULT false;
ALTER TABLE oauth.settings
    ADD COLUMN event_retention interval NOT NULL DEFAULT '30 days',
    ADD CONSTRAINT default_settings_event_retention_check CHECK (event_retention >= '1 hour'),
    ADD COLUMN record_token_events boolean NOT NULL DEFAULT false;

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
        'authorization_request_ttl', floor(date_part('epoch', s.authorization_request_ttl))::bigint,
        'event_retention', floor(date_part('epoch', s.event_retention))::bigint,
        'record_token_events', s.record_token_events)
        || oauth._capabilities()
      FROM oauth._settings() s
$$;
-- Removes what can no longer matter, in batches that skip rows other transactions hold, so it can
-- run while traffic flows. Returns the number of rows removed; call until it returns 0.
CREATE OR REPLACE FUNCTION oauth.cleanup(now timestamptz DEFAULT now(), batch_size integer DEFAULT 1000) RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    retention interval := (oauth._settings()).revoked_retention;
    event_retention interval := (oauth._settings()).event_retention;
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

    -- Browser sessions once expired, and signed-out ones once the revoked-row retention is over.
    DELETE FROM oauth.browser_sessions WHERE session_id IN (
        SELECT session_id FROM oauth.browser_sessions
         WHERE expires_at <= now OR ended_at <= now - retention
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Sealed upstream tokens no live grant uses once their session is over (ended, expired or
    -- removed above): nobody can use them any more.
    DELETE FROM oauth.upstream_tokens WHERE token_set_id IN (
        SELECT t.token_set_id FROM oauth.upstream_tokens t
         WHERE NOT EXISTS (SELECT 1 FROM oauth.grant_upstream_tokens l JOIN oauth.grants g USING (grant_id)
                            WHERE l.token_set_id = t.token_set_id AND g.revoked_at IS NULL)
           AND NOT EXISTS (SELECT 1 FROM oauth.browser_sessions s
                            WHERE s.session_id = t.session_id AND s.ended_at IS NULL AND s.expires_at > now)
         LIMIT batch_size FOR UPDATE OF t SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;

    -- Events past their retention, except those a consumer still delivering has not been given: a
    -- webhook that was down for a while catches up. A consumer that acknowledged nothing for a
    -- whole retention period holds nothing back (it would keep every event for ever).
    DELETE FROM oauth.events WHERE event_id IN (
        SELECT e.event_id FROM oauth.events e
         WHERE e.occurred_at <= now - event_retention
           AND NOT EXISTS (
                SELECT 1 FROM oauth.event_consumers c
                 WHERE c.delivered_at > now - event_retention
                   AND e.xid IS NOT NULL AND (c.delivered_xid, c.delivered_event_id) < (e.xid, e.event_id))
         ORDER BY e.occurred_at
         LIMIT batch_size FOR UPDATE SKIP LOCKED);
    GET DIAGNOSTICS n = ROW_COUNT; removed := removed + n;
    RETURN removed;
END
$$;
DROP FUNCTION oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean, interval, interval);
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
    record_token_events boolean DEFAULT NULL
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
        record_token_events = coalesce(configure.record_token_events, s.record_token_events);
    RETURN oauth.settings();
END
$$;
REVOKE EXECUTE ON FUNCTION oauth._tokens_issued(text, text, uuid, uuid, text, boolean, timestamptz),
    oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean, interval, interval,
                    interval, boolean)
    FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean,
                                          interval, interval, interval, boolean)
    TO oauth_admin;
-- end event retention and token events

-- pushed authorization requests
-- RFC 9126 (issue 15): oauth.push_authorization_request for /par, a pushed request's request_uri
-- on the pending request (its digest, until /authorize takes it once), two settings (appended, as
-- in sql/schema.sql: require_pushed_authorization_requests, pushed_request_ttl) and the functions
-- that read them, in full: oauth.begin_authorization (now split into the rules,
-- oauth._begin_authorization, and the two ways in), oauth.configure (two more parameters: a new
-- signature) and oauth.settings(). As in sql/pushed_requests.sql, sql/authorize.sql, sql/clients.sql.
ALTER TABLE oauth.default_settings
    ADD COLUMN require_pushed_authorization_requests boolean NOT NULL DEFAULT false,
    ADD COLUMN pushed_request_ttl interval NOT NULL DEFAULT '90 seconds',
    ADD CONSTRAINT default_settings_pushed_request_ttl_check
        CHECK (pushed_request_ttl BETWEEN '5 seconds' AND '10 minutes');
ALTER TABLE oauth.settings
    ADD COLUMN require_pushed_authorization_requests boolean NOT NULL DEFAULT false,
    ADD COLUMN pushed_request_ttl interval NOT NULL DEFAULT '90 seconds',
    ADD CONSTRAINT default_settings_pushed_request_ttl_check
        CHECK (pushed_request_ttl BETWEEN '5 seconds' AND '10 minutes');
ALTER TABLE oauth.authorization_requests
    ADD COLUMN request_uri_hash bytea UNIQUE CHECK (octet_length(request_uri_hash) = 32),
    ADD COLUMN pushed_until timestamptz;

-- Validates an authorization request (RFC 6749 §4.1.1, RFC 7636, RFC 8707, OIDC Core §3.1.2.1) and
-- stores it for the consent step. `params` maps each parameter name to its value, or to an array
-- of values when the parameter was repeated. Until client_id and redirect_uri are validated an
-- error is never redirected (`"redirect": false`): that would make us an open redirector; nor,
-- for a client no administrator vetted, at all (see _redirect_error). A request that names a
-- request_uri is one the client pushed first (RFC 9126, oauth.push_authorization_request).
CREATE OR REPLACE FUNCTION oauth.begin_authorization(params jsonb, now timestamptz DEFAULT now()) RETURNS jsonb
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

-- RFC 9126 §2: answers {"request_uri", "expires_in"} (HTTP 201), or an error the gateway returns as
-- JSON like the token endpoint's: a pushed request is never answered through a redirect. Or, for a
-- metadata-document client whose document the database has no fresh copy of,
-- {"fetch_client_document": url}: the gateway fetches it and pushes again.
CREATE FUNCTION oauth.push_authorization_request(
    client_id text, client_secret text, params jsonb, now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings oauth.settings := oauth._settings();
    authenticated record;
    request_uri text := 'urn:ietf:params:oauth:request_uri:' || oauth.random_token(32);
    began jsonb;
    document_state jsonb;
BEGIN
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RETURN oauth._error('invalid_request', 'missing parameters');
    END IF;
    -- The client_id parameter names the client as it authenticated; a public client names itself
    -- with it alone.
    IF jsonb_typeof(params->'client_id') = 'array' THEN
        RETURN oauth._error('invalid_request', 'client_id is repeated');
    END IF;
    IF params ? 'client_id' AND push_authorization_request.client_id IS DISTINCT FROM params->>'client_id' THEN
        RETURN oauth._error('invalid_request', 'client_id is not the authenticated client');
    END IF;
    -- A client named by its metadata document pushes first: its document is fetched before it can
    -- be authenticated, as at /authorize.
    IF oauth._is_document_client_id(push_authorization_request.client_id) THEN
        document_state := oauth._client_document_state(push_authorization_request.client_id, now);
        IF document_state IS NOT NULL THEN
            RETURN document_state;
        END IF;
    END IF;
    authenticated := oauth._client_authentication(push_authorization_request.client_id, client_secret, now);
    IF authenticated.problem IS NOT NULL THEN
        RETURN authenticated.problem;
    END IF;
    -- §2.1: a pushed request cannot point at another one.
    IF params ? 'request_uri' THEN
        RETURN oauth._error('invalid_request', 'request_uri cannot be pushed');
    END IF;
    began := oauth._begin_authorization(
        params || jsonb_build_object('client_id', (authenticated.client).client_id),
        oauth.token_hash(request_uri), now + settings.pushed_request_ttl, now);
    IF began ? 'error' THEN
        RETURN oauth._error(began->>'error', began->>'error_description');
    END IF;
    RETURN jsonb_build_object('request_uri', request_uri,
                              'expires_in', floor(date_part('epoch', settings.pushed_request_ttl))::bigint);
END
$$;

-- /authorize?client_id=…&request_uri=…: takes the pushed request (once, before it expires, only by
-- the client that pushed it) and answers as oauth.begin_authorization does for the parameters it
-- stands for. Other parameters beside the two are ignored (RFC 9126 §4): the pushed ones are the
-- request. The pending request's own lifetime starts again here, when a user first sees it.
CREATE FUNCTION oauth._begin_pushed_authorization(params jsonb, now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    pushed oauth.authorization_requests;
    client oauth.clients;
BEGIN
    IF jsonb_typeof(params->'request_uri') IS DISTINCT FROM 'string'
       OR jsonb_typeof(params->'client_id') IS DISTINCT FROM 'string' THEN
        RETURN oauth._error('invalid_request', 'request_uri needs client_id, each given once') || '{"redirect": false}';
    END IF;
    UPDATE oauth.authorization_requests r
       SET request_uri_hash = NULL, pushed_until = NULL,
           expires_at = now + (oauth._settings()).authorization_request_ttl
     WHERE r.request_uri_hash = oauth.token_hash(params->>'request_uri')
       AND r.client_id = params->>'client_id' AND r.pushed_until > now
    RETURNING * INTO pushed;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_request_uri', 'request_uri is unknown, expired, already used or another client''s')
               || '{"redirect": false}';
    END IF;
    SELECT * INTO client FROM oauth.clients c
     WHERE c.client_id = pushed.client_id AND (c.expires_at IS NULL OR c.expires_at > now);
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_client', 'unknown client') || '{"redirect": false}';
    END IF;
    RETURN jsonb_build_object('request_id', pushed.request_id, 'client_id', client.client_id,
                              'client_name', client.client_name, 'prompt', pushed.prompt);
END
$$;

DROP FUNCTION oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean, interval, interval,
                              interval, boolean);
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
    pushed_request_ttl interval DEFAULT NULL
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
        pushed_request_ttl = coalesce(configure.pushed_request_ttl, s.pushed_request_ttl);
    RETURN oauth.settings();
END
$$;

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
        'authorization_request_ttl', floor(date_part('epoch', s.authorization_request_ttl))::bigint,
        'event_retention', floor(date_part('epoch', s.event_retention))::bigint,
        'record_token_events', s.record_token_events,
        'require_pushed_authorization_requests', s.require_pushed_authorization_requests,
        'pushed_request_ttl', floor(date_part('epoch', s.pushed_request_ttl))::bigint)
        || oauth._capabilities()
      FROM oauth._settings() s
$$;
REVOKE EXECUTE ON FUNCTION
    oauth._begin_authorization(jsonb, bytea, timestamptz, timestamptz),
    oauth._begin_pushed_authorization(jsonb, timestamptz),
    oauth.push_authorization_request(text, text, jsonb, timestamptz),
    oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean, interval, interval,
                    interval, boolean, boolean, interval)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.push_authorization_request(text, text, jsonb, timestamptz) TO oauth_gateway;
GRANT EXECUTE ON FUNCTION oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean,
                                          interval, interval, interval, boolean, boolean, interval)
    TO oauth_admin;
-- end pushed authorization requests

-- DPoP (RFC 9449, issue 15): a deployment setting, a public client's refresh family bound to the
-- DPoP key of the request that opened it, and the token endpoint's functions taking that key's
-- thumbprint (`dpop_jkt`, last and optional, so existing calls keep working); beside it the
-- setting announce_events and oauth.exchange_codes (code exchanges coalesced like refreshes). The same text as sql/tokens.sql, sql/device.sql,
-- sql/client_credentials.sql and sql/clients.sql.
ALTER TABLE oauth.default_settings ADD COLUMN dpop_supported boolean NOT NULL DEFAULT false;
ALTER TABLE oauth.settings ADD COLUMN dpop_supported boolean NOT NULL DEFAULT false;
ALTER TABLE oauth.refresh_families ADD COLUMN dpop_jkt text CHECK (dpop_jkt ~ '^[A-Za-z0-9_-]{43}$');
-- And whether statements adding events NOTIFY oauth_events (oauth._announce_events): off unless
-- asked for, since notifying commits cannot share a WAL flush.
ALTER TABLE oauth.default_settings ADD COLUMN announce_events boolean NOT NULL DEFAULT false;
ALTER TABLE oauth.settings ADD COLUMN announce_events boolean NOT NULL DEFAULT false;

CREATE FUNCTION oauth."dpop_signing_algs"() RETURNS TEXT[] /* alloc::vec::Vec<alloc::string::String> */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'dpop_signing_algs_wrapper';


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

DROP FUNCTION oauth._open_family(oauth.codes, boolean, timestamptz);

-- Opens a family for a redeemed code; with a refresh token when the client may refresh.
-- A public client's family is bound to the DPoP key of the request (RFC 9449 §5); a confidential
-- client's refresh tokens are bound to its authentication already.
CREATE FUNCTION oauth._open_family(code oauth.codes, with_refresh boolean, now timestamptz, dpop_jkt text,
                                   OUT family oauth.refresh_families, OUT refresh_token text)
LANGUAGE plpgsql
AS $$
BEGIN
    IF with_refresh THEN
        refresh_token := oauth.refresh_token_first(code.family_id);
    END IF;
    INSERT INTO oauth.refresh_families (family_id, grant_id, client_id, user_id, scopes, resource, current_hash,
                                        created_at, expires_at, chain_key, dpop_jkt)
    VALUES (code.family_id, code.grant_id, code.client_id, code.user_id, code.scopes, code.resource, oauth.token_hash(refresh_token),
            now, now + (oauth._settings()).refresh_token_ttl, oauth.refresh_chain_key(), dpop_jkt)
    RETURNING * INTO family;
END
$$;

DROP FUNCTION oauth.exchange_code(text, text, text, text, text, text, timestamptz);

CREATE FUNCTION oauth.exchange_code(
    client_id text,
    client_secret text,
    code text,
    code_verifier text,
    redirect_uri text,
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
    -- Evaluated only where DPoP can matter, so the common request pays nothing for it.
    IF (dpop_jkt IS NOT NULL OR client.metadata ? 'dpop_bound_access_tokens')
       AND oauth._dpop_problem(client, dpop_jkt) IS NOT NULL THEN
        RETURN oauth._dpop_problem(client, dpop_jkt);
    END IF;
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

    opened := oauth._open_family(redeemed, 'refresh_token' = ANY (client.grant_types), now,
                                 CASE WHEN client.token_endpoint_auth_method = 'none' THEN dpop_jkt END);
    PERFORM oauth._tokens_issued(redeemed.client_id, redeemed.user_id, redeemed.grant_id, redeemed.family_id,
                                 'authorization_code', opened.refresh_token IS NOT NULL, now);
    -- The client's row is at hand here, so the gateway learns how to sign the ID token without
    -- another query (and rotation, which issues none, never asks).
    RETURN oauth._token_response(opened.family, granted.props, granted.auth_time, redeemed.scopes,
                                 redeemed.nonce, opened.refresh_token, now)
        || jsonb_build_object('id_token_signed_response_alg', oauth._id_token_alg(client.metadata));
END
$$;

-- Concurrent code exchanges that the gateway coalesced, like oauth.rotate_refresh_tokens: each
-- element is decided by oauth.exchange_code exactly as a call of its own would be, in one
-- transaction, answered in order. Codes are redeemed in the order of their hashes, so batches on
-- different connections presenting the same codes lock them in one order and cannot deadlock.
CREATE FUNCTION oauth.exchange_codes(
    client_ids text[],
    client_secrets text[],
    codes text[],
    code_verifiers text[],
    redirect_uris text[],
    resources text[],
    now timestamptz DEFAULT now(),
    dpop_jkts text[] DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(codes);
    answers jsonb[];
    i integer;
BEGIN
    IF cardinality(client_ids) IS DISTINCT FROM n OR cardinality(client_secrets) IS DISTINCT FROM n
       OR cardinality(code_verifiers) IS DISTINCT FROM n OR cardinality(redirect_uris) IS DISTINCT FROM n
       OR cardinality(resources) IS DISTINCT FROM n
       OR (dpop_jkts IS NOT NULL AND cardinality(dpop_jkts) IS DISTINCT FROM n) THEN
        PERFORM oauth._raise('invalid_request', 'the batch''s arrays differ in length');
    END IF;
    answers := array_fill(NULL::jsonb, ARRAY[n]);
    FOR i IN SELECT t.i FROM unnest(codes) WITH ORDINALITY AS t(code, i)
              ORDER BY oauth.token_hash(t.code) NULLS LAST, t.i
    LOOP
        answers[i] := oauth.exchange_code(client_ids[i], client_secrets[i], codes[i], code_verifiers[i],
                                          redirect_uris[i], resources[i], now, dpop_jkts[i]);
    END LOOP;
    RETURN to_jsonb(answers);
END
$$;

DROP FUNCTION oauth.rotate_refresh_token(text, text, text, text, text, timestamptz);

CREATE FUNCTION oauth.rotate_refresh_token(
    client_id text,
    client_secret text,
    refresh_token text,
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
    -- Evaluated only where DPoP can matter, so the common request pays nothing for it.
    IF (dpop_jkt IS NOT NULL OR client.metadata ? 'dpop_bound_access_tokens')
       AND oauth._dpop_problem(client, dpop_jkt) IS NOT NULL THEN
        RETURN oauth._dpop_problem(client, dpop_jkt);
    END IF;
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
       AND (f.dpop_jkt IS NULL OR f.dpop_jkt = rotate_refresh_token.dpop_jkt)
    RETURNING f AS family, g.props, g.auth_time,
              oauth.refresh_token_successor(f.chain_key, f.family_id, f.generation, refresh_token) AS successor
    INTO rotated;
    IF FOUND THEN
        family := rotated.family;
        PERFORM oauth._tokens_issued(family.client_id, family.user_id, family.grant_id, family.family_id,
                                     'refresh_token', true, now);
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
        -- The live token without its key: refused, and the family stays (the key's holder may
        -- still use it).
        IF family.dpop_jkt IS NOT NULL AND family.dpop_jkt IS DISTINCT FROM rotate_refresh_token.dpop_jkt THEN
            RETURN oauth._error('invalid_grant', 'refresh token is bound to a DPoP key: send a proof made with that key');
        END IF;
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
       AND (family.dpop_jkt IS NULL OR family.dpop_jkt = rotate_refresh_token.dpop_jkt)
       AND requested <@ family.scopes
       AND (rotate_refresh_token.resource IS NULL OR rotate_refresh_token.resource = family.resource) THEN
        SELECT * INTO granted FROM oauth.grants g WHERE g.grant_id = family.grant_id AND g.revoked_at IS NULL;
        IF FOUND THEN
            PERFORM oauth._tokens_issued(family.client_id, family.user_id, family.grant_id, family.family_id,
                                         'refresh_token', true, now);
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

DROP FUNCTION oauth.rotate_refresh_tokens(text[], text[], text[], text[], text[], timestamptz);

-- Concurrent refreshes that the gateway coalesced: each element is decided by
-- oauth.rotate_refresh_token exactly as a call of its own would be, in one transaction, so a burst
-- costs one round trip and one commit instead of one per request. Answers come back as a jsonb
-- array in the order of the arguments; an expected failure is that element's own answer and does
-- not touch the others. Families are rotated in the order of their ids, so batches running on
-- different connections lock rows in one order and cannot deadlock each other.
CREATE FUNCTION oauth.rotate_refresh_tokens(
    client_ids text[],
    client_secrets text[],
    refresh_tokens text[],
    scopes text[],
    resources text[],
    now timestamptz DEFAULT now(),
    dpop_jkts text[] DEFAULT NULL
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    n integer := cardinality(refresh_tokens);
    answers jsonb[];
    i integer;
BEGIN
    IF cardinality(client_ids) IS DISTINCT FROM n OR cardinality(client_secrets) IS DISTINCT FROM n
       OR cardinality(scopes) IS DISTINCT FROM n OR cardinality(resources) IS DISTINCT FROM n
       OR (dpop_jkts IS NOT NULL AND cardinality(dpop_jkts) IS DISTINCT FROM n) THEN
        PERFORM oauth._raise('invalid_request', 'the batch''s arrays differ in length');
    END IF;
    answers := array_fill(NULL::jsonb, ARRAY[n]);
    FOR i IN SELECT t.i FROM unnest(refresh_tokens) WITH ORDINALITY AS t(token, i)
              ORDER BY oauth._refresh_token_family(t.token) NULLS LAST, t.i
    LOOP
        answers[i] := oauth.rotate_refresh_token(client_ids[i], client_secrets[i], refresh_tokens[i],
                                                 scopes[i], resources[i], now, dpop_jkts[i]);
    END LOOP;
    RETURN to_jsonb(answers);
END
$$;

DROP FUNCTION oauth.poll_device_authorization(text, text, text, timestamptz);

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

DROP FUNCTION oauth.client_credentials_grant(text, text, text, text, timestamptz);

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

DROP FUNCTION oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean, interval, interval,
                              interval, boolean, boolean, interval);

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

REVOKE EXECUTE ON FUNCTION
    oauth.dpop_signing_algs(),
    oauth._dpop_problem(oauth.clients, text),
    oauth._open_family(oauth.codes, boolean, timestamptz, text),
    oauth.exchange_code(text, text, text, text, text, text, timestamptz, text),
    oauth.exchange_codes(text[], text[], text[], text[], text[], text[], timestamptz, text[]),
    oauth.rotate_refresh_token(text, text, text, text, text, timestamptz, text),
    oauth.rotate_refresh_tokens(text[], text[], text[], text[], text[], timestamptz, text[]),
    oauth.poll_device_authorization(text, text, text, timestamptz, text),
    oauth.client_credentials_grant(text, text, text, text, timestamptz, text),
    oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean, interval, interval,
                    interval, boolean, boolean, interval, boolean, boolean)
FROM PUBLIC;
GRANT EXECUTE ON FUNCTION
    oauth.exchange_code(text, text, text, text, text, text, timestamptz, text),
    oauth.exchange_codes(text[], text[], text[], text[], text[], text[], timestamptz, text[]),
    oauth.rotate_refresh_token(text, text, text, text, text, timestamptz, text),
    oauth.rotate_refresh_tokens(text[], text[], text[], text[], text[], timestamptz, text[]),
    oauth.poll_device_authorization(text, text, text, timestamptz, text),
    oauth.client_credentials_grant(text, text, text, text, timestamptz, text)
TO oauth_gateway;
GRANT EXECUTE ON FUNCTION oauth.configure(text, interval, interval, interval, interval, text[], text[], boolean,
                                          interval, interval, interval, boolean, boolean, interval, boolean, boolean)
    TO oauth_admin;
-- end DPoP

-- upstream tokens (issue 13)
-- The upstream provider's access and refresh tokens, sealed by the gateway: two tables, the
-- functions storing, reading, replacing (compare-and-swap) and forgetting them, triggers deleting
-- them with the grant or session they belong to, and oauth.continue_authorization linking a new
-- grant to the set of the session it was consented in. The same text as sql/upstream_tokens.sql.

-- The upstream identity provider's own tokens (issue 13), kept when a deployment turns it on so the
-- guarded MCP server can call the provider's API on the user's behalf. The gateway seals them
-- (AES-256-GCM under a key the database never holds, bound to the row's token_set_id, user and
-- upstream), so this schema stores and hands back opaque bytes only: a dump or a read of the table
-- reveals no token, and a sealed blob copied onto another user's row does not open.
--
-- One set per sign-in (a browser session), shared by the grants the user makes in that session:
-- the provider's refresh token may rotate, and two copies of one refresh token would leave every
-- copy but the first to refresh holding a dead token. A set lives while something may use it: a
-- live grant linked to it, or its live session (for the grants still to come). Revoking a grant
-- unlinks it; ending the session or revoking the last grant, whichever is last, deletes the set.

CREATE TABLE oauth.upstream_tokens (
    -- Chosen by the gateway before it seals, since the seal binds it.
    token_set_id uuid PRIMARY KEY,
    user_id text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    -- The gateway's name for the provider (its configuration's), which knows where to refresh.
    upstream text NOT NULL CHECK (length(upstream) BETWEEN 1 AND 64),
    session_id uuid REFERENCES oauth.browser_sessions ON DELETE SET NULL,
    -- nonce ‖ ciphertext ‖ tag: at least a nonce and a tag.
    sealed bytea NOT NULL CHECK (octet_length(sealed) BETWEEN 28 AND 32768),
    -- A fingerprint of the sealing key (never the key): a gateway holding another key says so.
    sealed_with text NOT NULL CHECK (length(sealed_with) BETWEEN 1 AND 128),
    -- Compare-and-swap: a refresh replaces the version it read, so two gateways refreshing at once
    -- cannot overwrite one provider answer with another.
    version bigint NOT NULL DEFAULT 1,
    -- One refresh at a time across gateways (oauth.claim_upstream_refresh): a provider that rotates
    -- refresh tokens takes a second presentation of one for reuse, and may revoke everything.
    refreshing_until timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX ON oauth.upstream_tokens (session_id);
SELECT pg_catalog.pg_extension_config_dump('oauth.upstream_tokens', '');

-- Which set a grant's tokens hand on: the set of the session in which the user last consented.
CREATE TABLE oauth.grant_upstream_tokens (
    grant_id uuid PRIMARY KEY REFERENCES oauth.grants ON DELETE CASCADE,
    token_set_id uuid NOT NULL REFERENCES oauth.upstream_tokens ON DELETE CASCADE
);
CREATE INDEX ON oauth.grant_upstream_tokens (token_set_id);
SELECT pg_catalog.pg_extension_config_dump('oauth.grant_upstream_tokens', '');

-- Deletes the set when nothing may use it any more: no live grant links to it and its session is
-- over (ended, expired or gone).
CREATE FUNCTION oauth._drop_unused_upstream_tokens(token_set_id uuid, now timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
BEGIN
    DELETE FROM oauth.upstream_tokens t
     WHERE t.token_set_id = _drop_unused_upstream_tokens.token_set_id
       AND NOT EXISTS (SELECT 1 FROM oauth.grant_upstream_tokens l JOIN oauth.grants g USING (grant_id)
                        WHERE l.token_set_id = t.token_set_id AND g.revoked_at IS NULL)
       AND NOT EXISTS (SELECT 1 FROM oauth.browser_sessions s
                        WHERE s.session_id = t.session_id AND s.ended_at IS NULL AND s.expires_at > now);
    RETURN FOUND;
END
$$;

-- Links the user's live grant for the client to the newest token set of the session in which
-- consent was just given (oauth.continue_authorization). Without a set (tokens not kept, or a
-- user named by a proxy) the grant keeps what an earlier session gave it.
CREATE FUNCTION oauth._attach_upstream_tokens(session_id uuid, user_id text, client_id text, now timestamptz)
RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
    chosen uuid;
    live_grant uuid;
    previous uuid;
BEGIN
    IF session_id IS NULL THEN
        RETURN;
    END IF;
    SELECT t.token_set_id INTO chosen FROM oauth.upstream_tokens t
     WHERE t.session_id = _attach_upstream_tokens.session_id AND t.user_id = _attach_upstream_tokens.user_id
     ORDER BY t.created_at DESC, t.token_set_id LIMIT 1;
    IF chosen IS NULL THEN
        RETURN;
    END IF;
    SELECT g.grant_id INTO live_grant FROM oauth.grants g
     WHERE g.subject_type = 'user' AND g.user_id = _attach_upstream_tokens.user_id
       AND g.client_id = _attach_upstream_tokens.client_id AND g.revoked_at IS NULL;
    IF live_grant IS NULL THEN
        RETURN;
    END IF;
    SELECT l.token_set_id INTO previous FROM oauth.grant_upstream_tokens l WHERE l.grant_id = live_grant;
    INSERT INTO oauth.grant_upstream_tokens AS l (grant_id, token_set_id) VALUES (live_grant, chosen)
    ON CONFLICT (grant_id) DO UPDATE SET token_set_id = EXCLUDED.token_set_id;
    IF previous IS NOT NULL AND previous <> chosen THEN
        PERFORM oauth._drop_unused_upstream_tokens(previous, now);
    END IF;
END
$$;

-- A revoked grant hands on no upstream token: every path of revocation (the user, the client, the
-- application, refresh-token reuse, a deleted client) sets revoked_at, so this catches them all.
CREATE FUNCTION oauth._upstream_tokens_after_grant_revoked() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    unlinked uuid;
BEGIN
    DELETE FROM oauth.grant_upstream_tokens l WHERE l.grant_id = NEW.grant_id
    RETURNING l.token_set_id INTO unlinked;
    IF unlinked IS NOT NULL THEN
        PERFORM oauth._drop_unused_upstream_tokens(unlinked, NEW.revoked_at);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER forget_upstream_tokens AFTER UPDATE OF revoked_at ON oauth.grants
    FOR EACH ROW WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
    EXECUTE FUNCTION oauth._upstream_tokens_after_grant_revoked();

-- A session's set outlives the session only for the grants made in it.
CREATE FUNCTION oauth._upstream_tokens_after_session_ended() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM oauth._drop_unused_upstream_tokens(t.token_set_id, NEW.ended_at)
       FROM oauth.upstream_tokens t WHERE t.session_id = NEW.session_id;
    RETURN NULL;
END
$$;
CREATE TRIGGER forget_upstream_tokens AFTER UPDATE OF ended_at ON oauth.browser_sessions
    FOR EACH ROW WHEN (OLD.ended_at IS NULL AND NEW.ended_at IS NOT NULL)
    EXECUTE FUNCTION oauth._upstream_tokens_after_session_ended();

-- Keeps the sealed tokens the provider issued at sign-in, for the live session `session_id`
-- (whose user they are). Returns {"token_set_id", "user_id", "version"}, or
-- {"error": "invalid_request"} for a session that is not live, a set id already used, or a blob
-- of impossible size. Also deletes a few sets left unused by sessions that simply expired.
CREATE FUNCTION oauth.store_upstream_tokens(
    token_set_id uuid,
    session_id uuid,
    upstream text,
    sealed bytea,
    sealed_with text,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    session oauth.browser_sessions;
BEGIN
    IF token_set_id IS NULL OR upstream IS NULL OR length(upstream) NOT BETWEEN 1 AND 64
       OR sealed IS NULL OR octet_length(sealed) NOT BETWEEN 28 AND 32768
       OR sealed_with IS NULL OR length(sealed_with) NOT BETWEEN 1 AND 128 THEN
        RETURN jsonb_build_object('error', 'invalid_request',
                                  'error_description', 'a token set needs an id, an upstream name and a sealed blob of 28 to 32768 bytes');
    END IF;
    SELECT * INTO session FROM oauth.browser_sessions s
     WHERE s.session_id = store_upstream_tokens.session_id AND s.ended_at IS NULL AND s.expires_at > now;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('error', 'invalid_request', 'error_description', 'no such live session');
    END IF;
    INSERT INTO oauth.upstream_tokens (token_set_id, user_id, upstream, session_id, sealed, sealed_with, created_at,
                                       updated_at)
    VALUES (store_upstream_tokens.token_set_id, session.user_id, store_upstream_tokens.upstream, session.session_id,
            store_upstream_tokens.sealed, store_upstream_tokens.sealed_with, now, now)
    ON CONFLICT DO NOTHING;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('error', 'invalid_request', 'error_description', 'this token set id is taken');
    END IF;
    PERFORM oauth._drop_unused_upstream_tokens(t.token_set_id, now)
       FROM (SELECT u.token_set_id FROM oauth.upstream_tokens u
              LEFT JOIN oauth.browser_sessions s ON s.session_id = u.session_id
             WHERE s.session_id IS NULL OR s.ended_at IS NOT NULL OR s.expires_at <= now
             ORDER BY u.updated_at LIMIT 20) t;
    RETURN jsonb_build_object('token_set_id', store_upstream_tokens.token_set_id, 'user_id', session.user_id,
                              'version', 1);
END
$$;

-- The sealed tokens the live grant hands on (no row: none, or the grant is revoked). The guard
-- opens them with the row's token_set_id, user_id and upstream, which the seal binds.
CREATE FUNCTION oauth.upstream_tokens_for_grant(grant_id uuid, now timestamptz DEFAULT now())
RETURNS TABLE (token_set_id uuid, user_id text, upstream text, sealed bytea, sealed_with text, version bigint)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.token_set_id, t.user_id, t.upstream, t.sealed, t.sealed_with, t.version
      FROM oauth.grant_upstream_tokens l
      JOIN oauth.grants g ON g.grant_id = l.grant_id
      JOIN oauth.upstream_tokens t ON t.token_set_id = l.token_set_id
     WHERE l.grant_id = upstream_tokens_for_grant.grant_id AND g.revoked_at IS NULL AND g.user_id = t.user_id;
$$;

-- A gateway about to refresh the set at the provider claims it for `lease` (1 to 60 seconds): true
-- when it may go ahead; false when another gateway is refreshing it (wait for its version) or the
-- set moved past `expected_version` (read it again). The claim ends with the replacement, with
-- oauth.release_upstream_refresh after a failure, or when the lease runs out (a gateway that died).
CREATE FUNCTION oauth.claim_upstream_refresh(
    token_set_id uuid,
    expected_version bigint,
    lease interval DEFAULT '15 seconds',
    now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE oauth.upstream_tokens t
       SET refreshing_until = now + least(greatest(coalesce(lease, interval '15 seconds'), interval '1 second'),
                                          interval '60 seconds')
     WHERE t.token_set_id = claim_upstream_refresh.token_set_id AND t.version = expected_version
       AND (t.refreshing_until IS NULL OR t.refreshing_until <= now);
    RETURN FOUND;
END
$$;

-- Ends a claim whose refresh failed and left the set as it was, so the next request may try again.
CREATE FUNCTION oauth.release_upstream_refresh(
    token_set_id uuid,
    expected_version bigint,
    now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    UPDATE oauth.upstream_tokens t SET refreshing_until = NULL
     WHERE t.token_set_id = release_upstream_refresh.token_set_id AND t.version = expected_version
       AND t.refreshing_until > now;
    RETURN FOUND;
END
$$;

-- A refresh's result, written only over the version the gateway refreshed from (one statement: a
-- compare-and-swap). Returns the new version, or NULL when another gateway replaced it first (the
-- caller reads the set again and uses that) or the set is gone.
CREATE FUNCTION oauth.replace_upstream_tokens(
    token_set_id uuid,
    expected_version bigint,
    sealed bytea,
    sealed_with text,
    now timestamptz DEFAULT now()
) RETURNS bigint
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    UPDATE oauth.upstream_tokens t
       SET sealed = replace_upstream_tokens.sealed, sealed_with = replace_upstream_tokens.sealed_with,
           version = t.version + 1, refreshing_until = NULL, updated_at = now
     WHERE t.token_set_id = replace_upstream_tokens.token_set_id AND t.version = expected_version
       AND octet_length(replace_upstream_tokens.sealed) BETWEEN 28 AND 32768
       AND length(replace_upstream_tokens.sealed_with) BETWEEN 1 AND 128
    RETURNING t.version;
$$;

-- The provider refused the set's refresh token for good (invalid_grant): deletes the set, unless
-- another gateway replaced it since `expected_version` was read, and ends the session it came
-- from: the provider no longer stands behind that sign-in, and the user's next authorization must
-- sign in again to bring new tokens (a live session would link the grant to nothing). True when
-- deleted.
CREATE FUNCTION oauth.forget_upstream_tokens(
    token_set_id uuid,
    expected_version bigint,
    now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    its_session uuid;
BEGIN
    DELETE FROM oauth.upstream_tokens t
     WHERE t.token_set_id = forget_upstream_tokens.token_set_id AND t.version = expected_version
    RETURNING t.session_id INTO its_session;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    IF its_session IS NOT NULL THEN
        PERFORM oauth.end_session(its_session, now);
    END IF;
    RETURN true;
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
CREATE OR REPLACE FUNCTION oauth.continue_authorization(
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
REVOKE EXECUTE ON FUNCTION oauth._drop_unused_upstream_tokens(uuid, timestamptz),
    oauth._attach_upstream_tokens(uuid, text, text, timestamptz),
    oauth._upstream_tokens_after_grant_revoked(),
    oauth._upstream_tokens_after_session_ended(),
    oauth.store_upstream_tokens(uuid, uuid, text, bytea, text, timestamptz),
    oauth.upstream_tokens_for_grant(uuid, timestamptz),
    oauth.claim_upstream_refresh(uuid, bigint, interval, timestamptz),
    oauth.release_upstream_refresh(uuid, bigint, timestamptz),
    oauth.replace_upstream_tokens(uuid, bigint, bytea, text, timestamptz),
    oauth.forget_upstream_tokens(uuid, bigint, timestamptz)
    FROM PUBLIC;
REVOKE ALL ON oauth.upstream_tokens, oauth.grant_upstream_tokens FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.store_upstream_tokens(uuid, uuid, text, bytea, text, timestamptz),
    oauth.upstream_tokens_for_grant(uuid, timestamptz),
    oauth.claim_upstream_refresh(uuid, bigint, interval, timestamptz),
    oauth.release_upstream_refresh(uuid, bigint, timestamptz),
    oauth.replace_upstream_tokens(uuid, bigint, bytea, text, timestamptz),
    oauth.forget_upstream_tokens(uuid, bigint, timestamptz)
    TO oauth_gateway;
-- end upstream tokens

-- JWT authorization grants (RFC 7523 §2.1) from trusted issuers: the Identity Assertion JWT
-- Authorization Grant (MCP Enterprise-Managed Authorization) and workload identity federation
-- (sql/trusted_issuers.sql, sql/assertion_grants.sql, whose text follows). oauth.settings()
-- advertises the grant while an issuer is trusted.
CREATE FUNCTION oauth."assertion_issuer"(
	"assertion" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'assertion_issuer_wrapper';
CREATE FUNCTION oauth."verify_authorization_grant"(
	"assertion" TEXT, /* Option < & str > */
	"jwks" jsonb, /* Option < JsonB > */
	"profile" TEXT, /* Option < & str > */
	"issuer" TEXT, /* Option < & str > */
	"audience" TEXT, /* Option < & str > */
	"algorithms" TEXT[], /* Option < Vec < String > > */
	"now" timestamp with time zone /* Option < TimestampWithTimeZone > */
) RETURNS jsonb /* JsonB */
IMMUTABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'verify_authorization_grant_wrapper';

-- Trusted issuers of JWT authorization grants (RFC 7523 §2.1): whose JWTs the token endpoint takes
-- as grants (sql/assertion_grants.sql decides each request). Here ahead of the clients file, since
-- oauth.settings() advertises the grant only while an issuer is trusted.
--
-- profile 'id-jag': an enterprise IdP issuing Identity Assertion JWT Authorization Grants
-- (draft-ietf-oauth-identity-assertion-authz-grant, MCP Enterprise-Managed Authorization) about its
-- users. profile 'workload': an issuer of workload identities (a Kubernetes cluster's service
-- account tokens, a SPIFFE trust domain's JWT-SVIDs), each a trust relationship in the manner of
-- Ory Hydra's: issuer, subjects, scopes, keys, expiry.
CREATE TABLE oauth.trusted_issuers (
    issuer text PRIMARY KEY CHECK (length(issuer) BETWEEN 1 AND 255),
    profile text NOT NULL CHECK (profile IN ('id-jag', 'workload')),
    -- The issuer's keys: inline, or at an https URL the gateway fetches (oauth.trusted_issuer_jwks).
    jwks jsonb,
    jwks_uri text,
    -- The asymmetric algorithms its JWTs may be signed with.
    algorithms text[] NOT NULL CHECK (cardinality(algorithms) > 0),
    -- The clients that may present its JWTs (an ID-JAG names its client; a workload presents its
    -- token as one of these clients).
    client_ids text[] NOT NULL CHECK (cardinality(client_ids) > 0),
    -- The resources tokens may be issued for (NULL: any this server lists) and the scopes they may carry.
    allowed_resources text[],
    allowed_scopes text[] NOT NULL,
    -- id-jag: which claim names the user: 'sub', or 'email' (only with email_verified true).
    user_claim text NOT NULL DEFAULT 'sub' CHECK (user_claim IN ('sub', 'email')),
    -- The subjects accepted: exact values, or prefixes ending in '*' ('*' alone: any subject).
    -- Required for workloads; NULL for an id-jag issuer means any of its users.
    subjects text[],
    -- The trust ends then (NULL: when removed).
    expires_at timestamptz,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    CHECK ((jwks IS NULL) <> (jwks_uri IS NULL)),
    CHECK (profile = 'id-jag' OR cardinality(subjects) > 0)
);
SELECT pg_catalog.pg_extension_config_dump('oauth.trusted_issuers', '');

-- The key sets of trusted issuers that publish them at a jwks_uri, as a gateway last fetched them
-- (the same rules as oauth.client_jwks).
CREATE TABLE oauth.trusted_issuer_jwks (
    issuer text PRIMARY KEY REFERENCES oauth.trusted_issuers ON DELETE CASCADE ON UPDATE CASCADE,
    jwks_uri text NOT NULL,
    jwks jsonb,
    fetched_at timestamptz,
    attempted_at timestamptz NOT NULL,
    fresh_until timestamptz NOT NULL,
    failure text
);
SELECT pg_catalog.pg_extension_config_dump('oauth.trusted_issuer_jwks', '');

-- Assertions already used as grants (RFC 7523 §3 item 7), until they could no longer be accepted.
CREATE TABLE oauth.assertion_grant_jtis (
    issuer text NOT NULL,
    jti text NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (issuer, jti)
);
CREATE INDEX ON oauth.assertion_grant_jtis (expires_at);
SELECT pg_catalog.pg_extension_config_dump('oauth.assertion_grant_jtis', '');

-- The capabilities oauth.settings() serves, with the JWT bearer grant while an issuer is trusted
-- and the ID-JAG profile (authorization_grant_profiles_supported) while an id-jag issuer is.
CREATE FUNCTION oauth._with_assertion_grants(capabilities jsonb) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE
        WHEN NOT EXISTS (SELECT 1 FROM oauth.trusted_issuers t WHERE t.expires_at IS NULL OR t.expires_at > now())
            THEN capabilities
        ELSE capabilities
            || jsonb_build_object('grant_types_supported', (capabilities -> 'grant_types_supported')
                                  || '["urn:ietf:params:oauth:grant-type:jwt-bearer"]'::jsonb)
            || CASE WHEN EXISTS (SELECT 1 FROM oauth.trusted_issuers t
                                  WHERE t.profile = 'id-jag' AND (t.expires_at IS NULL OR t.expires_at > now()))
                    THEN jsonb_build_object('authorization_grant_profiles_supported',
                                            '["urn:ietf:params:oauth:grant-profile:id-jag"]'::jsonb)
                    ELSE '{}'::jsonb END
    END
$$;

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

-- The JWT bearer grant (RFC 7523 §2.1, grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer)
-- with JWTs from trusted issuers (sql/trusted_issuers.sql), opt-in: no trusted issuer, no grant.
--
-- id-jag (draft-ietf-oauth-identity-assertion-authz-grant; MCP Enterprise-Managed Authorization):
-- a confidential client listed for the issuer presents an ID-JAG its IdP issued to it (client_id)
-- for this server (aud) about a user; the token is the user's, for the ID-JAG's resource.
-- workload: a client listed for the issuer presents a workload's JWT; RFC 7523 §3.1 makes client
-- authentication optional with a JWT grant, so the client may be a public one (method none) whose
-- only credential is the workload's token: an administrator creates it and lists it, as Hydra's
-- trust relationships name who may present an issuer's JWTs. The token's subject is the workload,
-- as a client_credentials token's is its client.
--
-- The JWT itself (signature, allowed algorithm, typ, iss, aud, sub, times, cnf and
-- authorization_details) is checked by oauth.verify_authorization_grant (oauth_rules); who may
-- present it, the subject rules, the resource, the scopes and single use of its jti are decided here.
-- No refresh token: the client presents a fresh grant when the token expires.

CREATE FUNCTION oauth._trusted_issuer_problem(issuer oauth.trusted_issuers) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    problem text;
BEGIN
    IF issuer.issuer IS NULL OR issuer.issuer !~ '^https://[^[:space:]]+$' OR length(issuer.issuer) > 255 THEN
        RETURN 'issuer must be an https URL of at most 255 characters';
    END IF;
    IF issuer.profile IS NULL OR issuer.profile NOT IN ('id-jag', 'workload') THEN
        RETURN 'profile must be id-jag or workload';
    END IF;
    IF (issuer.jwks IS NULL) = (issuer.jwks_uri IS NULL) THEN
        RETURN 'give exactly one of jwks and jwks_uri';
    END IF;
    IF issuer.jwks IS NOT NULL THEN
        problem := oauth.jwks_problem(issuer.jwks);
    ELSE
        problem := oauth.jwks_uri_problem(issuer.jwks_uri);
    END IF;
    IF problem IS NOT NULL THEN
        RETURN problem;
    END IF;
    IF coalesce(cardinality(issuer.algorithms), 0) = 0 OR array_position(issuer.algorithms, NULL) IS NOT NULL
       OR NOT issuer.algorithms <@ oauth.client_assertion_signing_algs() THEN
        RETURN 'algorithms must list some of ' || array_to_string(oauth.client_assertion_signing_algs(), ', ');
    END IF;
    IF coalesce(cardinality(issuer.client_ids), 0) = 0 OR array_position(issuer.client_ids, NULL) IS NOT NULL THEN
        RETURN 'client_ids must list the clients that may present this issuer''s JWTs';
    END IF;
    IF EXISTS (SELECT 1 FROM unnest(issuer.client_ids) c
                WHERE NOT EXISTS (SELECT 1 FROM oauth.clients k WHERE k.client_id = c)) THEN
        RETURN 'client_ids names a client that does not exist';
    END IF;
    IF issuer.profile = 'id-jag' AND EXISTS (
            SELECT 1 FROM oauth.clients k
             WHERE k.client_id = ANY (issuer.client_ids) AND k.token_endpoint_auth_method = 'none') THEN
        RETURN 'an ID-JAG is presented by a confidential client: client_ids names a public one';
    END IF;
    IF issuer.allowed_scopes IS NULL OR array_position(issuer.allowed_scopes, NULL) IS NOT NULL
       OR NOT issuer.allowed_scopes <@ (oauth._settings()).scopes_supported THEN
        RETURN 'allowed_scopes must be supported scope names';
    END IF;
    IF issuer.allowed_resources IS NOT NULL AND (
            cardinality(issuer.allowed_resources) = 0
            OR EXISTS (SELECT 1 FROM unnest(issuer.allowed_resources) r
                        WHERE r IS NULL OR oauth.resource_problem(r) IS NOT NULL)) THEN
        RETURN 'allowed_resources must list resource indicators (or be NULL: any this server lists)';
    END IF;
    IF issuer.user_claim IS NULL OR issuer.user_claim NOT IN ('sub', 'email') THEN
        RETURN 'user_claim must be sub or email';
    END IF;
    IF issuer.subjects IS NOT NULL AND (cardinality(issuer.subjects) = 0
            OR EXISTS (SELECT 1 FROM unnest(issuer.subjects) s WHERE s IS NULL OR s = '' OR length(s) > 255)) THEN
        RETURN 'subjects must list subjects or prefixes ending in *';
    END IF;
    IF issuer.profile = 'workload' AND issuer.subjects IS NULL THEN
        RETURN 'a workload issuer needs subjects (''*'' for any subject)';
    END IF;
    RETURN NULL;
END
$$;

-- Trusts `issuer`'s JWTs as grants. `jwks` (a JWK Set) or `jwks_uri` (https, fetched by the gateway).
CREATE FUNCTION oauth.add_trusted_issuer(
    issuer text,
    profile text,
    client_ids text[],
    allowed_scopes text[],
    jwks jsonb DEFAULT NULL,
    jwks_uri text DEFAULT NULL,
    algorithms text[] DEFAULT '{RS256,ES256}',
    allowed_resources text[] DEFAULT NULL,
    user_claim text DEFAULT 'sub',
    subjects text[] DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry oauth.trusted_issuers;
    problem text;
BEGIN
    entry := ROW(issuer, profile, jwks, jwks_uri, algorithms, client_ids, allowed_resources, allowed_scopes,
               user_claim, subjects, expires_at, now, now)::oauth.trusted_issuers;
    problem := oauth._trusted_issuer_problem(entry);
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise('invalid_request', problem);
    END IF;
    IF EXISTS (SELECT 1 FROM oauth.trusted_issuers t WHERE t.issuer = entry.issuer) THEN
        PERFORM oauth._raise('invalid_request', 'this issuer is trusted already (oauth.update_trusted_issuer)');
    END IF;
    INSERT INTO oauth.trusted_issuers SELECT entry.*;
    PERFORM oauth._event('trusted_issuer_added', NULL, NULL, NULL, NULL,
                         jsonb_build_object('issuer', entry.issuer, 'profile', entry.profile,
                                            'client_ids', to_jsonb(entry.client_ids)), now);
END
$$;

-- Changes a trusted issuer; NULL keeps a value. Giving jwks drops jwks_uri and the reverse.
CREATE FUNCTION oauth.update_trusted_issuer(
    issuer text,
    client_ids text[] DEFAULT NULL,
    allowed_scopes text[] DEFAULT NULL,
    jwks jsonb DEFAULT NULL,
    jwks_uri text DEFAULT NULL,
    algorithms text[] DEFAULT NULL,
    allowed_resources text[] DEFAULT NULL,
    user_claim text DEFAULT NULL,
    subjects text[] DEFAULT NULL,
    expires_at timestamptz DEFAULT NULL,
    now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    entry oauth.trusted_issuers;
    problem text;
BEGIN
    SELECT * INTO entry FROM oauth.trusted_issuers t WHERE t.issuer = update_trusted_issuer.issuer FOR UPDATE;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such trusted issuer');
    END IF;
    entry.client_ids := coalesce(update_trusted_issuer.client_ids, entry.client_ids);
    entry.allowed_scopes := coalesce(update_trusted_issuer.allowed_scopes, entry.allowed_scopes);
    IF update_trusted_issuer.jwks IS NOT NULL OR update_trusted_issuer.jwks_uri IS NOT NULL THEN
        entry.jwks := update_trusted_issuer.jwks;
        entry.jwks_uri := update_trusted_issuer.jwks_uri;
    END IF;
    entry.algorithms := coalesce(update_trusted_issuer.algorithms, entry.algorithms);
    entry.allowed_resources := coalesce(update_trusted_issuer.allowed_resources, entry.allowed_resources);
    entry.user_claim := coalesce(update_trusted_issuer.user_claim, entry.user_claim);
    entry.subjects := coalesce(update_trusted_issuer.subjects, entry.subjects);
    entry.expires_at := coalesce(update_trusted_issuer.expires_at, entry.expires_at);
    entry.updated_at := now;
    problem := oauth._trusted_issuer_problem(entry);
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise('invalid_request', problem);
    END IF;
    UPDATE oauth.trusted_issuers t
       SET client_ids = entry.client_ids, allowed_scopes = entry.allowed_scopes, jwks = entry.jwks,
           jwks_uri = entry.jwks_uri, algorithms = entry.algorithms, allowed_resources = entry.allowed_resources,
           user_claim = entry.user_claim, subjects = entry.subjects, expires_at = entry.expires_at,
           updated_at = entry.updated_at
     WHERE t.issuer = entry.issuer;
    PERFORM oauth._event('trusted_issuer_updated', NULL, NULL, NULL, NULL,
                         jsonb_build_object('issuer', entry.issuer), now);
END
$$;

-- Stops trusting an issuer. Tokens it was the grant for stay valid until they expire (revoke the
-- grants to end them sooner).
CREATE FUNCTION oauth.remove_trusted_issuer(issuer text, now timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM oauth.trusted_issuers t WHERE t.issuer = remove_trusted_issuer.issuer;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    PERFORM oauth._event('trusted_issuer_removed', NULL, NULL, NULL, NULL,
                         jsonb_build_object('issuer', remove_trusted_issuer.issuer), now);
    RETURN true;
END
$$;

CREATE FUNCTION oauth.list_trusted_issuers() RETURNS TABLE (
    issuer text, profile text, jwks jsonb, jwks_uri text, algorithms text[], client_ids text[],
    allowed_resources text[], allowed_scopes text[], user_claim text, subjects text[], expires_at timestamptz,
    created_at timestamptz, updated_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT t.issuer, t.profile, t.jwks, t.jwks_uri, t.algorithms, t.client_ids, t.allowed_resources,
           t.allowed_scopes, t.user_claim, t.subjects, t.expires_at, t.created_at, t.updated_at
      FROM oauth.trusted_issuers t ORDER BY t.issuer
$$;

-- The key set an issuer's JWTs are verified with: inline, or the fresh copy of its jwks_uri (a
-- copy whose refetch failed serves until the failure's retry time, at most a day after it was
-- fetched, as for clients). NULL: none.
CREATE FUNCTION oauth._trusted_issuer_keys(issuer oauth.trusted_issuers, now timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    fetched oauth.trusted_issuer_jwks;
BEGIN
    IF issuer.jwks IS NOT NULL THEN
        RETURN issuer.jwks;
    END IF;
    SELECT * INTO fetched FROM oauth.trusted_issuer_jwks k
     WHERE k.issuer = issuer.issuer AND k.jwks_uri = issuer.jwks_uri;
    IF NOT FOUND OR fetched.jwks IS NULL OR fetched.fresh_until <= now OR fetched.fetched_at <= now - interval '1 day' THEN
        RETURN NULL;
    END IF;
    RETURN fetched.jwks;
END
$$;

-- What a gateway should fetch before presenting `assertion` as a grant: {"issuer", "jwks_uri"}
-- when the assertion's (unverified) issuer is trusted with keys at a jwks_uri and there is no
-- fresh copy, or the copy lacks the key the assertion names and was not fetched within the last
-- minute; else NULL.
CREATE FUNCTION oauth.trusted_issuer_jwks_to_fetch(assertion text, now timestamptz DEFAULT now())
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trusted oauth.trusted_issuers;
    fetched oauth.trusted_issuer_jwks;
    wanted jsonb;
BEGIN
    SELECT * INTO trusted FROM oauth.trusted_issuers t
     WHERE t.issuer = oauth.assertion_issuer(assertion) AND t.jwks_uri IS NOT NULL
       AND (t.expires_at IS NULL OR t.expires_at > now);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    wanted := jsonb_build_object('issuer', trusted.issuer, 'jwks_uri', trusted.jwks_uri);
    SELECT * INTO fetched FROM oauth.trusted_issuer_jwks k
     WHERE k.issuer = trusted.issuer AND k.jwks_uri = trusted.jwks_uri;
    IF NOT FOUND OR fetched.fresh_until <= now THEN
        RETURN wanted;
    END IF;
    IF oauth._trusted_issuer_keys(trusted, now) IS NOT NULL AND fetched.attempted_at <= now - interval '1 minute'
       AND (oauth.verify_authorization_grant(assertion, fetched.jwks, trusted.profile, trusted.issuer, '',
                                             trusted.algorithms, now) ->> 'unknown_key')::boolean THEN
        RETURN wanted;
    END IF;
    RETURN NULL;
END
$$;

-- A fetch of an issuer's jwks_uri that gave no usable key set: not asked for again before retry_at.
CREATE FUNCTION oauth.record_trusted_issuer_jwks_failure(
    issuer text, jwks_uri text, failure text, retry_at timestamptz, now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM oauth.trusted_issuers t
     WHERE t.issuer = record_trusted_issuer_jwks_failure.issuer AND t.jwks_uri = record_trusted_issuer_jwks_failure.jwks_uri;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO oauth.trusted_issuer_jwks AS k (issuer, jwks_uri, jwks, fetched_at, attempted_at, fresh_until, failure)
    VALUES (record_trusted_issuer_jwks_failure.issuer, record_trusted_issuer_jwks_failure.jwks_uri, NULL, NULL, now,
            greatest(record_trusted_issuer_jwks_failure.retry_at, now),
            left(coalesce(record_trusted_issuer_jwks_failure.failure, 'unknown failure'), 300))
    ON CONFLICT (issuer) DO UPDATE
       SET attempted_at = EXCLUDED.attempted_at, fresh_until = EXCLUDED.fresh_until, failure = EXCLUDED.failure,
           jwks = CASE WHEN k.jwks_uri = EXCLUDED.jwks_uri THEN k.jwks END,
           fetched_at = CASE WHEN k.jwks_uri = EXCLUDED.jwks_uri THEN k.fetched_at END,
           jwks_uri = EXCLUDED.jwks_uri;
END
$$;

-- Stores the key set a gateway fetched from an issuer's jwks_uri, fresh until `fresh_until` (at
-- most a day). {} or why it is unusable (invalid_grant), then recorded as a failure until retry_at.
CREATE FUNCTION oauth.store_trusted_issuer_jwks(
    issuer text, jwks_uri text, jwks jsonb, fresh_until timestamptz, retry_at timestamptz,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    problem text;
BEGIN
    PERFORM 1 FROM oauth.trusted_issuers t
     WHERE t.issuer = store_trusted_issuer_jwks.issuer AND t.jwks_uri = store_trusted_issuer_jwks.jwks_uri;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_request', 'no trusted issuer has this jwks_uri');
    END IF;
    IF store_trusted_issuer_jwks.jwks IS NULL OR jsonb_typeof(store_trusted_issuer_jwks.jwks) <> 'object' THEN
        problem := 'the key set is not a JSON object';
    ELSE
        problem := oauth.jwks_problem(store_trusted_issuer_jwks.jwks);
    END IF;
    IF problem IS NOT NULL THEN
        PERFORM oauth.record_trusted_issuer_jwks_failure(store_trusted_issuer_jwks.issuer,
                                                         store_trusted_issuer_jwks.jwks_uri, problem, retry_at, now);
        RETURN oauth._error('invalid_grant', 'the issuer''s jwks_uri is unusable: ' || problem);
    END IF;
    INSERT INTO oauth.trusted_issuer_jwks AS k (issuer, jwks_uri, jwks, fetched_at, attempted_at, fresh_until, failure)
    VALUES (store_trusted_issuer_jwks.issuer, store_trusted_issuer_jwks.jwks_uri, store_trusted_issuer_jwks.jwks,
            now, now, least(greatest(store_trusted_issuer_jwks.fresh_until, now), now + interval '1 day'), NULL)
    ON CONFLICT (issuer) DO UPDATE
       SET jwks_uri = EXCLUDED.jwks_uri, jwks = EXCLUDED.jwks, fetched_at = EXCLUDED.fetched_at,
           attempted_at = EXCLUDED.attempted_at, fresh_until = EXCLUDED.fresh_until, failure = NULL;
    PERFORM oauth._event('trusted_issuer_jwks_stored', NULL, NULL, NULL, NULL,
                         jsonb_build_object('issuer', store_trusted_issuer_jwks.issuer,
                                            'jwks_uri', store_trusted_issuer_jwks.jwks_uri), now);
    RETURN '{}'::jsonb;
END
$$;

-- Whether `subject` matches one of `patterns`: equal, or starting with a pattern's part before a
-- final '*'.
CREATE FUNCTION oauth._subject_allowed(subject text, patterns text[]) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(patterns) p
                    WHERE p = subject OR (right(p, 1) = '*' AND starts_with(subject, left(p, -1))))
$$;

-- grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer with `assertion`. `scope` and `resource`
-- are the request's (either may be NULL).
CREATE FUNCTION oauth.jwt_bearer_grant(
    client_id text,
    client_secret text,
    assertion text,
    scope text,
    resource text,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    authenticated record;
    client oauth.clients;
    trusted oauth.trusted_issuers;
    verified jsonb;
    claims jsonb;
    subject text;
    who text;
    asserted_resource text;
    target record;
    requested text[];
    asserted text[];
    issued text[];
    granted oauth.grants;
    kind text;
BEGIN
    authenticated := oauth._client_authentication(client_id, client_secret, now);
    IF authenticated.problem IS NOT NULL THEN
        RETURN authenticated.problem;
    END IF;
    client := authenticated.client;
    IF assertion IS NULL OR assertion = '' THEN
        RETURN oauth._error('invalid_request', 'assertion is required');
    END IF;
    SELECT * INTO trusted FROM oauth.trusted_issuers t
     WHERE t.issuer = oauth.assertion_issuer(assertion) AND (t.expires_at IS NULL OR t.expires_at > now);
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_grant', 'the assertion''s issuer is not trusted');
    END IF;
    IF NOT client.client_id = ANY (trusted.client_ids) THEN
        RETURN oauth._error('unauthorized_client', 'this client may not present this issuer''s assertions');
    END IF;
    IF trusted.profile = 'id-jag' AND client.token_endpoint_auth_method = 'none' THEN
        RETURN oauth._error('unauthorized_client', 'an ID-JAG is presented by a confidential client');
    END IF;

    verified := oauth.verify_authorization_grant(assertion, oauth._trusted_issuer_keys(trusted, now), trusted.profile,
                                                 trusted.issuer, (oauth._settings()).issuer, trusted.algorithms, now);
    IF verified ? 'problem' THEN
        RETURN oauth._error('invalid_grant', verified->>'problem');
    END IF;
    claims := verified->'claims';
    -- The client the IdP issued the grant to (draft §4.4): the authenticated one.
    IF claims ? 'client_id' AND claims->>'client_id' IS DISTINCT FROM client.client_id THEN
        RETURN oauth._error('invalid_grant', 'the assertion was issued to another client');
    END IF;
    subject := claims->>'sub';
    IF trusted.subjects IS NOT NULL AND NOT oauth._subject_allowed(subject, trusted.subjects) THEN
        RETURN oauth._error('invalid_grant', 'the assertion''s subject is not one this issuer is trusted for');
    END IF;
    IF trusted.profile = 'workload' THEN
        who := subject;
        kind := 'client';
    ELSIF trusted.user_claim = 'email' THEN
        IF jsonb_typeof(claims->'email') IS DISTINCT FROM 'string' OR length(claims->>'email') NOT BETWEEN 1 AND 255
           OR claims->'email_verified' IS DISTINCT FROM 'true'::jsonb THEN
            RETURN oauth._error('invalid_grant', 'the assertion has no verified email, which names the user here');
        END IF;
        who := claims->>'email';
        kind := 'user';
    ELSE
        who := subject;
        kind := 'user';
    END IF;

    -- The resource: the assertion's (the request may repeat it), bound into the token.
    asserted_resource := coalesce(claims->>'resource', claims->'resource'->>0);
    IF asserted_resource IS NOT NULL AND resource IS NOT NULL
       AND oauth.resource_key(resource) IS DISTINCT FROM oauth.resource_key(asserted_resource) THEN
        RETURN oauth._error('invalid_target', 'resource is not the one the assertion names');
    END IF;
    target := oauth._resolve_target(coalesce(asserted_resource, resource), trusted.allowed_resources);
    IF target.problem IS NOT NULL THEN
        RETURN target.problem;
    END IF;
    IF target.target IS NULL THEN
        RETURN oauth._error('invalid_target', 'resource is required');
    END IF;

    -- Scopes: requested ∩ asserted ∩ allowed (a request naming none asks for what is asserted);
    -- never openid or offline_access: no ID token and no refresh token here.
    requested := oauth.parse_scope(scope);
    IF requested IS NULL THEN
        RETURN oauth._error('invalid_scope', 'scope is malformed');
    END IF;
    IF claims ? 'scope' THEN
        asserted := oauth.parse_scope(claims->>'scope');
        IF asserted IS NULL THEN
            RETURN oauth._error('invalid_grant', 'the assertion''s scope is malformed');
        END IF;
    ELSE
        asserted := trusted.allowed_scopes;
    END IF;
    SELECT coalesce(array_agg(s ORDER BY s), '{}') INTO issued
      FROM unnest(CASE WHEN cardinality(requested) = 0 THEN asserted ELSE requested END) s
     WHERE s = ANY (asserted) AND s = ANY (trusted.allowed_scopes) AND NOT s = ANY (oauth._user_only_scopes());
    IF cardinality(issued) = 0 THEN
        RETURN oauth._error('invalid_scope', 'no requested scope is both asserted and allowed');
    END IF;

    -- Single use (RFC 7523 §3 item 7): the one INSERT that decides between two requests presenting it.
    IF claims ? 'jti' THEN
        INSERT INTO oauth.assertion_grant_jtis AS used (issuer, jti, expires_at)
        VALUES (trusted.issuer, claims->>'jti', to_timestamp((verified->>'replay_until')::bigint))
        ON CONFLICT (issuer, jti) DO UPDATE SET expires_at = EXCLUDED.expires_at
         WHERE used.expires_at <= now;
        IF NOT FOUND THEN
            RETURN oauth._error('invalid_grant', 'this assertion was already used (its jti)');
        END IF;
        -- Remembered only while it could be accepted: each use sweeps a few expired ones.
        DELETE FROM oauth.assertion_grant_jtis j WHERE (j.issuer, j.jti) IN (
            SELECT x.issuer, x.jti FROM oauth.assertion_grant_jtis x WHERE x.expires_at <= now LIMIT 100);
    END IF;

    SELECT * INTO granted FROM oauth.grants g
     WHERE g.subject_type = kind AND g.user_id = who AND g.client_id = client.client_id AND g.revoked_at IS NULL;
    IF NOT FOUND THEN
        INSERT INTO oauth.grants (subject_type, user_id, client_id, scopes, auth_time, metadata, created_at, updated_at)
        VALUES (kind, who, client.client_id, issued, now,
                jsonb_build_object('issuer', trusted.issuer, 'profile', trusted.profile), now, now)
        ON CONFLICT (subject_type, user_id, client_id) WHERE revoked_at IS NULL DO NOTHING
        RETURNING * INTO granted;
        IF NOT FOUND THEN
            SELECT * INTO granted FROM oauth.grants g
             WHERE g.subject_type = kind AND g.user_id = who AND g.client_id = client.client_id
               AND g.revoked_at IS NULL;
        ELSE
            -- Recorded (and announced) once per grant; each token is a tokens_issued event when the
            -- deployment records those (record_token_events), as for the other grants.
            PERFORM oauth._event('assertion_grant_created', client.client_id, who, granted.grant_id, NULL,
                                 jsonb_build_object('issuer', trusted.issuer, 'profile', trusted.profile), now);
        END IF;
    END IF;
    PERFORM oauth._tokens_issued(client.client_id, who, granted.grant_id, NULL,
                                 'urn:ietf:params:oauth:grant-type:jwt-bearer', false, now);
    RETURN oauth._access_token_response(granted, NULL, client.client_id, issued, target.target, now);
END
$$;

REVOKE EXECUTE ON FUNCTION oauth.assertion_issuer(text),
    oauth.verify_authorization_grant(text, jsonb, text, text, text, text[], timestamptz),
    oauth._with_assertion_grants(jsonb),
    oauth._trusted_issuer_problem(oauth.trusted_issuers),
    oauth.add_trusted_issuer(text, text, text[], text[], jsonb, text, text[], text[], text, text[], timestamptz,
                             timestamptz),
    oauth.update_trusted_issuer(text, text[], text[], jsonb, text, text[], text[], text, text[], timestamptz,
                                timestamptz),
    oauth.remove_trusted_issuer(text, timestamptz),
    oauth.list_trusted_issuers(),
    oauth._trusted_issuer_keys(oauth.trusted_issuers, timestamptz),
    oauth.trusted_issuer_jwks_to_fetch(text, timestamptz),
    oauth.record_trusted_issuer_jwks_failure(text, text, text, timestamptz, timestamptz),
    oauth.store_trusted_issuer_jwks(text, text, jsonb, timestamptz, timestamptz, timestamptz),
    oauth._subject_allowed(text, text[]),
    oauth.jwt_bearer_grant(text, text, text, text, text, timestamptz)
    FROM PUBLIC;
REVOKE ALL ON oauth.trusted_issuers, oauth.trusted_issuer_jwks, oauth.assertion_grant_jtis FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.jwt_bearer_grant(text, text, text, text, text, timestamptz),
    oauth.trusted_issuer_jwks_to_fetch(text, timestamptz),
    oauth.store_trusted_issuer_jwks(text, text, jsonb, timestamptz, timestamptz, timestamptz),
    oauth.record_trusted_issuer_jwks_failure(text, text, text, timestamptz, timestamptz)
    TO oauth_gateway;
GRANT EXECUTE ON FUNCTION
    oauth.add_trusted_issuer(text, text, text[], text[], jsonb, text, text[], text[], text, text[], timestamptz,
                             timestamptz),
    oauth.update_trusted_issuer(text, text[], text[], jsonb, text, text[], text[], text, text[], timestamptz,
                                timestamptz),
    oauth.remove_trusted_issuer(text, timestamptz),
    oauth.list_trusted_issuers()
    TO oauth_admin;
GRANT SELECT ON oauth.trusted_issuers, oauth.trusted_issuer_jwks TO oauth_admin;
-- end JWT authorization grants
