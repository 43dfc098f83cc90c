-- oauth_provider 0.1.0 → 0.2.0. Functions only; no table changes, so every row (clients, grants,
-- codes, refresh families) stays as it is and every token issued by 0.1.0 keeps working.
--
-- * The discovery capabilities come from the extension (oauth._capabilities, merged into
--   oauth.settings()), so the gateway serves what the extension enforces.
-- * Metadata-document client ids are recognised by the same rule the gateway checks before it
--   fetches (oauth.document_client_id_problem, from the oauth_rules crate).
-- * oauth.get_device_authorization also returns the canonical user code, so pages bind their forms
--   to it without knowing how codes are normalized.

\echo Use "ALTER EXTENSION oauth_provider UPDATE TO '0.2.0'" to load this file. \quit

CREATE FUNCTION oauth."document_client_id_problem"(
	"client_id" TEXT /* &str */
) RETURNS TEXT /* core::option::Option<alloc::string::String> */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'document_client_id_problem_wrapper';
REVOKE EXECUTE ON FUNCTION oauth.document_client_id_problem(text) FROM PUBLIC;

-- The same rule the gateway applies before fetching (the oauth_rules crate): a URL it would not
-- fetch is not a document client id here either, and stays an unknown client.
CREATE OR REPLACE FUNCTION oauth._is_document_client_id(client_id text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN client_id IS NOT NULL AND oauth.document_client_id_problem(client_id) IS NULL;
END
$$;

-- What the functions in this schema accept, for the discovery document: each list is the rule the
-- named check enforces, so metadata cannot promise what the extension refuses.
CREATE FUNCTION oauth._capabilities() RETURNS jsonb
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        -- The token endpoint's grants: the registrable ones, and token exchange under a policy.
        'grant_types_supported',
            to_jsonb(oauth._grant_types_supported() || 'urn:ietf:params:oauth:grant-type:token-exchange'::text),
        -- begin_authorization: response_type=code only, answered in the query, PKCE S256 only.
        'response_types_supported', jsonb_build_array('code'),
        'response_modes_supported', jsonb_build_array('query'),
        'code_challenge_methods_supported', jsonb_build_array('S256'),
        -- _check_client_fields and the clients table's CHECK.
        'token_endpoint_auth_methods_supported', jsonb_build_array('client_secret_basic', 'client_secret_post', 'none'),
        'revocation_endpoint_auth_methods_supported', jsonb_build_array('client_secret_basic', 'client_secret_post', 'none'),
        -- introspect: confidential callers only.
        'introspection_endpoint_auth_methods_supported', jsonb_build_array('client_secret_basic', 'client_secret_post'),
        -- begin_authorization treats https URL client ids as metadata documents.
        'client_id_metadata_document_supported', true,
        -- The longest an access token can live (the settings table's bound on access_token_ttl): a
        -- revocation older than this can no longer concern a presented token.
        'revocation_horizon', 86400)
$$;
REVOKE EXECUTE ON FUNCTION oauth._capabilities() FROM PUBLIC;

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
        'authorization_request_ttl', floor(date_part('epoch', s.authorization_request_ttl))::bigint)
        || oauth._capabilities()
      FROM oauth._settings() s
$$;

-- A new result column changes the function's type, which CREATE OR REPLACE cannot do.
DROP FUNCTION oauth.get_device_authorization(text, timestamptz);
-- What the verification page shows. Raises not_found for an unknown, expired or decided code.
-- canonical_user_code is the code as stored: what a page binds its form to, so no caller needs to
-- know how typed codes are normalized. (Not named user_code: the argument is.)
CREATE FUNCTION oauth.get_device_authorization(user_code text, now timestamptz DEFAULT now())
RETURNS TABLE (client_id text, client_name text, client_uri text, scopes text[], resource text, expires_at timestamptz,
               canonical_user_code text)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN QUERY
    SELECT c.client_id, c.client_name, c.metadata->>'client_uri', d.scopes, d.resource, d.expires_at, d.user_code
      FROM oauth.device_authorizations d
      JOIN oauth.clients c ON c.client_id = d.client_id
     WHERE d.user_code = oauth._normalize_user_code(get_device_authorization.user_code)
       AND d.status = 'pending' AND d.expires_at > now;
    IF NOT FOUND THEN
        PERFORM oauth._raise('not_found', 'no such user code, or it has expired or was already used');
    END IF;
END
$$;
REVOKE EXECUTE ON FUNCTION oauth.get_device_authorization(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION oauth.get_device_authorization(text, timestamptz) TO oauth_gateway, oauth_admin;
