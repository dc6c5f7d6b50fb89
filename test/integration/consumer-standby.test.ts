import { connect } from 'amqplib';
import { ConsumerProcess } from '../kit/consumer-process';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

/**
 * A standby instance: two service instances (processes) consume one queue declared with
 * `singleActiveConsumer`, `ordered: true`. 20,000 messages of 1,000 keys; the active one
 * is killed -9 mid-stream; the standby takes over: every message processed exactly once,
 * each key in order. Runs dist/ (npm run build first).
 */

const fx = OutboxFixture.forFile('consumer_standby');
const broker = TestBroker.forFile();
const processes: ConsumerProcess[] = [];
const MESSAGES = 20_000;
const KEYS = 1_000;

beforeAll(async () => {
  await migrateInboxSchema(fx.pool, fx.schema);
  // `seq` follows the order of the handlers' inserts; no key on message_id: twice would show.
  await fx.pool.query(`CREATE TABLE "${fx.schema}".processed (seq bigserial, instance text, key text, n int, message_id text)`);
});

afterAll(async () => {
  await Promise.all(processes.map((p) => p.stop()));
});

/** Publishes message i = 0…count-1 with key `k<i % KEYS>`, n = its place in its key, confirmed. */
async function publish(exchange: string, count: number): Promise<void> {
  const model = await connect(testAmqpUrl());
  try {
    const channel = await model.createConfirmChannel();
    for (let i = 0; i < count; i += 1) {
      const key = `k${i % KEYS}`;
      const n = Math.floor(i / KEYS) + 1;
      channel.publish(exchange, 'order.changed', Buffer.from(JSON.stringify({ n })), {
        messageId: `m-${i}`,
        contentType: 'application/json',
        persistent: true,
        headers: { 'x-outbox-partition-key': key, 'x-outbox-position': i + 1 },
      });
      if (i % 1_000 === 999) await channel.waitForConfirms();
    }
    await channel.waitForConfirms();
  } finally {
    await model.close();
  }
}

async function processedBy(): Promise<Map<string, number>> {
  const { rows } = await fx.pool.query<{ instance: string; n: number }>(
    `SELECT instance, count(*)::int AS n FROM "${fx.schema}".processed GROUP BY instance`,
  );
  return new Map(rows.map((r) => [r.instance, r.n]));
}

test('two instances, single active consumer, 20,000 messages of 1,000 keys, the active one killed -9 mid-stream: each message once, each key in order', async () => {
  const exchange = await broker.exchange(uniqueName('orders'));
  const queue = uniqueName('standby');
  const options = {
    amqpUrl: testAmqpUrl(),
    queue,
    schema: fx.schema,
    name: 'shipping',
    ordered: true,
    prefetch: 100,
    topology: { exchange, bindingKeys: ['#'], singleActiveConsumer: true },
  };
  const cleanup = async (): Promise<void> => {
    for (const q of [queue, `${queue}.retry`, `${queue}.dead`]) await broker.channel.deleteQueue(q).catch(() => undefined);
    await broker.channel.deleteExchange(`${queue}.dead`).catch(() => undefined);
  };
  try {
    const first = ConsumerProcess.start('first', testDatabaseUrl(), options);
    processes.push(first);
    await first.consuming();
    const second = ConsumerProcess.start('second', testDatabaseUrl(), options);
    processes.push(second);
    await second.consuming();
    const publishing = publish(exchange, MESSAGES);

    // The broker delivers to one of them; the other waits.
    const byInstance = await waitFor('a quarter processed', async () => {
      const counts = await processedBy();
      return [...counts.values()].reduce((a, b) => a + b, 0) >= MESSAGES / 4 ? counts : undefined;
    });
    expect(byInstance.size).toBe(1);
    const [activeName] = [...byInstance.keys()];
    const [active, standby] = activeName === 'first' ? [first, second] : [second, first];
    await active.killHard();
    const killedAt = Date.now();
    const atKill = (await processedBy()).get(active.instance) ?? 0;
    await publishing;

    await waitFor(
      'every message processed',
      async () => {
        const { rows } = await fx.pool.query<{ n: number }>(`SELECT count(DISTINCT message_id)::int AS n FROM "${fx.schema}".processed`);
        return rows[0]!.n === MESSAGES;
      },
      60_000,
    );
    const tookOverMs = Date.now() - killedAt;
    const counts = await processedBy();
    const [byActive, byStandby] = [counts.get(active.instance) ?? 0, counts.get(standby.instance) ?? 0];
    expect(byActive).toBeGreaterThanOrEqual(atKill);
    expect(byStandby).toBeGreaterThan(0);
    expect(byActive + byStandby).toBe(MESSAGES);

    // Exactly once: each message id once, in the handler's table and in the inbox.
    const { rows: totals } = await fx.pool.query<{ total: number; distinct: number; inbox: number }>(
      `SELECT count(*)::int AS total, count(DISTINCT message_id)::int AS distinct,
              (SELECT count(*)::int FROM "${fx.schema}".inbox WHERE consumer = 'shipping') AS inbox
         FROM "${fx.schema}".processed`,
    );
    expect(totals[0]).toEqual({ total: MESSAGES, distinct: MESSAGES, inbox: MESSAGES });

    // Each key in order, across the two instances.
    const { rows } = await fx.pool.query<{ key: string; ns: number[] }>(
      `SELECT key, array_agg(n ORDER BY seq) AS ns FROM "${fx.schema}".processed GROUP BY key`,
    );
    expect(rows).toHaveLength(KEYS);
    const expected = Array.from({ length: MESSAGES / KEYS }, (_, i) => i + 1);
    const outOfOrder = rows.filter((r) => JSON.stringify(r.ns) !== JSON.stringify(expected));
    expect(outOfOrder.slice(0, 3)).toEqual([]);
    await waitFor('an empty queue', async () => (await broker.channel.checkQueue(queue)).messageCount === 0);
    console.info(
      `standby: ${MESSAGES} messages of ${KEYS} keys; ${byActive} processed by the active instance until kill -9, ` +
        `${byStandby} by the standby, all of them ${(tookOverMs / 1000).toFixed(1)} s after the kill`,
    );
  } finally {
    await Promise.all(processes.map((p) => p.stop()));
    await cleanup();
  }
}, 90_000);
