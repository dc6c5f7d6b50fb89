import { OutboxFixture, uniqueName } from '../helpers/outbox-fixture';
import { testAmqpUrl, testDatabaseUrl } from '../helpers/services';
import { TcpProxy } from '../helpers/tcp-proxy';
import { TestBroker } from '../helpers/test-broker';
import { waitFor } from '../helpers/wait';

// Bugs found by the chaos suite and by review, each with a test of its own.

let fx: OutboxFixture;
let broker: TestBroker;

beforeAll(async () => {
  fx = await OutboxFixture.create('regress');
  broker = await TestBroker.connect();
});

afterEach(async () => {
  await fx.stopRelays();
});

afterAll(async () => {
  await broker.close();
  await fx.close();
});

function proxyTo(url: string): Promise<TcpProxy> {
  const u = new URL(url);
  return TcpProxy.start(u.hostname, Number(u.port));
}

test('the database connection dropping while a batch waits for confirms does not crash the relay (chaos, seed 42)', async () => {
  const dbProxy = await proxyTo(testDatabaseUrl());
  const brokerProxy = await proxyTo(testAmqpUrl());
  const uncaught: Error[] = [];
  const onUncaught = (err: Error): void => void uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  try {
    const exchange = await broker.exchange(uniqueName('drop'));
    const queue = await broker.queue(uniqueName('dropq'), { exchange, pattern: '#' });
    const { relay } = await fx.startRelay({ OUTBOX_DATABASE_URL: dbProxy.url(testDatabaseUrl()), OUTBOX_AMQP_URL: brokerProxy.url(testAmqpUrl()) });
    await fx.insertMany(10, { exchange, routingKey: 'warm' });
    await waitFor('warm-up', () => queue.length === 10);
    // Confirms now take 1.5 s: the claim transaction sits idle while the database goes away.
    brokerProxy.latencyMs = 1_500;
    await fx.insertMany(50, { exchange, routingKey: 'slow' });
    await new Promise((resolve) => setTimeout(resolve, 700));
    dbProxy.cut();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    brokerProxy.latencyMs = 0;
    dbProxy.restore();
    await waitFor('all 60 published', async () => (await fx.counts()).published === 60, 30_000);
    await waitFor('ready again', async () => (await fetch(`http://127.0.0.1:${relay.port}/readyz`)).status === 200);
    expect(uncaught).toEqual([]);
  } finally {
    process.off('uncaughtException', onUncaught);
    await fx.stopRelays();
    await dbProxy.close();
    await brokerProxy.close();
  }
});

test('waiting for a broker that stays down does not pile up listeners (MaxListenersExceededWarning)', async () => {
  const warnings: Error[] = [];
  const onWarning = (w: Error): void => void warnings.push(w);
  process.on('warning', onWarning);
  try {
    await fx.startRelay({ OUTBOX_AMQP_URL: 'amqp://guest:guest@127.0.0.1:1', OUTBOX_POLL_INTERVAL_MS: '10' });
    // 150 poll intervals of waiting for the broker.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    expect(warnings.filter((w) => w.name === 'MaxListenersExceededWarning')).toEqual([]);
  } finally {
    process.off('warning', onWarning);
  }
});
