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
