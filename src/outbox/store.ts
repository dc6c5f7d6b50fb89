import { createHash } from 'node:crypto';
import type { ClientBase, Pool } from 'pg';
import { qualified } from '../db/sql';

/** A claimed row, mapped once from snake_case into what the publisher needs. */
export interface OutboxMessage {
  readonly id: string;
  readonly messageId: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly messageType: string | null;
  /** The bytes to publish: `payload::text` for JSON rows (no re-serialisation), `body` otherwise. */
  readonly content: Buffer;
  readonly contentType: string;
  readonly headers: Readonly<Record<string, unknown>>;
  readonly partitionKey: string | null;
  readonly correlationId: string | null;
  readonly createdAt: Date;
  /** Not published before this instant (delayed delivery). */
  readonly availableAt: Date;
  /** Failed attempts so far. */
  readonly attempts: number;
}

interface ClaimedRow {
  id: string;
  message_id: string;
  exchange: string;
  routing_key: string;
  message_type: string | null;
  payload_text: string | null;
  body: Buffer | null;
  content_type: string;
  headers: Record<string, unknown>;
  partition_key: string | null;
  correlation_id: string | null;
  created_at: Date;
  available_at: Date;
  attempts: number;
}

function toMessage(row: ClaimedRow): OutboxMessage {
  return {
    id: row.id,
    messageId: row.message_id,
    exchange: row.exchange,
    routingKey: row.routing_key,
    messageType: row.message_type,
    content: row.body ?? Buffer.from(row.payload_text ?? 'null', 'utf8'),
    contentType: row.content_type,
    headers: row.headers,
    partitionKey: row.partition_key,
    correlationId: row.correlation_id,
    createdAt: row.created_at,
    availableAt: row.available_at,
    attempts: row.attempts,
  };
}

/** One unpublished row of a key, as the ordering check reads it. */
export interface KeyRow {
  readonly key: string;
  readonly id: string;
  /** Due in the future (available_at or a retry not reached). */
  readonly waiting: boolean;
  /** When it is due. */
  readonly due: Date;
  readonly dead: boolean;
}

/** How long a row that must wait is parked (its next_attempt_at pushed). */
export type ParkUntil = { readonly at: Date } | { readonly inMs: number } | { readonly forever: true };

export interface ParkOrder {
  readonly id: string;
  readonly until: ParkUntil;
}

/** A failed attempt to record: the next attempt's delay, or dead. */
export interface FailedAttempt {
  readonly id: string;
  readonly error: string;
  readonly retryInMs: number;
  readonly dead: boolean;
}

/** Counts for `status` and the gauges of §7. */
export interface OutboxStats {
  readonly due: number;
  readonly delayed: number;
  readonly dead: number;
  readonly lagSeconds: number;
  /** Keys held by a dead message (counted only when dead messages hold their key). */
  readonly blockedKeys: number;
}

/** A dead message as `dead list` shows it. */
export interface DeadMessage {
  readonly messageId: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly messageType: string | null;
  readonly partitionKey: string | null;
  readonly attempts: number;
  readonly lastError: string | null;
  readonly createdAt: Date;
  readonly deadAt: Date;
}

const DUE = 'GREATEST(available_at, next_attempt_at)';
/** next_attempt_at of a row released from parking: its own retry time is lost, so now. */
const UNPARKED = 'CASE WHEN attempts = 0 THEN NULL ELSE now() END';
const PENDING = 'published_at IS NULL AND dead_at IS NULL';

/**
 * Every SQL statement of the relay and the CLI against `<schema>.messages`. Values are
 * always bound parameters; the schema is an escaped identifier. Statements that run
 * per batch are named, so node-postgres prepares them once per connection.
 */
export class OutboxStore {
  private readonly table: string;
  private readonly claimSql: string;
  private readonly markPublishedSql: string;
  private readonly deletePublishedSql: string;
  private readonly markFailedSql: string;
  private readonly keyRowsSql: string;
  private readonly parkSql: string;
  private readonly peekSql: string;
  private readonly names: {
    claim: string;
    markPublished: string;
    deletePublished: string;
    markFailed: string;
    keyRows: string;
    park: string;
    peek: string;
  };

