-- Grants as the user sees them, revocation (RFC 7009), introspection (RFC 7662), userinfo, cleanup.

CREATE FUNCTION oauth.list_user_grants(user_id text) RETURNS TABLE (
    grant_id uuid, client_id text, client_name text, scopes text[], resource text, props jsonb,
    metadata jsonb, auth_time timestamptz, created_at timestamptz, updated_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.grant_id, g.client_id, c.client_name, g.scopes, g.resource, g.props, g.metadata,
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

-- RFC 7009. The token is either an opaque refresh token or the grant_id/family_id claims of an
-- access token whose signature the gateway verified. A client can revoke only its own tokens;
-- anything else (unknown, foreign, already revoked) succeeds without effect, as §2.2 requires.
CREATE FUNCTION oauth.revoke_token(
    client_id text,
    client_secret text,
    refresh_token text,
    grant_id uuid,
    family_id uuid,
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
    ELSIF revoke_token.family_id IS NOT NULL THEN
        SELECT f.family_id INTO target FROM oauth.refresh_families f
         WHERE f.family_id = revoke_token.family_id AND f.grant_id = revoke_token.grant_id
           AND f.client_id = client.client_id;
    ELSIF revoke_token.grant_id IS NOT NULL THEN
        -- An access token without a family was issued on the client's own grant (client_credentials).
        -- Revocation takes that grant with it (RFC 7009 §2.1 allows it): every token issued on it
        -- dies, and the client's next request opens a new grant.
        SELECT g.grant_id INTO target FROM oauth.grants g
         WHERE g.grant_id = revoke_token.grant_id AND g.subject_type = 'client'
           AND g.client_id = client.client_id AND g.revoked_at IS NULL;
        IF target IS NOT NULL THEN
            PERFORM oauth._revoke_grant(target, 'revoked_by_client', now);
        END IF;
        RETURN '{}'::jsonb;
    END IF;
    IF target IS NOT NULL THEN
        PERFORM oauth._revoke_family(target, 'revoked_by_client', now);
    END IF;
    RETURN '{}'::jsonb;
END
$$;

-- RFC 7662 data. The caller authenticates as a client. For an access token the gateway verified
-- signature and expiry and passes its grant_id/family_id; for a refresh token, the token itself.
CREATE FUNCTION oauth.introspect(
    client_id text,
    client_secret text,
    refresh_token text,
    grant_id uuid,
    family_id uuid,
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
    ELSIF oauth._token_live(introspect.grant_id, introspect.family_id, now) THEN
        SELECT jsonb_build_object('active', true, 'token_type', 'access_token', 'grant_id', g.grant_id,
                                  'family_id', introspect.family_id, 'user_id', g.user_id,
                                  'client_id', g.client_id, 'props', g.props)
          INTO answer
          FROM oauth.grants g WHERE g.grant_id = introspect.grant_id;
    END IF;
    RETURN coalesce(answer, '{"active": false}'::jsonb);
END
$$;

-- Claims source for the userinfo endpoint: live only while the access token's grant and family are.
CREATE FUNCTION oauth.userinfo(grant_id uuid, family_id uuid, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    answer jsonb;
BEGIN
    IF oauth._token_live(userinfo.grant_id, userinfo.family_id, now) THEN
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
-- every grant and family revoked since `since` (older revocations concern only expired tokens).
CREATE FUNCTION oauth.revocations(since timestamptz, now timestamptz DEFAULT now()) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN jsonb_build_object(
        'grants', coalesce((SELECT jsonb_agg(g.grant_id) FROM oauth.grants g
                             WHERE g.revoked_at > since AND g.revoked_at <= now), '[]'),
        'families', coalesce((SELECT jsonb_agg(f.family_id) FROM oauth.refresh_families f
                               WHERE f.revoked_at > since AND f.revoked_at <= now), '[]'));
END
$$;
