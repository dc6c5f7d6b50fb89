import { connect, type ChannelModel } from 'amqplib';
import { createConsumer, type Consumer, type StateChange } from '../../src/consumer/index';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { FreezingProxy } from '../kit/freezing-proxy';
import { closeConnectionsNamed } from '../kit/rabbitmqctl';
import { testAmqpUrl } from '../kit/services';
import { SteadyPublisher } from '../kit/steady-publisher';
import { TcpProxy } from '../kit/tcp-proxy';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

/**
 * The consumer keeps consuming through the faults a broker and a network make — a
 * connection the broker closes, a network cut, the queue deleted and declared again —
 * while messages keep coming and handlers are in the middle of their transactions; and
 * afterwards every message was processed exactly once: the inbox and the handler's own
 * table agree, nothing is left in the queue, and the dead-letter queue holds exactly the
 * messages that failed on purpose.
 */

const fx = OutboxFixture.forFile('consumer_faults');
const broker = TestBroker.forFile();
const cleanups: (() => Promise<unknown>)[] = [];

const MAX_RETRIES = 2;

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
  // No primary key: a message processed twice would show as two rows.
  await fx.pool.query(`CREATE TABLE "${fx.schema}".processed (consumer text NOT NULL, message_id text NOT NULL)`);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

interface Scenario {
  readonly name: string;
  readonly queue: string;
  readonly consumer: Consumer;
  readonly publisher: SteadyPublisher;
  readonly states: StateChange[];
  /** Handlers inside their transaction right now. */
  active(): number;
  /** Distinct messages the handler's table holds. */
  processed(): Promise<number>;
  readonly failing: Set<string>;
}

/**
 * A consumer of a fresh queue (declared by the consumer with `topology`, or by the test),
 * whose handler writes a row and then spends 20 ms inside its transaction; every
 * `failEvery`-th message fails on purpose, always. A SteadyPublisher sends a message
 * every 10 ms.
 */
async function scenario(options: {
  topology: boolean;
  amqpUrl?: string | string[];
  failEvery?: number;
  heartbeatSeconds?: number;
}): Promise<Scenario> {
  const name = uniqueName('faults');
  const queue = uniqueName('faults_q');
  const failing = new Set<string>();
  let active = 0;
  const states: StateChange[] = [];
  let exchange = '';
  if (options.topology) {
    exchange = await broker.exchange(uniqueName('faults_x'));
    cleanups.push(async () => {
      const ch = broker.channel;
      for (const q of [queue, `${queue}.retry`, `${queue}.dead`]) await ch.deleteQueue(q).catch(() => undefined);
      await ch.deleteExchange(`${queue}.dead`).catch(() => undefined);
    });
  } else {
    await broker.declareQueue(queue);
  }
  const consumer = await createConsumer<{ n: number; fail: boolean }>({
    amqpUrl: options.amqpUrl ?? testAmqpUrl(),
    queue,
    name,
    pool: fx.pool,
    schema: fx.schema,
    prefetch: 10,
    maxRetries: MAX_RETRIES,
    retryDelayMs: 50,
    reconnectBaseMs: 100,
    reconnectMaxMs: 1_000,
    ...(options.heartbeatSeconds === undefined ? {} : { heartbeatSeconds: options.heartbeatSeconds }),
    ...(options.topology ? { topology: { exchange, bindingKeys: ['order.#'] } } : {}),
    onStateChange: (change) => states.push(change),
    handler: async (msg, tx) => {
      active += 1;
      try {
        await tx.query(`INSERT INTO "${fx.schema}".processed VALUES ($1, $2)`, [name, msg.messageId]);
        await sleep(20);
        if (msg.payload.fail) throw new Error(`order ${msg.payload.n} failed on purpose`);
      } finally {
        active -= 1;
      }
    },
  });
  cleanups.push(() => consumer.stop());
  const publisher = await SteadyPublisher.start(
    options.topology ? { exchange, routingKey: 'order.created' } : { exchange: '', routingKey: queue },
    (n) => {
      const fail = options.failEvery !== undefined && n % options.failEvery === 0;
      const messageId = `${name}-${n}`;
      if (fail) failing.add(messageId);
      return { messageId, body: { n, fail } };
    },
  );
  cleanups.push(() => publisher.stop());
  return {
    name,
    queue,
    consumer,
    publisher,
    states,
    failing,
    active: () => active,
    processed: async () => {
      const { rows } = await fx.pool.query<{ n: number }>(
        `SELECT count(DISTINCT message_id)::int AS n FROM "${fx.schema}".processed WHERE consumer = $1`,
        [name],
      );
      return rows[0]!.n;
    },
  };
}

