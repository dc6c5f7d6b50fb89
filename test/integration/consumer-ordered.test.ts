import { connect } from 'amqplib';
import type { InboxMessage } from '../../src/consumer/index';
import { createConsumer, type Consumer } from '../../src/consumer/index';
import { OutboxFixture } from '../kit/outbox-fixture';
import { closeConnectionsNamed } from '../kit/rabbitmqctl';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

/**
 * `ordered: true`: messages of one key are processed one after another in delivery
 * order, different keys at once; a failing message holds its key (retried in place) and
 * only its key; a dead-lettered one releases it; messages without a key are free. And
 * end to end: the relay's key and position headers reach the handler.
 */

const fx = OutboxFixture.forFile('consumer_ordered');
const broker = TestBroker.forFile();
const consumers: Consumer[] = [];

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
  // `seq` follows the order in which handlers wrote; no key on message_id: twice would show.
  await fx.pool.query(`CREATE TABLE "${fx.schema}".processed (seq bigserial, key text, n int NOT NULL, message_id text NOT NULL)`);
});

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
  await fx.pool.query(`TRUNCATE "${fx.schema}".processed, "${fx.schema}".inbox`);
});

interface Body {
  readonly key?: string;
  readonly n: number;
  /** The handler takes 20 ms. */
  readonly slow?: boolean;
}

/** A queue with a dead-letter queue; `send` publishes with the relay's key and position headers. */
async function setup(): Promise<{ queue: string; dead: { properties: { messageId?: unknown } }[]; send: (m: Body) => string }> {
  const dlx = await broker.exchange(uniqueName('dlx'), 'fanout');
  const dead = await broker.queue(uniqueName('dlq'), { exchange: dlx, pattern: '' });
  const queue = await broker.declareQueue(uniqueName('ordered'), undefined, { 'x-dead-letter-exchange': dlx });
  let position = 0;
  const send = (m: Body): string => {
    position += 1;
    const messageId = `${queue}-${position}`;
    broker.channel.sendToQueue(queue, Buffer.from(JSON.stringify(m)), {
      messageId,
      contentType: 'application/json',
      headers: { ...(m.key === undefined ? {} : { 'x-outbox-partition-key': m.key }), 'x-outbox-position': position },
    });
    return messageId;
  };
  return { queue, dead, send };
}

/** The order in which the handlers' writes committed, per key ('-': no key). */
async function perKey(): Promise<Map<string, number[]>> {
  const { rows } = await fx.pool.query<{ key: string | null; n: number }>(`SELECT key, n FROM "${fx.schema}".processed ORDER BY seq`);
  const byKey = new Map<string, number[]>();
  for (const row of rows) byKey.set(row.key ?? '-', [...(byKey.get(row.key ?? '-') ?? []), row.n]);
  return byKey;
}

interface Started {
  readonly consumer: Consumer;
  /** Every handler call, in order: `key#n` (attempt). */
  readonly calls: string[];
  /** Most handlers running at once. */
  peak(): number;
}

/** An ordered consumer whose handler records the message, then throws when `fails(message)`. */
async function start(
  queue: string,
  fails: (msg: InboxMessage<Body>) => boolean,
  options: Partial<Parameters<typeof createConsumer>[0]> = {},
): Promise<Started> {
  const calls: string[] = [];
  let active = 0;
  let peak = 0;
  const consumer = await createConsumer<Body>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    ordered: true,
    prefetch: 100,
    maxRetries: 1_000,
    retryDelayMs: 20,
    retryMaxDelayMs: 20,
    handler: async (msg, tx) => {
      active += 1;
      peak = Math.max(peak, active);
      try {
        calls.push(`${msg.partitionKey ?? '-'}#${msg.payload.n}`);
        expect(msg.partitionKey).toBe(msg.payload.key);
        await tx.query(`INSERT INTO "${fx.schema}".processed (key, n, message_id) VALUES ($1, $2, $3)`, [
          msg.partitionKey ?? null,
          msg.payload.n,
          msg.messageId,
        ]);
        if (msg.payload.n % 7 === 0 || msg.payload.slow) await new Promise((resolve) => setTimeout(resolve, msg.payload.slow ? 20 : 2));
        if (fails(msg)) throw new Error(`${msg.partitionKey ?? '-'}#${msg.payload.n} fails on purpose`);
      } finally {
        active -= 1;
      }
    },
    ...options,
  });
  consumers.push(consumer);
  return { consumer, calls, peak: () => peak };
}

