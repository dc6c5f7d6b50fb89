import { connect } from 'amqplib';
import { Pool } from 'pg';
import { createConsumer, type Consumer, type StateChange } from '../../src/consumer/index';
import { maxProbesWithin } from '../../src/relay/probe-schedule';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { RabbitCluster } from '../kit/rabbit-cluster';
import { endpointStatus, readMetrics } from '../kit/relay-http';
import { testDatabaseUrl } from '../kit/services';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

/**
 * The relay and the consumer against a three-node RabbitMQ cluster of their own (started
 * by the kit as the rabbitmq user, apart from the machine's broker) with quorum queues:
 * the node both are connected to, which also leads the queue, is killed -9 in the middle
 * of a drain; and a full quorum queue under `x-overflow: reject-publish` nacks messages (its destination is held).
 */

const cluster = RabbitCluster.forFile();
const fx = OutboxFixture.forFile('rabbit_cluster', { afterEach: 'reset' });
const cleanups: (() => Promise<unknown>)[] = [];

/** The relay's workers (app.ts) × OUTBOX_BATCH_SIZE: at most this many are unconfirmed when a node dies. */
const RELAY_IN_FLIGHT = 2 * 500;
const PREFETCH = 100;

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
});

afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

/** Declares, through node `via`, a topic exchange and a quorum queue bound to it with `#` (the queue's leader on that node). */
async function quorumQueue(via: number, args: Record<string, unknown> = {}): Promise<{ exchange: string; queue: string }> {
  const exchange = uniqueName('ha_x');
  const queue = uniqueName('ha_q');
  const model = await connect(cluster.get().urls[via] as string);
  try {
    const channel = await model.createChannel();
    await channel.assertExchange(exchange, 'topic', { durable: true });
    await channel.assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum', ...args } });
    await channel.bindQueue(queue, exchange, '#');
  } finally {
    await model.close();
  }
  return { exchange, queue };
}

/** An idempotent consumer of `queue` on the cluster's URLs (in node order) that records the message ids its handler processed. */
async function consumerOf(queue: string): Promise<{ consumer: Consumer; processed: Set<string>; states: StateChange[] }> {
  const pool = new Pool({ connectionString: testDatabaseUrl(), max: 8 });
  const processed = new Set<string>();
  const states: StateChange[] = [];
  const consumer = await createConsumer({
    amqpUrl: cluster.get().urls,
    queue,
    pool,
    schema: fx.schema,
    name: uniqueName('ha'),
    prefetch: PREFETCH,
    reconnectBaseMs: 100,
    reconnectMaxMs: 1_000,
    heartbeatSeconds: 2,
    handler: (message) => {
      processed.add(message.messageId);
      return Promise.resolve();
    },
    onStateChange: (change) => states.push(change),
  });
  cleanups.push(async () => {
    await consumer.stop();
    await pool.end();
  });
  return { consumer, processed, states };
}

test('a node killed -9 mid-drain: nothing lost, the relay ready again, the consumer consuming again, duplicates bounded', async () => {
  const c = cluster.get();
  const COUNT = 10_000;
  const { exchange, queue } = await quorumQueue(0);
  const { consumer, processed, states } = await consumerOf(queue);
  expect(states.at(-1)).toMatchObject({ state: 'consuming', broker: expect.stringContaining(`:${c.nodes[0]!.port}`) });
  await fx.insertBacklog({ count: COUNT, exchange, routingKey: 'ha.event' });

  const { relay, logs } = await fx.startRelay({ OUTBOX_AMQP_URL: c.urls.join(',') });
  const connectedTo = (): number[] =>
    logs
      .entries()
      .filter((e) => e['msg'] === 'connected to the broker')
      .map((e) => c.nodeOf(String(e['broker'])) ?? -1);
  await waitFor('the relay connected', () => connectedTo().length >= 1, 20_000, 10);
  const first = connectedTo()[0]!;
  // The queue's leader, the relay and the consumer: all on the node that dies.
  expect(first).toBe(0);
  expect(await c.connectionNames(0)).toEqual(expect.arrayContaining([expect.stringMatching(/\(outbox-relay\)$/)]));

  await waitFor('a fifth of the backlog published', async () => (await fx.counts()).published >= COUNT / 5, 30_000, 10);
  const publishedAtKill = (await fx.counts()).published;
  const killedAt = Date.now();
  await c.killNode(first);

  await waitFor('the relay connected to a surviving node', () => connectedTo().length >= 2, 30_000, 10);
  const second = connectedTo()[1]!;
  const reconnectedMs = Date.now() - killedAt;
  expect(second).not.toBe(first);
  await waitFor('/readyz 200 again', async () => (await endpointStatus(relay.port, '/readyz')) === 200, 30_000, 20);
  const readyMs = Date.now() - killedAt;
  await waitFor('the consumer consuming again', () => states.some((s, i) => i > 0 && s.state === 'consuming' && s.outageMs !== undefined));
  const consumingMs = Date.now() - killedAt;
  try {
    await waitFor('every message processed', () => processed.size >= COUNT, 60_000, 50);
  } catch (err) {
    console.info({
      processed: processed.size,
      counts: await fx.counts(),
      stats: consumer.stats,
      states,
      relay: logs.lines.slice(-15),
      queues: await c.ctl(c.nodes[1]!, ['list_queues', 'name', 'messages', 'messages_unacknowledged', 'consumers', 'leader', 'online']),
    });
    throw err;
  }
  const drainedMs = Date.now() - killedAt;

  const counts = await fx.counts();
  expect(counts).toMatchObject({ pending: 0, published: COUNT, dead: 0 });
  const { rows } = await fx.pool.query<{ n: string }>(`SELECT count(*) AS n FROM "${fx.schema}".inbox`);
  expect(Number(rows[0]!.n)).toBe(COUNT);
  // Every message id arrived at least once, each was processed once.
  const ids = await fx.pool.query<{ message_id: string }>(`SELECT message_id FROM ${fx.table}`);
  expect(ids.rows.filter((r) => !processed.has(r.message_id))).toEqual([]);
  await waitFor('the queue emptied', async () => consumer.stats.handled + consumer.stats.duplicates >= COUNT);
  const duplicates = consumer.stats.duplicates;
  // At-least-once: what the relay had unconfirmed when the node died is published again,
  // and what the consumer had unacknowledged is delivered again.
  expect(duplicates).toBeLessThanOrEqual(RELAY_IN_FLIGHT + PREFETCH);
  const metrics = await readMetrics(relay.port);
  console.info(
    `rabbit-cluster node loss: ${COUNT} messages, 1 fault (node ${first + 1} of 3 killed -9 with ${publishedAtKill} published), ` +
      `lost 0, duplicates ${duplicates} (bound ${RELAY_IN_FLIGHT + PREFETCH}), relay reconnected to node ${second + 1} after ${reconnectedMs} ms, ` +
      `ready after ${readyMs} ms, consumer consuming again after ${consumingMs} ms, all processed ${drainedMs} ms after the kill; ` +
      `unconfirmed counted by the relay: ${metrics.value('outbox_publish_failures_total', { reason: 'connection_lost' }) ?? 0}`,
  );
}, 120_000);

