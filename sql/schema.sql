-- Schema of oauth_provider. Tokens, codes and client secrets are stored only as SHA-256 digests
-- (`*_hash bytea`); the plaintext exists only in the response that hands it out.

DO $roles$
BEGIN
    -- Roles are cluster-wide and outlive the extension, so create them only when missing.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oauth_gateway') THEN
        CREATE ROLE oauth_gateway NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'oauth_admin') THEN
        CREATE ROLE oauth_admin NOLOGIN;
    END IF;
END
$roles$;

REVOKE ALL ON SCHEMA oauth FROM PUBLIC;
GRANT USAGE ON SCHEMA oauth TO oauth_gateway, oauth_admin;

-- Defaults live in a table that pg_dump leaves alone; oauth.settings (same shape) holds the row an
-- operator configured, if any, and is dumped. Restoring into a fresh CREATE EXTENSION then cannot
-- collide with a row the extension script inserted.
CREATE TABLE oauth.default_settings (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    issuer text NOT NULL DEFAULT 'http://127.0.0.1:8080',
    authorization_request_ttl interval NOT NULL DEFAULT '10 minutes'
        CHECK (authorization_request_ttl BETWEEN '1 minute' AND '1 hour'),
    -- RFC 6749 §4.1.2: a code lives at most 10 minutes.
    code_ttl interval NOT NULL DEFAULT '1 minute' CHECK (code_ttl BETWEEN '1 second' AND '10 minutes'),
    access_token_ttl interval NOT NULL DEFAULT '1 hour' CHECK (access_token_ttl BETWEEN '1 second' AND '1 day'),
    -- Absolute lifetime of a refresh-token family; rotation does not extend it.
    refresh_token_ttl interval NOT NULL DEFAULT '30 days' CHECK (refresh_token_ttl > '0'),
    -- A token presented again within this window after it was rotated gets the same successor
    -- instead of revoking the family: MCP clients refresh from parallel tool calls at once, and
    -- clients retry lost responses. Counted from the rotation; 0 makes every second use reuse.
    refresh_reuse_grace interval NOT NULL DEFAULT '5 seconds' CHECK (refresh_reuse_grace BETWEEN '0' AND '1 minute'),
    scopes_supported text[] NOT NULL DEFAULT '{openid,profile,email,offline_access,mcp}',
    -- Scopes granted when an authorization request names none.
    default_scopes text[] NOT NULL DEFAULT '{mcp}',
    registration_enabled boolean NOT NULL DEFAULT true,
    -- Lifetime of dynamically registered clients; NULL keeps them until deleted.
    registered_client_ttl interval,
    -- How long revoked grants and families stay visible (audit) before cleanup removes them.
    revoked_retention interval NOT NULL DEFAULT '7 days',
    -- How long oauth.events rows are kept (cleanup removes older ones that every live consumer has
    -- been given), and whether each token response is an event (`tokens_issued`): at thousands of
    -- refreshes a second that is the bulk of the table and a third of the refresh rate, so it is
    -- the operator's choice.
    event_retention interval NOT NULL DEFAULT '30 days' CHECK (event_retention >= '1 hour'),
    record_token_events boolean NOT NULL DEFAULT false,
    -- RFC 9126: whether every authorization request must be pushed to /par first, and how long a
    -- pushed request's request_uri may be used at /authorize (§2.2: short, single use).
    require_pushed_authorization_requests boolean NOT NULL DEFAULT false,
    pushed_request_ttl interval NOT NULL DEFAULT '90 seconds'
        CHECK (pushed_request_ttl BETWEEN '5 seconds' AND '10 minutes'),
    -- RFC 9449: whether token requests may bind tokens to a DPoP key (and clients may register
    -- dpop_bound_access_tokens). The gateway checks the proofs; bindings are kept here.
    dpop_supported boolean NOT NULL DEFAULT false,
    -- Whether statements that add events NOTIFY oauth_events. Off unless an application listens: a
    -- notifying transaction holds a cluster-wide lock from before its commit record until it is
    -- flushed, so notifying commits never share a WAL flush (a consent per code flow then capped
    -- the whole flow at one flush each: a fifth of the commit rate, measured with pgbench).
    announce_events boolean NOT NULL DEFAULT false
);
INSERT INTO oauth.default_settings DEFAULT VALUES;
CREATE TABLE oauth.settings (LIKE oauth.default_settings INCLUDING ALL);