/** Whether a queue exists, asked on a connection of its own (a 404 closes the channel it is asked on). */
async function queueExists(name: string): Promise<boolean> {
  const model = await connect(testAmqpUrl());
  try {
    const channel = await model.createChannel();
    channel.on('error', () => undefined);
    return await channel.checkQueue(name).then(
      () => true,
      () => false,
    );
  } finally {
    await model.close().catch(() => undefined);
  }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i);

test('200 keys of 20 messages each at prefetch 100: each key in order, different keys at once, each message once', async () => {
  const { queue, send } = await setup();
  const { consumer, peak } = await start(queue, () => false);
  for (let n = 1; n <= 20; n += 1) for (let k = 0; k < 200; k += 1) send({ key: `k${k}`, n });
  await waitFor('4,000 handled', () => consumer.stats.handled === 4_000, 60_000);
  const byKey = await perKey();
  expect(byKey.size).toBe(200);
  for (const [key, ns] of byKey) expect({ key, ns }).toEqual({ key, ns: range(1, 20) });
  expect(peak()).toBeGreaterThanOrEqual(2); // keys on several connections at once
  const { rows } = await fx.pool.query(`SELECT count(DISTINCT message_id)::int AS n, count(*)::int AS total FROM "${fx.schema}".processed`);
  expect(rows[0]).toEqual({ n: 4_000, total: 4_000 });
});

test('a failing message holds its key, and only its key, while it is retried in place; then the key goes on in order', async () => {
  const { queue, send } = await setup();
  let released = false;
  const { consumer, calls } = await start(queue, (msg) => msg.payload.key === 'held' && msg.payload.n === 1 && !released);
  for (let n = 1; n <= 5; n += 1) send({ key: 'held', n });
  for (let n = 1; n <= 30; n += 1) send({ key: `free${n % 3}`, n });
  for (let n = 1; n <= 10; n += 1) send({ n });
  await waitFor('the other keys and the keyless handled', () => consumer.stats.handled === 40);
  await waitFor('held#1 retried a few times', () => consumer.stats.retried >= 3);
  // Its key's later messages did not run while it failed.
  expect(calls.filter((c) => c.startsWith('held#') && c !== 'held#1')).toEqual([]);
  expect((await perKey()).get('held')).toBeUndefined();
  released = true;
  await waitFor('all 45 handled', () => consumer.stats.handled === 45);
  expect((await perKey()).get('held')).toEqual(range(1, 5));
  // Retried in place: nothing went to a retry queue.
  expect(await queueExists(`${queue}.retry`)).toBe(false);
});

test('a dead-lettered message releases its key: the next ones of the key run after it, in order', async () => {
  const { queue, send, dead } = await setup();
  const { consumer, calls } = await start(queue, (msg) => msg.payload.key === 'dies' && msg.payload.n === 1, { maxRetries: 1 });
  const first = send({ key: 'dies', n: 1 });
  send({ key: 'dies', n: 2 });
  send({ key: 'dies', n: 3 });
  await waitFor('2 handled and 1 dead-lettered', () => consumer.stats.handled === 2 && dead.length === 1);
  expect(dead[0]!.properties.messageId).toBe(first);
  expect(calls).toEqual(['dies#1', 'dies#1', 'dies#2', 'dies#3']);
  expect((await perKey()).get('dies')).toEqual([2, 3]);
});

