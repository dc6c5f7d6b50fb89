import type { ClientBase, Pool, PoolClient } from 'pg';
import { qualified } from '../db/sql';
import { withPoolTransaction } from '../db/transaction';
import type { FailedAttempt, HoldOrder, KeyRow, KeyWindow, OutboxMessage, ParkOrder, ReleaseOrder } from '../domain/message';
import { errorMessage } from '../errors';
import { holdRows, releaseAllHeldRows, releaseRows } from './held-rows';
import { relayStatements, type RelayStatement, type RelayStatementKey } from './relay-statements';
import { claimBytes, toMessage, type ClaimedRow } from './rows';
import { DUE, PENDING, UNPARKED } from './sql';

/** Ends the write probe's transaction with a rollback. */
class ProbeDone extends Error {}

/** Longest stored error text (characters). */
const MAX_ERROR_CHARS = 2_000;

/** An error text PostgreSQL's text type accepts (no NUL), bounded in length. */
function storableError(error: string): string {
  return error.split(String.fromCharCode(0)).join('\\0').slice(0, MAX_ERROR_CHARS);
}

/** A claimed row as a message; a row that cannot be read becomes a message with a defect, which fails unsent. */
function readRow(row: ClaimedRow): OutboxMessage {
  try {
    return toMessage(row);
  } catch (err: unknown) {
    return {
      id: String(row.id),
      messageId: String(row.message_id),
      exchange: String(row.exchange),
      routingKey: String(row.routing_key),
      messageType: null,
      content: Buffer.alloc(0),
      contentType: 'application/octet-stream',
      headers: {},
      partitionKey: row.partition_key === null ? null : String(row.partition_key),
      correlationId: null,
      createdAt: new Date(),
      availableAt: new Date(),
      attempts: Number(row.attempts),
      claimBytes: claimBytes(row),
      defect: `cannot read the row: ${errorMessage(err)}`,
    };
  }
}

/**
 * The claim transaction's commit does not wait for the WAL flush, unless the server has
 * synchronous standbys (`synchronous_standby_names`): whoever set that wants committed
 * work on a standby before it counts, and the relay's marks then follow the server's own
 * `synchronous_commit`, so a failover to that standby re-publishes only the batches in
 * flight. Read at every claim, so it follows the host the pool is on.
 */
const RELAXED_COMMIT = `SELECT set_config('synchronous_commit', 'off', true) WHERE current_setting('synchronous_standby_names') = ''`;

/** What one claim transaction can do with the rows it locked. */
export class ClaimSession {
  constructor(
    private readonly client: ClientBase,
    private readonly statements: Readonly<Record<RelayStatementKey, RelayStatement>>,
    private readonly table: string,
  ) {}

  private run<R extends object>(key: RelayStatementKey, values: unknown[]): Promise<{ rows: R[] }> {
    return this.client.query<R>(this.statements[key].text, values);
  }

  /**
   * Locks and returns up to `limit` due messages holding at most `maxBytes` together (the
   * first whatever its size); the transaction holds the locks.
   */
  async claim(limit: number, maxBytes: number): Promise<OutboxMessage[]> {
    const { rows } = await this.run<ClaimedRow>('claim', [limit, maxBytes]);
    return rows.map(readRow);
  }

  /**
   * Locks and returns those of `ids` that are still due and not locked by another batch,
   * oldest first, at most `maxBytes` together (the first whatever its size; default: no
   * limit beyond the ids).
   */
  async claimIds(ids: readonly string[], maxBytes = Number.MAX_SAFE_INTEGER): Promise<OutboxMessage[]> {
    if (ids.length === 0) return [];
    const { rows } = await this.run<ClaimedRow>('claimIds', [ids, maxBytes]);
    return rows.map(readRow);
  }

  /**
   * For each key: its unpublished rows in id order up to `maxId`, at most `count + 1`.
   * Dead rows count only when `deadHoldsKey` (OUTBOX_ORDERING_ON_DEAD=block).
   */
  async keyRows(keys: readonly KeyWindow[], deadHoldsKey: boolean): Promise<KeyRow[]> {
    if (keys.length === 0) return [];
    const { rows } = await this.run<KeyRow>('keyRows', [
      keys.map((k) => k.key),
      keys.map((k) => k.maxId),
      keys.map((k) => k.count + 1),
      deadHoldsKey,
    ]);
    return rows;
  }

  /** Pushes the next attempt of rows that must wait behind an earlier message of their key. */
  async park(orders: readonly ParkOrder[]): Promise<void> {
    if (orders.length === 0) return;
    await this.run('park', [
      orders.map((o) => o.id),
      orders.map((o) => ('at' in o.until ? o.until.at.toISOString() : null)),
      orders.map((o) => ('inMs' in o.until ? o.until.inMs : null)),
      orders.map((o) => 'forever' in o.until),
    ]);
  }