CREATE TABLE oauth.clients (
    client_id text PRIMARY KEY,
    secret_hash bytea CHECK (octet_length(secret_hash) = 32),
    client_name text NOT NULL CHECK (length(client_name) BETWEEN 1 AND 200),
    redirect_uris text[] NOT NULL,
    allowed_scopes text[] NOT NULL,
    grant_types text[] NOT NULL DEFAULT '{authorization_code,refresh_token}'
        CHECK (grant_types <@ '{authorization_code,refresh_token,client_credentials,urn:ietf:params:oauth:grant-type:device_code}'::text[]),
    token_endpoint_auth_method text NOT NULL
        CHECK (token_endpoint_auth_method IN ('none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt')),
    application_type text NOT NULL DEFAULT 'web' CHECK (application_type IN ('web', 'native')),
    -- RFC 8707 resources this client may ask for; NULL allows any.
    allowed_resources text[],
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    registered_dynamically boolean NOT NULL DEFAULT false,
    -- RFC 7592: the bearer credential of a dynamically registered client's configuration endpoint.
    registration_token_hash bytea CHECK (octet_length(registration_token_hash) = 32),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    expires_at timestamptz,
    -- Only the secret methods have a secret: a public client has no credential, and a
    -- private_key_jwt client proves itself with a key it publishes (oauth.client_jwks).
    CHECK ((token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post')) = (secret_hash IS NOT NULL))
);

CREATE TABLE oauth.authorization_requests (
    request_id text PRIMARY KEY,
    client_id text NOT NULL REFERENCES oauth.clients ON DELETE CASCADE,
    redirect_uri text NOT NULL,
    -- Whether redirect_uri was sent (RFC 6749 §4.1.3: then the token request must repeat it).
    redirect_uri_sent boolean NOT NULL,
    scopes text[] NOT NULL,
    resource text,
    state text,
    nonce text,
    code_challenge text NOT NULL,
    prompt text,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    -- OIDC Core §3.1.2.1: the longest the user's authentication may date back, in seconds.
    max_age integer,
    login_hint text,
    -- RFC 9126: a pushed request's request_uri (its SHA-256) until /authorize takes it, once.
    request_uri_hash bytea UNIQUE CHECK (octet_length(request_uri_hash) = 32),
    pushed_until timestamptz
);
CREATE INDEX ON oauth.authorization_requests (expires_at);
CREATE INDEX ON oauth.authorization_requests (client_id);

-- The consent record: one live grant per user and client. A revoked grant is never revived, so
-- tokens that name it stay dead; consenting again creates a new grant. A client_credentials grant
-- has the client itself as subject (subject_type 'client', user_id = client_id): it belongs to no
-- user, and revoking it (or deleting the client) kills the client's tokens like any other grant.
CREATE TABLE oauth.grants (
    grant_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    subject_type text NOT NULL DEFAULT 'user' CHECK (subject_type IN ('user', 'client')),
    user_id text NOT NULL CHECK (length(user_id) BETWEEN 1 AND 255),
    client_id text NOT NULL REFERENCES oauth.clients ON DELETE CASCADE,
    scopes text[] NOT NULL,
    resource text,
    -- Application data handed to the resource server with every token of this grant.
    props jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(props) = 'object'),
    metadata jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(metadata) = 'object'),
    auth_time timestamptz NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_reason text
);
CREATE UNIQUE INDEX grants_one_live_per_subject_and_client ON oauth.grants (subject_type, user_id, client_id)
    WHERE revoked_at IS NULL;
