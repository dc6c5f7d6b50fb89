import { connect, type GetMessage } from 'amqplib';
import { Registry } from 'prom-client';
import { createConsumer, OutboxError, type Consumer } from '../../src/consumer/index';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { connectionPids } from '../kit/rabbitmqctl';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

/**
 * The topology the consumer declares, retries through the retry queue (out of the
 * prefetch window), dead letters with their headers, quorum queues, metrics, the
 * connection name, and the errors of a consumer that cannot start.
 */

const fx = OutboxFixture.forFile('consumer_retries');
const broker = TestBroker.forFile();
const consumers: Consumer[] = [];
const declared: string[] = [];

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
  await fx.pool.query(`CREATE TABLE "${fx.schema}".orders (order_id text NOT NULL, message_id text NOT NULL)`);
});

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
  for (const queue of declared.splice(0)) {
    for (const q of [queue, `${queue}.retry`, `${queue}.dead`]) await broker.channel.deleteQueue(q).catch(() => undefined);
    await broker.channel.deleteExchange(`${queue}.dead`).catch(() => undefined);
  }
});

function publish(exchange: string, routingKey: string, messageId: string, payload: unknown): void {
  broker.channel.publish(exchange, routingKey, Buffer.from(JSON.stringify(payload)), {
    messageId,
    contentType: 'application/json',
    type: 'order.created',
    headers: { tenant: 't-1' },
  });
}

/** Every message in `queue` now, taken off it. */
async function drain(queue: string): Promise<GetMessage[]> {
  const got: GetMessage[] = [];
  for (;;) {
    const msg = await broker.channel.get(queue, { noAck: true });
    if (msg === false) return got;
    got.push(msg);
  }
}

test('a failing message leaves the prefetch window for the retry queue, then is dead-lettered with its error and attempts', async () => {
  const exchange = await broker.exchange(uniqueName('orders'));
  const queue = uniqueName('retries');
  declared.push(queue);
  const registry = new Registry();
  const calls: string[] = [];
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    topology: { exchange, bindingKeys: ['order.*'] },
    prefetch: 1,
    maxRetries: 2,
    retryDelayMs: 300,
    registry,
    handler: async (msg, tx) => {
      calls.push(`${msg.payload.orderId}#${msg.attempt} ${msg.exchange}/${msg.routingKey}`);
      await tx.query(`INSERT INTO "${fx.schema}".orders VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
      if (msg.payload.orderId === 'bad') throw new Error('carrier API down');
    },
  });
  consumers.push(consumer);
  publish(exchange, 'order.bad', 'm-bad', { orderId: 'bad' });
  publish(exchange, 'order.good', 'm-good', { orderId: 'good' });

  let dead: GetMessage[] = [];
  await waitFor('the dead-lettered message', async () => {
    dead = [...dead, ...(await drain(`${queue}.dead`))];
    return dead.length === 1;
  });
  // With prefetch 1, the good message was handled while the bad one waited in the retry queue.
  expect(calls).toEqual([
    `bad#1 ${exchange}/order.bad`,
    `good#1 ${exchange}/order.good`,
    `bad#2 ${exchange}/order.bad`,
    `bad#3 ${exchange}/order.bad`,
  ]);
  const [copy] = dead;
  expect(copy!.properties.messageId).toBe('m-bad');
  expect(copy!.properties.type).toBe('order.created');
  expect(copy!.fields.routingKey).toBe('order.bad');
  expect(copy!.properties.headers).toMatchObject({
    tenant: 't-1',
    'x-outbox-consumer-attempts': 3,
    'x-outbox-consumer-error': 'carrier API down',
    'x-outbox-consumer-exchange': exchange,
    'x-outbox-consumer-routing-key': 'order.bad',
  });
  expect(JSON.parse(copy!.content.toString())).toEqual({ orderId: 'bad' });
  expect(consumer.stats).toMatchObject({ handled: 1, duplicates: 0, retried: 2, rejected: 1, reconnects: 0 });
  const { rows } = await fx.pool.query(`SELECT order_id FROM "${fx.schema}".orders`);
  expect(rows).toEqual([{ order_id: 'good' }]); // the failed attempts rolled back
  expect((await broker.channel.checkQueue(queue)).messageCount).toBe(0);
  expect((await broker.channel.checkQueue(`${queue}.retry`)).messageCount).toBe(0);

  const text = await registry.metrics();
  expect(text).toContain(`outbox_consumer_messages_total{queue="${queue}",outcome="handled"} 1`);
  expect(text).toContain(`outbox_consumer_messages_total{queue="${queue}",outcome="retried"} 2`);
  expect(text).toContain(`outbox_consumer_messages_total{queue="${queue}",outcome="dead_lettered"} 1`);
  expect(text).toContain(`outbox_consumer_handler_duration_seconds_count{queue="${queue}",outcome="failed"} 3`);
  expect(text).toContain(`outbox_consumer_handler_duration_seconds_bucket{queue="${queue}",outcome="handled",le="+Inf"} 1`);
  expect(text).toContain(`outbox_consumer_consuming{queue="${queue}"} 1`);
  expect(text).toContain('# TYPE outbox_consumer_reconnects_total counter');
  await consumer.stop();
  expect(await registry.metrics()).toContain(`outbox_consumer_consuming{queue="${queue}"} 0`);
});

