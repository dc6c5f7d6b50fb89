import { randomUUID } from 'node:crypto';
import type { ConsumeMessage } from 'amqplib';
import { Pool } from 'pg';
import { createConsumer, type Consumer } from '../../src/consumer/index';
import { trackOpen } from '../kit/open-resources';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

/**
 * The batched inbox: several deliveries in one transaction, each handler in its own
 * savepoint, one commit, then the acks — and the inbox as exact as with a transaction
 * per message: a failing handler rolls back only its own work, a duplicate is skipped,
 * a handler that swallows its own SQL error is not taken for a success, and a database
 * that goes away costs no attempt.
 */

const fx = OutboxFixture.forFile('consumer_batches');
const broker = TestBroker.forFile();
const cleanups: (() => Promise<unknown>)[] = [];

/** A pool whose clients pipeline their statements (pg's `pipeline` option). */
const pipelined = new Pool({ connectionString: testDatabaseUrl(), max: 4, pipeline: true });
const untrackPipelined = trackOpen(pipelined, { kind: 'pg pool', detail: 'consumer-batches pool in pipeline mode' });
afterAll(async () => {
  await pipelined.end();
  untrackPipelined();
});

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
  // No primary key: a message processed twice would show as two rows.
  await fx.pool.query(`CREATE TABLE "${fx.schema}".done (message_id text NOT NULL, tx bigint NOT NULL)`);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
  await fx.pool.query(`TRUNCATE "${fx.schema}".done, "${fx.schema}".inbox`);
});

/** A queue with a dead-letter exchange and queue (what the consumer rejects lands there). */
async function queueWithDlq(): Promise<{ queue: string; dead: ConsumeMessage[] }> {
  const dlx = await broker.exchange(uniqueName('dlx'), 'fanout');
  const dead = await broker.queue(uniqueName('dlq'), { exchange: dlx, pattern: '' });
  const queue = await broker.declareQueue(uniqueName('batch'), undefined, { 'x-dead-letter-exchange': dlx });
  cleanups.push(() => broker.channel.deleteQueue(`${queue}.retry`).catch(() => undefined));
  return { queue, dead };
}

function send(queue: string, messageId: string, body: Record<string, unknown> = {}): void {
  broker.channel.sendToQueue(queue, Buffer.from(JSON.stringify(body)), { messageId, contentType: 'application/json' });
}

async function done(): Promise<{ message_id: string; tx: string }[]> {
  return (await fx.pool.query(`SELECT message_id, tx::text AS tx FROM "${fx.schema}".done ORDER BY message_id`)).rows;
}

async function start(queue: string, options: Partial<Parameters<typeof createConsumer>[0]> = {}): Promise<Consumer> {
  const consumer = await createConsumer<{ fail?: boolean; swallow?: boolean; slow?: boolean }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    prefetch: 100,
    maxRetries: 1,
    retryDelayMs: 20,
    handler: async (msg, tx) => {
      await tx.query(`INSERT INTO "${fx.schema}".done VALUES ($1, txid_current())`, [msg.messageId]);
      if (msg.payload.fail) throw new Error(`message ${msg.messageId} fails on purpose`);
      if (msg.payload.swallow) await tx.query('SELECT 1/0').catch(() => undefined);
      if (msg.payload.slow) await new Promise((resolve) => setTimeout(resolve, 20));
    },
    ...options,
  });
  cleanups.push(() => consumer.stop());
  return consumer;
}

