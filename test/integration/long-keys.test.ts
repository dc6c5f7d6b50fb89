import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { Client } from 'pg';
import { InspectStore } from '../../src/outbox/inspect-store';
import { defineMessage, enqueue } from '../../src/producer';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testDatabaseUrl } from '../kit/services';
import { bodies, TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

/**
 * Any partition key the column takes works: the ordering index holds a hash of the key
 * (migration 0006), so a long key no longer fails the producer's INSERT on a B-tree row
 * limit, and keys that share a hash never order one another.
 */
const fx = OutboxFixture.forFile('long_keys', { afterEach: 'reset' });
const broker = TestBroker.forFile();

/** `bytes` of random base64: text that does not compress. */
function incompressible(bytes: number): string {
  return randomBytes(Math.ceil((bytes * 3) / 4))
    .toString('base64')
    .slice(0, bytes);
}

test('keys of 2.8 KB, 10 KB and 1 MB that do not compress are written, by SQL and by the producer', async () => {
  const Order = defineMessage<{ n: number }>({ type: 'order.created', exchange: 'orders' });
  for (const bytes of [2_800, 10_000, 1_000_000]) {
    const key = incompressible(bytes);
    const [bySql] = await fx.insert([{ exchange: 'orders', routing_key: 'r', payload: { n: 1 }, partition_key: key }]);
    const client = await fx.pool.connect();
    try {
      await client.query('BEGIN');
      const byProducer = await enqueue(client, Order, { n: 2 }, { schema: fx.schema, partitionKey: key });
      await client.query('COMMIT');
      expect((await fx.row(byProducer))['partition_key']).toBe(key);
    } finally {
      client.release();
    }
    expect((await fx.row(bySql!))['partition_key']).toBe(key);
  }
});

test('generated keys of any length and script are written', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        fc.string({ unit: 'grapheme', maxLength: 2_000 }),
        fc.integer({ min: 2_000, max: 40_000 }).map(incompressible),
        fc.string({ unit: 'grapheme', minLength: 1, maxLength: 8 }).map((s) => s.repeat(3_000)),
      ),
      async (key) => {
        await fx.insert([{ exchange: 'orders', routing_key: 'r', payload: {}, partition_key: key.split(String.fromCharCode(0)).join('') }]);
      },
    ),
    { numRuns: 60 },
  );
});

test('long keys that differ only in their last character keep their own order, and one failing key holds back only itself', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('long');
  const prefix = incompressible(3_000);
  const keys = ['a', 'b', 'c'].map((last) => `${prefix}${last}`);
  // Interleaved: a1 b1 c1 a2 b2 c2 …; a's first message goes to an exchange that does not exist.
  const rows = [];
  for (let seq = 1; seq <= 20; seq += 1) {
    for (const [k, key] of keys.entries()) {
      const missing = k === 0 && seq === 1;
      rows.push({ exchange: missing ? uniqueName('missing') : exchange, routing_key: 'r', partition_key: key, payload: { k, seq } });
    }
  }
  await fx.insert(rows);
  await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '3', OUTBOX_ORDERING_ON_DEAD: 'skip' });
  await waitFor('the 59 messages behind and beside the failing one', () => received.length >= 59, 30_000);
  const arrived = bodies(received) as { k: number; seq: number }[];
  for (const k of [0, 1, 2]) {
    const order = arrived.filter((b) => b.k === k).map((b) => b.seq);
    expect({ k, order }).toEqual({ k, order: Array.from({ length: k === 0 ? 19 : 20 }, (_, i) => i + (k === 0 ? 2 : 1)) });
  }
  expect((await fx.counts()).dead).toBe(1);
});

describe('keys that share a hash', () => {
  /** A database URL whose sessions find the schema's functions before pg_catalog's. */
  const url = (): string => `${testDatabaseUrl()}?options=${encodeURIComponent(`-c search_path=${fx.schema},pg_catalog`)}`;

  beforeEach(async () => {
    // Every key hashes to 7: the index and every statement of the relay that finds a
    // key's rows by its hash see all keys as one.
    await fx.pool.query(`CREATE OR REPLACE FUNCTION "${fx.schema}".hashtextextended(key text, seed bigint) RETURNS bigint
                           IMMUTABLE LANGUAGE sql AS 'SELECT 7::bigint'`);
    await fx.pool.query(`DROP INDEX "${fx.schema}".messages_pending_key_idx`);
    await fx.pool.query(`CREATE INDEX messages_pending_key_idx ON ${fx.table} ("${fx.schema}".hashtextextended(partition_key, 0), id)
                           WHERE published_at IS NULL AND partition_key IS NOT NULL`);
  });

  test('a dead head holds its own key only: the other keys flow in their order, inspect lists only the key itself', async () => {
    const client = new Client({ connectionString: url() });
    await client.connect();
    try {
      const { rows } = await client.query<{ same: boolean }>(`SELECT hashtextextended('a', 0) = hashtextextended('b', 0) AS same`);
      expect(rows[0]?.same).toBe(true);
      const { exchange, received } = await broker.exchangeWithQueue('clash');
      const long = incompressible(5_000);
      const keys = ['a', 'b', long];
      const ids: string[][] = [[], [], []];
      for (let seq = 1; seq <= 10; seq += 1) {
        for (const [k, key] of keys.entries()) {
          const [id] = await fx.insert([{ exchange, routing_key: 'r', partition_key: key, payload: { k, seq } }]);
          ids[k]!.push(id!);
        }
      }
      // Key a's first message is dead; under OUTBOX_ORDERING_ON_DEAD=block it holds key a.
      await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 10, last_error = 'test' WHERE message_id = $1`, [ids[0]![0]]);
      await fx.startRelay({ OUTBOX_DATABASE_URL: url(), OUTBOX_ORDERING_ON_DEAD: 'block', OUTBOX_BATCH_SIZE: '7' });
      await waitFor('the 20 messages of the keys that are not held', () => received.length >= 20, 30_000);
      await staysFalse('a message of the held key', () => (bodies(received) as { k: number }[]).some((b) => b.k === 0), 1_000);
      const arrived = bodies(received) as { k: number; seq: number }[];
      for (const k of [1, 2])
        expect(arrived.filter((b) => b.k === k).map((b) => b.seq)).toEqual(Array.from({ length: 10 }, (_, i) => i + 1));

      const inspected = await new InspectStore(fx.schema).inspect(client, ids[0]![4]!, { deadHoldsKey: true, firstAhead: 20 });
      expect(inspected?.ahead?.count).toBe(4);
      expect(inspected?.ahead?.first.map((m) => m.messageId)).toEqual(ids[0]!.slice(0, 4));
    } finally {
      await client.end();
    }
  });
});
