-- What the pages a person sees need beyond the consent step: the "connected apps" page (the
-- signed-in user's live grants, each revocable by that user alone) and a client's logo.

-- A client's logo, only when an administrator registered the client (oauth.create_client) and the
-- logo is https: a dynamically registered client or a metadata document names whatever logo it
-- likes, and a familiar logo beside a stranger's name is exactly what a phishing client wants.
CREATE FUNCTION oauth._client_logo_uri(client oauth.clients) RETURNS text
LANGUAGE sql STABLE
AS $$
    SELECT CASE
        WHEN NOT client.registered_dynamically
         AND NOT coalesce((client.metadata->>'metadata_document')::boolean, false)
         AND jsonb_typeof(client.metadata->'logo_uri') = 'string'
         AND client.metadata->>'logo_uri' ~ '^https://[^\s"''<>\\]+$'
        THEN client.metadata->>'logo_uri'
    END
$$;

-- The logo a consent or device page may show for this client (NULL: none).
CREATE FUNCTION oauth.client_logo_uri(client_id text, now timestamptz DEFAULT now()) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT oauth._client_logo_uri(c)
      FROM oauth.clients c
     WHERE c.client_id = client_logo_uri.client_id AND (c.expires_at IS NULL OR c.expires_at > now)
$$;

-- The signed-in user's connected apps: each live grant with what the page shows. redirect_hosts
-- are where the app receives its codes (an http(s) redirect URI's host, a private-use scheme as
-- "scheme:"). last_used_at is the last time the app was issued tokens under the grant (a code
-- exchanged or a refresh token rotated); using an access token is not recorded anywhere, so an app
-- that holds a long-lived access token may have used it since. NULL: no token issued yet.
CREATE FUNCTION oauth.list_connected_apps(user_id text, now timestamptz DEFAULT now()) RETURNS TABLE (
    grant_id uuid, client_id text, client_name text, redirect_hosts text[], logo_uri text,
    scopes text[], resource text, granted_at timestamptz, last_used_at timestamptz
)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT g.grant_id, g.client_id, oauth._client_display_name(c),
           ARRAY(SELECT DISTINCT CASE WHEN u ~* '^https?://' THEN oauth.uri_host(u)
                                      ELSE pg_catalog.split_part(u, ':', 1) || ':' END
                   FROM unnest(c.redirect_uris) u
                  ORDER BY 1),
           oauth._client_logo_uri(c), g.scopes, g.resource, g.created_at,
           (SELECT max(coalesce(f.rotated_at, f.created_at)) FROM oauth.refresh_families f
             WHERE f.grant_id = g.grant_id AND coalesce(f.rotated_at, f.created_at) <= list_connected_apps.now)
      FROM oauth.grants g JOIN oauth.clients c ON c.client_id = g.client_id
     WHERE g.subject_type = 'user' AND g.user_id = list_connected_apps.user_id AND g.revoked_at IS NULL
       AND g.created_at <= list_connected_apps.now
     ORDER BY g.created_at DESC, g.grant_id
$$;

-- The user disconnects an app: oauth.revoke_grant, for a live grant of this user only (a grant id
-- from another user's page revokes nothing). False when there was no such live grant.
CREATE FUNCTION oauth.revoke_connected_app(user_id text, grant_id uuid, now timestamptz DEFAULT now())
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM 1 FROM oauth.grants g
     WHERE g.grant_id = revoke_connected_app.grant_id AND g.user_id = revoke_connected_app.user_id
       AND g.subject_type = 'user' AND g.revoked_at IS NULL
       FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    RETURN oauth.revoke_grant(revoke_connected_app.grant_id, 'revoked_by_user', now);
END
$$;
