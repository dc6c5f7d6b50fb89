-- outbox-relay migration 0002: per-key ordering (README "Ordering").
--
-- Serves: the ordering check of every claim that holds keyed messages — for each key in
-- the batch, its unpublished rows in id (insertion) order, up to the batch's last row of
-- that key (LIMIT count + 1): an index range scan bounded by the batch, never by the
-- key's backlog. Dead rows stay in it: under OUTBOX_ORDERING_ON_DEAD=block a dead
-- message still holds its key.
CREATE INDEX messages_pending_key_idx
    ON messages (partition_key, id)
    WHERE published_at IS NULL AND partition_key IS NOT NULL;
