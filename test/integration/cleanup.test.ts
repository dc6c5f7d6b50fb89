import { Client, Pool } from 'pg';
import { CLEANUP_BATCH_SIZE, cleanupOnce, runCleanup } from '../../src/outbox/retention';
import { OutboxFixture } from '../kit/outbox-fixture';
import { readMetrics } from '../kit/relay-http';
import { testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

// Retention: published messages older than OUTBOX_RETENTION are deleted in bounded
// batches by a node-cron job inside the relay (OUTBOX_CLEANUP_CRON), and so are expired
// messages (by expired_at); dead and pending messages never are.

const SEVEN_DAYS_MS = 7 * 86_400_000;

const fx = OutboxFixture.forFile('cleanup', { afterEach: 'reset' });
const broker = TestBroker.forFile();
const pools: Pool[] = [];

function extraPool(): Pool {
  const pool = new Pool({ connectionString: testDatabaseUrl(), max: 3 });
  pools.push(pool);
  return pool;
}

afterAll(async () => {
  await Promise.all(pools.splice(0).map((p) => p.end()));
});

/**
 * Inserts `count` rows directly in the given state, with one statement. `age` is an
 * SQL interval: how long ago the row was created and (for published/dead rows) reached
 * that state.
 */
async function insertRows(
  target: OutboxFixture,
  count: number,
  state: 'published' | 'dead' | 'pending' | 'expired',
  age: string,
  label: string,
): Promise<void> {
  const publishedAt = state === 'published' ? `now() - $2::interval` : 'NULL';
  // An expired message carries dead_at too, from the same instant (as the relay marks it).
  const deadAt = state === 'dead' || state === 'expired' ? `now() - $2::interval` : 'NULL';
  const expiredAt = state === 'expired' ? `now() - $2::interval` : 'NULL';
  await target.pool.query(
    `INSERT INTO ${target.table} (routing_key, payload, created_at, available_at, attempts, published_at, dead_at, expired_at, expires_at)
     SELECT $3, jsonb_build_object('n', g), now() - $2::interval, now() - $2::interval,
            ${state === 'dead' ? 10 : 0}, ${publishedAt}, ${deadAt}, ${expiredAt}, ${expiredAt}
       FROM generate_series(1, $1::int) AS g`,
    [count, age, label],
  );
}

async function countByLabel(target: OutboxFixture): Promise<Record<string, number>> {
  const { rows } = await target.pool.query<{ routing_key: string; n: string }>(
    `SELECT routing_key, count(*) AS n FROM ${target.table} GROUP BY routing_key`,
  );
  return Object.fromEntries(rows.map((r) => [r.routing_key, Number(r.n)]));
}

/** pg_stat_activity's text of the cleanup's DELETE (outbox/retention.ts), for LIKE. */
function cleanupDeletePattern(target: OutboxFixture): string {
  return `DELETE FROM "${target.schema}"."messages" WHERE id IN%`;
}

async function cleanupDeleted(port: number): Promise<number> {
  return (await readMetrics(port)).value('outbox_cleanup_deleted_total') ?? Number.NaN;
}

describe('retention cleanup', () => {
  test('deletes published messages older than the retention over several batches; recent, dead and pending ones stay', async () => {
    const old = 2 * CLEANUP_BATCH_SIZE + 7; // three DELETE statements
    await insertRows(fx, old, 'published', '8 days', 'old-published');
    await insertRows(fx, 50, 'published', '6 days 23 hours', 'recent-published');
    await insertRows(fx, 5, 'dead', '30 days', 'old-dead');
    await insertRows(fx, 5, 'pending', '30 days', 'old-pending');

    const deleted = await runCleanup(fx.pool, fx.schema, SEVEN_DAYS_MS);

    expect(deleted).toBe(old);
    expect(await countByLabel(fx)).toEqual({ 'recent-published': 50, 'old-dead': 5, 'old-pending': 5 });
  });

  test('the scheduled job (OUTBOX_CLEANUP_CRON with a seconds field) runs inside the relay and counts what it deleted', async () => {
    await insertRows(fx, 3, 'published', '2 hours', 'old-published');
    await insertRows(fx, 4, 'published', '10 minutes', 'recent-published');
    await insertRows(fx, 2, 'dead', '30 days', 'old-dead');
    const { relay, logs } = await fx.startRelay({ OUTBOX_CLEANUP_CRON: '*/1 * * * * *', OUTBOX_RETENTION: '1h' });

    await waitFor('the first scheduled cleanup', async () => (await cleanupDeleted(relay.port)) === 3, 10_000);
    expect(await countByLabel(fx)).toEqual({ 'recent-published': 4, 'old-dead': 2 });
    expect(logs.entries().find((e) => e['msg'] === 'deleted published messages past retention')).toMatchObject({
      component: 'cleanup',
      deleted: 3,
    });

    // It keeps running every second: rows that age past the retention later go too.
    await insertRows(fx, 2, 'published', '3 hours', 'later-published');
    await waitFor('a later scheduled cleanup', async () => (await cleanupDeleted(relay.port)) === 5, 10_000);
    expect(await countByLabel(fx)).toEqual({ 'recent-published': 4, 'old-dead': 2 });
  });

  test('expired messages are deleted like published ones once expired_at is past the retention; with 0 at the next run', async () => {
    await insertRows(fx, CLEANUP_BATCH_SIZE + 3, 'expired', '8 days', 'old-expired'); // over two windows
    await insertRows(fx, 4, 'published', '8 days', 'old-published');
    await insertRows(fx, 6, 'expired', '2 hours', 'recent-expired');
    await insertRows(fx, 5, 'dead', '30 days', 'old-dead');
    await insertRows(fx, 2, 'pending', '30 days', 'old-pending');
    // Created long ago, expired only now: the binary search's bound (by the earliest of
    // created_at, published_at, dead_at) still leaves it to the cutoff check.
    await insertRows(fx, 3, 'pending', '9 days', 'just-expired');
    await fx.pool.query(
      `UPDATE ${fx.table} SET expired_at = now(), dead_at = now(), expires_at = now() WHERE routing_key = 'just-expired'`,
    );

    const weekly = await cleanupOnce(fx.pool, fx.schema, SEVEN_DAYS_MS);
    expect(weekly).toEqual({ published: 4, expired: CLEANUP_BATCH_SIZE + 3, auditEntries: 0 });
    expect(await countByLabel(fx)).toEqual({ 'recent-expired': 6, 'just-expired': 3, 'old-dead': 5, 'old-pending': 2 });

    expect(await runCleanup(fx.pool, fx.schema, 3_600_000)).toBe(6);
    // OUTBOX_RETENTION=0: whatever expired up to now goes at the next run, dead and pending stay.
    expect(await cleanupOnce(fx.pool, fx.schema, 0)).toEqual({ published: 0, expired: 3, auditEntries: 0 });
    expect(await countByLabel(fx)).toEqual({ 'old-dead': 5, 'old-pending': 2 });
  });

  test('two concurrent runs (two replicas): only one cleans, the other returns undefined at once', async () => {
    await insertRows(fx, 1_000, 'published', '8 days', 'old-published');
    // Hold the table in SHARE mode: the first run takes the cleanup lock and then
    // waits in its DELETE, so the two runs certainly overlap.
    const blocker = new Client({ connectionString: testDatabaseUrl() });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query(`LOCK TABLE ${fx.table} IN SHARE MODE`);
      const first = runCleanup(extraPool(), fx.schema, SEVEN_DAYS_MS);
      await waitFor('the first run to wait in its DELETE', async () => {
        const { rows } = await fx.pool.query<{ n: string }>(
          `SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE $1`,
          [cleanupDeletePattern(fx)],
        );
        return Number(rows[0]!.n) === 1;
      });

      const second = await runCleanup(extraPool(), fx.schema, SEVEN_DAYS_MS);
      expect(second).toBeUndefined();

      await blocker.query('COMMIT');
      expect(await first).toBe(1_000);
    } finally {
      await blocker.end();
    }
    // The lock was released: the next run cleans (nothing left).
    expect(await runCleanup(extraPool(), fx.schema, SEVEN_DAYS_MS)).toBe(0);
    expect(await countByLabel(fx)).toEqual({});
  });

  test('OUTBOX_RETENTION=0 deletes messages at publish time; dead messages stay', async () => {
    const queue = uniqueName('now');
    const received = await broker.queue(queue);
    await fx.insertBacklog({ count: 20, routingKey: queue });
    const [deadId] = await fx.insert([{ exchange: uniqueName('missing'), routing_key: 'x', payload: { dead: true } }]);
    // A cron that never fires during the test: whatever disappears was deleted by the
    // publishing transaction itself, not by the cleanup job.
    const { relay } = await fx.startRelay({ OUTBOX_RETENTION: '0', OUTBOX_CLEANUP_CRON: '0 0 1 1 *', OUTBOX_MAX_ATTEMPTS: '1' });

    await waitFor('20 messages received', () => received.length === 20);
    await waitFor('the dead message', async () => (await fx.row(deadId!))?.['dead_at'] != null);
    await waitFor('published rows deleted', async () => (await fx.counts()).published === 0);
    const { rows } = await fx.pool.query<{ message_id: string }>(`SELECT message_id FROM ${fx.table}`);
    expect(rows.map((r) => r.message_id)).toEqual([deadId]);
    const metrics = await readMetrics(relay.port);
    expect(metrics.value('outbox_messages_published_total')).toBe(20);
    expect(metrics.value('outbox_cleanup_deleted_total')).toBe(0);
  });
});

