import cron, { type ScheduledTask } from 'node-cron';
import type { ClientBase, Pool } from 'pg';
import { ADVISORY_LOCK_NAMESPACE, qualified } from '../db/sql';
import { inTransaction } from '../db/transaction';
import { errorMessage } from '../errors';
import { isDatabaseAway } from '../util/outage';
import type { Logger } from '../observability/logger';
import { AuditLog } from './audit';
import { EXPIRED } from './sql';

/** Rows per DELETE: each statement is its own short transaction, holding few locks. */
export const CLEANUP_BATCH_SIZE = 5_000;

/**
 * How long audit entries are kept when OUTBOX_RETENTION is 0 (messages deleted at
 * publish): 7 days, so that who retried or discarded what outlives the messages.
 */
export const AUDIT_RETENTION_WITHOUT_MESSAGE_RETENTION_MS = 7 * 86_400_000;

/** How long the cleanup keeps audit entries: OUTBOX_RETENTION, or 7 days when that is 0. */
export function auditRetentionMs(retentionMs: number): number {
  return retentionMs > 0 ? retentionMs : AUDIT_RETENTION_WITHOUT_MESSAGE_RETENTION_MS;
}

/** What one cleanup deleted. */
export interface CleanupReport {
  /** Published messages older than the retention. */
  readonly published: number;
  /** Expired messages whose expired_at is older than the retention. */
  readonly expired: number;
  /** Audit entries older than `auditRetentionMs`. */
  readonly auditEntries: number;
  /** Why the audit entries could not be deleted (a role without DELETE on the audit table), if they could not. */
  readonly auditError?: string;
}

/**
 * The first id from which on messages were created at or after `cutoff`: a binary search
 * on the primary key, one index probe per step (about 30 for a billion ids). Ids follow
 * insertion order and created_at (the inserting transaction's start) follows it closely;
 * where it does not (a long transaction), the bound is a little early or late, and a
 * message left out is deleted by a later run, never one that must stay: the deletes
 * check published_at and expired_at themselves. LEAST with the relay's own timestamps: a
 * created_at written by hand far in the future cannot hold the bound back once the row
 * is published or dead. An expired row carries dead_at from the same instant as its
 * expired_at, so one expired before the cutoff is inside the bound like a published one.
 */
async function firstIdCreatedFrom(client: ClientBase, table: string, cutoff: string): Promise<bigint> {
  const { rows } = await client.query<{ lo: string | null; hi: string | null }>(
    `SELECT min(id)::text AS lo, max(id)::text AS hi FROM ${table}`,
  );
  if (rows[0]?.lo == null || rows[0].hi == null) return 0n; // an empty table
  let lo = BigInt(rows[0].lo);
  let hi = BigInt(rows[0].hi) + 1n;
  while (lo < hi) {
    const mid = lo + (hi - lo) / 2n;
    const probe = await client.query<{ late: boolean }>(
      `SELECT LEAST(created_at, published_at, dead_at) >= $2::timestamptz AS late FROM ${table} WHERE id >= $1::bigint ORDER BY id LIMIT 1`,
      [mid.toString(), cutoff],
    );
    if (probe.rows[0]?.late ?? true) hi = mid;
    else lo = mid + 1n;
  }
  return lo;
}

/**
 * Deletes published messages, and expired ones, older than `retentionMs` (by published_at,
 * by expired_at), `batchSize` rows per statement (each its own short transaction), until
 * none is left. Dead and pending messages are never touched. Returns how many of each
 * were deleted.
 *
 * There is no index on published_at (each one would cost the publish an index entry):
 * a message is published (or expires) after it is created, so every message published
 * or expired before the cutoff was created before it, and those come first in id order.
 * The deletes walk the primary key from the oldest id up to the first message created
 * after the cutoff.
 */
async function deleteSettledBefore(
  client: ClientBase,
  schema: string,
  retentionMs: number,
  batchSize: number,
  shouldStop: () => boolean,
): Promise<{ published: number; expired: number } | undefined> {
  const table = qualified(schema, 'messages');
  const { rows } = await client.query<{ cutoff: string }>(`SELECT (now() - $1 * interval '1 millisecond')::text AS cutoff`, [retentionMs]);
  const cutoff = rows[0]?.cutoff as string;
  const bound = await firstIdCreatedFrom(client, table, cutoff);
  const total = { published: 0, expired: 0 };
  let first = true;
  for (let from = await nextId(client, table, 0n); from !== undefined && from < bound;) {
    // A window of `batchSize` ids: the statement's work is bounded by the window, whatever
    // plan PostgreSQL picks (a table not yet analyzed gets a bitmap scan of the range).
    const start = from;
    const until = start + BigInt(batchSize) < bound ? start + BigInt(batchSize) : bound;
    // Each window is a transaction that takes the cleanup lock first: while another
    // cleaner's window runs, it deletes nothing and says so (no session lock, so this
    // works behind a transaction-pooling PgBouncer). The lock is tried before the DELETE,
    // which would wait for whatever holds the table.
    const window = await inTransaction(client, async () => {
      const { rows: lock } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS locked', [
        ADVISORY_LOCK_NAMESPACE,
        `cleanup:${schema}`,
      ]);
      if (lock[0]?.locked !== true) return undefined;
      const { rows: deleted } = await client.query<{ expired: boolean }>(
        `DELETE FROM ${table} WHERE id IN (
           SELECT id FROM ${table}
            WHERE id >= $1::bigint AND id < $2::bigint AND (published_at < $3::timestamptz OR expired_at < $3::timestamptz)
              FOR UPDATE SKIP LOCKED)
         RETURNING ${EXPIRED} AS expired`,
        [start.toString(), until.toString(), cutoff],
      );
      return { deleted: deleted.length, expired: deleted.filter((d) => d.expired).length };
    });
    if (window === undefined) return first ? undefined : total;
    first = false;
    total.expired += window.expired;
    total.published += window.deleted - window.expired;
    if (shouldStop()) break;
    from = await nextId(client, table, until);
  }
  return total;
}