  /** Parks messages that wait for a held destination (outbox/held-rows.ts). */
  hold(orders: readonly HoldOrder[]): Promise<void> {
    return holdRows(this.client, this.table, orders);
  }

  /** Makes rows parked for a held destination due now; returns how many (outbox/held-rows.ts). */
  release(order: ReleaseOrder): Promise<number> {
    return releaseRows(this.client, this.table, order);
  }

  /** Marks confirmed messages published, or deletes them when retention is zero. */
  async markPublished(ids: readonly string[], deleteNow: boolean): Promise<void> {
    if (ids.length === 0) return;
    await this.run(deleteNow ? 'deletePublished' : 'markPublished', [ids]);
  }

  /** Marks messages whose expires_at was reached expired: never published, no longer pending. */
  async markExpired(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.run('markExpired', [ids]);
  }

  /** Records failed attempts: attempts + 1, the error, the next attempt time or dead. */
  async markFailed(failures: readonly FailedAttempt[]): Promise<void> {
    if (failures.length === 0) return;
    await this.run('markFailed', [
      failures.map((f) => f.id),
      failures.map((f) => storableError(f.error)),
      failures.map((f) => f.retryInMs),
      failures.map((f) => f.dead),
    ]);
  }
}

/**
 * The outbox as the relay sees it: a queue of due messages, claimed in transactions
 * that hold their row locks until the batch is marked. Every value is a bound
 * parameter; the schema is an escaped identifier.
 */
export class MessageQueue {
  private readonly statements: Readonly<Record<RelayStatementKey, RelayStatement>>;
  private readonly table: string;
  private readonly openClaims = new Set<PoolClient>();

  constructor(
    private readonly pool: Pool,
    schema: string,
    /** Bounds a claim transaction left idle, so a hung relay cannot hold its rows forever (ms). */
    private readonly idleClaimTimeoutMs: number,
  ) {
    this.statements = relayStatements(schema);
    this.table = qualified(schema, 'messages');
  }

  /** Whether any message is due. */
  async peek(): Promise<boolean> {
    const { rows } = await this.pool.query<{ due: boolean }>(this.statements.peek.text);
    return rows[0]?.due ?? false;
  }

  /**
   * Runs `work` in one claim transaction: committed when it resolves, rolled back when
   * it throws. A lost mark only re-publishes (at-least-once), so the relay's own
   * commits need not wait for the WAL flush (`synchronous_commit = off`, see
   * RELAXED_COMMIT) — unless the server replicates synchronously.
   */
  withClaim<T>(work: (session: ClaimSession) => Promise<T>): Promise<T> {
    return withPoolTransaction(this.pool, (client) => work(new ClaimSession(client, this.statements, this.table)), {
      local: { idle_in_transaction_session_timeout: this.idleClaimTimeoutMs },
      afterBegin: RELAXED_COMMIT,
      track: this.openClaims,
    });
  }

  /**
   * Tries, without changing anything, the statements a batch writes with (a transaction
   * rolled back): throws what a batch's marks would throw, e.g. a missing privilege.
   */
  async probeWrites(deleteNow: boolean): Promise<void> {
    await withPoolTransaction(this.pool, async (client) => {
      await client.query(
        `UPDATE ${this.table} SET published_at = published_at, attempts = attempts, last_error = last_error,
                next_attempt_at = next_attempt_at, dead_at = dead_at WHERE false`,
      );
      if (deleteNow) await client.query(`DELETE FROM ${this.table} WHERE false`);
      throw new ProbeDone();
    }).catch((err: unknown) => {
      if (!(err instanceof ProbeDone)) throw err;
    });
  }

  /** Drops the connections of open claims (the database does not answer): PostgreSQL rolls them back. */
  abandonClaims(): void {
    for (const client of this.openClaims) client.release(new Error('shutdown'));
    this.openClaims.clear();
  }

  /** Makes every row parked for a held destination due now (a relay that starts publishing learns its holds again). */
  releaseHeld(): Promise<number> {
    return releaseAllHeldRows(this.pool, this.table);
  }

  /**
   * Releases rows parked behind a dead message (OUTBOX_ORDERING_ON_DEAD=block): every
   * such row, when a relay starts in skip mode. Returns how many were released. A parked
   * row is due at its expires_at ('infinity' without one), so the range of rows due later
   * than now holds them all; one whose expires_at has passed is claimed and expired.
   */
  async unparkAll(): Promise<number> {
    const { rowCount } = await this.pool.query(
      `UPDATE ${this.table} SET next_attempt_at = ${UNPARKED}
        WHERE ${PENDING} AND ${DUE} > now() AND next_attempt_at = 'infinity'`,
    );
    return rowCount ?? 0;
  }
}
