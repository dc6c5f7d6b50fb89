-- outbox-relay migration 0006: partition keys of any length, and expiry that is due.
--
-- 1. The ordering index holds a 64-bit hash of partition_key instead of the key. A B-tree
--    entry must fit a third of a page: a key of more than about 2,700 bytes that does not
--    compress made the producer's INSERT fail with "index row size … exceeds btree …
--    maximum" (aborting the service's transaction). Any key the column takes now works.
--    The relay's statements find a key's rows by its hash and compare the key itself, so
--    two keys with the same hash never order one another; within a key, order is id order
--    as before.
-- 2. A message is due at the earliest of GREATEST(available_at, next_attempt_at) and its
--    expires_at. A message whose due time lay beyond its expiry (available_at 'infinity',
--    a row parked behind a dead message, a retry written after the expiry) was never
--    claimed, so never marked expired. Now it is claimed at its expires_at, found expired
--    and marked so, like any other. The pending index carries expires_at too, so the
--    counts stay index-only.
--
-- Every message keeps its state and its place in the order; no row is changed. Building
-- the two indexes reads the whole table and holds back INSERTs meanwhile (about 0.7 s per
-- 1,000,000 rows of 1 KiB each, see 0003). On a large table, build them beforehand without
-- holding anything back, then run `outbox-relay migrate` (IF NOT EXISTS below then skips
-- the builds):
--   CREATE INDEX CONCURRENTLY messages_pending_key_hash_idx
--       ON outbox.messages (hashtextextended(partition_key, 0), id)
--       WHERE published_at IS NULL AND partition_key IS NOT NULL;
--   CREATE INDEX CONCURRENTLY messages_pending_due_expiry_idx
--       ON outbox.messages (LEAST(GREATEST(available_at, next_attempt_at), expires_at))
--       INCLUDE (available_at, next_attempt_at, expires_at)
--       WHERE published_at IS NULL AND dead_at IS NULL;
-- Relays of the previous version keep working until they are replaced, but without their
-- indexes: roll the new image out right after the migration.

CREATE INDEX IF NOT EXISTS messages_pending_key_hash_idx
    ON messages (hashtextextended(partition_key, 0), id)
    WHERE published_at IS NULL AND partition_key IS NOT NULL;
DROP INDEX messages_pending_key_idx;
ALTER INDEX messages_pending_key_hash_idx RENAME TO messages_pending_key_idx;

CREATE INDEX IF NOT EXISTS messages_pending_due_expiry_idx
    ON messages (LEAST(GREATEST(available_at, next_attempt_at), expires_at))
    INCLUDE (available_at, next_attempt_at, expires_at)
    WHERE published_at IS NULL AND dead_at IS NULL;
DROP INDEX messages_pending_due_idx;
ALTER INDEX messages_pending_due_expiry_idx RENAME TO messages_pending_due_idx;