test('a full quorum queue (x-overflow reject-publish): its destination is held, no attempt burnt, one probe at a time; once consumed, everything arrives', async () => {
  const c = cluster.get();
  const COUNT = 2_000;
  const MAX_LENGTH = 200;
  // Declared through a node that is up (the test above killed the first one); the relay
  // still gets every URL and passes over the dead one.
  const { exchange, queue } = await quorumQueue(1, { 'x-max-length': MAX_LENGTH, 'x-overflow': 'reject-publish' });
  await fx.insertBacklog({ count: COUNT, exchange, routingKey: 'ha.full' });
  // Three attempts: a nack that cost one would kill messages within seconds.
  const { relay, logs } = await fx.startRelay({ OUTBOX_AMQP_URL: c.urls.join(','), OUTBOX_MAX_ATTEMPTS: '3' });
  const refused = async (): Promise<number> => (await readMetrics(relay.port)).value('outbox_publishes_refused_total') ?? 0;

  await waitFor('the destination held', async () => (await readMetrics(relay.port)).value('outbox_held_destinations') === 1, 30_000, 20);
  // The refusals of what was in flight when the first came are counted by now.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const atStart = await refused();
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const afterTwoSeconds = await refused();
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  const afterFourSeconds = await refused();
  const full = await fx.counts();
  expect(full).toMatchObject({ dead: 0, attempts: 0 });
  expect(full.published).toBeGreaterThanOrEqual(MAX_LENGTH);
  expect(full.pending).toBeGreaterThan(0);
  const { rows } = await fx.pool.query<{ last_error: string }>(
    `SELECT DISTINCT last_error FROM ${fx.table} WHERE published_at IS NULL AND last_error IS NOT NULL`,
  );
  expect(rows.map((r) => r.last_error)).toEqual([
    expect.stringMatching(/^destination held: exchange ".*" routing key "ha.full" refuses messages/),
  ]);
  // Then one probe at a time, 100 ms doubling to 5 s apart.
  expect(afterFourSeconds - atStart).toBeLessThanOrEqual(maxProbesWithin(5_000) + 1);
  expect(logs.entries().filter((e) => e['msg'] === 'destination held: the broker refuses its messages')).toHaveLength(1);
  // A full queue is not the relay's problem: it stays ready.
  expect(await endpointStatus(relay.port, '/readyz')).toBe(200);

  const consumingAt = Date.now();
  const { processed } = await consumerOf(queue);
  await waitFor('every message consumed', () => processed.size >= COUNT, 60_000, 50);
  const drainedMs = Date.now() - consumingAt;
  expect(await fx.counts()).toMatchObject({ pending: 0, published: COUNT, dead: 0, attempts: 0 });
  console.info(
    `rabbit-cluster full queue: ${COUNT} messages into a quorum queue of x-max-length ${MAX_LENGTH} (reject-publish), no consumer for 4 s: ` +
      `${full.published} published, ${full.pending} waiting, 0 attempts burnt, 0 dead; refused publishes ${atStart} until held for 1 s, ` +
      `${afterTwoSeconds - atStart} in the next 2 s, ${afterFourSeconds - afterTwoSeconds} in the 2 s after; a consumer then received all ${COUNT} in ${drainedMs} ms`,
  );
}, 120_000);
