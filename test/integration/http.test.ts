import { OutboxFixture, uniqueName } from '../helpers/outbox-fixture';
import { TcpProxy } from '../helpers/tcp-proxy';
import { testDatabaseUrl } from '../helpers/services';
import { waitFor } from '../helpers/wait';

let fx: OutboxFixture;

beforeAll(async () => {
  fx = await OutboxFixture.create('http');
});

afterEach(async () => {
  await fx.stopRelays();
});

afterAll(async () => {
  await fx.close();
});

const SPEC_METRICS = [
  'outbox_lag_seconds',
  'outbox_pending_messages',
  'outbox_dead_messages',
  'outbox_messages_published_total',
  'outbox_publish_failures_total',
  'outbox_messages_dead_total',
  'outbox_messages_unroutable_total',
  'outbox_delivery_latency_seconds',
  'outbox_batch_duration_seconds',
  'outbox_up',
  'outbox_blocked_keys',
];

test('/metrics has every metric of SPEC §7 plus the process metrics; /healthz and /readyz answer 200', async () => {
  const { baseUrl } = await fx.startRelay();
  await waitFor('ready', async () => (await fetch(`${baseUrl}/readyz`)).status === 200);
  const response = await fetch(`${baseUrl}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
  const text = await response.text();
  for (const name of SPEC_METRICS) expect(text).toMatch(new RegExp(`^# TYPE ${name} `, 'm'));
  expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
  expect(text).toMatch(/^outbox_up\{dependency="database"\} 1$/m);
  expect(text).toMatch(/^outbox_up\{dependency="broker"\} 1$/m);
  expect(text).toMatch(/^outbox_pending_messages\{state="due"\} 0$/m);
  expect(text).toMatch(/^outbox_publish_failures_total\{reason="nack"\} 0$/m);
  expect((await fetch(`${baseUrl}/healthz`)).status).toBe(200);
  expect((await fetch(`${baseUrl}/nope`)).status).toBe(404);
});

test('lag, pending and dead gauges follow the table', async () => {
  // No queue takes these commands, so they fail and wait for their retry (delayed);
  // one is dead at once; one is due far in the future.
  const { baseUrl } = await fx.startRelay({ OUTBOX_BACKOFF_BASE_MS: '600000', OUTBOX_BACKOFF_MAX_MS: '600000' });
  await fx.insert([
    { routing_key: uniqueName('nobody'), payload: {} },
    { routing_key: uniqueName('later'), payload: {}, available_at: new Date(Date.now() + 3_600_000) },
  ]);
  await fx.pool.query(`INSERT INTO ${fx.table} (routing_key, payload, dead_at, attempts) VALUES ('x', '{}', now(), 10)`);
  const metric = async (pattern: RegExp): Promise<number> => Number(pattern.exec(await (await fetch(`${baseUrl}/metrics`)).text())?.[1]);
  await waitFor('delayed=2', async () => (await metric(/^outbox_pending_messages\{state="delayed"\} (\d+)$/m)) === 2);
  await waitFor('dead=1', async () => (await metric(/^outbox_dead_messages (\d+)$/m)) === 1);
  expect(await metric(/^outbox_lag_seconds (\S+)$/m)).toBe(0);
});

test('the lag gauge grows while due messages wait, and a scrape never touches the database', async () => {
  const db = new URL(testDatabaseUrl());
  const proxy = await TcpProxy.start(db.hostname, Number(db.port || 5432));
  try {
    const { baseUrl } = await fx.startRelay({ OUTBOX_DATABASE_URL: proxy.url(testDatabaseUrl()), OUTBOX_AMQP_URL: 'amqp://guest:guest@127.0.0.1:1' });
    await fx.insert([{ routing_key: uniqueName('waiting'), payload: {} }]);
    await waitFor('lag > 0.3 s', async () => Number(/^outbox_lag_seconds (\S+)$/m.exec(await (await fetch(`${baseUrl}/metrics`)).text())?.[1]) > 0.3);
    expect((await fetch(`${baseUrl}/readyz`)).status).toBe(503);
    expect((await fetch(`${baseUrl}/healthz`)).status).toBe(200);
    // With the database unreachable a scrape still answers at once from memory.
    proxy.cut();
    const started = Date.now();
    const response = await fetch(`${baseUrl}/metrics`);
    expect(response.status).toBe(200);
    expect(await response.text()).toMatch(/^outbox_lag_seconds /m);
    expect(Date.now() - started).toBeLessThan(1_000);
  } finally {
    await fx.stopRelays();
    await proxy.close();
  }
});