describe('a large cleanup', () => {
  const OLD_ROWS = 1_000_000;
  /** Bound on commit → broker-confirmed delivery for a message written during the cleanup. */
  const LATENCY_BOUND_MS = 1_000;

  test(`deleting ${OLD_ROWS.toLocaleString('en')} old rows does not hold up publishing: short transactions, bounded batches`, async () => {
    const big = await OutboxFixture.create('cleanup_big');
    try {
      await insertRows(big, OLD_ROWS, 'published', '8 days', 'old-published');
      const queue = await broker.declareQueue(uniqueName('live'));
      const arrivals = new Map<number, number>();
      await broker.consume(queue, (msg) => arrivals.set((JSON.parse(msg.content.toString()) as { n: number }).n, Date.now()));

      const { relay, logs } = await big.startRelay({ OUTBOX_CLEANUP_CRON: '*/1 * * * * *', OUTBOX_RETENTION: '7d' });
      const cleanupDone = (): Record<string, unknown> | undefined =>
        logs.entries().find((e) => e['msg'] === 'deleted published messages past retention');

      // While the cleanup runs: a producer writes one message every 20 ms (each its own
      // transaction), and a sampler watches the cleanup's DELETE statements.
      const written = new Map<number, number>();
      const deleteTransactions = new Set<string>();
      let oldestDeleteTransactionMs = 0;
      const deadline = Date.now() + 60_000;
      const produce = (async () => {
        for (let n = 1; !cleanupDone() && Date.now() < deadline; n += 1) {
          const started = Date.now();
          await big.pool.query(`INSERT INTO ${big.table} (routing_key, payload) VALUES ($1, jsonb_build_object('n', $2::int))`, [queue, n]);
          written.set(n, started);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      const sample = (async () => {
        while (!cleanupDone() && Date.now() < deadline) {
          const { rows } = await big.pool.query<{ xact_start: Date; age_ms: number }>(
            `SELECT xact_start, EXTRACT(EPOCH FROM clock_timestamp() - xact_start)::float8 * 1000 AS age_ms
               FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1`,
            [cleanupDeletePattern(big)],
          );
          for (const r of rows) {
            deleteTransactions.add(r.xact_start.toISOString());
            oldestDeleteTransactionMs = Math.max(oldestDeleteTransactionMs, r.age_ms);
          }
          await new Promise((resolve) => setTimeout(resolve, 10));
        }
      })();
      await Promise.all([produce, sample]);

      const done = cleanupDone();
      expect(done).toMatchObject({ deleted: OLD_ROWS });
      const endedAt = Date.parse(String(done!['time']));
      const startedAt = endedAt - Number(done!['ms']);
      expect(await cleanupDeleted(relay.port)).toBe(OLD_ROWS);
      expect(await countByLabel(big)).toEqual({ [queue]: written.size });

      await waitFor('every message written during the test', () => arrivals.size === written.size, 10_000);
      const during = [...written].filter(([, at]) => at >= startedAt && at <= endedAt);
      const latencies = during.map(([n, at]) => arrivals.get(n)! - at).sort((a, b) => a - b);
      const deliveredBeforeCleanupEnded = during.filter(([n]) => arrivals.get(n)! < endedAt).length;
      console.info(
        `cleanup of ${OLD_ROWS} rows took ${endedAt - startedAt} ms in ${deleteTransactions.size}+ transactions seen ` +
          `(oldest seen ${Math.round(oldestDeleteTransactionMs)} ms); ${during.length} messages written meanwhile, ` +
          `delivery p50 ${latencies[Math.floor(latencies.length / 2)]} ms, max ${latencies[latencies.length - 1]} ms`,
      );

      // Messages written while the cleanup ran went out within the bound, most of them
      // before it ended: publishing did not wait for the cleanup.
      expect(during.length).toBeGreaterThanOrEqual(10);
      expect(latencies[latencies.length - 1]).toBeLessThan(LATENCY_BOUND_MS);
      expect(deliveredBeforeCleanupEnded).toBeGreaterThanOrEqual(during.length / 2);
      // Bounded batches: many short DELETE transactions, not one long one.
      expect(deleteTransactions.size).toBeGreaterThanOrEqual(5);
      expect(oldestDeleteTransactionMs).toBeLessThan(LATENCY_BOUND_MS);
    } finally {
      await big.close();
    }
  }, 120_000);
});
