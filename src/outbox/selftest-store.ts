import type { Pool } from 'pg';
import { qualified } from '../db/sql';
import { withPoolTransaction } from '../db/transaction';
import { ENDED } from './sql';

/** The canary message `outbox-relay selftest` writes, in the producer's columns. */
export interface SelftestRow {
  readonly messageId: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly messageType: string;
  readonly payload: Readonly<Record<string, string | boolean>>;
  readonly headers: Readonly<Record<string, string | boolean>>;
  readonly correlationId: string;
  /**
   * Sets `expires_at` this far ahead (ms): should the clean-up fail to delete the row, a
   * relay lets it expire instead of retrying it against a deleted exchange until it is dead.
   */
  readonly expiresInMs: number;
}

/** Where the canary row stands, as the self-test polls it. */
export interface SelftestState {
  /** False once deleted (a relay with OUTBOX_RETENTION=0 deletes what it publishes). */
  readonly exists: boolean;
  readonly published: boolean;
  /** Dead or expired: no relay will publish it any more. */
  readonly finished: boolean;
  readonly attempts: number;
  readonly lastError: string | null;
}

/** Longest wait for a row lock or an answer while deleting the canary (ms). */
const DELETE_TIMEOUT_MS = 3_000;

/**
 * The self-test's statements on `<schema>.messages`: the canary's INSERT (one statement,
 * its own transaction, as a producer's), its state, its DELETE. The claim and the mark
 * are the relay's own (outbox/message-queue.ts). Every value is a bound parameter.
 */
export class SelftestStore {
  private readonly table: string;

  constructor(schema: string) {
    this.table = qualified(schema, 'messages');
  }

  /** Inserts the canary; returns its primary key. */
  async insert(pool: Pool, row: SelftestRow): Promise<string> {
    const { rows } = await pool.query<{ id: string }>(
      `INSERT INTO ${this.table} (message_id, exchange, routing_key, message_type, payload, headers, correlation_id, expires_at)
       VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, now() + $8 * interval '1 millisecond')
       RETURNING id`,
      [
        row.messageId,
        row.exchange,
        row.routingKey,
        row.messageType,
        JSON.stringify(row.payload),
        JSON.stringify(row.headers),
        row.correlationId,
        row.expiresInMs,
      ],
    );
    const id = rows[0]?.id;
    if (id === undefined) throw new Error('the INSERT returned no row');
    return String(id);
  }

  /** The canary's state; a lock held on it (a relay's claim) does not block this read. */
  async state(pool: Pool, id: string): Promise<SelftestState> {
    const { rows } = await pool.query<{ published: boolean; finished: boolean; attempts: number; last_error: string | null }>(
      `SELECT published_at IS NOT NULL AS published, ${ENDED} AS finished, attempts, last_error
         FROM ${this.table} WHERE id = $1`,
      [id],
    );
    const row = rows[0];
    if (!row) return { exists: false, published: false, finished: false, attempts: 0, lastError: null };
    return { exists: true, published: row.published, finished: row.finished, attempts: row.attempts, lastError: row.last_error };
  }

  /**
   * Deletes the canary, waiting at most a few seconds for a relay's claim on it to end.
   * Returns whether a row was deleted.
   */
  async remove(pool: Pool, id: string): Promise<boolean> {
    return withPoolTransaction(
      pool,
      async (client) => {
        const { rowCount } = await client.query(`DELETE FROM ${this.table} WHERE id = $1`, [id]);
        return (rowCount ?? 0) > 0;
      },
      { local: { lock_timeout: DELETE_TIMEOUT_MS, statement_timeout: DELETE_TIMEOUT_MS } },
    );
  }

  /** Whether the connected role may INSERT into the table (any column grant counts: the canary needs the producer's columns). */
  async mayInsert(pool: Pool): Promise<boolean> {
    const { rows } = await pool.query<{ insert: boolean }>(`SELECT has_any_column_privilege($1, 'INSERT') AS insert`, [this.table]);
    return rows[0]?.insert ?? false;
  }
}