/**
 * Deletes the scenario's queue at a moment it holds no ready message (messages in flight
 * are the consumer's), so that no message is lost with the queue and exactly-once can be
 * checked for all of them.
 */
async function deleteWhenEmpty(admin: ChannelModel, s: Scenario): Promise<void> {
  await waitFor(
    'the queue deleted',
    async () => {
      const ch = await admin.createChannel();
      ch.on('error', () => undefined);
      // The publisher holds still for the instant of the delete: the broker confirms a
      // message on its way into a queue being deleted, and loses it.
      await s.publisher.pause();
      try {
        await ch.deleteQueue(s.queue, { ifEmpty: true });
        await ch.close();
        return true;
      } catch {
        return false;
      } finally {
        s.publisher.resume();
      }
    },
    20_000,
    5,
  );
}

/** Waits until the consumer processes messages and a handler is inside its transaction. */
async function midTransaction(s: Scenario): Promise<number> {
  await waitFor('30 messages processed', async () => (await s.processed()) >= 30);
  await waitFor('a handler inside its transaction', () => s.active() > 0, 20_000, 1);
  return s.publisher.routed.size;
}

/** Waits for consuming to resume; returns how long it was interrupted (ms). */
async function resumed(s: Scenario): Promise<number> {
  const change = await waitFor(
    'consuming again',
    () => s.states.find((c) => c.state === 'consuming' && c.previous === 'reconnecting'),
    30_000,
  );
  return change.outageMs ?? Number.NaN;
}

/**
 * Stops publishing, waits for everything to settle, and checks exactly-once: what the
 * broker routed was processed once (handler table and inbox agree), nothing is left in
 * the queue, the dead-letter queue holds the failing messages only.
 */
async function verify(s: Scenario, fault: string, reconnectMs: number, withTopology: boolean): Promise<void> {
  // Some messages after the fault, then the publisher stops.
  const atResume = s.publisher.routed.size;
  await waitFor('more messages routed after the fault', () => s.publisher.routed.size >= atResume + 20);
  await s.publisher.stop();
  const routed = [...s.publisher.routed];
  const expected = routed.filter((id) => !s.failing.has(id)).sort();
  const failing = routed.filter((id) => s.failing.has(id)).sort();
  try {
    await waitFor('every routed message processed', async () => (await s.processed()) === expected.length, 30_000);
  } catch (err) {
    const { rows } = await fx.pool.query<{ message_id: string }>(
      `SELECT DISTINCT message_id FROM "${fx.schema}".processed WHERE consumer = $1`,
      [s.name],
    );
    const seen = new Set(rows.map((r) => r.message_id));
    throw new Error(`${(err as Error).message}; not processed: ${expected.filter((id) => !seen.has(id)).join(', ')}`, { cause: err });
  }
  const dead: { messageId: string; headers: Record<string, unknown> }[] = [];
  if (withTopology) {
    await waitFor(
      'the failing messages in the dead-letter queue',
      async () => {
        for (;;) {
          const got = await broker.channel.get(`${s.queue}.dead`, { noAck: true });
          if (got === false) break;
          dead.push({ messageId: String(got.properties.messageId), headers: got.properties.headers ?? {} });
        }
        return failing.every((id) => dead.some((d) => d.messageId === id));
      },
      30_000,
    );
  }
  await waitFor('an empty queue', async () => (await broker.channel.checkQueue(s.queue)).messageCount === 0);
  await s.consumer.stop();

  const { rows } = await fx.pool.query<{ message_id: string }>(
    `SELECT message_id FROM "${fx.schema}".processed WHERE consumer = $1 ORDER BY message_id`,
    [s.name],
  );
  const inbox = await fx.pool.query<{ message_id: string }>(
    `SELECT message_id FROM "${fx.schema}".inbox WHERE consumer = $1 ORDER BY message_id`,
    [s.name],
  );
  const processedIds = rows.map((r) => r.message_id);
  expect(processedIds).toEqual(expected); // each once: no duplicates, none missing
  expect(inbox.rows.map((r) => r.message_id)).toEqual(expected);
  expect((await broker.channel.checkQueue(s.queue)).messageCount).toBe(0);
  if (withTopology) {
    expect((await broker.channel.checkQueue(`${s.queue}.retry`)).messageCount).toBe(0);
    expect([...new Set(dead.map((d) => d.messageId))].sort()).toEqual(failing);
    for (const d of dead) {
      expect(d.headers['x-outbox-consumer-attempts']).toBe(MAX_RETRIES + 1);
      expect(String(d.headers['x-outbox-consumer-error'])).toMatch(/failed on purpose/);
    }
  }
  const stats = s.consumer.stats;
  console.info(
    `${fault}: published ${routed.length} · processed ${processedIds.length} · failed on purpose ${failing.length}` +
      ` (dead-lettered copies ${dead.length}) · duplicates skipped ${stats.duplicates} · retried ${stats.retried}` +
      ` · reconnects ${stats.reconnects} · consuming interrupted ${reconnectMs} ms`,
  );
}

