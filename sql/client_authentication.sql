-- private_key_jwt client authentication (RFC 7523 §2.2, RFC 7521 §4.2): the client signs a short
-- JWT about itself with a key it publishes, inline in its metadata (`jwks`) or at a URL
-- (`jwks_uri`), and presents it where others present a secret. The gateway passes the assertion
-- as client_secret; oauth.verify_client_assertion (Rust) checks it; single use of its jti is
-- decided here. Keys at a jwks_uri are fetched by the gateway (its guarded fetcher, as for
-- metadata documents) when oauth.client_jwks_to_fetch says so, and kept here for every gateway.

-- Assertions already used (RFC 7523 §3 item 7), until they could no longer be accepted anyway.
CREATE TABLE oauth.client_assertion_jtis (
    client_id text NOT NULL,
    jti text NOT NULL,
    -- The assertion's exp plus the tolerated clock skew.
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX ON oauth.client_assertion_jtis (expires_at);
SELECT pg_catalog.pg_extension_config_dump('oauth.client_assertion_jtis', '');

-- The key sets of clients that publish them at a jwks_uri, as a gateway last fetched them.
CREATE TABLE oauth.client_jwks (
    client_id text PRIMARY KEY REFERENCES oauth.clients ON DELETE CASCADE,
    -- Where this copy came from: for a client whose jwks_uri changed, it is no copy.
    jwks_uri text NOT NULL,
    -- The last good copy (NULL until one was fetched) and when it was fetched.
    jwks jsonb,
    fetched_at timestamptz,
    -- The last fetch, good or failed: a key the copy lacks is looked for at most once a minute.
    attempted_at timestamptz NOT NULL,
    -- Until then no fetch is asked for: the copy is fresh, or a failure is negatively cached.
    fresh_until timestamptz NOT NULL,
    -- Why the last fetch failed; NULL when it succeeded.
    failure text
);
SELECT pg_catalog.pg_extension_config_dump('oauth.client_jwks', '');

-- Why a client's key metadata is unacceptable (invalid_client_metadata), or NULL. private_key_jwt
-- needs exactly one of jwks and jwks_uri (RFC 7591 §2 forbids both) and may name the one algorithm
-- its assertions use; the other methods have no use for keys. One rule for administrators'
-- clients, registrations and metadata documents.
CREATE FUNCTION oauth._client_keys_problem(method text, metadata jsonb) RETURNS jsonb
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
    problem text;
BEGIN
    IF method IS DISTINCT FROM 'private_key_jwt' THEN
        IF metadata ? 'jwks' OR metadata ? 'jwks_uri' OR metadata ? 'token_endpoint_auth_signing_alg' THEN
            RETURN oauth._error('invalid_client_metadata',
                'jwks, jwks_uri and token_endpoint_auth_signing_alg go with token_endpoint_auth_method private_key_jwt');
        END IF;
        RETURN NULL;
    END IF;
    IF (metadata ? 'jwks') = (metadata ? 'jwks_uri') THEN
        RETURN oauth._error('invalid_client_metadata', 'private_key_jwt needs exactly one of jwks and jwks_uri');
    END IF;
    IF metadata ? 'jwks' THEN
        problem := oauth.jwks_problem(metadata->'jwks');
    ELSIF pg_catalog.jsonb_typeof(metadata->'jwks_uri') <> 'string' THEN
        problem := 'jwks_uri must be a string';
    ELSE
        problem := oauth.jwks_uri_problem(metadata->>'jwks_uri');
    END IF;
    IF problem IS NULL AND metadata ? 'token_endpoint_auth_signing_alg'
       AND (pg_catalog.jsonb_typeof(metadata->'token_endpoint_auth_signing_alg') <> 'string'
            OR NOT (metadata->>'token_endpoint_auth_signing_alg') = ANY (oauth.client_assertion_signing_algs())) THEN
        problem := 'token_endpoint_auth_signing_alg must be one of '
            || pg_catalog.array_to_string(oauth.client_assertion_signing_algs(), ', ');
    END IF;
    IF problem IS NOT NULL THEN
        RETURN oauth._error('invalid_client_metadata', problem);
    END IF;
    RETURN NULL;
END
$$;

-- The key set a private_key_jwt client's assertions are verified with: its inline jwks, or the
-- copy of its jwks_uri while that is fresh. When a refetch failed, the last good copy keeps
-- serving until the failure's retry time, for at most a day after it was fetched (as metadata
-- documents do): an unreachable host says nothing new about the keys. NULL: no usable keys.
CREATE FUNCTION oauth._client_keys(client oauth.clients, now timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    fetched oauth.client_jwks;
BEGIN
    IF client.metadata ? 'jwks' THEN
        RETURN client.metadata->'jwks';
    END IF;
    SELECT * INTO fetched FROM oauth.client_jwks k
     WHERE k.client_id = client.client_id AND k.jwks_uri = client.metadata->>'jwks_uri';
    IF NOT FOUND OR fetched.jwks IS NULL OR fetched.fresh_until <= now OR fetched.fetched_at <= now - interval '1 day' THEN
        RETURN NULL;
    END IF;
    RETURN fetched.jwks;
END
$$;

-- Client authentication (RFC 6749 §2.3): the client row when client_id and client_secret
-- authenticate it, else the invalid_client error saying why. A public client (method none)
-- presents nothing; a secret client its secret; a private_key_jwt client an assertion (RFC 7523
-- §3), which is good once: its jti is recorded by the one INSERT that decides between two requests
-- presenting it together.
CREATE FUNCTION oauth._client_authentication(
    client_id text, client_secret text, now timestamptz, OUT client oauth.clients, OUT problem jsonb
)
LANGUAGE plpgsql
AS $$
DECLARE
    found_client oauth.clients;
    issuer text;
    verified jsonb;
BEGIN
    problem := oauth._error('invalid_client', 'client authentication failed');
    IF client_id IS NULL OR client_id = '' THEN
        RETURN;
    END IF;
    SELECT * INTO found_client FROM oauth.clients c WHERE c.client_id = _client_authentication.client_id;
    IF NOT FOUND OR (found_client.expires_at IS NOT NULL AND found_client.expires_at <= now) THEN
        RETURN;
    END IF;
    IF found_client.token_endpoint_auth_method = 'none' THEN
        IF client_secret IS NOT NULL AND client_secret <> '' THEN
            RETURN;
        END IF;
    ELSIF found_client.token_endpoint_auth_method = 'private_key_jwt' THEN
        -- The audiences naming this server: its issuer and its token endpoint (the gateway's
        -- route, issuer + /token), the two RFC 7523 §3 clients use.
        issuer := (oauth._settings()).issuer;
        verified := oauth.verify_client_assertion(
            client_secret, oauth._client_keys(found_client, now), found_client.client_id, issuer,
            pg_catalog.rtrim(issuer, '/') || '/token', found_client.metadata->>'token_endpoint_auth_signing_alg', now);
        IF verified ? 'problem' THEN
            problem := oauth._error('invalid_client', 'client authentication failed: ' || (verified->>'problem'));
            RETURN;
        END IF;
        INSERT INTO oauth.client_assertion_jtis (client_id, jti, expires_at)
        VALUES (found_client.client_id, verified->>'jti', pg_catalog.to_timestamp((verified->>'replay_until')::bigint))
        ON CONFLICT DO NOTHING;
        IF NOT FOUND THEN
            problem := oauth._error('invalid_client',
                'client authentication failed: this client assertion was already used (its jti)');
            RETURN;
        END IF;
    ELSIF client_secret IS NULL
          OR NOT oauth.secure_equal(oauth.token_hash(client_secret), found_client.secret_hash) THEN
        RETURN;
    END IF;
    client := found_client;
    problem := NULL;
END
$$;

-- The jwks_uri a gateway should fetch before authenticating `client_id` again with
-- `client_assertion`, or NULL: when the client's keys live at a jwks_uri and there is no fresh
-- copy, or the copy lacks the key the assertion names (the client rotated its keys) and was not
-- fetched within the last minute (else anyone could have us fetch on every request).
CREATE FUNCTION oauth.client_jwks_to_fetch(client_id text, client_assertion text, now timestamptz DEFAULT now())
RETURNS text
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    client oauth.clients;
    fetched oauth.client_jwks;
BEGIN
    SELECT * INTO client FROM oauth.clients c
     WHERE c.client_id = client_jwks_to_fetch.client_id AND c.token_endpoint_auth_method = 'private_key_jwt'
       AND c.metadata ? 'jwks_uri' AND (c.expires_at IS NULL OR c.expires_at > now);
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT * INTO fetched FROM oauth.client_jwks k
     WHERE k.client_id = client.client_id AND k.jwks_uri = client.metadata->>'jwks_uri';
    IF NOT FOUND OR fetched.fresh_until <= now THEN
        RETURN client.metadata->>'jwks_uri';
    END IF;
    -- Only whether the copy has the assertion's key matters here, not the other checks.
    IF oauth._client_keys(client, now) IS NOT NULL AND fetched.attempted_at <= now - interval '1 minute'
       AND (oauth.verify_client_assertion(client_assertion, fetched.jwks, client.client_id, '', '', NULL, now)
            ->> 'unknown_key')::boolean THEN
        RETURN client.metadata->>'jwks_uri';
    END IF;
    RETURN NULL;
END
$$;

-- A fetch of a client's jwks_uri that gave no usable key set: the last good copy, if any, serves
-- until retry_at (see oauth._client_keys), and no fetch is asked for before.
CREATE FUNCTION oauth.record_client_jwks_failure(
    client_id text, jwks_uri text, failure text, retry_at timestamptz, now timestamptz DEFAULT now()
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    PERFORM 1 FROM oauth.clients c
     WHERE c.client_id = record_client_jwks_failure.client_id AND c.token_endpoint_auth_method = 'private_key_jwt'
       AND c.metadata->>'jwks_uri' = record_client_jwks_failure.jwks_uri;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    INSERT INTO oauth.client_jwks AS k (client_id, jwks_uri, jwks, fetched_at, attempted_at, fresh_until, failure)
    VALUES (record_client_jwks_failure.client_id, record_client_jwks_failure.jwks_uri, NULL, NULL, now,
            greatest(record_client_jwks_failure.retry_at, now),
            left(coalesce(record_client_jwks_failure.failure, 'unknown failure'), 300))
    ON CONFLICT (client_id) DO UPDATE
       SET attempted_at = EXCLUDED.attempted_at, fresh_until = EXCLUDED.fresh_until, failure = EXCLUDED.failure,
           -- A copy of another URL is no copy of this one.
           jwks = CASE WHEN k.jwks_uri = EXCLUDED.jwks_uri THEN k.jwks END,
           fetched_at = CASE WHEN k.jwks_uri = EXCLUDED.jwks_uri THEN k.fetched_at END,
           jwks_uri = EXCLUDED.jwks_uri;
END
$$;

-- Stores the key set a gateway fetched from a client's jwks_uri, fresh until `fresh_until` (at
-- most a day). Returns {} or why the set is unusable (invalid_client), which is then recorded as
-- a failure until `retry_at`.
CREATE FUNCTION oauth.store_client_jwks(
    client_id text, jwks_uri text, jwks jsonb, fresh_until timestamptz, retry_at timestamptz,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    problem text;
BEGIN
    PERFORM 1 FROM oauth.clients c
     WHERE c.client_id = store_client_jwks.client_id AND c.token_endpoint_auth_method = 'private_key_jwt'
       AND c.metadata->>'jwks_uri' = store_client_jwks.jwks_uri;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_request', 'no private_key_jwt client has this jwks_uri');
    END IF;
    IF store_client_jwks.jwks IS NULL OR jsonb_typeof(store_client_jwks.jwks) <> 'object' THEN
        problem := 'the key set is not a JSON object';
    ELSE
        problem := oauth.jwks_problem(store_client_jwks.jwks);
    END IF;
    IF problem IS NOT NULL THEN
        PERFORM oauth.record_client_jwks_failure(store_client_jwks.client_id, store_client_jwks.jwks_uri, problem,
                                                 retry_at, now);
        RETURN oauth._error('invalid_client', 'the client''s jwks_uri is unusable: ' || problem);
    END IF;
    INSERT INTO oauth.client_jwks AS k (client_id, jwks_uri, jwks, fetched_at, attempted_at, fresh_until, failure)
    VALUES (store_client_jwks.client_id, store_client_jwks.jwks_uri, store_client_jwks.jwks, now, now,
            least(greatest(store_client_jwks.fresh_until, now), now + interval '1 day'), NULL)
    ON CONFLICT (client_id) DO UPDATE
       SET jwks_uri = EXCLUDED.jwks_uri, jwks = EXCLUDED.jwks, fetched_at = EXCLUDED.fetched_at,
           attempted_at = EXCLUDED.attempted_at, fresh_until = EXCLUDED.fresh_until, failure = NULL;
    PERFORM oauth._event('client_jwks_stored', store_client_jwks.client_id, NULL, NULL, NULL,
                         jsonb_build_object('jwks_uri', store_client_jwks.jwks_uri), now);
    RETURN '{}'::jsonb;
END
$$;
