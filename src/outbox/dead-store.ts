import type { ClientBase, Pool } from 'pg';
import { qualified } from '../db/sql';
import { DEAD, keyHash, PENDING, UNPARKED } from './sql';

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

/** What `dead list` narrows the dead messages to; each part given must match (AND). */
export interface DeadFilter {
  readonly messageType?: string;
  readonly exchange?: string;
  readonly partitionKey?: string;
  readonly routingKey?: string;
  /** dead_at at or after this instant, as PostgreSQL reads a timestamptz (see `instantProblem`). */
  readonly since?: string;
}

/** The statements of `dead list`, `dead retry` and `dead discard` against `<schema>.messages`. */
export class DeadStore {
  private readonly table: string;

  constructor(readonly schema: string) {
    this.table = qualified(schema, 'messages');
  }

  /**
   * Dead messages, newest first, narrowed by `filter` (its parts combine). Expired
   * messages also carry dead_at but are not dead: never listed. A range scan of
   * messages_dead_at_idx from the newest, the filters checked on each row.
   */
  async listDead(db: Pool | ClientBase, filter: DeadFilter, limit: number): Promise<DeadMessage[]> {
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
         FROM ${this.table}
        WHERE ${DEAD}
          AND ($2::text IS NULL OR message_type = $2)
          AND ($3::text IS NULL OR exchange = $3)
          AND ($4::text IS NULL OR partition_key = $4)
          AND ($5::text IS NULL OR routing_key = $5)
          AND ($6::timestamptz IS NULL OR dead_at >= $6::timestamptz)
        ORDER BY dead_at DESC, id DESC LIMIT $1`,
      [
        limit,
        filter.messageType ?? null,
        filter.exchange ?? null,
        filter.partitionKey ?? null,
        filter.routingKey ?? null,
        filter.since ?? null,
      ],
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

  /**
   * Why PostgreSQL does not read `text` as a timestamptz (ISO 8601, `now`, `infinity`, …,
   * in the session's time zone when it names none; a date that does not exist is
   * refused), or undefined when it does. Other errors than a bad value propagate.
   */
  async instantProblem(db: Pool | ClientBase, text: string): Promise<string | undefined> {
    try {
      await db.query('SELECT $1::timestamptz', [text]);
      return undefined;
    } catch (err: unknown) {
      // Class 22, data exception: invalid_datetime_format, datetime_field_overflow, an unknown time zone, …
      const code = (err as { code?: unknown }).code;
      if (typeof code === 'string' && code.startsWith('22')) return (err as Error).message.replace(/: ".*"$/s, '');
      throw err;
    }
  }

  /**
   * Makes dead messages due now with attempts reset; `ids` undefined = all. Expired
   * messages are left alone. Returns the ids changed.
   */
  async retryDead(db: Pool | ClientBase, ids: readonly string[] | undefined): Promise<string[]> {
    const { rows } = await db.query<{ message_id: string }>(
      `WITH retried AS (
         UPDATE ${this.table} SET dead_at = NULL, attempts = 0, next_attempt_at = now()
          WHERE ${DEAD} AND ($1::uuid[] IS NULL OR message_id = ANY($1::uuid[]))
          RETURNING message_id, partition_key)
       , ${this.unparkBehind('retried')}
       SELECT message_id FROM retried`,
      [ids ?? null],
    );
    return rows.map((r) => r.message_id);
  }

  /** Deletes dead messages; `ids` undefined = all. Expired messages are left alone. Returns the ids deleted. */
  async discardDead(db: Pool | ClientBase, ids: readonly string[] | undefined): Promise<string[]> {
    const { rows } = await db.query<{ message_id: string }>(
      `WITH discarded AS (
         DELETE FROM ${this.table}
          WHERE ${DEAD} AND ($1::uuid[] IS NULL OR message_id = ANY($1::uuid[]))
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
          WHERE (${keyHash('partition_key')}, partition_key) IN
                (SELECT ${keyHash('partition_key')}, partition_key FROM ${source} WHERE partition_key IS NOT NULL)
            AND ${PENDING} AND next_attempt_at = 'infinity')`;
  }
}
