-- The audit feed: oauth.events read from SQL, announced by NOTIFY oauth_events, and delivered to a
-- consumer (the gateway's webhook) at least once, in a fixed order, by one holder at a time.
--
-- Delivery order is (xid, event_id), not event_id alone: ids come from a sequence, so a transaction
-- still running may hold a lower id than one already committed, and a cursor on ids would skip it
-- for good. Only events of finished transactions are handed out (xid below the oldest running
-- transaction, pg_snapshot_xmin), and no event can join that set later, so a cursor on
-- (xid, event_id) never passes over one. A long-running transaction holds delivery back until it ends.

ALTER TABLE oauth.events ADD COLUMN xid xid8;
ALTER TABLE oauth.events ALTER COLUMN xid SET DEFAULT pg_catalog.pg_current_xact_id();
CREATE INDEX events_delivery_order ON oauth.events (xid, event_id);
CREATE INDEX events_user ON oauth.events (user_id, event_id) WHERE user_id IS NOT NULL;
CREATE INDEX events_client ON oauth.events (client_id, event_id) WHERE client_id IS NOT NULL;

-- Where each consumer stands, and who may deliver to it now (a lease, renewed while delivering).
CREATE TABLE oauth.event_consumers (
    consumer text PRIMARY KEY CHECK (length(consumer) BETWEEN 1 AND 200),
    delivered_xid xid8 NOT NULL,
    delivered_event_id bigint NOT NULL DEFAULT 0,
    holder text,
    lease_until timestamptz,
    delivered_at timestamptz
);
SELECT pg_catalog.pg_extension_config_dump('oauth.event_consumers', '');

CREATE FUNCTION oauth._announce_events() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    -- One notification per statement, naming the highest id it wrote; listeners read from SQL.
    -- Only where the deployment asked for them (settings.announce_events: notifying commits cannot
    -- share a WAL flush), and never for token responses alone (one per refresh halved the rotation
    -- rate). Everything can be read by polling (take_events, list_events).
    IF (oauth._settings()).announce_events AND EXISTS (SELECT 1 FROM inserted e WHERE e.kind <> 'tokens_issued') THEN
        PERFORM pg_catalog.pg_notify('oauth_events', (SELECT pg_catalog.max(e.event_id) FROM inserted e)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER announce_events AFTER INSERT ON oauth.events
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION oauth._announce_events();

-- Events for the application's own reading: by user, client and time, after an id, oldest first.
CREATE FUNCTION oauth.list_events(
    after_id bigint DEFAULT 0,
    user_id text DEFAULT NULL,
    client_id text DEFAULT NULL,
    since timestamptz DEFAULT NULL,
    until timestamptz DEFAULT NULL,
    max_rows integer DEFAULT 100
) RETURNS TABLE (event_id bigint, occurred_at timestamptz, kind text, client_id text, user_id text,
                 grant_id uuid, family_id uuid, detail jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT e.event_id, e.occurred_at, e.kind, e.client_id, e.user_id, e.grant_id, e.family_id, e.detail
      FROM oauth.events e
     WHERE e.event_id > coalesce(list_events.after_id, 0)
       AND (list_events.user_id IS NULL OR e.user_id = list_events.user_id)
       AND (list_events.client_id IS NULL OR e.client_id = list_events.client_id)
       AND (list_events.since IS NULL OR e.occurred_at >= list_events.since)
       AND (list_events.until IS NULL OR e.occurred_at < list_events.until)
     ORDER BY e.event_id
     LIMIT least(greatest(coalesce(list_events.max_rows, 100), 1), 10000)
$$;

-- The next events for `consumer`, if `holder` holds (or now takes) its lease: {"held": false} while
-- another holder's lease runs, else {"held": true, "events": [...]} in delivery order, each with the
-- position to acknowledge. A consumer seen for the first time starts at the events committed from
-- now on (older ones stay readable with oauth.list_events).
CREATE FUNCTION oauth.take_events(
    consumer text,
    holder text,
    lease interval,
    max_rows integer,
    now timestamptz DEFAULT now()
) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    settled xid8 := pg_snapshot_xmin(pg_current_snapshot());
    standing oauth.event_consumers;
    batch jsonb;
BEGIN
    IF consumer IS NULL OR holder IS NULL OR lease IS NULL OR lease <= interval '0' THEN
        PERFORM oauth._raise('invalid_request', 'consumer, holder and a positive lease are required');
    END IF;
    INSERT INTO oauth.event_consumers AS c (consumer, delivered_xid)
    VALUES (take_events.consumer, settled)
    ON CONFLICT ON CONSTRAINT event_consumers_pkey DO NOTHING;
    UPDATE oauth.event_consumers c
       SET holder = take_events.holder, lease_until = now + lease
     WHERE c.consumer = take_events.consumer
       AND (c.holder IS NULL OR c.holder = take_events.holder OR c.lease_until <= now)
    RETURNING * INTO standing;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('held', false);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'event_id', e.event_id, 'occurred_at', e.occurred_at, 'kind', e.kind,
               'client_id', e.client_id, 'user_id', e.user_id, 'grant_id', e.grant_id,
               'family_id', e.family_id, 'detail', e.detail,
               'position', e.xid::text || ':' || e.event_id::text) ORDER BY e.xid, e.event_id), '[]')
      INTO batch
      FROM (SELECT * FROM oauth.events e
             WHERE (e.xid, e.event_id) > (standing.delivered_xid, standing.delivered_event_id)
               AND e.xid < settled
             ORDER BY e.xid, e.event_id
             LIMIT least(greatest(coalesce(max_rows, 100), 1), 1000)) e;
    RETURN jsonb_build_object('held', true, 'events', batch);
END
$$;

-- `holder` has delivered everything up to `through` (a position as take_events gave it): the consumer moves
-- there. False when the lease is no longer this holder's (another delivers now) or the position is
-- behind the consumer's.
CREATE FUNCTION oauth.acknowledge_events(
    consumer text,
    holder text,
    through text,
    now timestamptz DEFAULT now()
) RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    through_xid xid8;
    through_id bigint;
BEGIN
    IF through IS NULL OR through !~ '^[0-9]{1,20}:[0-9]{1,18}$' THEN
        PERFORM oauth._raise('invalid_request', 'the position is malformed');
    END IF;
    through_xid := split_part(through, ':', 1)::xid8;
    through_id := split_part(through, ':', 2)::bigint;
    UPDATE oauth.event_consumers c
       SET delivered_xid = through_xid, delivered_event_id = through_id, delivered_at = now
     WHERE c.consumer = acknowledge_events.consumer
       AND c.holder = acknowledge_events.holder AND c.lease_until > now
       AND (through_xid, through_id) > (c.delivered_xid, c.delivered_event_id);
    RETURN FOUND;
END
$$;
