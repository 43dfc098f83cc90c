-- Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document, preferred by the MCP
-- authorization spec): a client_id that is an https URL names a JSON document describing the client.
-- The gateway fetches it (with its SSRF guards); the database validates it, keeps the client row
-- and remembers how long the copy is fresh, or why the last fetch failed, so that every gateway
-- shares one view and one negative cache.

CREATE TABLE oauth.client_documents (
    -- The document URL, equal to the client_id of the client row it produced.
    client_id text PRIMARY KEY CHECK (client_id ~ '^https://'),
    fetched_at timestamptz NOT NULL,
    -- Until then the stored copy (or the failure) stands; afterwards the next authorization refetches.
    fresh_until timestamptz NOT NULL,
    -- Why the last fetch or validation failed; NULL when it succeeded.
    failure text,
    consecutive_failures integer NOT NULL DEFAULT 0,
    -- Whether the browser may be told `failure`. What a document says wrong helps its author; why no
    -- document came (a refused connection, a failed TLS handshake, a 404) is the operator's only:
    -- told apart on the error page, they would make the gateway a port scanner of its network.
    failure_shown boolean NOT NULL DEFAULT false
);
SELECT pg_catalog.pg_extension_config_dump('oauth.client_documents', '');

-- The same rule the gateway applies before fetching (the oauth_rules crate): a URL it would not
-- fetch is not a document client id here either, and stays an unknown client.
CREATE FUNCTION oauth._is_document_client_id(client_id text) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN client_id IS NOT NULL AND oauth.document_client_id_problem(client_id) IS NULL;
END
$$;

