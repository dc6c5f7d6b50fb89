import type { RunningRelay } from '../../src/app';
import type { ConsumeMessage } from 'amqplib';
import { Client } from 'pg';
import { DeadStore } from '../../src/outbox/dead-store';
import { OutboxFixture } from '../kit/outbox-fixture';
import { readMetrics } from '../kit/relay-http';
import { testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('ordering', { afterEach: 'reset' });
const broker = TestBroker.forFile();

/** A message's key and its place within the key (the payload `insertBacklog` and `setup()` write). */
interface Keyed {
  key: string;
  seq: number;
}

function decode(messages: readonly ConsumeMessage[]): Keyed[] {
  return messages.map((m) => JSON.parse(m.content.toString()) as Keyed);
}

/** Per key, the sequence numbers in order of FIRST delivery (duplicates dropped). */
function firstDeliveries(messages: readonly ConsumeMessage[]): Map<string, number[]> {
  const seen = new Set<string>();
  const byKey = new Map<string, number[]>();
  for (const { key, seq } of decode(messages)) {
    if (seen.has(`${key}/${seq}`)) continue;
    seen.add(`${key}/${seq}`);
    const list = byKey.get(key) ?? [];
    list.push(seq);
    byKey.set(key, list);
  }
  return byKey;
}

function expectInOrder(byKey: Map<string, number[]>, keys: number, perKey: number): void {
  expect(byKey.size).toBe(keys);
  for (const [key, ns] of byKey) {
    expect({ key, ns }).toEqual({ key, ns: Array.from({ length: perKey }, (_, i) => i + 1) });
  }
}

/** `keys` keys × `perKey` messages, inserted interleaved: every key's first, then every key's second, … */
async function insertKeyed(exchange: string, keys: number, perKey: number): Promise<void> {
  await fx.insertBacklog({ count: keys * perKey, keys, exchange, routingKey: 'k' });
}

/** Three in-process relays: one leads (and alone shows the outbox gauges), two stand by. */
async function threeRelays(overrides: Record<string, string> = {}): Promise<RunningRelay[]> {
  const relays: RunningRelay[] = [];
  for (let i = 0; i < 3; i += 1) relays.push((await fx.startRelay({ OUTBOX_BATCH_SIZE: '100', ...overrides })).relay);
  return relays;
}

test('three relays: 200 keys × 100 messages arrive with every key in order', async () => {
  const { exchange, received: queue } = await broker.exchangeWithQueue('ord');
  await insertKeyed(exchange, 200, 100);
  await threeRelays();
  await waitFor('every message published', async () => (await fx.counts()).published === 20_000, 60_000);
  await waitFor('every message received', () => queue.length >= 20_000, 30_000);
  expectInOrder(firstDeliveries(queue), 200, 100);
}, 120_000);

test('insertion order, not transaction-id order: the writer that held the older xid but waited for the lock is published second', async () => {
  const { exchange, received: queue } = await broker.exchangeWithQueue('xid');
  await fx.pool.query(`CREATE TABLE IF NOT EXISTS "${fx.schema}".aggregates (id text PRIMARY KEY, version int NOT NULL)`);
  await fx.pool.query(`INSERT INTO "${fx.schema}".aggregates VALUES ('order-1', 0) ON CONFLICT (id) DO UPDATE SET version = 0`);
  await threeRelays();
  const older = new Client({ connectionString: testDatabaseUrl() });
  const younger = new Client({ connectionString: testDatabaseUrl() });
  await Promise.all([older.connect(), younger.connect()]);
  try {
    const write = (client: Client, who: string): Promise<unknown> =>
      client.query(
        `UPDATE "${fx.schema}".aggregates SET version = version + 1 WHERE id = 'order-1';
         INSERT INTO ${fx.table} (exchange, routing_key, partition_key, payload)
           SELECT $1, 'k', 'order-1', jsonb_build_object('who', $2::text, 'version', version) FROM "${fx.schema}".aggregates WHERE id = 'order-1'`
          .replace(/\$1/g, `'${exchange}'`)
          .replace(/\$2::text/g, `'${who}'`),
      );
    await older.query('BEGIN');
    const olderXid = (await older.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x; // wrote something else first
    await younger.query('BEGIN');
    const youngerXid = (await younger.query<{ x: string }>('SELECT txid_current()::text AS x')).rows[0]!.x;
    expect(BigInt(olderXid)).toBeLessThan(BigInt(youngerXid));
    await write(younger, 'younger'); // takes the aggregate's row lock
    const olderWrite = write(older, 'older'); // waits for that lock
    await new Promise((resolve) => setTimeout(resolve, 200));
    await younger.query('COMMIT');
    await olderWrite;
    await older.query('COMMIT');
  } finally {
    await Promise.all([older.end(), younger.end()]);
  }
  await waitFor('both messages', () => queue.length === 2);
  expect(queue.map((m) => JSON.parse(m.content.toString()))).toEqual([
    { who: 'younger', version: 1 },
    { who: 'older', version: 2 },
  ]);
});

describe('a message that keeps failing holds back only its own key', () => {
  async function setup(): Promise<{ missing: string; exchange: string; queue: ConsumeMessage[]; poisonId: string }> {
    const { exchange, received: queue } = await broker.exchangeWithQueue('hold');
    const missing = uniqueName('missing');
    const [poisonId] = await fx.insert([
      { exchange: missing, routing_key: 'k', partition_key: 'K', payload: { key: 'K', seq: 1 } },
      { exchange, routing_key: 'k', partition_key: 'K', payload: { key: 'K', seq: 2 } },
      { exchange, routing_key: 'k', partition_key: 'other', payload: { key: 'other', seq: 1 } },
      { exchange, routing_key: 'k', partition_key: 'K', payload: { key: 'K', seq: 3 } },
      { exchange, routing_key: 'k', partition_key: 'other', payload: { key: 'other', seq: 2 } },
      { exchange, routing_key: 'k', payload: { key: 'none', seq: 1 } },
    ]);
    return { missing, exchange, queue, poisonId: poisonId! };
  }

  test('skip: K waits while its head is retried, then flows once the head is dead; other keys never wait', async () => {
    const { queue, poisonId } = await setup();
    await threeRelays({ OUTBOX_MAX_ATTEMPTS: '4', OUTBOX_BACKOFF_BASE_MS: '300', OUTBOX_BACKOFF_MAX_MS: '300' });
    await waitFor('the other keys', () => decode(queue).filter((m) => m.key !== 'K').length === 3);
    const head = await fx.row(poisonId);
    expect(head['dead_at']).toBeNull();
    expect(decode(queue).filter((m) => m.key === 'K')).toEqual([]);
    await waitFor('the head dead', async () => (await fx.row(poisonId))['dead_at'] !== null, 20_000);
    await waitFor("K's later messages", () => decode(queue).filter((m) => m.key === 'K').length === 2);
    expect(
      decode(queue)
        .filter((m) => m.key === 'K')
        .map((m) => m.seq),
    ).toEqual([2, 3]);
    const deadAt = (await fx.row(poisonId))['dead_at'] as Date;
    // The consumer may get them before the batch that sent them commits its marks.
    await waitFor("K's later messages marked", async () => (await fx.counts()).published === 5);
    const { rows } = await fx.pool.query(
      `SELECT min(published_at) AS first FROM ${fx.table} WHERE partition_key = 'K' AND published_at IS NOT NULL`,
    );
    expect((rows[0].first as Date).getTime()).toBeGreaterThanOrEqual(deadAt.getTime());
  }, 60_000);

  test('block: K stays held after its head dies (outbox_blocked_keys 1) until dead retry, then arrives in order', async () => {
    const { missing, queue, poisonId } = await setup();
    const relays = await threeRelays({ OUTBOX_MAX_ATTEMPTS: '2', OUTBOX_ORDERING_ON_DEAD: 'block' });
    await waitFor('the head dead', async () => (await fx.row(poisonId))['dead_at'] !== null, 20_000);
    await waitFor('the other keys', () => decode(queue).filter((m) => m.key !== 'K').length === 3);
    await staysFalse("K's later messages", () => decode(queue).some((m) => m.key === 'K'), 1_000);
    // The leader's scrape has the gauge (the standbys' have no outbox gauges).
    await waitFor('outbox_blocked_keys 1 on the leader', async () =>
      (await Promise.all(relays.map((r) => readMetrics(r.port)))).some((m) => m.value('outbox_blocked_keys') === 1),
    );

    // The operator fixes the cause and retries the dead message.
    await broker.exchange(missing);
    const late = await broker.queue(uniqueName('lateq'), { exchange: missing, pattern: '#' });
    expect(await new DeadStore(fx.schema).retryDead(fx.pool, [poisonId])).toEqual([poisonId]);
    await waitFor('the retried head', () => late.length === 1);
    await waitFor("K's later messages", () => decode(queue).filter((m) => m.key === 'K').length === 2);
    expect(
      decode(queue)
        .filter((m) => m.key === 'K')
        .map((m) => m.seq),
    ).toEqual([2, 3]);
    const published = await fx.pool.query(
      `SELECT payload->>'seq' AS seq FROM ${fx.table} WHERE partition_key = 'K' ORDER BY published_at, id`,
    );
    expect(published.rows.map((r) => Number(r.seq))).toEqual([1, 2, 3]);
  }, 60_000);

  test('block: dead discard releases the key as well', async () => {
    const { queue, poisonId } = await setup();
    await threeRelays({ OUTBOX_MAX_ATTEMPTS: '1', OUTBOX_ORDERING_ON_DEAD: 'block' });
    await waitFor('the head dead', async () => (await fx.row(poisonId))['dead_at'] !== null, 20_000);
    await staysFalse("K's later messages", () => decode(queue).some((m) => m.key === 'K'), 500);
    expect(await new DeadStore(fx.schema).discardDead(fx.pool, [poisonId])).toEqual([poisonId]);
    await waitFor("K's later messages", () => decode(queue).filter((m) => m.key === 'K').length === 2);
    expect(
      decode(queue)
        .filter((m) => m.key === 'K')
        .map((m) => m.seq),
    ).toEqual([2, 3]);
  }, 60_000);
});

test('kill -9 of one of three relays mid-stream: every key still sees its first deliveries in order', async () => {
  const { exchange, received: queue } = await broker.exchangeWithQueue('k9');
  await insertKeyed(exchange, 100, 100);
  const relays = await Promise.all([0, 1, 2].map(() => fx.spawnRelay({ OUTBOX_BATCH_SIZE: '200' })));
  await waitFor('publishing under way', () => queue.length > 1_500, 30_000, 5);
  relays[0]!.kill('SIGKILL');
  expect((await relays[0]!.exited).signal).toBe('SIGKILL');
  await waitFor('every message published', async () => (await fx.counts()).published === 10_000, 60_000);
  await waitFor(
    'every message received',
    () => firstDeliveries(queue).size === 100 && [...firstDeliveries(queue).values()].every((ns) => ns.length === 100),
    30_000,
  );
  expectInOrder(firstDeliveries(queue), 100, 100);
}, 120_000);

// How fast three relays drain a single hot key is a figure of `npm run bench`
// ("drain, a single key, 3 relays (20,000)"), not something a test asserts.
test('a single hot key: a 20,000-message backlog drains in order with three relays, nothing lost, nothing twice', async () => {
  const { exchange, received: queue } = await broker.exchangeWithQueue('hot');
  await insertKeyed(exchange, 1, 20_000);
  for (let i = 0; i < 3; i += 1) await fx.startRelay();
  await waitFor('the backlog drained', async () => (await fx.counts()).published === 20_000, 60_000, 50);
  await waitFor('every message received', () => queue.length >= 20_000, 30_000);
  expectInOrder(firstDeliveries(queue), 1, 20_000);
  expect(queue.length).toBe(20_000);
}, 120_000);
