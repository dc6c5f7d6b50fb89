-- outbox-relay migration 0001: the outbox table.
--
-- Objects are created unqualified, in the first schema of search_path. `outbox-relay
-- migrate` runs this file with `SET LOCAL search_path TO <OUTBOX_SCHEMA>`; to apply it
-- with another tool, run first:
--   CREATE SCHEMA IF NOT EXISTS outbox;
--   SET search_path TO outbox;
-- (`outbox-relay migrate --print` prints exactly that, for the configured schema.)

CREATE TABLE messages (
    -- Relay-owned. Insertion order: per-key ordering (README "Ordering") follows it.
    -- CACHE 1 keeps ids in insertion order across sessions; never raise it.
    id              bigint GENERATED ALWAYS AS IDENTITY (CACHE 1) PRIMARY KEY,

    -- Producer-facing columns: the public contract. Any program that can INSERT a row
    -- has published an event.
    message_id      uuid        NOT NULL DEFAULT gen_random_uuid(),
    exchange        text        NOT NULL DEFAULT '',
    routing_key     text        NOT NULL,
    message_type    text,
    payload         jsonb,
    body            bytea,
    content_type    text        NOT NULL DEFAULT 'application/json',
    headers         jsonb       NOT NULL DEFAULT '{}',
    partition_key   text,
    correlation_id  text,
    available_at    timestamptz NOT NULL DEFAULT now(),

    -- Relay-owned state.
    created_at      timestamptz NOT NULL DEFAULT now(),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,            -- set after a failed attempt (backoff)
    last_error      text,
    published_at    timestamptz,
    dead_at         timestamptz,

    CONSTRAINT messages_message_id_key UNIQUE (message_id),
    CONSTRAINT messages_payload_xor_body CHECK ((payload IS NULL) <> (body IS NULL)),
    CONSTRAINT messages_command_needs_queue CHECK (exchange <> '' OR routing_key <> ''),
    CONSTRAINT messages_headers_is_object CHECK (jsonb_typeof(headers) = 'object'),
    CONSTRAINT messages_content_type_not_empty CHECK (content_type <> ''),
    CONSTRAINT messages_attempts_not_negative CHECK (attempts >= 0)
);

COMMENT ON TABLE messages IS
    'Transactional outbox: rows inserted in a service transaction are published to RabbitMQ by outbox-relay.';

-- A message is due when GREATEST(available_at, next_attempt_at) has passed (GREATEST
-- ignores NULL, so before any failure this is available_at).
-- Serves: the claim (ORDER BY due ... LIMIT n FOR UPDATE SKIP LOCKED), the wake-up's
-- peek, the lag gauge (min(due) of due rows) and the due/delayed counts. Partial, so it
-- only holds pending rows and stays small however many published rows are retained.
-- One column: adding id measurably slowed every producer's INSERT (npm run bench); rows
-- of equal due come out in heap order, and per-key order never relies on claim order.
CREATE INDEX messages_pending_due_idx
    ON messages (GREATEST(available_at, next_attempt_at))
    WHERE published_at IS NULL AND dead_at IS NULL;

-- Serves: the retention cleanup (published_at < cutoff, oldest first) and the
-- published count of `outbox-relay status`.
CREATE INDEX messages_published_at_idx
    ON messages (published_at)
    WHERE published_at IS NOT NULL;

-- Serves: `outbox-relay dead list` (newest first), the dead count and gauge.
CREATE INDEX messages_dead_at_idx
    ON messages (dead_at)
    WHERE dead_at IS NOT NULL;

-- A queue table churns: every row is inserted, updated once and deleted. Vacuum it
-- after 1% of its rows changed instead of the default 20%, so dead tuples do not pile
-- up in front of the claim's index scan.
ALTER TABLE messages SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_insert_scale_factor = 0.01,
    autovacuum_analyze_scale_factor = 0.02
);

-- Wake-up. The relay peeks for due messages (one index probe) every 3 ms while
-- messages flow and every OUTBOX_POLL_INTERVAL_MS when idle, and LISTENs on the channel
-- '<schema>.messages'. No trigger is installed by default: a NOTIFY at commit takes a
-- database-wide lock that serialises every notifying producer (measured: a third of the
-- producer's throughput, see the README's Performance section). This function is for
-- the optional trigger in migrations/optional/notify-on-insert.sql, which wakes the relay
-- at the commit of every inserting transaction. pg_notify lives in pg_catalog, so the
-- function needs no search_path of its own.
CREATE FUNCTION notify_messages_inserted() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    PERFORM pg_notify(TG_TABLE_SCHEMA || '.messages', '');
    RETURN NULL;
END;
$$;
