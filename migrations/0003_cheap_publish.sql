-- outbox-relay migration 0003: a publish that writes little to the write-ahead log.
--
-- Marking a message published is an UPDATE of its row. Before this migration it wrote a
-- whole new version of the row on another page, with a new entry in every index: more WAL
-- than the producer's INSERT of the same message (README "Performance" has the figures).
-- Two changes make it about a quarter of that INSERT:
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
--
-- Both statements are quick on a table of any size: no row is rewritten, no index built.
-- Every message keeps its state and its place in the order.

ALTER TABLE messages SET (fillfactor = 50);

DROP INDEX messages_published_at_idx;