test('a connection the broker closes (rabbitmqctl close_connection) is opened again; every message is processed once', async () => {
  const s = await scenario({ topology: true, failEvery: 25 });
  await midTransaction(s);
  expect(await closeConnectionsNamed(`${s.name} (outbox-relay consumer)`, 'forced by the consumer-faults test')).toBe(1);
  const reconnectMs = await resumed(s);
  expect(s.states.find((c) => c.state === 'reconnecting')?.reason).toMatch(/CONNECTION.FORCED|320/);
  expect(s.consumer.stats.reconnects).toBe(1);
  await verify(s, 'forced close', reconnectMs, true);
});

test('a network cut (TCP proxy) while handlers are mid-transaction: it reconnects, trying its URLs in turn; every message once', async () => {
  const proxy = await TcpProxy.inFrontOf(testAmqpUrl());
  cleanups.push(() => proxy.close());
  // The second URL refuses connections: the consumer must come back through the first.
  const refused = 'amqp://guest:guest@127.0.0.1:1';
  const s = await scenario({ topology: true, failEvery: 25, amqpUrl: [proxy.url(testAmqpUrl()), refused] });
  await midTransaction(s);
  const cutAt = Date.now();
  proxy.cut();
  await waitFor('reconnecting', () => s.consumer.state === 'reconnecting');
  // Messages pile up in the queue while the consumer cannot reach the broker.
  const atCut = s.publisher.routed.size;
  await waitFor('30 messages published during the cut', () => s.publisher.routed.size >= atCut + 30);
  const cutMs = Date.now() - cutAt;
  proxy.restore();
  const reconnectMs = await resumed(s);
  await verify(s, `TCP cut (the network down for ${cutMs} ms)`, reconnectMs, true);
});

test('the queue deleted and declared again (a cancel by the broker): it waits for the queue and consumes again; every message once', async () => {
  const s = await scenario({ topology: false });
  const admin = await connect(testAmqpUrl());
  cleanups.push(() => admin.close());
  await midTransaction(s);
  await deleteWhenEmpty(admin, s);
  await waitFor('reconnecting after the cancel', () => s.states.some((c) => c.state === 'reconnecting' && /cancel/.test(c.reason ?? '')));
  await waitFor('messages returned while the queue is gone', () => s.publisher.returns >= 5);
  await broker.channel.assertQueue(s.queue, { durable: false, autoDelete: false });
  const reconnectMs = await resumed(s);
  expect(s.consumer.state).toBe('consuming');
  await verify(s, 'queue deleted and declared again', reconnectMs, false);
});

test('the queue deleted under a consumer that declares its topology: it declares the queue again and consumes; every message once', async () => {
  // Nothing fails on purpose here: a retry expiring while the queue is gone would be
  // dropped by the broker (dead-lettered to a queue that does not exist).
  const s = await scenario({ topology: true });
  const admin = await connect(testAmqpUrl());
  cleanups.push(() => admin.close());
  await midTransaction(s);
  await deleteWhenEmpty(admin, s);
  const reconnectMs = await resumed(s);
  expect(s.states.find((c) => c.state === 'reconnecting')?.reason).toMatch(/cancel/);
  expect(s.consumer.stats.reconnects).toBe(1);
  await verify(s, 'queue deleted, declared again by the consumer', reconnectMs, true);
});

test('a silent network (heartbeat timeout): the consumer gives the connection up and reconnects; every message once', async () => {
  const proxy = await FreezingProxy.inFrontOf(testAmqpUrl());
  cleanups.push(() => proxy.close());
  const s = await scenario({ topology: true, failEvery: 25, amqpUrl: proxy.url(testAmqpUrl()), heartbeatSeconds: 1 });
  await midTransaction(s);
  // No reset, no close: only the missed heartbeats tell the consumer its connection is gone.
  const frozenAt = Date.now();
  proxy.freeze();
  await waitFor('reconnecting', () => s.consumer.state === 'reconnecting', 15_000);
  const detectedMs = Date.now() - frozenAt;
  const reason = s.states.find((c) => c.state === 'reconnecting')?.reason ?? '';
  const reconnectMs = await resumed(s);
  expect(reason).toMatch(/heartbeat/i);
  await verify(s, `heartbeat timeout (1 s heartbeat; the silence noticed after ${detectedMs} ms)`, reconnectMs, true);
});