  constructor(readonly schema: string) {
    this.table = qualified(schema, 'messages');
    // The claim is one statement: the partial index messages_pending_due_idx yields due
    // rows in due order (ties in heap order, roughly insertion order), LIMIT stops the scan, SKIP LOCKED passes over the rows
    // another batch or replica holds. Rows a concurrent batch has just marked are
    // re-checked by PostgreSQL against the WHERE clause after locking, so they drop out.
    this.claimSql = `SELECT id, message_id, exchange, routing_key, message_type, payload::text AS payload_text, body,
       content_type, headers, partition_key, correlation_id, created_at, available_at, attempts
  FROM ${this.table}
 WHERE ${PENDING} AND ${DUE} <= now()
 ORDER BY ${DUE}
 LIMIT $1
   FOR UPDATE SKIP LOCKED`;
    this.markPublishedSql = `UPDATE ${this.table} SET published_at = now() WHERE id = ANY($1::bigint[])`;
    this.deletePublishedSql = `DELETE FROM ${this.table} WHERE id = ANY($1::bigint[])`;
    this.markFailedSql = `UPDATE ${this.table} AS m
   SET attempts = m.attempts + 1,
       last_error = f.error,
       next_attempt_at = now() + f.retry_in_ms * interval '1 millisecond',
       dead_at = CASE WHEN f.dead THEN now() END
  FROM unnest($1::bigint[], $2::text[], $3::double precision[], $4::boolean[]) AS f(id, error, retry_in_ms, dead)
 WHERE m.id = f.id`;
    this.keyRowsSql = `SELECT k.key, p.id, p.due > now() AS waiting, p.due, p.dead
  FROM unnest($1::text[], $2::bigint[], $3::int[]) AS k(key, max_id, n)
  CROSS JOIN LATERAL (
        SELECT id, ${DUE} AS due, dead_at IS NOT NULL AS dead
          FROM ${this.table}
         WHERE partition_key = k.key AND published_at IS NULL AND id <= k.max_id AND ($4::boolean OR dead_at IS NULL)
         ORDER BY id
         LIMIT k.n) AS p`;
    // GREATEST: parking never brings a row's own retry forward.
    this.parkSql = `UPDATE ${this.table} AS m
   SET next_attempt_at = CASE
         WHEN p.forever THEN 'infinity'::timestamptz
         ELSE GREATEST(m.next_attempt_at, COALESCE(p.at, now() + p.in_ms * interval '1 millisecond'))
       END
  FROM unnest($1::bigint[], $2::timestamptz[], $3::double precision[], $4::boolean[]) AS p(id, at, in_ms, forever)
 WHERE m.id = p.id`;
    // Prepared-statement names are per connection; the suffix keeps two schemas used
    // over one connection apart while staying under PostgreSQL's 63-byte names.
    const suffix = createHash('sha1').update(schema).digest('hex').slice(0, 12);
    this.names = {
      claim: `outbox_claim_${suffix}`,
      markPublished: `outbox_mark_published_${suffix}`,
      deletePublished: `outbox_delete_published_${suffix}`,
      markFailed: `outbox_mark_failed_${suffix}`,
      keyRows: `outbox_key_rows_${suffix}`,
      park: `outbox_park_${suffix}`,
      peek: `outbox_peek_${suffix}`,
    };
    this.peekSql = `SELECT EXISTS (SELECT 1 FROM ${this.table} WHERE ${PENDING} AND ${DUE} <= now()) AS due`;
  }

  /** Whether any message is due: one index probe, no lock, no transaction (the wake-up's poll). */
  async peek(db: Pool | ClientBase): Promise<boolean> {
    const { rows } = await db.query<{ due: boolean }>({ name: this.names.peek, text: this.peekSql });
    return rows[0]?.due ?? false;
  }

  /** Locks and returns up to `limit` due messages; the caller's transaction holds the locks. */
  async claim(client: ClientBase, limit: number): Promise<OutboxMessage[]> {
    const { rows } = await client.query<ClaimedRow>({ name: this.names.claim, text: this.claimSql, values: [limit] });
    return rows.map(toMessage);
  }

  /**
   * For each key: its unpublished rows in id order up to `maxId`, at most `count + 1`
   * (one index range scan per key on messages_pending_key_idx, bounded by the batch).
   * Dead rows count only when `deadHoldsKey` (OUTBOX_ORDERING_ON_DEAD=block).
   */
  async keyRows(client: ClientBase, keys: readonly { key: string; maxId: string; count: number }[], deadHoldsKey: boolean): Promise<KeyRow[]> {
    if (keys.length === 0) return [];
    const { rows } = await client.query<{ key: string; id: string; waiting: boolean; due: Date; dead: boolean }>({
      name: this.names.keyRows,
      text: this.keyRowsSql,
      values: [keys.map((k) => k.key), keys.map((k) => k.maxId), keys.map((k) => k.count + 1), deadHoldsKey],
    });
    return rows;
  }

