import { randomUUID } from 'node:crypto';
import type { Consumer } from '../../src/consumer/consumer';
import { cleanupInbox, createConsumer, defineMessage, enqueue } from '../../src/index';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('consumer');
const broker = TestBroker.forFile();
const consumers: Consumer[] = [];

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
  await fx.pool.query(`CREATE TABLE "${fx.schema}".shipments (order_id text PRIMARY KEY, message_id text NOT NULL)`);
});

/** Queues whose retry queue the consumer declared (a failing handler), deleted after each test. */
const retried: string[] = [];

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
  for (const queue of retried.splice(0)) await broker.channel.deleteQueue(`${queue}.retry`).catch(() => undefined);
  await fx.pool.query(`TRUNCATE "${fx.schema}".shipments, "${fx.schema}".inbox`);
});

/** A work queue with a dead-letter exchange and its dead-letter queue. */
async function queueWithDlx(): Promise<{
  queue: string;
  dead: { content: Buffer; properties: { messageId?: unknown; headers?: Record<string, unknown> } }[];
}> {
  const dlx = await broker.exchange(uniqueName('dlx'), 'fanout');
  const dlq = uniqueName('dlq');
  const dead = await broker.queue(dlq, { exchange: dlx, pattern: '' });
  const queue = await broker.declareQueue(uniqueName('work'), undefined, { 'x-dead-letter-exchange': dlx });
  retried.push(queue);
  return { queue, dead };
}

function send(queue: string, messageId: string, payload: unknown): void {
  broker.channel.sendToQueue(queue, Buffer.from(JSON.stringify(payload)), {
    messageId,
    contentType: 'application/json',
    type: 'ship.order',
  });
}

async function shipments(): Promise<{ order_id: string; message_id: string }[]> {
  return (await fx.pool.query(`SELECT order_id, message_id FROM "${fx.schema}".shipments ORDER BY order_id`)).rows;
}

test('a message delivered twice is handled once; the duplicate is acknowledged and skipped', async () => {
  const { queue } = await queueWithDlx();
  const calls: string[] = [];
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    handler: async (msg, tx) => {
      calls.push(msg.messageId);
      await tx.query(`INSERT INTO "${fx.schema}".shipments VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
    },
  });
  consumers.push(consumer);
  const messageId = randomUUID();
  send(queue, messageId, { orderId: 'o-1' });
  send(queue, messageId, { orderId: 'o-1' }); // published twice by hand
  await waitFor('both deliveries settled', () => consumer.stats.handled + consumer.stats.duplicates === 2);
  expect(calls).toEqual([messageId]);
  expect(consumer.stats).toEqual({ handled: 1, duplicates: 1, retried: 0, rejected: 0, reconnects: 0 });
  expect(await shipments()).toEqual([{ order_id: 'o-1', message_id: messageId }]);
  // Both were acknowledged: nothing is left in the queue.
  await waitFor('an empty queue', async () => (await broker.channel.checkQueue(queue)).messageCount === 0);
  const inbox = await fx.pool.query(`SELECT consumer FROM "${fx.schema}".inbox WHERE message_id = $1`, [messageId]);
  expect(inbox.rows).toEqual([{ consumer: queue }]);
});

test('a handler that throws is retried through the retry queue, rolled back each time, then dead-lettered', async () => {
  const { queue, dead } = await queueWithDlx();
  let calls = 0;
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    maxRetries: 2,
    retryDelayMs: 10,
    handler: async (msg, tx) => {
      calls += 1;
      await tx.query(`INSERT INTO "${fx.schema}".shipments VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
      throw new Error('carrier API down');
    },
  });
  consumers.push(consumer);
  const messageId = randomUUID();
  send(queue, messageId, { orderId: 'o-2' });
  await waitFor('the dead-lettered message', () => dead.length === 1);
  expect(dead[0]!.properties.messageId).toBe(messageId);
  expect(calls).toBe(3);
  expect(consumer.stats).toMatchObject({ retried: 2, rejected: 1 });
  // Rejected to the queue's own dead-letter exchange, with the headers of its last retry.
  expect(dead[0]!.properties.headers).toMatchObject({ 'x-outbox-consumer-attempts': 2, 'x-outbox-consumer-error': 'carrier API down' });
  expect(await shipments()).toEqual([]);
  const inbox = await fx.pool.query(`SELECT 1 FROM "${fx.schema}".inbox WHERE message_id = $1`, [messageId]);
  expect(inbox.rowCount).toBe(0);
});

