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
