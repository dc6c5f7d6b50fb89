import { loadMigrations } from '../../src/db/migrator';
import { runCleanup } from '../../src/outbox/retention';
import { cli, envFor } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { bodies, TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

const broker = TestBroker.forFile();

/** Every row as PostgreSQL stores it, in id order. */
async function snapshot(fx: OutboxFixture): Promise<Record<string, unknown>[]> {
  const { rows } = await fx.pool.query<{ row: Record<string, unknown> }>(`SELECT to_jsonb(m) AS row FROM ${fx.table} AS m ORDER BY id`);
  return rows.map((r) => r.row);
}

/** The rows of `after` cut to the columns `before` had; the columns later migrations added must be null. */
function oldColumnsOf(after: Record<string, unknown>[], before: Record<string, unknown>[]): Record<string, unknown>[] {
  const columns = Object.keys(before[0] ?? {});
  return after.map((row) => {
    for (const [column, value] of Object.entries(row)) if (!columns.includes(column)) expect([column, value]).toEqual([column, null]);
    return Object.fromEntries(columns.map((c) => [c, row[c]]));
  });
}

test('migration 0003 upgrades a filled outbox in place: every pending, delayed, parked, dead and published message keeps its state and its order', async () => {
  const earlier = loadMigrations().filter((m) => m.version <= 2);
  const fx = await OutboxFixture.create('upgrade', earlier);
  try {
    const queue = uniqueName('upgrade');
    const received = await broker.queue(queue);
    // Published history, written first as it was in time: 20 past a 7-day retention, 5 within it.
    await fx.pool.query(
      `INSERT INTO ${fx.table} (routing_key, payload, created_at, published_at)
       SELECT 'old', jsonb_build_object('old', g), now() - interval '8 days', now() - interval '8 days' + interval '1 second'
         FROM generate_series(1, 20) AS g`,
    );
    await fx.pool.query(
      `INSERT INTO ${fx.table} (routing_key, payload, published_at) SELECT 'recent', jsonb_build_object('recent', g), now() FROM generate_series(1, 5) AS g`,
    );
    // Due, keyed: three keys in insertion order, interleaved; the first of key a failed once.
    const keyed = Array.from({ length: 30 }, (_, i) => ({
      routing_key: queue,
      partition_key: `k${i % 3}`,
      payload: { key: `k${i % 3}`, i },
    }));
    const [firstOfK0] = await fx.insert(keyed);
    await fx.pool.query(
      `UPDATE ${fx.table} SET attempts = 2, last_error = 'nack', next_attempt_at = now() - interval '1 second' WHERE message_id = $1`,
      [firstOfK0],
    );
    // Delayed: not before an hour from now.
    await fx.insert(
      Array.from({ length: 5 }, (_, i) => ({
        routing_key: queue,
        payload: { delayed: i },
        available_at: new Date(Date.now() + 3_600_000),
      })),
    );
    // A dead message holding its key (ordering on dead: block), and two parked behind it.
    const [deadHead, ...parked] = await fx.insert([
      { routing_key: queue, partition_key: 'blocked', payload: { blocked: 0 } },
      { routing_key: queue, partition_key: 'blocked', payload: { blocked: 1 } },
      { routing_key: queue, partition_key: 'blocked', payload: { blocked: 2 } },
    ]);
    await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 10, last_error = 'exchange gone' WHERE message_id = $1`, [
      deadHead,
    ]);
    await fx.pool.query(`UPDATE ${fx.table} SET next_attempt_at = 'infinity' WHERE message_id = ANY($1::uuid[])`, [parked]);
    const before = await snapshot(fx);

    const migrated = await cli(['migrate'], envFor(fx.schema));
    expect(migrated).toMatchObject({ code: 0, stderr: '' });
    expect(migrated.stdout).toContain('0003_cheap_publish.sql');
    expect(oldColumnsOf(await snapshot(fx), before)).toEqual(before);
    const { rows: options } = await fx.pool.query<{ reloptions: string[] }>(`SELECT reloptions FROM pg_class WHERE oid = $1::regclass`, [
      fx.table,
    ]);
    expect(options[0]?.reloptions).toContain('fillfactor=50');
    const { rows: indexes } = await fx.pool.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM pg_indexes WHERE schemaname = $1 AND indexname = 'messages_published_at_idx'`,
      [fx.schema],
    );
    expect(indexes[0]?.n).toBe(0);
    // The pending index now carries its expression's columns (index-only counts); 0006 adds expires_at to both.
    const { rows: pendingIndex } = await fx.pool.query<{ keys: number; all: number; valid: boolean }>(
      `SELECT i.indnkeyatts AS keys, i.indnatts AS all, i.indisvalid AS valid
         FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = $1 AND c.relname = 'messages_pending_due_idx'`,
      [fx.schema],
    );
    expect(pendingIndex).toEqual([{ keys: 1, all: 4, valid: true }]);

    // The relay takes over the upgraded table: the due messages arrive in per-key order.
    await fx.startRelay({ OUTBOX_ORDERING_ON_DEAD: 'block' });
    await waitFor('the 30 due messages', () => received.length === 30);
    const arrived = bodies(received) as { key: string; i: number }[];
    for (const key of ['k0', 'k1', 'k2']) {
      const order = arrived.filter((b) => b.key === key).map((b) => b.i);
      expect(order).toEqual([...order].sort((a, b) => a - b));
      expect(order).toHaveLength(10);
    }
    await fx.stopRelays();
    const { rows: states } = await fx.pool.query<{ routing_key: string; state: string; n: number }>(
      `SELECT routing_key,
              CASE WHEN published_at IS NOT NULL THEN 'published' WHEN dead_at IS NOT NULL THEN 'dead'
                   WHEN next_attempt_at = 'infinity' THEN 'parked' WHEN available_at > now() THEN 'delayed' ELSE 'due' END AS state,
              count(*)::int AS n
         FROM ${fx.table} GROUP BY 1, 2 ORDER BY routing_key COLLATE "C", state`,
    );
    expect(states).toEqual([
      { routing_key: 'old', state: 'published', n: 20 },
      { routing_key: 'recent', state: 'published', n: 5 },
      { routing_key: queue, state: 'dead', n: 1 },
      { routing_key: queue, state: 'delayed', n: 5 },
      { routing_key: queue, state: 'parked', n: 2 },
      { routing_key: queue, state: 'published', n: 30 },
    ]);

    // The retention cleanup, without the index it used before, deletes exactly the old history.
    expect(await runCleanup(fx.pool, fx.schema, 7 * 86_400_000)).toBe(20);
    const { rows: left } = await fx.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${fx.table} WHERE routing_key = 'old'`);
    expect(left[0]?.n).toBe(0);
  } finally {
    await fx.close();
  }
});