  /** Pushes the next attempt of rows that must wait behind an earlier message of their key. */
  async park(client: ClientBase, orders: readonly ParkOrder[]): Promise<void> {
    if (orders.length === 0) return;
    await client.query({
      name: this.names.park,
      text: this.parkSql,
      values: [
        orders.map((o) => o.id),
        orders.map((o) => ('at' in o.until ? o.until.at.toISOString() : null)),
        orders.map((o) => ('inMs' in o.until ? o.until.inMs : null)),
        orders.map((o) => 'forever' in o.until),
      ],
    });
  }

  /**
   * Releases rows parked behind a dead message (OUTBOX_ORDERING_ON_DEAD=block): of the
   * given keys, or every such row when `keys` is undefined (a relay starting in skip
   * mode). Returns how many were released.
   */
  async unpark(db: Pool | ClientBase, keys?: readonly string[]): Promise<number> {
    const { rowCount } = await db.query(
      `UPDATE ${this.table} SET next_attempt_at = ${UNPARKED}
        WHERE ${PENDING} AND ${DUE} = 'infinity' AND next_attempt_at = 'infinity'
          AND ($1::text[] IS NULL OR partition_key = ANY($1::text[]))`,
      [keys ?? null],
    );
    return rowCount ?? 0;
  }

  /** Marks confirmed messages published, or deletes them when retention is zero. */
  async markPublished(client: ClientBase, ids: readonly string[], deleteNow: boolean): Promise<void> {
    if (ids.length === 0) return;
    const name = deleteNow ? this.names.deletePublished : this.names.markPublished;
    const text = deleteNow ? this.deletePublishedSql : this.markPublishedSql;
    await client.query({ name, text, values: [ids] });
  }

  /** Records failed attempts: attempts + 1, the error, the next attempt time or dead. */
  async markFailed(client: ClientBase, failures: readonly FailedAttempt[]): Promise<void> {
    if (failures.length === 0) return;
    await client.query({
      name: this.names.markFailed,
      text: this.markFailedSql,
      values: [failures.map((f) => f.id), failures.map((f) => f.error.slice(0, 2000)), failures.map((f) => f.retryInMs), failures.map((f) => f.dead)],
    });
  }

  /**
   * Pending counts, dead count and lag. Every part is answered from a partial index;
   * callers keep it off the scrape path (see StatsPoller).
   */
  async stats(db: Pool | ClientBase, deadHoldsKey = false): Promise<OutboxStats> {
    const { rows } = await db.query<{ due: string; delayed: string; dead: string; lag_seconds: number | null; blocked_keys: string }>(
      `SELECT (SELECT count(*) FROM ${this.table} WHERE ${PENDING} AND ${DUE} <= now()) AS due,
              (SELECT count(*) FROM ${this.table} WHERE ${PENDING} AND ${DUE} > now()) AS delayed,
              (SELECT count(*) FROM ${this.table} WHERE dead_at IS NOT NULL) AS dead,
              (SELECT EXTRACT(EPOCH FROM now() - ${DUE})::float8 FROM ${this.table}
                WHERE ${PENDING} AND ${DUE} <= now() ORDER BY ${DUE} LIMIT 1) AS lag_seconds,
              (SELECT count(DISTINCT partition_key) FROM ${this.table}
                WHERE $1::boolean AND dead_at IS NOT NULL AND partition_key IS NOT NULL) AS blocked_keys`,
      [deadHoldsKey],
    );
    const row = rows[0];
    return {
      due: Number(row?.due ?? 0),
      delayed: Number(row?.delayed ?? 0),
      dead: Number(row?.dead ?? 0),
      lagSeconds: Math.max(0, row?.lag_seconds ?? 0),
      blockedKeys: Number(row?.blocked_keys ?? 0),
    };
  }

