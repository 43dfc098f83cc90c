-- Signing keys shared by every gateway, and their rotation (issue 14).
--
-- A key's life: added (published in the JWKS, not signing) → promoted (signs from `signs_from`,
-- never before `signs_not_before`, so relying parties that cache the JWKS see it before any token
-- it signed) → retired when a later key of its algorithm starts signing → published on until every
-- token it could have signed has expired → dropped. The private key is sealed (AES-256-GCM) by
-- the gateways with a key-encryption key only they hold: the database, its dumps and its replicas
-- hold no usable private key, and `sealed_with` names which key-encryption key sealed it.

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
