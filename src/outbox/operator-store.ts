import type { ClientBase, Pool } from 'pg';
import { qualified } from '../db/sql';
import type { OutboxStats } from '../domain/message';
import { DUE, PENDING, UNPARKED } from './sql';

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

/**
 * The statements of the CLI and the gauges against `<schema>.messages`: counts, dead
 * messages, operator actions. None runs on the relay's hot path.
 */
export class OperatorStore {
  private readonly table: string;

  constructor(readonly schema: string) {
    this.table = qualified(schema, 'messages');
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
  async statusDetails(
    db: Pool | ClientBase,
  ): Promise<{ published: number; oldestPending: { messageId: string; createdAt: Date; dueAt: Date } | null }> {
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

  /** Distinct exchanges named by pending messages, for `check`. */
  async pendingExchanges(db: Pool | ClientBase): Promise<string[]> {
    const { rows } = await db.query<{ exchange: string }>(
      `SELECT DISTINCT exchange FROM ${this.table} WHERE ${PENDING} AND exchange <> ''`,
    );
    return rows.map((r) => r.exchange);
  }
}
