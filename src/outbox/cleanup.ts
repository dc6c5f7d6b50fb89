import cron, { type ScheduledTask } from 'node-cron';
import type { Pool } from 'pg';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';
import type { RelayMetrics } from '../observability/metrics';
import { ADVISORY_LOCK_NAMESPACE } from '../db/sql';
import type { OutboxStore } from './store';

/** Rows per DELETE: each statement is its own short transaction, holding few locks. */
export const CLEANUP_BATCH_SIZE = 5_000;


/**
 * Deletes published messages older than the retention, in bounded batches. Among all
 * replicas one cleans at a time (a session advisory lock, tried, never waited for);
 * a run still going when the next is due is skipped (node-cron `noOverlap`). Dead and
 * pending messages are never deleted.
 */
export async function runCleanup(pool: Pool, store: OutboxStore, retentionMs: number, shouldStop: () => boolean = () => false): Promise<number | undefined> {
  const client = await pool.connect();
  let locked = false;
  try {
    const { rows } = await client.query<{ locked: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS locked', [ADVISORY_LOCK_NAMESPACE, `cleanup:${store.schema}`]);
    locked = rows[0]?.locked ?? false;
    if (!locked) return undefined;
    return await store.deletePublishedBefore(pool, retentionMs, CLEANUP_BATCH_SIZE, shouldStop);
  } finally {
    if (locked) await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [ADVISORY_LOCK_NAMESPACE, `cleanup:${store.schema}`]).catch(() => undefined);
    client.release();
  }
}

/** The scheduled cleanup of `outbox-relay run`. */
export class CleanupJob {
  private task: ScheduledTask | undefined;
  private stopped = false;

  constructor(
    private readonly pool: Pool,
    private readonly store: OutboxStore,
    private readonly settings: { retentionMs: number; cleanupCron: string },
    private readonly metrics: RelayMetrics,
    private readonly log: Logger,
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
      const deleted = await runCleanup(this.pool, this.store, this.settings.retentionMs, () => this.stopped);
      if (deleted === undefined) {
        this.log.debug('cleanup skipped: another relay is cleaning');
        return;
      }
      this.metrics.cleanupDeletedTotal.inc(deleted);
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
