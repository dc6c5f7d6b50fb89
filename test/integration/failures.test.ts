import { OutboxFixture } from '../kit/outbox-fixture';
import { endpointStatus, readMetrics } from '../kit/relay-http';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { bodies, TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('failures', { afterEach: 'reset' });
const broker = TestBroker.forFile();

function readyz(port: number): Promise<number> {
  return endpointStatus(port, '/readyz');
}

test('a message to a missing exchange goes dead after the configured attempts while 500 good messages flow; dead retry delivers it once the exchange exists', async () => {
  const { exchange: good, received: goodQueue } = await broker.exchangeWithQueue('good');
  const missing = uniqueName('missing');
  // The poison message is the oldest: it sits at the head of every claim.
  const [poisonId] = await fx.insert([{ exchange: missing, routing_key: 'x', payload: { poison: true } }]);
  await fx.insertBacklog({ count: 500, exchange: good, routingKey: 'good.event' });

  const { relay } = await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '4', OUTBOX_BATCH_SIZE: '100' });
  await waitFor('500 good messages', () => goodQueue.length === 500);
  await waitFor('the poison message dead', async () => (await fx.row(poisonId!))['dead_at'] !== null);
  const row = await fx.row(poisonId!);
  expect(row['attempts']).toBe(4);
  expect(row['last_error']).toBe(`exchange "${missing}" does not exist`);
  expect(goodQueue.map((m) => (JSON.parse(m.content.toString()) as { n: number }).n).sort((a, b) => a - b)).toEqual(
    Array.from({ length: 500 }, (_, i) => i + 1),
  );
  const metrics = await readMetrics(relay.port);
  expect(metrics.value('outbox_publish_failures_total', { reason: 'unknown_exchange' })).toBe(4);
  expect(metrics.value('outbox_messages_dead_total')).toBe(1);

  // The exchange appears; the operator retries the dead message.
  await broker.exchange(missing);
  const late = await broker.queue(uniqueName('lateq'), { exchange: missing, pattern: '#' });
  const { rowCount } = await fx.pool.query(
    `UPDATE ${fx.table} SET dead_at = NULL, attempts = 0, next_attempt_at = now() WHERE message_id = $1 AND dead_at IS NOT NULL`,
    [poisonId],
  );
  expect(rowCount).toBe(1);
  await waitFor('the retried message', () => late.length === 1);
  expect(bodies(late)).toEqual([{ poison: true }]);
});

test('an exchange deleted while the relay runs fails only its own messages; the channel is reopened and the rest flows', async () => {
  const doomed = await broker.exchange(uniqueName('doomed'));
  const { exchange: other, received: otherQueue } = await broker.exchangeWithQueue('other');
  await broker.queue(uniqueName('doomedq'), { exchange: doomed, pattern: '#' });
  const { logs } = await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '1000' });
  // Warm the relay's exchange cache with both exchanges.
  await fx.insert([
    { exchange: doomed, routing_key: 'a', payload: {} },
    { exchange: other, routing_key: 'a', payload: {} },
  ]);
  await waitFor('the first message', () => otherQueue.length === 1);
  await broker.channel.deleteExchange(doomed);
  for (let round = 0; round < 5; round += 1) {
    await fx.insert([
      { exchange: other, routing_key: 'b', payload: { round, i: 0 } },
      { exchange: doomed, routing_key: 'b', payload: { round } },
      { exchange: other, routing_key: 'b', payload: { round, i: 1 } },
    ]);
  }
  await waitFor('all messages to the existing exchange', () => otherQueue.length === 11);
  await waitFor('every doomed message failed', async () => {
    const r = await fx.pool.query(
      `SELECT count(*)::int AS n FROM ${fx.table} WHERE exchange = $1 AND published_at IS NULL AND attempts > 0 AND last_error = $2`,
      [doomed, `exchange "${doomed}" does not exist`],
    );
    return r.rows[0].n === 5;
  });
  expect(logs.has('broker closed the publish channel; reopening')).toBe(true);
  const failedOthers = await fx.pool.query(`SELECT count(*)::int AS n FROM ${fx.table} WHERE exchange = $1 AND attempts > 0`, [other]);
  expect(failedOthers.rows[0].n).toBe(0);
});

test('broker down: not ready, no attempt burnt, everything delivered after it returns', async () => {
  const proxy = await TcpProxy.inFrontOf(testAmqpUrl());
  try {
    const { exchange, received: queue } = await broker.exchangeWithQueue('bdown');
    const { relay } = await fx.startRelay({ OUTBOX_AMQP_URL: proxy.url(testAmqpUrl()) });
    await waitFor('ready', async () => (await readyz(relay.port)) === 200);
    await fx.insertBacklog({ count: 50, exchange, routingKey: 'before' });
    await waitFor('the first 50', () => queue.length === 50);

    proxy.cut();
    await waitFor('not ready', async () => (await readyz(relay.port)) === 503);
    await fx.insertBacklog({ count: 200, exchange, routingKey: 'during' });
    // Give the relay several poll intervals in which it could wrongly burn attempts.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect((await fx.counts()).attempts).toBe(0);
    expect((await readMetrics(relay.port)).value('outbox_up', { dependency: 'broker' })).toBe(0);

    proxy.restore();
    await waitFor('ready again', async () => (await readyz(relay.port)) === 200);
    await waitFor('all 250 delivered', async () => (await fx.counts()).published === 250);
    await waitFor('250 received', () => queue.length >= 250);
    expect((await fx.counts()).attempts).toBe(0);
    expect(new Set(queue.map((m) => m.properties.messageId as string)).size).toBe(250);
  } finally {
    await fx.stopRelays();
    await proxy.close();
  }
});

test('database down: not ready, no attempt burnt, everything delivered after it returns', async () => {
  const proxy = await TcpProxy.inFrontOf(testDatabaseUrl());
  try {
    const { exchange, received: queue } = await broker.exchangeWithQueue('ddown');
    const { relay, logs } = await fx.startRelay({ OUTBOX_DATABASE_URL: proxy.url(testDatabaseUrl()) });
    await waitFor('ready', async () => (await readyz(relay.port)) === 200);
    await fx.insertBacklog({ count: 50, exchange, routingKey: 'before' });
    await waitFor('the first 50', () => queue.length === 50);

    proxy.cut();
    await waitFor('not ready', async () => (await readyz(relay.port)) === 503);
    await fx.insertBacklog({ count: 200, exchange, routingKey: 'during' });
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    expect(queue.length).toBe(50);

    proxy.restore();
    await waitFor('ready again', async () => (await readyz(relay.port)) === 200, 30_000);
    await waitFor('all 250 published', async () => (await fx.counts()).published === 250, 30_000);
    await waitFor('250 received', () => queue.length >= 250);
    expect((await fx.counts()).attempts).toBe(0);
    expect(logs.has('database unavailable; retrying')).toBe(true);
  } finally {
    await fx.stopRelays();
    await proxy.close();
  }
  // Two 30 s waits: a slow recovery is reported by the wait that saw it, not by Jest's timeout.
}, 120_000);

test('a list of AMQP URLs is tried in turn: a dead first node does not stop the relay', async () => {
  const queue = uniqueName('cluster');
  const received = await broker.queue(queue);
  await fx.insert([{ routing_key: queue, payload: { ok: true } }]);
  await fx.startRelay({ OUTBOX_AMQP_URL: `amqp://guest:guest@127.0.0.1:1,${testAmqpUrl()}` });
  await waitFor('the message via the second URL', () => received.length === 1);
});