test('quorum queues: the queue, its retry and dead-letter queues are quorum queues and the flow is the same', async () => {
  const exchange = await broker.exchange(uniqueName('orders'));
  const queue = uniqueName('quorum');
  declared.push(queue);
  const consumer = await createConsumer<{ orderId: string }>({
    amqpUrl: testAmqpUrl(),
    queue,
    name: 'quorum-shipping',
    pool: fx.pool,
    schema: fx.schema,
    topology: { exchange, bindingKeys: ['order.created'], queueType: 'quorum' },
    maxRetries: 1,
    retryDelayMs: 50,
    handler: async (msg, tx) => {
      await tx.query(`INSERT INTO "${fx.schema}".orders VALUES ($1, $2)`, [msg.payload.orderId, msg.messageId]);
      if (msg.payload.orderId === 'q-bad') throw new Error('no stock');
    },
  });
  consumers.push(consumer);
  publish(exchange, 'order.created', 'q-1', { orderId: 'q-1' });
  publish(exchange, 'order.created', 'q-bad', { orderId: 'q-bad' });
  publish(exchange, 'order.created', 'q-1', { orderId: 'q-1' }); // a duplicate
  let dead: GetMessage[] = [];
  await waitFor('the dead-lettered message', async () => {
    dead = [...dead, ...(await drain(`${queue}.dead`))];
    return dead.length === 1 && consumer.stats.handled + consumer.stats.duplicates === 2;
  });
  expect(dead[0]!.properties.headers).toMatchObject({ 'x-outbox-consumer-attempts': 2, 'x-outbox-consumer-error': 'no stock' });
  expect(consumer.stats).toMatchObject({ handled: 1, duplicates: 1, retried: 1, rejected: 1 });
  // Declaring them as classic queues now fails: they are quorum queues.
  const probe = await broker.channel.assertQueue(queue, {
    durable: true,
    arguments: { 'x-queue-type': 'quorum', 'x-dead-letter-exchange': `${queue}.dead` },
  });
  expect(probe.queue).toBe(queue);
});

test('retryMode in-place holds the delivery and runs it again, declaring no retry queue', async () => {
  const dlx = await broker.exchange(uniqueName('dlx'), 'fanout');
  const dlq = await broker.queue(uniqueName('dlq'), { exchange: dlx, pattern: '' });
  const queue = await broker.declareQueue(uniqueName('inplace'), undefined, { 'x-dead-letter-exchange': dlx });
  let calls = 0;
  const consumer = await createConsumer({
    amqpUrl: testAmqpUrl(),
    queue,
    pool: fx.pool,
    schema: fx.schema,
    retryMode: 'in-place',
    maxRetries: 2,
    retryDelayMs: 10,
    handler: () => {
      calls += 1;
      return Promise.reject(new Error('always'));
    },
  });
  consumers.push(consumer);
  broker.channel.sendToQueue(queue, Buffer.from('{}'), { messageId: 'm-1', contentType: 'application/json' });
  await waitFor('the dead-lettered message', () => dlq.length === 1);
  expect(calls).toBe(3);
  const probe = await connect(testAmqpUrl());
  try {
    const ch = await probe.createChannel();
    ch.on('error', () => undefined);
    await expect(ch.checkQueue(`${queue}.retry`)).rejects.toThrow(/404/);
  } finally {
    await probe.close();
  }
});

test('the connection carries the name "<name> (outbox-relay consumer)"', async () => {
  const queue = await broker.declareQueue(uniqueName('named'));
  const name = uniqueName('billing');
  const consumer = await createConsumer({
    amqpUrl: testAmqpUrl(),
    queue,
    name,
    pool: fx.pool,
    schema: fx.schema,
    handler: () => Promise.resolve(),
  });
  consumers.push(consumer);
  expect(await connectionPids(`${name} (outbox-relay consumer)`)).toHaveLength(1);
  await consumer.stop();
  await waitFor('the connection closed', async () => (await connectionPids(`${name} (outbox-relay consumer)`)).length === 0);
});

test('a consumer that cannot start says why on one line, without the password, and leaves nothing open', async () => {
  const base = { pool: fx.pool, schema: fx.schema, handler: () => Promise.resolve() };
  const missing = uniqueName('missing');
  const noQueue = createConsumer({ ...base, amqpUrl: testAmqpUrl(), queue: missing });
  await expect(noQueue).rejects.toThrow(OutboxError);
  await expect(noQueue).rejects.toThrow(new RegExp(`^createConsumer: cannot consume queue "${missing}" from amqp://guest:\\*\\*\\*@.*404`));

  const url = new URL(testAmqpUrl());
  url.password = 'wrong-secret';
  const badLogin = createConsumer({ ...base, amqpUrl: url.toString(), queue: missing });
  await expect(badLogin).rejects.toThrow(/ACCESS.REFUSED|403/);
  await expect(badLogin).rejects.not.toThrow(/wrong-secret/);

  const started = Date.now();
  const down = createConsumer({
    ...base,
    amqpUrl: 'amqp://guest:guest@127.0.0.1:1',
    queue: missing,
    startTimeoutMs: 300,
    reconnectBaseMs: 50,
  });
  await expect(down).rejects.toThrow(/BROKER_UNAVAILABLE|ECONNREFUSED/);
  expect(Date.now() - started).toBeGreaterThanOrEqual(300);
});