test('a handler that fails once succeeds on retry, exactly once', async () => {
  const { queue, dead } = await queueWithDlx();
  let calls = 0;
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    retryDelayMs: 10,
    handler: async (msg, tx) => {
      calls += 1;
      await tx.query(`INSERT INTO "${fx.schema}".shipments VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
      if (calls === 1) throw new Error('transient');
    },
  });
  consumers.push(consumer);
  send(queue, randomUUID(), { orderId: 'o-3' });
  await waitFor('handled', () => consumer.stats.handled === 1);
  expect(calls).toBe(2);
  expect((await shipments()).map((s) => s.order_id)).toEqual(['o-3']);
  await staysFalse('a dead-lettered message', () => dead.length > 0, 200);
});

test('end to end: producer → relay → idempotent consumer, each message processed once', async () => {
  const exchange = await broker.exchange(uniqueName('orders'));
  const queue = await broker.declareQueue(uniqueName('e2e'), { exchange, pattern: 'order.*' });
  const OrderCreated = defineMessage<{ orderId: string }>({ type: 'order.created', exchange, routingKey: 'order.created' });
  const seen: string[] = [];
  await fx.startRelay();
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    name: 'shipping',
    pool: fx.pool,
    schema: fx.schema,
    handler: async (msg, tx) => {
      seen.push(msg.payload.orderId);
      await tx.query(`INSERT INTO "${fx.schema}".shipments VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
    },
  });
  consumers.push(consumer);
  for (let i = 0; i < 20; i += 1) {
    const client = await fx.pool.connect();
    try {
      await client.query('BEGIN');
      await enqueue(client, OrderCreated, { orderId: `e-${String(i).padStart(2, '0')}` }, { schema: fx.schema });
      await client.query('COMMIT');
    } finally {
      client.release();
    }
  }
  await waitFor('20 shipments', async () => (await shipments()).length === 20);
  expect(new Set(seen).size).toBe(20);
});

test('inbox rows past their retention are deleted', async () => {
  await fx.pool.query(
    `INSERT INTO "${fx.schema}".inbox (consumer, message_id, processed_at) VALUES ('c', 'old', now() - interval '8 days'), ('c', 'new', now())`,
  );
  expect(await cleanupInbox(fx.pool, 7 * 86_400_000, fx.schema)).toBe(1);
  const { rows } = await fx.pool.query(`SELECT message_id FROM "${fx.schema}".inbox`);
  expect(rows).toEqual([{ message_id: 'new' }]);
});

test('stop() waits for the message in flight and then stops consuming', async () => {
  const { queue } = await queueWithDlx();
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    handler: async (msg, tx) => {
      await gate;
      await tx.query(`INSERT INTO "${fx.schema}".shipments VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
    },
  });
  send(queue, randomUUID(), { orderId: 's-1' });
  await waitFor('the message in flight', async () => (await broker.channel.checkQueue(queue)).messageCount === 0);
  const stopped = consumer.stop();
  setTimeout(release, 100);
  await stopped;
  expect(consumer.stats.handled).toBe(1);
  expect(await consumer.closed).toBeUndefined();
  send(queue, randomUUID(), { orderId: 's-2' });
  await staysFalse('a message consumed after stop', async () => (await shipments()).length > 1, 300);
});

test('stop() past its shutdown timeout rolls back the handler in flight; its message goes back to the queue', async () => {
  const { queue } = await queueWithDlx();
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  let entered = false;
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    shutdownTimeoutMs: 200,
    handler: async (msg, tx) => {
      await tx.query(`INSERT INTO "${fx.schema}".shipments VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
      entered = true;
      await gate;
      await tx.query('SELECT 1');
    },
  });
  const states: string[] = [];
  consumer.on('state', (change) => states.push(`${change.previous}→${change.state}`));
  send(queue, randomUUID(), { orderId: 't-1' });
  await waitFor('the handler inside its transaction', () => entered);
  await consumer.stop();
  expect(states).toEqual(['consuming→stopping', 'stopping→stopped']);
  expect(consumer.state).toBe('stopped');
  release();
  await waitFor('the message back in the queue', async () => (await broker.channel.checkQueue(queue)).messageCount === 1);
  expect(await shipments()).toEqual([]);
  expect((await fx.pool.query(`SELECT 1 FROM "${fx.schema}".inbox`)).rowCount).toBe(0);
  expect(consumer.stats.handled).toBe(0);
});
