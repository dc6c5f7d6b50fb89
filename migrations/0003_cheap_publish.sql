-- outbox-relay migration 0003: a publish that writes little to the write-ahead log.
--
-- Marking a message published is an UPDATE of its row. Before this migration it wrote a
-- whole new version of the row on another page, with a new entry in every index: more WAL
-- than the producer's INSERT of the same message (README "Performance" has the figures).
-- Two changes make it about a quarter of that INSERT (1 and 2), and a third makes the
-- counts cheap (3):
--
-- 1. fillfactor 50: every page keeps half its space free when rows are inserted, so the
--    new version of a row lands on the same page. PostgreSQL then logs only the bytes that
--    changed instead of the whole row. The cost is space: a page holds half the rows it
--    could, so retained published messages take about twice the room. It applies to pages
--    written from now on; pages already full keep their rows as they are.
-- 2. No index on published_at. Each published row added an entry to it. The retention
--    cleanup now walks the primary key in id order up to the first message created after
--    the retention cutoff (a message is published after it is created), and `status`
--    estimates the published count of a large table from the planner's statistics.
-- 3. The pending index also carries the two columns its expression is made of. The counts
--    of due and delayed messages (`status`, the gauges) then read the index alone instead
--    of visiting every pending row's page: for 1,000,000 pending messages 0.07 s instead of
--    1 s. Its entries are 16 bytes longer.
--
-- Every message keeps its state and its place in the order. The first two statements are
-- quick on a table of any size. Building the new index reads the whole table and holds
-- back INSERTs meanwhile (about 0.7 s per 1,000,000 rows of 1 KiB here). On a large table,
-- build it beforehand without holding anything back, then run `outbox-relay migrate`:
--   CREATE INDEX CONCURRENTLY messages_pending_due_incl_idx
--       ON outbox.messages (GREATEST(available_at, next_attempt_at)) INCLUDE (available_at, next_attempt_at)
--       WHERE published_at IS NULL AND dead_at IS NULL;
-- (IF NOT EXISTS below then skips the build.)

ALTER TABLE messages SET (fillfactor = 50);

DROP INDEX messages_published_at_idx;

CREATE INDEX IF NOT EXISTS messages_pending_due_incl_idx
    ON messages (GREATEST(available_at, next_attempt_at)) INCLUDE (available_at, next_attempt_at)
    WHERE published_at IS NULL AND dead_at IS NULL;
DROP INDEX messages_pending_due_idx;
ALTER INDEX messages_pending_due_incl_idx RENAME TO messages_pending_due_idx;
