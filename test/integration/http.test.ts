import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { OutboxFixture } from '../kit/outbox-fixture';
import { endpointStatus, parseMetrics, readMetrics } from '../kit/relay-http';
import { testDatabaseUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('http');

/** Every metric of the runbook's "Metrics and health" table, docs/runbook.md (rows starting with a metric name). */
const RUNBOOK_SECTION =
  readFileSync(join(__dirname, '..', '..', 'docs', 'runbook.md'), 'utf8')
    .split('\n## Metrics and health\n')[1]
    ?.split('\n## ')[0] ?? '';
const DOCUMENTED_METRICS = [...RUNBOOK_SECTION.matchAll(/^\| `(outbox_[a-z_]+)[`{]/gm)].map((m) => m[1] as string);

test('the runbook documents at least the metrics every release has had', () => {
  expect(DOCUMENTED_METRICS).toEqual(
    expect.arrayContaining([
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
      'outbox_cleanup_deleted_total',
      'outbox_stalled',
    ]),
  );
});

test('/metrics has every documented metric plus the process metrics, and documents every metric it has; /healthz and /readyz answer 200', async () => {
  // With the optional stage timings on, so that every metric the relay can expose is there.
  const { relay, baseUrl } = await fx.startRelay({ OUTBOX_STAGE_TIMINGS: 'true' });
  await waitFor('ready', async () => (await endpointStatus(relay.port, '/readyz')) === 200);
  const response = await fetch(`${baseUrl}/metrics`);
  expect(response.status).toBe(200);
  expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
  const metrics = parseMetrics(await response.text());
  for (const name of DOCUMENTED_METRICS) expect({ name, type: metrics.type(name) }).toEqual({ name, type: expect.any(String) });
  const exposed = [...metrics.text.matchAll(/^# TYPE (outbox_[a-z_]+) /gm)].map((m) => m[1] as string);
  expect(exposed.filter((name) => !DOCUMENTED_METRICS.includes(name))).toEqual([]);
  expect(exposed).toContain('outbox_stage_seconds');
  expect(Number.isInteger(metrics.value('process_resident_memory_bytes'))).toBe(true);
  expect(metrics.value('outbox_up', { dependency: 'database' })).toBe(1);
  expect(metrics.value('outbox_up', { dependency: 'broker' })).toBe(1);
  expect(metrics.value('outbox_pending_messages', { state: 'due' })).toBe(0);
  expect(metrics.value('outbox_publish_failures_total', { reason: 'timeout' })).toBe(0);
  expect(metrics.value('outbox_publishes_refused_total')).toBe(0);
  expect(metrics.value('outbox_held_destinations')).toBe(0);
  expect(await endpointStatus(relay.port, '/healthz')).toBe(200);
  expect(await endpointStatus(relay.port, '/nope')).toBe(404);
});

test('lag, pending and dead gauges follow the table', async () => {
  // No queue takes these commands, so they fail and wait for their retry (delayed);
  // one is dead at once; one is due far in the future.
  const { relay } = await fx.startRelay({ OUTBOX_BACKOFF_BASE_MS: '600000', OUTBOX_BACKOFF_MAX_MS: '600000' });
  await fx.insert([
    { routing_key: uniqueName('nobody'), payload: {} },
    { routing_key: uniqueName('later'), payload: {}, available_at: new Date(Date.now() + 3_600_000) },
  ]);
  await fx.pool.query(`INSERT INTO ${fx.table} (routing_key, payload, dead_at, attempts) VALUES ('x', '{}', now(), 10)`);
  await waitFor('delayed=2', async () => (await readMetrics(relay.port)).value('outbox_pending_messages', { state: 'delayed' }) === 2);
  await waitFor('dead=1', async () => (await readMetrics(relay.port)).value('outbox_dead_messages') === 1);
  expect((await readMetrics(relay.port)).value('outbox_lag_seconds')).toBe(0);
});

test('the lag gauge grows while due messages wait, and a scrape never touches the database', async () => {
  const proxy = await TcpProxy.inFrontOf(testDatabaseUrl());
  try {
    const { relay } = await fx.startRelay({
      OUTBOX_DATABASE_URL: proxy.url(testDatabaseUrl()),
      OUTBOX_AMQP_URL: 'amqp://guest:guest@127.0.0.1:1',
    });
    await fx.insert([{ routing_key: uniqueName('waiting'), payload: {} }]);
    await waitFor('lag > 0.3 s', async () => Number((await readMetrics(relay.port)).value('outbox_lag_seconds')) > 0.3);
    expect(await endpointStatus(relay.port, '/readyz')).toBe(503);
    expect(await endpointStatus(relay.port, '/healthz')).toBe(200);
    // With the database unreachable a scrape still answers at once from memory.
    proxy.cut();
    const started = Date.now();
    const metrics = await readMetrics(relay.port);
    expect(metrics.value('outbox_lag_seconds')).toEqual(expect.any(Number));
    expect(Date.now() - started).toBeLessThan(1_000);
  } finally {
    await fx.stopRelays();
    await proxy.close();
  }
});
