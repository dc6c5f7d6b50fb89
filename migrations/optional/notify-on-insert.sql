-- Optional: wake the relay at the commit of every transaction that inserts messages,
-- instead of waiting for its next peek (at most OUTBOX_POLL_INTERVAL_MS when the outbox
-- has been idle; about 3 ms while messages flow).
--
-- Worth it for a service with rare events that wants each one on the broker within
-- milliseconds after a quiet period. It costs every inserting transaction a NOTIFY at
-- commit, which PostgreSQL serialises database-wide: measured, producer throughput drops
-- by about a third under concurrent load (README, Performance). Not applied by
-- `outbox-relay migrate`; run it yourself, replacing "outbox" with your OUTBOX_SCHEMA:
--   psql -v ON_ERROR_STOP=1 -f migrations/optional/notify-on-insert.sql
-- Remove it with: DROP TRIGGER messages_notify_inserted ON outbox.messages;
CREATE TRIGGER messages_notify_inserted
    AFTER INSERT ON outbox.messages
    FOR EACH STATEMENT
    EXECUTE FUNCTION outbox.notify_messages_inserted();