  /** Published count and the oldest pending message, for `status`. */
  async statusDetails(db: Pool | ClientBase): Promise<{ published: number; oldestPending: { messageId: string; createdAt: Date; dueAt: Date } | null }> {
    const published = await db.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.table} WHERE published_at IS NOT NULL`);
    const oldest = await db.query<{ message_id: string; created_at: Date; due_at: Date }>(
      `SELECT message_id, created_at, ${DUE} AS due_at FROM ${this.table} WHERE ${PENDING} ORDER BY ${DUE} LIMIT 1`,
    );
    const row = oldest.rows[0];
    return {
      published: Number(published.rows[0]?.n ?? 0),
      oldestPending: row ? { messageId: row.message_id, createdAt: row.created_at, dueAt: row.due_at } : null,
    };
  }

  /** Dead messages, newest first. */
  async listDead(db: Pool | ClientBase, limit: number): Promise<DeadMessage[]> {
    const { rows } = await db.query<{
      message_id: string;
      exchange: string;
      routing_key: string;
      message_type: string | null;
      partition_key: string | null;
      attempts: number;
      last_error: string | null;
      created_at: Date;
      dead_at: Date;
    }>(
      `SELECT message_id, exchange, routing_key, message_type, partition_key, attempts, last_error, created_at, dead_at
         FROM ${this.table} WHERE dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT $1`,
      [limit],
    );
    return rows.map((r) => ({
      messageId: r.message_id,
      exchange: r.exchange,
      routingKey: r.routing_key,
      messageType: r.message_type,
      partitionKey: r.partition_key,
      attempts: r.attempts,
      lastError: r.last_error,
      createdAt: r.created_at,
      deadAt: r.dead_at,
    }));
  }

  /** Makes dead messages due now with attempts reset; `ids` undefined = all. Returns the ids changed. */
  async retryDead(db: Pool | ClientBase, ids: readonly string[] | undefined): Promise<string[]> {
    const { rows } = await db.query<{ message_id: string }>(
      `WITH retried AS (
         UPDATE ${this.table} SET dead_at = NULL, attempts = 0, next_attempt_at = now()
          WHERE dead_at IS NOT NULL AND ($1::uuid[] IS NULL OR message_id = ANY($1::uuid[]))
          RETURNING message_id, partition_key)
       , ${this.unparkBehind('retried')}
       SELECT message_id FROM retried`,
      [ids ?? null],
    );
    return rows.map((r) => r.message_id);
  }

  /** Deletes dead messages; `ids` undefined = all. Returns the ids deleted. */
  async discardDead(db: Pool | ClientBase, ids: readonly string[] | undefined): Promise<string[]> {
    const { rows } = await db.query<{ message_id: string }>(
      `WITH discarded AS (
         DELETE FROM ${this.table} WHERE dead_at IS NOT NULL AND ($1::uuid[] IS NULL OR message_id = ANY($1::uuid[]))
         RETURNING message_id, partition_key)
       , ${this.unparkBehind('discarded')}
       SELECT message_id FROM discarded`,
      [ids ?? null],
    );
    return rows.map((r) => r.message_id);
  }

  /** A CTE releasing the rows parked behind the dead messages of CTE `source`. */
  private unparkBehind(source: string): string {
    return `unparked AS (
         UPDATE ${this.table} SET next_attempt_at = ${UNPARKED}
          WHERE partition_key IN (SELECT partition_key FROM ${source} WHERE partition_key IS NOT NULL)
            AND ${PENDING} AND next_attempt_at = 'infinity')`;
  }

  /**
   * Deletes published messages older than `retentionMs`, `batchSize` rows per
   * statement (each its own short transaction), until none is left. Dead and pending
   * messages are never touched. Returns how many were deleted.
   */
  async deletePublishedBefore(db: Pool, retentionMs: number, batchSize: number, shouldStop: () => boolean = () => false): Promise<number> {
    let total = 0;
    for (;;) {
      const { rowCount } = await db.query(
        `DELETE FROM ${this.table} WHERE id IN (
           SELECT id FROM ${this.table}
            WHERE published_at IS NOT NULL AND published_at < now() - $1 * interval '1 millisecond'
            ORDER BY published_at LIMIT $2
              FOR UPDATE SKIP LOCKED)`,
        [retentionMs, batchSize],
      );
      total += rowCount ?? 0;
      if ((rowCount ?? 0) < batchSize || shouldStop()) return total;
    }
  }

  /** Distinct exchanges named by pending messages, for `check`. */
  async pendingExchanges(db: Pool | ClientBase): Promise<string[]> {
    const { rows } = await db.query<{ exchange: string }>(`SELECT DISTINCT exchange FROM ${this.table} WHERE ${PENDING} AND exchange <> ''`);
    return rows.map((r) => r.exchange);
  }
}
