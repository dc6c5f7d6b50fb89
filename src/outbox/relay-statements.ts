import { qualified } from '../db/sql';
import { DUE, ENDED, holdsKey, keyHash, noLaterThanExpiry, PENDING, sameKey } from './sql';

/**
 * A hot statement. Unnamed on purpose: a named prepared statement lives in one server
 * session, and behind a transaction-pooling PgBouncer the next transaction may run on
 * another (PgBouncer 1.18 answers `prepared statement … does not exist`). PostgreSQL
 * plans each one anew; the cost is in docs/performance.md.
 */
export interface RelayStatement {
  readonly text: string;
}

/** The statements that run on every batch or peek, by what they do. */
export type RelayStatementKey =
  'peek' | 'claim' | 'claimIds' | 'keyRows' | 'park' | 'markPublished' | 'deletePublished' | 'markFailed' | 'markExpired';

/**
 * The claimed columns: headers::text is parsed without loss by outbox/rows.ts
 * (node-postgres would round big integers); expires_in_ms is the time left before
 * expires_at as the database's clock sees it (null: no limit; -1 for '-infinity'), so
 * the relay's own clock only measures the few milliseconds to the send.
 */
const CLAIMED = `id, message_id, exchange, routing_key, message_type, payload::text AS payload_text, body,
       content_type, headers::text AS headers_text, partition_key, correlation_id, created_at, available_at, attempts,
       CASE WHEN expires_at IS NULL OR expires_at = 'infinity' THEN NULL
            WHEN expires_at = '-infinity' THEN -1
            ELSE EXTRACT(EPOCH FROM expires_at - clock_timestamp()) * 1000 END::float8 AS expires_in_ms`;

/** The columns of CLAIMED by name, as `withinBytes` selects them from the locking query. */
const CLAIMED_NAMES = `id, message_id, exchange, routing_key, message_type, payload_text, body, content_type, headers_text,
       partition_key, correlation_id, created_at, available_at, attempts, expires_in_ms`;

/**
 * The rows a locking SELECT of CLAIMED yields, in its order, while their bytes (body and
 * headers text, as the relay holds them: claim_bytes) add up to at most `budget` bytes —
 * the first row whatever its size. The count of rows past the budget is a window
 * function PostgreSQL (15 on) stops on as soon as it is 1 (a "run condition": count(*)
 * qualifies, count(expression) does not), so the locking query is read no further than
 * the first row over the budget and a row or two of read-ahead, which stay locked
 * unclaimed until the commit. Without that stop the locking query's own LIMIT still
 * bounds what is read and locked. The windows have no ORDER BY: the rows are summed in
 * the order they are locked (a sort after FOR UPDATE would read every due row first).
 */
function withinBytes(locking: string, budget: string): string {
  return `SELECT ${CLAIMED_NAMES}, bytes AS claim_bytes
  FROM (SELECT s.*, count(*) FILTER (WHERE s.total_bytes > ${budget} AND s.total_bytes > s.bytes)
                      OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS over_budget
          FROM (SELECT b.*, sum(b.bytes) OVER (ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total_bytes
                  FROM (SELECT l.*, coalesce(octet_length(l.payload_text), octet_length(l.body))::bigint + octet_length(l.headers_text) AS bytes
                          FROM (${locking}) AS l) AS b) AS s) AS c
 WHERE over_budget < 1`;
}