/** The first id at or after `from`, if any (one primary key probe: gaps of deleted ids are skipped). */
async function nextId(client: ClientBase, table: string, from: bigint): Promise<bigint | undefined> {
  const { rows } = await client.query<{ id: string | null }>(`SELECT min(id)::text AS id FROM ${table} WHERE id >= $1::bigint`, [
    from.toString(),
  ]);
  return rows[0]?.id == null ? undefined : BigInt(rows[0].id);
}

/**
 * One retention cleanup, returning how many messages (published and expired) it
 * deleted, or undefined when another relay is cleaning (see `cleanupOnce`).
 */
export async function runCleanup(
  pool: Pool,
  schema: string,
  retentionMs: number,
  shouldStop: () => boolean = () => false,
): Promise<number | undefined> {
  const report = await cleanupOnce(pool, schema, retentionMs, shouldStop);
  return report && report.published + report.expired;
}

/**
 * One retention cleanup: published and expired messages older than `retentionMs`, then
 * the audit entries older than `auditRetentionMs(retentionMs)`. Only the leading replica
 * runs it on schedule; should `outbox-relay cleanup` run at the same time, each window of
 * deletes takes a transaction-level advisory lock first, tried, never waited for.
 * Undefined when another cleaner held it at the first window.
 */
export async function cleanupOnce(
  pool: Pool,
  schema: string,
  retentionMs: number,
  shouldStop: () => boolean = () => false,
): Promise<CleanupReport | undefined> {
  const client = await pool.connect();
  let failure: Error | undefined;
  try {
    const messages = await deleteSettledBefore(client, schema, retentionMs, CLEANUP_BATCH_SIZE, shouldStop);
    if (messages === undefined) return undefined;
    if (shouldStop()) return { ...messages, auditEntries: 0 };
    // After the messages, on its own: a role without privileges on the audit table still
    // cleans them, and their count is still reported (each DELETE is its own transaction).
    try {
      return { ...messages, auditEntries: await new AuditLog(schema).deleteOlderThan(client, auditRetentionMs(retentionMs)) };
    } catch (err: unknown) {
      if (isDatabaseAway(err)) throw err;
      return { ...messages, auditEntries: 0, auditError: errorMessage(err) };
    }
  } catch (err: unknown) {
    failure = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    client.release(failure);
  }
}

/**
 * The scheduled cleanup of `outbox-relay run`: a run still going when the next is due
 * is skipped (node-cron `noOverlap`).
 */
export class CleanupJob {
  private task: ScheduledTask | undefined;
  private stopped = false;

  constructor(
    private readonly pool: Pool,
    private readonly settings: { schema: string; retentionMs: number; cleanupCron: string },
    private readonly log: Logger,
    /** Told how many rows each run deleted (the cleanup counter). */
    private readonly onDeleted: (count: number) => void = () => undefined,
    /** Whether this replica cleans: only the leader does. */
    private readonly shouldRun: () => boolean = () => true,
  ) {}

  start(): void {
    if (this.task) return;
    const log = this.log;
    this.task = cron.schedule(this.settings.cleanupCron, () => this.runOnce(), {
      name: 'outbox-cleanup',
      noOverlap: true,
      // node-cron's own logger writes coloured text to stderr; route it into the JSON log.
      // Its warnings are about overlapping or missed runs, which are expected here.
      logger: {
        info: (message) => log.debug({ cron: message }, 'cleanup schedule'),
        warn: (message) => log.debug({ cron: message }, 'cleanup schedule'),
        error: (message, err) => log.warn({ cron: String(message), err: err?.message }, 'cleanup schedule error'),
        debug: (message) => log.trace({ cron: String(message) }, 'cleanup schedule'),
      },
    });
  }

  async runOnce(): Promise<void> {
    if (!this.shouldRun()) return;
    const started = Date.now();
    try {
      const report = await cleanupOnce(this.pool, this.settings.schema, this.settings.retentionMs, () => this.stopped);
      if (report === undefined) {
        this.log.debug('cleanup skipped: another relay is cleaning');
        return;
      }
      const deleted = report.published + report.expired;
      this.onDeleted(deleted);
      if (report.auditError !== undefined) {
        this.log.warn(
          { err: report.auditError },
          'cannot delete old audit entries (grant DELETE on the audit table; see outbox-relay check)',
        );
      }
      if (deleted > 0 || report.auditEntries > 0) {
        this.log.info({ deleted, ...report, ms: Date.now() - started }, 'deleted published messages past retention');
      }
    } catch (err: unknown) {
      this.log.warn({ err: errorMessage(err) }, 'cleanup failed; will try at the next run');
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.task?.destroy();
    this.task = undefined;
  }
}
