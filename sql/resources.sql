-- The resources (RFC 8707) this server issues tokens for: the routes its gateways guard, which
-- each gateway declares when it starts (oauth.declare_resources), and those an administrator adds
-- (oauth.add_resource). A request naming any other resource is refused with invalid_target at
-- /authorize and /token (oauth._resolve_target): the token would be refused by every resource
-- server here and the client would only loop on 401. While none is listed (an installation whose
-- gateways guard nothing and whose administrator listed nothing) any resource is accepted, as
-- before 0.3.0, so a deployment that uses this server for resource servers of its own keeps
-- working until it lists them.

CREATE TABLE oauth.resources (
    -- The spelling tokens carry (`aud`): the one the resource was first listed with.
    resource text PRIMARY KEY,
    -- oauth.resource_key(resource): one row per resource however it is spelled, so that
    -- "https://mcp.example" and "https://mcp.example/" cannot both be listed.
    resource_key text NOT NULL UNIQUE,
    added_by text NOT NULL CHECK (added_by IN ('gateway', 'administrator')),
    created_at timestamptz NOT NULL,
    -- When a gateway last declared it (NULL while only an administrator listed it).
    declared_at timestamptz
);
SELECT pg_catalog.pg_extension_config_dump('oauth.resources', '');

-- "https://host" when `key` (a resource key) is a bare origin, "https://host/" with neither path
-- nor query; else NULL.
CREATE FUNCTION oauth._bare_origin(key text) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE
AS $$
BEGIN
    RETURN pg_catalog.substring(key, '^([a-z][a-z0-9+.-]*://[^/?#]+)/$');
END
$$;

-- The listed resource `requested` names, spelled as it was listed, or NULL: the same resource
-- however spelled (RFC 3986 §6.2.3: "https://host" and "https://host/" are one), or, for a bare
-- origin that is not listed itself, the one resource listed under that origin. Claude Code asks
-- for its MCP server's origin plus "/" although the protected-resource metadata names
-- "https://host/mcp": when exactly one listed resource lives at that origin the client can only
-- mean it, and a token for it is narrower than the one asked for (good at one resource of the
-- origin, not at any), so nothing is granted that was not asked for. With two resources at the
-- origin the request is ambiguous and stays unlisted.
CREATE FUNCTION oauth._listed_resource(requested text) RETURNS text
LANGUAGE plpgsql STABLE
AS $$
DECLARE
    key text := oauth.resource_key(requested);
    origin text := oauth._bare_origin(key);
    listed text;
BEGIN
    IF key IS NULL THEN
        RETURN NULL;
    END IF;
    SELECT r.resource INTO listed FROM oauth.resources r WHERE r.resource_key = key;
    IF FOUND OR origin IS NULL THEN
        RETURN listed;
    END IF;
    SELECT pg_catalog.min(r.resource) INTO listed FROM oauth.resources r
     WHERE pg_catalog.starts_with(r.resource_key, origin || '/')
    HAVING pg_catalog.count(*) = 1;
    RETURN listed;
END
$$;

-- The resource a token request names, as this server lists it (oauth._listed_resource), or the
-- request's own value when it names nothing listed. The gateway passes the `resource` of code
-- exchanges and refreshes through it, so that a client repeating at /token the spelling it used at
-- /authorize (Claude Code's bare origin) repeats the resource it was granted (RFC 8707 §2.2).
CREATE FUNCTION oauth.canonical_resource(resource text) RETURNS text
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN coalesce(oauth._listed_resource(resource), resource);
END
$$;

-- Lists `resource`; true when it was not listed yet (under any spelling).
CREATE FUNCTION oauth._list_resource(resource text, added_by text, now timestamptz) RETURNS boolean
LANGUAGE plpgsql
AS $$
DECLARE
    problem text := CASE WHEN resource IS NULL THEN 'resource is required' ELSE oauth.resource_problem(resource) END;
    inserted boolean;
BEGIN
    IF problem IS NOT NULL THEN
        PERFORM oauth._raise('invalid_request', problem);
    END IF;
    INSERT INTO oauth.resources AS r (resource, resource_key, added_by, created_at, declared_at)
    VALUES (_list_resource.resource, oauth.resource_key(_list_resource.resource), _list_resource.added_by, now,
            CASE WHEN _list_resource.added_by = 'gateway' THEN now END)
    ON CONFLICT (resource_key) DO UPDATE
       SET declared_at = CASE WHEN EXCLUDED.added_by = 'gateway' THEN EXCLUDED.declared_at ELSE r.declared_at END
    RETURNING (xmax = 0) INTO inserted;
    RETURN inserted;
END
$$;

-- A gateway lists what it guards when it starts: its routes' resource identifiers and its default
-- audience. It only adds: gateways with different routes may share one database and none knows
-- what the others guard, so what no gateway guards any more is the administrator's to remove
-- (oauth.remove_resource). The gateway signs every token already; saying what it guards widens
-- nothing it could not do.
CREATE FUNCTION oauth.declare_resources(resources text[], now timestamptz DEFAULT now()) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    declared text;
BEGIN
    IF resources IS NULL OR cardinality(resources) > 100 THEN
        PERFORM oauth._raise('invalid_request', 'resources must be a list of at most 100 resource indicators');
    END IF;
    FOREACH declared IN ARRAY resources LOOP
        PERFORM oauth._list_resource(declared, 'gateway', now);
    END LOOP;
END
$$;

-- An administrator lists a resource no gateway guards (a resource server of the application's own
-- that accepts this server's tokens). False when it was listed already.
CREATE FUNCTION oauth.add_resource(resource text, now timestamptz DEFAULT now()) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN oauth._list_resource(resource, 'administrator', now);
END
$$;

-- Removes a listed resource, however spelled; false when it was not listed. Tokens already issued
-- for it stay valid until they expire; a gateway that still guards it lists it again at its next
-- start.
CREATE FUNCTION oauth.remove_resource(resource text) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM oauth.resources r WHERE r.resource_key = oauth.resource_key(remove_resource.resource);
    RETURN FOUND;
END
$$;