function texts(table: string): Record<RelayStatementKey, string> {
  return {
    // One index probe, no lock, no transaction: the wake-up's poll.
    peek: `SELECT EXISTS (SELECT 1 FROM ${table} WHERE ${PENDING} AND ${DUE} <= now()) AS due`,
    // The claim is one statement: the partial index messages_pending_due_idx yields due
    // rows in due order (ties in heap order, roughly insertion order), LIMIT stops the
    // scan, SKIP LOCKED passes over the rows another batch or replica holds. Rows a
    // concurrent batch has just marked are re-checked by PostgreSQL against the WHERE
    // clause after locking, so they drop out. At most $2 bytes of messages ($1 rows).
    claim: withinBytes(
      `SELECT ${CLAIMED}
  FROM ${table}
 WHERE ${PENDING} AND ${DUE} <= now()
 ORDER BY ${DUE}
 LIMIT $1
   FOR UPDATE SKIP LOCKED`,
      '$2::bigint',
    ),
    // The blockers of held rows (relay/ordering.ts dueBlockers), by primary key, oldest
    // first, at most $2 bytes (the first whatever its size).
    claimIds: withinBytes(
      `SELECT ${CLAIMED}
  FROM ${table}
 WHERE id = ANY($1::bigint[]) AND ${PENDING} AND ${DUE} <= now()
 ORDER BY id
   FOR UPDATE SKIP LOCKED`,
      '$2::bigint',
    ),
    // For each key: its unpublished rows in id order up to the batch's last one (one
    // index range scan per key on messages_pending_key_idx, by the key's hash, the key
    // itself compared on each row, bounded by the batch). A dead row holds its key only
    // under OUTBOX_ORDERING_ON_DEAD=block ($4), an expired one never.
    keyRows: `SELECT k.key, p.id, p.due > now() AS waiting, p.due, p.dead
  FROM unnest($1::text[], $2::bigint[], $3::int[]) AS k(key, max_id, n)
  CROSS JOIN LATERAL (
        SELECT id, ${DUE} AS due, ${ENDED} AS dead
          FROM ${table}
         WHERE ${keyHash('partition_key')} = ${keyHash('k.key')} AND ${sameKey('k.key')}
           AND published_at IS NULL AND id <= k.max_id
           AND ${holdsKey('$4::boolean')}
         ORDER BY id
         LIMIT k.n) AS p`,
    // GREATEST: parking never brings a row's own retry forward.
    park: `UPDATE ${table} AS m
   SET next_attempt_at = CASE
         WHEN p.forever THEN 'infinity'::timestamptz
         ELSE GREATEST(m.next_attempt_at, COALESCE(p.at, now() + p.in_ms * interval '1 millisecond'))
       END
  FROM unnest($1::bigint[], $2::timestamptz[], $3::double precision[], $4::boolean[]) AS p(id, at, in_ms, forever)
 WHERE m.id = p.id`,
    markPublished: `UPDATE ${table} SET published_at = now() WHERE id = ANY($1::bigint[])`,
    deletePublished: `DELETE FROM ${table} WHERE id = ANY($1::bigint[])`,
    // A retry due after the message expires is due at its expiry instead: it is then
    // claimed, found expired and no longer holds its key.
    markFailed: `UPDATE ${table} AS m
   SET attempts = m.attempts + 1,
       last_error = f.error,
       next_attempt_at = ${noLaterThanExpiry("now() + f.retry_in_ms * interval '1 millisecond'", 'm.')},
       dead_at = CASE WHEN f.dead THEN now() END
  FROM unnest($1::bigint[], $2::text[], $3::double precision[], $4::boolean[]) AS f(id, error, retry_in_ms, dead)
 WHERE m.id = f.id AND ${PENDING}`,
    // Expired: no longer pending (dead_at, so the pending indexes pass over it), told
    // apart from dead by expired_at; never published, its attempts unchanged. The clock,
    // not the claim's now(): a message that expired while its batch ran was found expired
    // after its expires_at, never before.
    markExpired: `UPDATE ${table}
   SET expired_at = clock_timestamp(), dead_at = clock_timestamp(),
       last_error = 'expired at ' || expires_at::text || ' before it could be published'
 WHERE id = ANY($1::bigint[]) AND ${PENDING}`,
  };
}

/** The relay's hot statements for one schema. */
export function relayStatements(schema: string): Readonly<Record<RelayStatementKey, RelayStatement>> {
  const entries = Object.entries(texts(qualified(schema, 'messages'))).map(([key, text]) => [key, { text }]);
  return Object.freeze(Object.fromEntries(entries) as Record<RelayStatementKey, RelayStatement>);
}