test('messages without a key are free: one that fails goes to the retry queue, and the others do not wait for it', async () => {
  const { queue, send } = await setup();
  const ref: { consumer?: Consumer } = {};
  // The first fails until the nine others are handled: they must not wait for it.
  const started = await start(queue, (msg) => msg.payload.n === 1 && (ref.consumer?.stats.handled ?? 0) < 9, {
    retryDelayMs: 50,
    retryMaxDelayMs: 50,
  });
  const consumer = started.consumer;
  ref.consumer = consumer;
  for (let n = 1; n <= 10; n += 1) send({ n });
  await waitFor('10 handled', () => consumer.stats.handled === 10);
  const order = (await perKey()).get('-') as number[];
  expect(order.indexOf(1)).toBe(9); // it came back through the retry queue, after the others
  expect(consumer.stats.retried).toBeGreaterThanOrEqual(1);
  expect(await queueExists(`${queue}.retry`)).toBe(true);
  await broker.channel.deleteQueue(`${queue}.retry`);
});

test('a connection the broker closes mid-stream: it reconnects, each message once, each key still in order', async () => {
  const { queue, send } = await setup();
  const name = uniqueName('ordered_faults');
  const { consumer } = await start(queue, () => false, { name });
  // 20 ms a message on the pool's 4 connections: about 8 s in all.
  for (let n = 1; n <= 30; n += 1) for (let k = 0; k < 50; k += 1) send({ key: `k${k}`, n, slow: true });
  await waitFor('200 handled', () => consumer.stats.handled >= 200, 30_000, 1);
  expect(await closeConnectionsNamed(`${name} (outbox-relay consumer)`, 'forced by the consumer-ordered test')).toBe(1);
  await waitFor('consuming again', () => consumer.stats.reconnects === 1);
  expect(consumer.stats.handled).toBeLessThan(1_500); // mid-stream
  await waitFor('1,500 processed', async () => {
    const { rows } = await fx.pool.query<{ n: number }>(`SELECT count(DISTINCT message_id)::int AS n FROM "${fx.schema}".processed`);
    return rows[0]!.n === 1_500;
  });
  const { rows } = await fx.pool.query(`SELECT count(*)::int AS n FROM "${fx.schema}".processed`);
  expect(rows[0]).toEqual({ n: 1_500 }); // each once: the redelivered ones found in the inbox
  const byKey = await perKey();
  for (const [key, ns] of byKey) expect({ key, ns }).toEqual({ key, ns: range(1, 30) });
});

test('end to end: keyed rows through the relay reach an ordered consumer with their key and position, each key in order', async () => {
  const exchange = await broker.exchange(uniqueName('orders'));
  const queue = await broker.declareQueue(uniqueName('e2e_ordered'), { exchange, pattern: '#' });
  await fx.insertBacklog({ count: 1_000, exchange, routingKey: 'order.changed', keys: 50, keyPrefix: 'order-' });
  const positions = new Map<string, number[]>();
  const seqs = new Map<string, number[]>();
  const consumer = await createConsumer<{ key: string; seq: number }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    ordered: true,
    prefetch: 100,
    handler: async (msg, tx) => {
      await tx.query('SELECT 1');
      const key = msg.partitionKey as string;
      positions.set(key, [...(positions.get(key) ?? []), msg.position as number]);
      seqs.set(key, [...(seqs.get(key) ?? []), msg.payload.seq]);
    },
  });
  consumers.push(consumer);
  await fx.startRelay();
  await waitFor('1,000 handled', () => consumer.stats.handled === 1_000, 30_000);
  expect(seqs.size).toBe(50);
  for (const [key, list] of seqs) expect({ key, list }).toEqual({ key, list: range(1, 20) });
  for (const list of positions.values()) expect(list).toEqual([...list].sort((a, b) => a - b));
  const { rows } = await fx.pool.query<{ position: string }>(
    `SELECT id::text AS position FROM ${fx.table} WHERE partition_key = 'order-1' ORDER BY id`,
  );
  expect(positions.get('order-1')).toEqual(rows.map((r) => Number(r.position)));
});
