-- Grants as the user sees them, revocation (RFC 7009), introspection (RFC 7662), userinfo, cleanup.

-- Access tokens revoked one by one. A token a client received by token exchange (RFC 8693) stands
-- on the user's grant and family, which belong to the client that exchanged it away: revoking them
-- would sign the user out of that client, so the token's jti is listed instead, until the token
-- expires (exp is at most an access-token lifetime away, which keeps the list short).
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

-- Is an access token still backed by live state: its grant and family, and not revoked by itself?
CREATE FUNCTION oauth._access_token_live(grant_id uuid, family_id uuid, jti uuid, now timestamptz) RETURNS boolean
LANGUAGE plpgsql STABLE
AS $$
BEGIN
    RETURN oauth._token_live(grant_id, family_id, now)
       AND NOT EXISTS (SELECT 1 FROM oauth.revoked_access_tokens t WHERE t.jti = _access_token_live.jti);
END
$$;

-- Lists one access token as revoked and tells the gateways; true when it was not listed yet.
CREATE FUNCTION oauth._revoke_access_token(
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

-- The user's "connected apps": live grants, a metadata document's client named with its host
-- (oauth._client_display_name), since every user of, say, ChatGPT shares its one client_id.
CREATE FUNCTION oauth.list_user_grants(user_id text) RETURNS TABLE (
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

-- Revokes a grant, its refresh families and (through introspection and the revocation feed) its
-- access tokens. False when there was no live grant.
CREATE FUNCTION oauth.revoke_grant(grant_id uuid, reason text DEFAULT 'revoked', now timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT oauth._revoke_grant(grant_id, coalesce(reason, 'revoked'), now) $$;

-- RFC 7009. The token is either an opaque refresh token or the claims of an access token whose
-- signature the gateway verified: grant_id, family_id, jti, client_id (token_client_id) and exp
-- (token_expires_at). A client can revoke only the tokens issued to it (§2.1); anything else
-- (unknown, another client's, already revoked) succeeds without effect, as an invalid token does
-- (§2.2). An access token takes its family with it, or the client's own grant when it has no
-- family; one the client received by token exchange stands on another client's family and grant,
-- which stay live: that token alone is revoked.
CREATE FUNCTION oauth.revoke_token(
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
CREATE FUNCTION oauth.introspect(
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

-- Claims source for the userinfo endpoint: live only while the access token's grant and family are,
-- and the token (its jti) was not revoked by itself.
CREATE FUNCTION oauth.userinfo(grant_id uuid, family_id uuid, jti uuid DEFAULT NULL, now timestamptz DEFAULT now())
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

-- Removes what can no longer matter, in batches that skip rows other transactions hold, so it can
-- run while traffic flows. Returns the number of rows removed; call until it returns 0.
CREATE FUNCTION oauth.cleanup(now timestamptz DEFAULT now(), batch_size integer DEFAULT 1000) RETURNS bigint
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

-- What gateways need to rebuild their revoked set after (re)connecting to the revocation feed:
-- every grant, family and single access token (jti) revoked since `since` (older revocations
-- concern only expired tokens).
CREATE FUNCTION oauth.revocations(since timestamptz, now timestamptz DEFAULT now()) RETURNS jsonb
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
