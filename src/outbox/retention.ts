import cron, { type ScheduledTask } from 'node-cron';
import type { ClientBase, Pool } from 'pg';
import { ADVISORY_LOCK_NAMESPACE, qualified } from '../db/sql';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';

/** Rows per DELETE: each statement is its own short transaction, holding few locks. */
export const CLEANUP_BATCH_SIZE = 5_000;

/**
 * Deletes published messages older than `retentionMs`, `batchSize` rows per statement
 * (each its own short transaction), until none is left. Dead and pending messages are
 * never touched. Returns how many were deleted.
 */
async function deletePublishedBefore(
  client: ClientBase,
  schema: string,
  retentionMs: number,
  batchSize: number,
  shouldStop: () => boolean,
): Promise<number> {
  const table = qualified(schema, 'messages');
  let total = 0;
  for (;;) {
    const { rowCount } = await client.query(
      `DELETE FROM ${table} WHERE id IN (
         SELECT id FROM ${table}
          WHERE published_at IS NOT NULL AND published_at < now() - $1 * interval '1 millisecond'
          ORDER BY published_at LIMIT $2
            FOR UPDATE SKIP LOCKED)`,
      [retentionMs, batchSize],
    );
    total += rowCount ?? 0;
    if ((rowCount ?? 0) < batchSize || shouldStop()) return total;
  }
}

/**
 * One retention cleanup. Among all replicas one cleans at a time: a session advisory
 * lock, tried, never waited for, and the deletes run on the connection that holds it.
 * Returns how many were deleted, or undefined when another relay is cleaning.
 */
export async function runCleanup(
  pool: Pool,
  schema: string,
  retentionMs: number,
  shouldStop: () => boolean = () => false,
): Promise<number | undefined> {
  const client = await pool.connect();
  const lockKey = [ADVISORY_LOCK_NAMESPACE, `cleanup:${schema}`];
  let locked = false;
  let failure: Error | undefined;
  try {
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', lockKey);
    locked = rows[0]?.locked ?? false;
    if (!locked) return undefined;
    return await deletePublishedBefore(client, schema, retentionMs, CLEANUP_BATCH_SIZE, shouldStop);
  } catch (err: unknown) {
    failure = err instanceof Error ? err : new Error(String(err));
    throw err;
  } finally {
    if (locked && !failure) await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', lockKey).catch(() => undefined);
    // A failed connection is destroyed, which also ends its session lock.
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
    const started = Date.now();
    try {
      const deleted = await runCleanup(this.pool, this.settings.schema, this.settings.retentionMs, () => this.stopped);
      if (deleted === undefined) {
        this.log.debug('cleanup skipped: another relay is cleaning');
        return;
      }
      this.onDeleted(deleted);
      if (deleted > 0) this.log.info({ deleted, ms: Date.now() - started }, 'deleted published messages past retention');
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
