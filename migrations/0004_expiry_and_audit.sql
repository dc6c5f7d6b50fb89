-- outbox-relay migration 0004: a deliver-by time for messages, and an audit trail of what
-- operators did to them.
--
-- 1. expires_at (producer-facing, optional): a message is never published after this
--    instant. A message still pending then becomes expired: it is kept (for `inspect`,
--    `status` and the retention) and never sent. While it is sent, its AMQP expiration is
--    the time it has left, so a broker queue drops it too once that time is up.
-- 2. expired_at (relay-owned): when the relay found the message expired. An expired
--    message is no longer pending, so it also carries dead_at (the pending indexes then
--    pass over it, unchanged); what tells it apart from a dead message is expired_at. It
--    never holds its key under OUTBOX_ORDERING_ON_DEAD=block, `dead retry` and
--    `dead discard` leave it alone, and the retention cleanup deletes it like a published
--    message once it is older than OUTBOX_RETENTION.
-- 3. audit: one row per operator action that changes messages (`dead retry`,
--    `dead discard`, `replay`), written in the same transaction as the change, with the
--    database role that made it. Cleaned up with the retention.
--
-- Adding nullable columns without a default changes no row: the first two statements are
-- quick on a table of any size. Every message keeps its state and its place in the order.

ALTER TABLE messages ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS expired_at timestamptz;
COMMENT ON COLUMN messages.expires_at IS
    'Not published after this instant (null: no limit). Set by the producer.';
COMMENT ON COLUMN messages.expired_at IS
    'When the relay found the message expired (it also sets dead_at). Relay-owned.';

CREATE TABLE audit (
    id          bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    -- The database role the command ran as.
    role        text        NOT NULL DEFAULT current_user,
    -- 'dead retry', 'dead discard' or 'replay'.
    command     text        NOT NULL,
    -- The command's arguments as given: ids, --all, filters, a time range.
    arguments   jsonb       NOT NULL DEFAULT '{}',
    -- How many messages the command changed or published again.
    count       bigint      NOT NULL DEFAULT 0,
    -- Which messages: their message_ids (for a replay of a range, the first ones and the
    -- range in arguments).
    message_ids uuid[]      NOT NULL DEFAULT '{}',
    -- A replay: the id of the last message published again and confirmed, so that the
    -- same replay run again goes on after it; finished_at once every message was.
    replay_cursor bigint,
    finished_at timestamptz,
    CONSTRAINT audit_command_known CHECK (command IN ('dead retry', 'dead discard', 'replay')),
    CONSTRAINT audit_count_not_negative CHECK (count >= 0)
);
COMMENT ON TABLE audit IS
    'Operator actions on outbox messages (dead retry, dead discard, replay), written by outbox-relay.';
CREATE INDEX audit_at_idx ON audit (at);