// The same with a pool in pipeline mode, where a savepoint travels with the handler's first statement.
describe.each([
  ['a pool', (): Pool => fx.pool],
  ['a pool in pipeline mode', (): Pool => pipelined],
])('with %s', (_, pool) => {
  test('a backlog is processed in shared transactions, each message exactly once, and all acknowledged', async () => {
    const { queue } = await queueWithDlq();
    const ids = Array.from({ length: 300 }, (_, i) => `m-${String(i).padStart(3, '0')}`);
    for (const id of ids) send(queue, id);
    const consumer = await start(queue, { pool: pool() });
    await waitFor('300 handled', () => consumer.stats.handled === 300);
    const rows = await done();
    expect(rows.map((r) => r.message_id)).toEqual(ids);
    const transactions = new Set(rows.map((r) => r.tx)).size;
    // With the pool's 4 connections and 100 in flight, batches form by themselves.
    expect(transactions).toBeLessThan(150);
    const inbox = await fx.pool.query(`SELECT count(*)::int AS n FROM "${fx.schema}".inbox`);
    expect(inbox.rows[0].n).toBe(300);
    await waitFor('an empty queue', async () => (await broker.channel.checkQueue(queue)).messageCount === 0);
    await consumer.stop();
    // Nothing unacknowledged came back to the queue when the consumer's channel closed.
    expect((await broker.channel.checkQueue(queue)).messageCount).toBe(0);
    expect(consumer.stats).toMatchObject({ handled: 300, duplicates: 0, retried: 0, rejected: 0 });
  });

  test("a failing handler rolls back only its own work; the batch's others commit; a copy of a message is a duplicate", async () => {
    const { queue, dead } = await queueWithDlq();
    const ids: string[] = [];
    for (let i = 0; i < 40; i += 1) {
      const id = `b-${String(i).padStart(2, '0')}`;
      ids.push(id);
      send(queue, id, { fail: i === 17 });
    }
    send(queue, 'b-05'); // a copy of a message in the same backlog
    const batched = await start(queue, { batchSize: 64, pool: pool() });
    await waitFor('39 handled and the failing one dead-lettered', () => batched.stats.handled === 39 && dead.length === 1);
    const rows = await done();
    expect(rows.map((r) => r.message_id)).toEqual(ids.filter((id) => id !== 'b-17'));
    expect(dead.map((d) => d.properties.messageId)).toEqual(['b-17']);
    expect(dead[0]!.properties.headers?.['x-outbox-consumer-error']).toBe('message b-17 fails on purpose');
    expect(batched.stats).toMatchObject({ handled: 39, duplicates: 1, retried: 1, rejected: 1 });
    const inbox = await fx.pool.query(`SELECT message_id FROM "${fx.schema}".inbox ORDER BY message_id`);
    expect(inbox.rows.map((r: { message_id: string }) => r.message_id)).toEqual(ids.filter((id) => id !== 'b-17'));
    // The others shared transactions with the failing one: its savepoint, not the batch, was rolled back.
    expect(new Set(rows.map((r) => r.tx)).size).toBeLessThan(39);
  });

  test('a handler that catches an error of its own statement and returns is a failure, in a batch and alone, never acknowledged as done', async () => {
    for (const batchSize of [64, 1]) {
      const { queue, dead } = await queueWithDlq();
      for (let i = 0; i < 10; i += 1) send(queue, `s${batchSize}-${i}`, { swallow: i === 4 });
      const batched = await start(queue, { batchSize, pool: pool() });
      await waitFor('9 handled and one dead-lettered', () => batched.stats.handled === 9 && dead.length === 1);
      expect(dead[0]!.properties.messageId).toBe(`s${batchSize}-4`);
      expect(String(dead[0]!.properties.headers?.['x-outbox-consumer-error'])).toMatch(/transaction was aborted by an error it caught/);
      expect((await done()).map((r) => r.message_id)).toEqual(
        Array.from({ length: 10 }, (_, i) => `s${batchSize}-${i}`).filter((id) => !id.endsWith('-4')),
      );
      await fx.pool.query(`TRUNCATE "${fx.schema}".done, "${fx.schema}".inbox`);
    }
  });
});

test('the database going away mid-batch costs no attempt: the deliveries wait, then each is processed once', async () => {
  const proxy = await TcpProxy.inFrontOf(testDatabaseUrl());
  cleanups.push(() => proxy.close());
  const pool = new Pool({ connectionString: proxy.url(testDatabaseUrl()), max: 4, connectionTimeoutMillis: 1_000 });
  const untrack = trackOpen(pool, { kind: 'pg pool', detail: 'consumer-batches pool behind a proxy' });
  pool.on('error', () => undefined);
  cleanups.push(async () => {
    await pool.end();
    untrack();
  });
  const { queue, dead } = await queueWithDlq();
  let active = 0;
  const consumer = await start(queue, {
    pool,
    reconnectBaseMs: 50,
    reconnectMaxMs: 200,
    handler: async (msg, tx) => {
      active += 1;
      try {
        await tx.query(`INSERT INTO "${fx.schema}".done VALUES ($1, txid_current())`, [msg.messageId]);
        await new Promise((resolve) => setTimeout(resolve, 20));
      } finally {
        active -= 1;
      }
    },
  });
  for (let i = 0; i < 100; i += 1) send(queue, `a-${i}`);
  await waitFor('10 handled', () => consumer.stats.handled >= 10);
  await waitFor('a handler inside its batch', () => active > 0, 20_000, 1);
  proxy.cut();
  await staysFalse('a message retried or dead-lettered while the database is away', () => consumer.stats.retried + dead.length > 0, 1_000);
  proxy.restore();
  await waitFor('all 100 done', async () => (await done()).length === 100);
  expect(new Set((await done()).map((r) => r.message_id)).size).toBe(100);
  await waitFor('all 100 settled', () => consumer.stats.handled + consumer.stats.duplicates >= 100);
  expect(consumer.stats.retried).toBe(0);
  expect(dead).toEqual([]);
  expect(consumer.state).toBe('consuming');
});

test('with a message id the same as another in flight elsewhere, the inbox serialises them: one processes, the other is a duplicate', async () => {
  const { queue } = await queueWithDlq();
  const id = randomUUID();
  const consumer = await start(queue, { batchSize: 1 });
  const second = await start(queue, { batchSize: 1 });
  for (let i = 0; i < 20; i += 1) send(queue, id);
  await waitFor(
    '20 settled',
    () => consumer.stats.handled + consumer.stats.duplicates + second.stats.handled + second.stats.duplicates === 20,
  );
  expect(await done()).toHaveLength(1);
  expect(consumer.stats.handled + second.stats.handled).toBe(1);
});
