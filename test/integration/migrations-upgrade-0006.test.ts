import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadMigrations, MIGRATIONS_DIR } from '../../src/db/migrator';
import { cli, envFor } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { bodies, TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

const broker = TestBroker.forFile();
const FILE = '0006_key_hash_and_expiry_due.sql';

/** Every row as PostgreSQL stores it, in id order. */
async function snapshot(fx: OutboxFixture): Promise<Record<string, unknown>[]> {
  const { rows } = await fx.pool.query<{ row: Record<string, unknown> }>(`SELECT to_jsonb(m) AS row FROM ${fx.table} AS m ORDER BY id`);
  return rows.map((r) => r.row);
}

/** The definitions of the outbox's indexes, by name. */
async function indexes(fx: OutboxFixture): Promise<Record<string, string>> {
  const { rows } = await fx.pool.query<{ indexname: string; indexdef: string }>(
    `SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = 'messages'`,
    [fx.schema],
  );
  return Object.fromEntries(rows.map((r) => [r.indexname, r.indexdef]));
}

/** An outbox at migration 0004 holding messages in every state; returns what the test checks afterwards. */
async function filledOutbox(fx: OutboxFixture, queue: string): Promise<{ stuck: string; parked: string[]; dead: string }> {
  await fx.pool.query(
    `INSERT INTO ${fx.table} (routing_key, payload, published_at) SELECT 'old', jsonb_build_object('old', g), now() FROM generate_series(1, 10) AS g`,
  );
  // Due, keyed, interleaved over three keys; the first of k0 failed once.
  const keyed = await fx.insert(
    Array.from({ length: 30 }, (_, i) => ({ routing_key: queue, partition_key: `k${i % 3}`, payload: { key: `k${i % 3}`, i } })),
  );
  await fx.pool.query(`UPDATE ${fx.table} SET attempts = 1, next_attempt_at = now() - interval '1 second' WHERE message_id = $1`, [
    keyed[0],
  ]);
  await fx.insert(
    Array.from({ length: 3 }, (_, i) => ({ routing_key: queue, payload: { delayed: i }, available_at: new Date(Date.now() + 3_600_000) })),
  );
  // A dead message holding its key (block), two parked behind it, one of them with an expiry far off.
  const [dead, ...parked] = await fx.insert([
    { routing_key: queue, partition_key: 'blocked', payload: { blocked: 0 } },
    { routing_key: queue, partition_key: 'blocked', payload: { blocked: 1 } },
    { routing_key: queue, partition_key: 'blocked', payload: { blocked: 2 }, expires_at: new Date(Date.now() + 3_600_000) },
  ]);
  await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 10, last_error = 'gone' WHERE message_id = $1`, [dead]);
  await fx.pool.query(`UPDATE ${fx.table} SET next_attempt_at = 'infinity' WHERE message_id = ANY($1::uuid[])`, [parked]);
  // Never claimed before 0006: due at 'infinity', expiring in a few seconds.
  const [stuck] = await fx.insert([{ routing_key: queue, payload: { stuck: true }, expires_at: new Date(Date.now() + 4_000) }]);
  await fx.pool.query(`UPDATE ${fx.table} SET available_at = 'infinity' WHERE message_id = $1`, [stuck]);
  return { stuck: stuck!, parked, dead: dead! };
}

test.each([
  ['built by the migration', false],
  ['built CONCURRENTLY beforehand, as the file says for a large table', true],
])(
  'migration 0006 (%s) upgrades a filled outbox in place: every message keeps its state and order; long keys and late expiry work after it',
  async (_how, concurrently) => {
    const fx = await OutboxFixture.create(
      'upgrade6',
      loadMigrations().filter((m) => m.version <= 4),
    );
    try {
      const queue = uniqueName('upgrade6');
      const received = await broker.queue(queue);
      const { stuck, parked, dead } = await filledOutbox(fx, queue);
      const before = await snapshot(fx);
      if (concurrently) {
        // The statements the file's header gives, each from its CREATE line to its semicolon.
        const statements: string[] = [];
        let current: string[] | undefined;
        for (const line of readFileSync(join(MIGRATIONS_DIR, FILE), 'utf8').split('\n')) {
          const text = line.replace(/^--/, '').trim();
          if (text.startsWith('CREATE INDEX CONCURRENTLY')) current = [];
          if (current === undefined) continue;
          current.push(text);
          if (text.endsWith(';')) {
            statements.push(current.join(' '));
            current = undefined;
          }
        }
        expect(statements).toHaveLength(2);
        for (const statement of statements) await fx.pool.query(statement.replace('ON outbox.messages', `ON ${fx.table}`));
      }

      const migrated = await cli(['migrate'], envFor(fx.schema));
      expect(migrated).toMatchObject({ code: 0, stderr: '' });
      expect(migrated.stdout).toContain(FILE);
      expect(await snapshot(fx)).toEqual(before);
      const defs = await indexes(fx);
      expect(
        Object.keys(defs)
          .filter((name) => /pending/.test(name))
          .sort(),
      ).toEqual(['messages_pending_due_idx', 'messages_pending_key_idx']);
      expect(defs['messages_pending_key_idx']).toMatch(
        /\(hashtextextended\(partition_key, \(0\)::bigint\), id\) WHERE \(\(published_at IS NULL\) AND \(partition_key IS NOT NULL\)\)$/,
      );
      expect(defs['messages_pending_due_idx']).toMatch(
        /\(LEAST\(GREATEST\(available_at, next_attempt_at\), expires_at\)\) INCLUDE \(available_at, next_attempt_at, expires_at\) WHERE \(\(published_at IS NULL\) AND \(dead_at IS NULL\)\)$/,
      );

      // The relay takes over: the due messages in per-key order; the parked stay parked behind
      // the dead one, the delayed stay delayed; the row due at 'infinity' expires at its expires_at.
      await fx.startRelay({ OUTBOX_ORDERING_ON_DEAD: 'block' });
      await waitFor('the 30 due messages', () => received.length === 30);
      const arrived = bodies(received) as { key: string; i: number }[];
      for (const key of ['k0', 'k1', 'k2']) {
        const order = arrived.filter((b) => b.key === key).map((b) => b.i);
        expect(order).toEqual([...order].sort((a, b) => a - b));
        expect(order).toHaveLength(10);
      }
      await waitFor('the row due at infinity expired', async () => (await fx.row(stuck))['expired_at'] !== null, 15_000);
      await staysFalse('a parked, delayed or expired message published', () => received.length > 30, 500);
      for (const id of parked) expect((await fx.row(id))['published_at']).toBeNull();
      expect((await fx.row(dead))['expired_at']).toBeNull();
      expect(await fx.counts()).toMatchObject({ published: 40, dead: 2 });

      // A key no B-tree entry could hold is written now.
      await fx.insert([{ routing_key: queue, payload: {}, partition_key: randomBytes(30_000).toString('base64') }]);
    } finally {
      await fx.close();
    }
  },
);
