import { OutboxFixture } from '../kit/outbox-fixture';
import { endpointStatus } from '../kit/relay-http';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';

// Bugs found by the chaos suite and by review, each with a test of its own.

const fx = OutboxFixture.forFile('regress');
const broker = TestBroker.forFile();

test('the database connection dropping while a batch waits for confirms does not crash the relay (chaos, seed 42)', async () => {
  const dbProxy = await TcpProxy.inFrontOf(testDatabaseUrl());
  const brokerProxy = await TcpProxy.inFrontOf(testAmqpUrl());
  const uncaught: Error[] = [];
  const onUncaught = (err: Error): void => void uncaught.push(err);
  process.on('uncaughtException', onUncaught);
  try {
    const { exchange, received: queue } = await broker.exchangeWithQueue('drop');
    const { relay } = await fx.startRelay({
      OUTBOX_DATABASE_URL: dbProxy.url(testDatabaseUrl()),
      OUTBOX_AMQP_URL: brokerProxy.url(testAmqpUrl()),
    });
    await fx.insertBacklog({ count: 10, exchange, routingKey: 'warm' });
    await waitFor('warm-up', () => queue.length === 10);
    // Confirms now take 1.5 s: the claim transaction sits idle while the database goes away.
    brokerProxy.latencyMs = 1_500;
    await fx.insertBacklog({ count: 50, exchange, routingKey: 'slow' });
    await new Promise((resolve) => setTimeout(resolve, 700));
    dbProxy.cut();
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    brokerProxy.latencyMs = 0;
    dbProxy.restore();
    await waitFor('all 60 published', async () => (await fx.counts()).published === 60, 30_000);
    await waitFor('ready again', async () => (await endpointStatus(relay.port, '/readyz')) === 200);
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
