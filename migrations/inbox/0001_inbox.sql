-- outbox-relay inbox migration 0001: the idempotent consumer's inbox, in the
-- CONSUMING service's database. Apply with `outbox-relay migrate --inbox` (ledger
-- <schema>.inbox_schema_migrations), or after
--   CREATE SCHEMA IF NOT EXISTS outbox;
--   SET search_path TO outbox;
-- with any other tool (`outbox-relay migrate --inbox --print` prints exactly that).

-- One row per message a consumer has processed, written in the same transaction as
-- the handler's own changes: a redelivered message finds its row and is skipped.
CREATE TABLE inbox (
    consumer     text        NOT NULL,  -- the consumer's name (default: its queue)
    message_id   text        NOT NULL,  -- AMQP message-id
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, message_id)
);

-- Serves: the inbox retention cleanup (processed_at < cutoff).
CREATE INDEX inbox_processed_at_idx ON inbox (processed_at);

ALTER TABLE inbox SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_insert_scale_factor = 0.02);
