-- The token endpoint's decisions: redeem a code (RFC 6749 §4.1.3, RFC 7636 §4.6) and rotate a
-- refresh token (RFC 6749 §6, OAuth 2.1 §4.3.1). Each returns what the gateway needs to mint tokens.

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

-- The family a refresh token belongs to, unverified: the one it names, or for a token issued before
-- 0.3.0 the one oauth.refresh_tokens lists. Callers prove the token with oauth._refresh_token_age.
-- PL/pgSQL, not SQL: a SQL function with a sub-select is never inlined, so each call parsed and
-- planned its body again (a sixth of the database's time per refresh, by profile); PL/pgSQL keeps
-- the plan for the session.
CREATE FUNCTION oauth._refresh_token_family(refresh_token text) RETURNS uuid
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

-- How many rotations ago `refresh_token` was the family's live token: 0 for the live token, 1 for
-- the one it replaced, and so on; NULL when this family never issued it (a forgery naming the
-- family, or a token older than the chain is followed). Proof, not a hint: the chain from the
-- presented token must reach current_hash.
CREATE FUNCTION oauth._refresh_token_age(family oauth.refresh_families, refresh_token text) RETURNS integer
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    generation integer := oauth.refresh_token_generation(refresh_token);
    steps integer;
BEGIN
    IF family.current_hash IS NULL OR refresh_token IS NULL THEN
        RETURN NULL;
    END IF;
    IF oauth.secure_equal(oauth.token_hash(refresh_token), family.current_hash) THEN
        RETURN 0;
    END IF;
    IF generation IS NULL THEN
        -- Issued before 0.3.0: its row is the proof and says which generation it was.
        SELECT family.generation - t.generation INTO steps FROM oauth.refresh_tokens t
         WHERE t.token_hash = oauth.token_hash(refresh_token) AND t.family_id = family.family_id;
        RETURN CASE WHEN steps >= 1 THEN steps END;
    ELSIF oauth.refresh_token_family(refresh_token) IS DISTINCT FROM family.family_id THEN
        RETURN NULL;
    END IF;
    steps := family.generation - generation;
    IF steps < 1 OR NOT oauth.refresh_chain_reaches(family.chain_key, family.family_id, generation, refresh_token,
                                                      steps, family.current_hash) THEN
        RETURN NULL;
    END IF;
    RETURN steps;
END
$$;

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
