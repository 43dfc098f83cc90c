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