-- NULL when the client's document is fresh and valid, or when no document is involved. Otherwise
-- what begin_authorization answers: `{"fetch_client_document": url}` when it must be (re)fetched
-- first, or invalid_client while a recent failure is negatively cached.
CREATE FUNCTION oauth._client_document_state(client_id text, now timestamptz) RETURNS jsonb
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    known oauth.client_documents;
BEGIN
    -- A client row no document made (an administrator's that happens to have an https id) is used
    -- as registered: the document at that URL is not authoritative for it, and asking for it could
    -- only end in store_client_document's refusal to take the row over, negatively cached, which
    -- would lock the administrator's client out of authorization.
    IF EXISTS (SELECT 1 FROM oauth.clients c
                WHERE c.client_id = _client_document_state.client_id
                  AND NOT c.metadata @> '{"metadata_document": true}') THEN
        RETURN NULL;
    END IF;
    SELECT * INTO known FROM oauth.client_documents d WHERE d.client_id = _client_document_state.client_id;
    IF NOT FOUND OR known.fresh_until <= now THEN
        RETURN pg_catalog.jsonb_build_object('fetch_client_document', client_id);
    END IF;
    IF known.failure IS NOT NULL AND known.failure_shown THEN
        RETURN oauth._error('invalid_client', 'client metadata document unusable: ' || known.failure);
    ELSIF known.failure IS NOT NULL THEN
        -- The gateway's words for a document that could not be fetched, so that a negatively cached
        -- failure reads like the first one.
        RETURN oauth._error('invalid_client', 'the client''s metadata document could not be fetched');
    END IF;
    RETURN NULL;
END
$$;

-- A fetch that failed (no answer, a refused connection, a fetch the gateway's budget refused), or
-- with `shown`, an answer that is no document (its content type, size or JSON). When
-- the last fetch of this document was good, less than a day ago, its client keeps serving until
-- retry_at: an unreachable host says nothing new about the document, and refusing the client would
-- let anyone who can make the fetch fail (or spend its budget) lock its users out. A document that
-- answers with unusable content is different: store_client_document records that and the client is
-- refused at once.
CREATE FUNCTION oauth.record_client_document_failure(
    client_id text, failure text, retry_at timestamptz, now timestamptz DEFAULT now(), shown boolean DEFAULT false
) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
BEGIN
    IF NOT oauth._is_document_client_id(record_client_document_failure.client_id) THEN
        PERFORM oauth._raise('invalid_request', 'not a client metadata document URL');
    END IF;
    UPDATE oauth.client_documents d
       SET fresh_until = greatest(record_client_document_failure.retry_at, now),
           consecutive_failures = d.consecutive_failures + 1
     WHERE d.client_id = record_client_document_failure.client_id
       AND d.failure IS NULL AND d.fetched_at > now - interval '1 day';
    IF FOUND THEN
        RETURN;
    END IF;
    INSERT INTO oauth.client_documents AS d (client_id, fetched_at, fresh_until, failure, consecutive_failures,
                                             failure_shown)
    VALUES (record_client_document_failure.client_id, now, greatest(record_client_document_failure.retry_at, now),
            pg_catalog.left(coalesce(record_client_document_failure.failure, 'unknown failure'), 300), 1,
            coalesce(record_client_document_failure.shown, false))
    ON CONFLICT (client_id) DO UPDATE
       SET fetched_at = EXCLUDED.fetched_at, fresh_until = EXCLUDED.fresh_until, failure = EXCLUDED.failure,
           consecutive_failures = d.consecutive_failures + 1, failure_shown = EXCLUDED.failure_shown;
END
$$;

-- Validates a fetched document and makes (or updates) its client. Returns {} or the error, which is
-- also recorded as the negatively cached failure until `retry_at`. A document cannot hold a secret:
-- its client authenticates with private_key_jwt when it declares that method, or lists it among
-- token_endpoint_auth_methods_supported and gives its keys (ChatGPT does both), else with none
-- when it declares or lists that; anything else is refused.
CREATE FUNCTION oauth.store_client_document(
    client_id text, document jsonb, fresh_until timestamptz, retry_at timestamptz, now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
#variable_conflict use_column
DECLARE
    problem jsonb;
    fields record;
    offered jsonb;
    method text;
BEGIN
    IF NOT oauth._is_document_client_id(client_id) THEN
        RETURN oauth._error('invalid_request', 'not a client metadata document URL');
    END IF;
    IF document IS NULL OR jsonb_typeof(document) <> 'object' THEN
        problem := oauth._error('invalid_client_metadata', 'the document is not a JSON object');
    ELSIF document->'client_id' IS DISTINCT FROM to_jsonb(store_client_document.client_id) THEN
        problem := oauth._error('invalid_client_metadata', 'the document''s client_id differs from its URL');
    ELSIF document ? 'client_secret' OR document ? 'client_secret_expires_at' THEN
        problem := oauth._error('invalid_client_metadata', 'a client metadata document must not carry a secret');
    ELSIF document ? 'token_endpoint_auth_method' AND jsonb_typeof(document->'token_endpoint_auth_method') <> 'string' THEN
        problem := oauth._error('invalid_client_metadata', 'token_endpoint_auth_method must be a string');
    ELSIF document ? 'token_endpoint_auth_methods_supported'
          AND (jsonb_typeof(document->'token_endpoint_auth_methods_supported') <> 'array'
               OR EXISTS (SELECT 1 FROM jsonb_array_elements(document->'token_endpoint_auth_methods_supported') e
                           WHERE jsonb_typeof(e) <> 'string')) THEN
        problem := oauth._error('invalid_client_metadata', 'token_endpoint_auth_methods_supported must be an array of strings');
    ELSE
        offered := coalesce(document->'token_endpoint_auth_methods_supported', '[]');
        -- Without a declared method a document is public (RFC 7591's client_secret_basic default
        -- needs a secret no document can hold).
        method := CASE
            WHEN document->>'token_endpoint_auth_method' = 'private_key_jwt'
                 OR (offered ? 'private_key_jwt' AND (document ? 'jwks' OR document ? 'jwks_uri')) THEN 'private_key_jwt'
            WHEN coalesce(document->>'token_endpoint_auth_method', 'none') = 'none' OR offered ? 'none' THEN 'none'
        END;
        IF method IS NULL THEN
            problem := oauth._error('invalid_client_metadata',
                'token_endpoint_auth_method must be "none" or "private_key_jwt" (a metadata document cannot hold a secret)');
        ELSE
            -- A public client has no use for keys it may list for other purposes.
            fields := oauth._registration_fields(
                CASE WHEN method = 'none' THEN document - 'jwks' - 'jwks_uri' - 'token_endpoint_auth_signing_alg'
                     ELSE document END
                || jsonb_build_object('token_endpoint_auth_method', method));
            problem := fields.problem;
            IF problem IS NULL AND cardinality(fields.redirect_uris) = 0 THEN
                problem := oauth._error('invalid_redirect_uri', 'the document lists no redirect_uris');
            END IF;
        END IF;
    END IF;
    IF problem IS NOT NULL THEN
        PERFORM oauth.record_client_document_failure(client_id, problem->>'error_description', retry_at, now, true);
        RETURN problem;
    END IF;

    INSERT INTO oauth.clients AS c (client_id, client_name, redirect_uris, allowed_scopes, grant_types,
                                    token_endpoint_auth_method, application_type, metadata, created_at, updated_at)
    VALUES (store_client_document.client_id, coalesce(fields.client_name, oauth.uri_host(store_client_document.client_id)),
            fields.redirect_uris, (oauth._settings()).scopes_supported, fields.grant_types, fields.method, fields.app_type,
            fields.extra || '{"metadata_document": true}', now, now)
    ON CONFLICT (client_id) DO UPDATE
       SET client_name = EXCLUDED.client_name, redirect_uris = EXCLUDED.redirect_uris,
           allowed_scopes = EXCLUDED.allowed_scopes, grant_types = EXCLUDED.grant_types,
           token_endpoint_auth_method = EXCLUDED.token_endpoint_auth_method,
           application_type = EXCLUDED.application_type, metadata = EXCLUDED.metadata, updated_at = EXCLUDED.updated_at
     -- Never take over an administrator's or a registration's client that happens to use this id.
     WHERE c.metadata @> '{"metadata_document": true}';
    IF NOT FOUND THEN
        problem := oauth._error('invalid_client', 'client_id is taken by a client that is not a metadata document');
        PERFORM oauth.record_client_document_failure(client_id, problem->>'error_description', retry_at, now, true);
        RETURN problem;
    END IF;
    INSERT INTO oauth.client_documents AS d (client_id, fetched_at, fresh_until, failure, consecutive_failures)
    VALUES (store_client_document.client_id, now, greatest(fresh_until, now), NULL, 0)
    ON CONFLICT (client_id) DO UPDATE
       SET fetched_at = EXCLUDED.fetched_at, fresh_until = EXCLUDED.fresh_until, failure = NULL,
           consecutive_failures = 0;
    PERFORM oauth._event('client_document_stored', client_id, NULL, NULL, NULL, NULL, now);
    RETURN '{}'::jsonb;
END
$$;
