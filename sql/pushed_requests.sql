-- Pushed Authorization Requests (RFC 9126). A client sends its authorization request's parameters
-- to /par, authenticated as at /token, and the browser then carries only
-- /authorize?client_id=…&request_uri=…: the parameters never pass through the browser, and a
-- confidential client's request is known to be its own before any user sees it. The push runs the
-- same rules as /authorize and stores the same pending request; the request_uri is a bearer handle
-- to it, kept only as its SHA-256, usable once, and only for a short while.

-- RFC 9126 §2: answers {"request_uri", "expires_in"} (HTTP 201), or an error the gateway returns as
-- JSON like the token endpoint's: a pushed request is never answered through a redirect. Or, for a
-- metadata-document client whose document the database has no fresh copy of,
-- {"fetch_client_document": url}: the gateway fetches it and pushes again.
CREATE FUNCTION oauth.push_authorization_request(
    client_id text, client_secret text, params jsonb, now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settings oauth.settings := oauth._settings();
    authenticated record;
    request_uri text := 'urn:ietf:params:oauth:request_uri:' || oauth.random_token(32);
    began jsonb;
    document_state jsonb;
BEGIN
    IF params IS NULL OR jsonb_typeof(params) <> 'object' THEN
        RETURN oauth._error('invalid_request', 'missing parameters');
    END IF;
    -- The client_id parameter names the client as it authenticated; a public client names itself
    -- with it alone.
    IF jsonb_typeof(params->'client_id') = 'array' THEN
        RETURN oauth._error('invalid_request', 'client_id is repeated');
    END IF;
    IF params ? 'client_id' AND push_authorization_request.client_id IS DISTINCT FROM params->>'client_id' THEN
        RETURN oauth._error('invalid_request', 'client_id is not the authenticated client');
    END IF;
    -- A client named by its metadata document pushes first: its document is fetched before it can
    -- be authenticated, as at /authorize.
    IF oauth._is_document_client_id(push_authorization_request.client_id) THEN
        document_state := oauth._client_document_state(push_authorization_request.client_id, now);
        IF document_state IS NOT NULL THEN
            RETURN document_state;
        END IF;
    END IF;
    authenticated := oauth._client_authentication(push_authorization_request.client_id, client_secret, now);
    IF authenticated.problem IS NOT NULL THEN
        RETURN authenticated.problem;
    END IF;
    -- §2.1: a pushed request cannot point at another one.
    IF params ? 'request_uri' THEN
        RETURN oauth._error('invalid_request', 'request_uri cannot be pushed');
    END IF;
    began := oauth._begin_authorization(
        params || jsonb_build_object('client_id', (authenticated.client).client_id),
        oauth.token_hash(request_uri), now + settings.pushed_request_ttl, now);
    IF began ? 'error' THEN
        RETURN oauth._error(began->>'error', began->>'error_description');
    END IF;
    RETURN jsonb_build_object('request_uri', request_uri,
                              'expires_in', floor(date_part('epoch', settings.pushed_request_ttl))::bigint);
END
$$;

-- /authorize?client_id=…&request_uri=…: takes the pushed request (once, before it expires, only by
-- the client that pushed it) and answers as oauth.begin_authorization does for the parameters it
-- stands for. Other parameters beside the two are ignored (RFC 9126 §4): the pushed ones are the
-- request. The pending request's own lifetime starts again here, when a user first sees it.
CREATE FUNCTION oauth._begin_pushed_authorization(params jsonb, now timestamptz) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
    pushed oauth.authorization_requests;
    client oauth.clients;
BEGIN
    IF jsonb_typeof(params->'request_uri') IS DISTINCT FROM 'string'
       OR jsonb_typeof(params->'client_id') IS DISTINCT FROM 'string' THEN
        RETURN oauth._error('invalid_request', 'request_uri needs client_id, each given once') || '{"redirect": false}';
    END IF;
    UPDATE oauth.authorization_requests r
       SET request_uri_hash = NULL, pushed_until = NULL,
           expires_at = now + (oauth._settings()).authorization_request_ttl
     WHERE r.request_uri_hash = oauth.token_hash(params->>'request_uri')
       AND r.client_id = params->>'client_id' AND r.pushed_until > now
    RETURNING * INTO pushed;
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_request_uri', 'request_uri is unknown, expired, already used or another client''s')
               || '{"redirect": false}';
    END IF;
    SELECT * INTO client FROM oauth.clients c
     WHERE c.client_id = pushed.client_id AND (c.expires_at IS NULL OR c.expires_at > now);
    IF NOT FOUND THEN
        RETURN oauth._error('invalid_client', 'unknown client') || '{"redirect": false}';
    END IF;
    RETURN jsonb_build_object('request_id', pushed.request_id, 'client_id', client.client_id,
                              'client_name', client.client_name, 'prompt', pushed.prompt);
END
$$;