CREATE INDEX ON oauth.grants (client_id);
CREATE INDEX ON oauth.grants (revoked_at) WHERE revoked_at IS NOT NULL;

-- One family per code exchange: every access and refresh token descends from exactly one. A family
-- has at most one live refresh token (current_hash), so two live successors cannot exist by construction.
-- Its tokens form a chain (extension/src/refresh_chain.rs): each names the family and its
-- generation, and each successor is HMAC(chain_key, predecessor). So this row alone finds a token,
-- gives concurrent presentations of one token the same successor, and proves an earlier token
-- genuine (reuse) by deriving forward to current_hash: a rotation is one HOT update of one row that
-- touches no index (fillfactor leaves room on the page), and storage does not grow with rotations.
-- A dump holds only the key and hashes, from which no token can be derived.
CREATE TABLE oauth.refresh_families (
    family_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    grant_id uuid NOT NULL REFERENCES oauth.grants ON DELETE CASCADE,
    client_id text NOT NULL,
    user_id text NOT NULL,
    scopes text[] NOT NULL,
    resource text,
    current_hash bytea,
    previous_hash bytea,
    generation integer NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL,
    rotated_at timestamptz,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    revoked_reason text,
    chain_key bytea NOT NULL CHECK (octet_length(chain_key) = 32),
    -- RFC 9449 §5: a public client's refresh tokens are bound to the DPoP key (its RFC 7638
    -- thumbprint) of the request that opened the family; rotation needs a proof by that key.
    dpop_jkt text CHECK (dpop_jkt ~ '^[A-Za-z0-9_-]{43}$')
) WITH (fillfactor = 70);
CREATE INDEX ON oauth.refresh_families (grant_id);
CREATE INDEX ON oauth.refresh_families (expires_at);
CREATE INDEX ON oauth.refresh_families (revoked_at) WHERE revoked_at IS NOT NULL;

-- Refresh tokens issued before 0.3.0 (random, naming no family), so that such a token is found and a
-- rotated one presented again is recognised as reuse until its family expires. Nothing is added
-- since: chained tokens need no row.
CREATE TABLE oauth.refresh_tokens (
    token_hash bytea PRIMARY KEY,
    family_id uuid NOT NULL REFERENCES oauth.refresh_families ON DELETE CASCADE,
    generation integer NOT NULL
);
CREATE INDEX ON oauth.refresh_tokens (family_id);

CREATE TABLE oauth.codes (
    code_hash bytea PRIMARY KEY,
    client_id text NOT NULL REFERENCES oauth.clients ON DELETE CASCADE,
    grant_id uuid NOT NULL REFERENCES oauth.grants ON DELETE CASCADE,
    user_id text NOT NULL,
    redirect_uri text NOT NULL,
    redirect_uri_sent boolean NOT NULL,
    scopes text[] NOT NULL,
    resource text,
    nonce text,
    code_challenge text NOT NULL,
    created_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL,
    redeemed_at timestamptz,
    -- What the redemption issued, so that a replay can revoke it (RFC 6749 §4.1.2).
    family_id uuid
) WITH (fillfactor = 70);
CREATE INDEX ON oauth.codes (expires_at);
CREATE INDEX ON oauth.codes (grant_id);

CREATE TABLE oauth.events (
    event_id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL,
    kind text NOT NULL,
    client_id text,
    user_id text,
    grant_id uuid,
    family_id uuid,
    detail jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX ON oauth.events (occurred_at);
CREATE INDEX ON oauth.events (grant_id) WHERE grant_id IS NOT NULL;

-- pg_dump skips extension members unless registered: clients, consent and live tokens are data.
SELECT pg_catalog.pg_extension_config_dump('oauth.settings', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.clients', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.authorization_requests', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.grants', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.refresh_families', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.refresh_tokens', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.codes', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.events', '');
SELECT pg_catalog.pg_extension_config_dump('oauth.events_event_id_seq', '');
