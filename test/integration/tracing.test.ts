import { execFile } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { context, SpanKind, trace, type Span } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from '@opentelemetry/sdk-trace-base';
import type { ConsumeMessage } from 'amqplib';
import type { PoolClient } from 'pg';
import type { Consumer } from '../../src/consumer/consumer';
import { createConsumer, defineMessage, enqueue } from '../../src/index';
import { fromReadableSpan, OtlpReceiver, waterfall, type ReceivedSpan } from '../kit/otlp-receiver';
import { OutboxFixture } from '../kit/outbox-fixture';
import { migrateInboxSchema } from '../kit/outbox-schema';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

// One trace from the service's transaction to the consumer's handler (docs/tracing.md).
// The relay runs as a process (`outbox-relay run`, from dist/) and exports with the
// official OTLP exporter to a receiver this file starts. The service and the consuming
// service are this process, with an SDK of their own whose spans stay in memory: the OTLP
// exporters cannot send from inside Jest (see fromReadableSpan).

const fx = OutboxFixture.forFile('tracing');
const broker = TestBroker.forFile();
let receiver: OtlpReceiver;
const memory = new InMemorySpanExporter();
const service = provider('orders-service');
const shipping = provider('shipping-service');
const contextManager = new AsyncLocalStorageContextManager();
const consumers: Consumer[] = [];

function provider(name: string): BasicTracerProvider {
  return new BasicTracerProvider({
    resource: resourceFromAttributes({ 'service.name': name }),
    spanProcessors: [new SimpleSpanProcessor(memory)],
  });
}

/** Every span recorded: the relay's as the receiver decoded them, the service's and the consumer's from memory. */
function allSpans(): ReceivedSpan[] {
  return [...receiver.spans, ...memory.getFinishedSpans().map(fromReadableSpan)];
}

function waitForSpan(what: string, match: (span: ReceivedSpan) => boolean, timeoutMs = 10_000): Promise<ReceivedSpan> {
  return waitFor(what, () => allSpans().find(match), timeoutMs);
}

beforeAll(async () => {
  receiver = await OtlpReceiver.start();
  context.setGlobalContextManager(contextManager.enable());
  trace.setGlobalTracerProvider(service);
  await migrateInboxSchema(fx.pool, fx.schema);
});

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.stop()));
});

afterAll(async () => {
  await Promise.all([service.shutdown(), shipping.shutdown()]);
  trace.disable();
  context.disable();
  await receiver?.close();
});

function relayEnv(extra: Record<string, string> = {}): Record<string, string> {
  return {
    OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_SERVICE_NAME: 'outbox-relay-test',
    // The SDK's batch processor reads this: the relay's spans leave at its shutdown, which shows the flush.
    OTEL_BSP_SCHEDULE_DELAY: '60000',
    OUTBOX_BACKOFF_BASE_MS: '60000',
    OUTBOX_BACKOFF_MAX_MS: '60000',
    ...extra,
  };
}

/** Runs `work` inside a new active span of the service, in a transaction; returns the span. */
async function inServiceTransaction(name: string, work: (client: PoolClient) => Promise<void>): Promise<Span> {
  return trace.getTracer('orders').startActiveSpan(name, { kind: SpanKind.SERVER }, async (span) => {
    const client = await fx.pool.connect();
    try {
      await client.query('BEGIN');
      await work(client);
      await client.query('COMMIT');
    } finally {
      client.release();
      span.end();
    }
    return span;
  });
}

function header(msg: ConsumeMessage, name: string): string | undefined {
  const value = (msg.properties.headers as Record<string, unknown>)[name];
  return Buffer.isBuffer(value) ? value.toString('utf8') : (value as string | undefined);
}

test('one trace runs from the service transaction through the relay publish span to the consumer handler', async () => {
  const exchange = await broker.exchange(uniqueName('orders'));
  const queue = await broker.declareQueue(uniqueName('shipping'), { exchange, pattern: '#' });
  const seen: { traceparent: string | undefined; activeSpanId: string | undefined; other: unknown }[] = [];
  consumers.push(
    await createConsumer({
      amqpUrl: testAmqpUrl(),
      queue,
      pool: fx.pool,
      schema: fx.schema,
      tracing: shipping,
      handler: async (message, tx) => {
        await tx.query('SELECT 1');
        seen.push({
          traceparent: header(message.raw, 'traceparent'),
          activeSpanId: trace.getActiveSpan()?.spanContext().spanId,
          other: message.headers['x-tenant'],
        });
      },
    }),
  );
  const relay = await fx.spawnRelay(relayEnv());
  await relay.ready();
  const OrderPlaced = defineMessage<{ orderId: string }>({ type: 'order.placed', exchange, routingKey: 'order.placed' });
  let messageId = '';
  // The relay cannot claim the row before the transaction that inserts it commits; the
  // relay stamps its spans with the wall clock, as this does (the service span's own end
  // comes from the SDK's monotonic clock of this long-lived process, which may drift from it).
  let insertedAt = 0;
  const serviceSpan = await inServiceTransaction('place order', async (client) => {
    messageId = await enqueue(client, OrderPlaced, { orderId: 'o-1' }, { schema: fx.schema, headers: { 'x-tenant': 't-9' } });
    insertedAt = Date.now();
  });
  const traceId = serviceSpan.spanContext().traceId;
  await waitFor('the consumer to handle the message', () => seen.length === 1);

  // The row carries the service's context; the AMQP message the relay's, its other headers unchanged.
  const row = await fx.row(messageId);
  expect(row['headers']).toEqual({ 'x-tenant': 't-9', traceparent: `00-${traceId}-${serviceSpan.spanContext().spanId}-01` });
  const sent = seen[0]!;
  expect(sent.other).toBe('t-9');
  expect(sent.traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-01$`));
  expect(sent.traceparent).not.toBe(row['headers'] && (row['headers'] as Record<string, string>)['traceparent']);

  // Nothing of the relay is exported before its shutdown (60 s schedule delay): the flush sends it.
  expect(receiver.spans).toEqual([]);
  expect(await relay.stop()).toEqual({ code: 0, signal: null });
  const publish = await waitForSpan('the relay publish span', (s) => s.traceId === traceId && s.kind === 'PRODUCER', 1_000);
  const processSpan = await waitForSpan('the consumer span', (s) => s.traceId === traceId && s.kind === 'CONSUMER');
  const root = await waitForSpan('the service span', (s) => s.traceId === traceId && s.name === 'place order');
  const batch = await waitForSpan('the batch span', (s) => s.name === 'outbox batch' && s.spanId === publish.links[0]?.spanId);

  expect(root.parentSpanId).toBeUndefined();
  expect(publish).toMatchObject({
    name: `publish ${exchange}`,
    parentSpanId: root.spanId,
    service: 'outbox-relay-test',
    status: { code: 'UNSET' },
  });
  expect(publish.attributes).toMatchObject({
    'messaging.system': 'rabbitmq',
    'messaging.operation.type': 'send',
    'messaging.operation.name': 'publish',
    'messaging.destination.name': exchange,
    'messaging.rabbitmq.destination.routing_key': 'order.placed',
    'messaging.message.id': messageId,
    'outbox.message.attempt': 1,
    'outbox.verdict': 'published',
  });
  expect(sent.traceparent).toBe(`00-${traceId}-${publish.spanId}-01`);
  expect(processSpan).toMatchObject({ name: `process ${queue}`, parentSpanId: publish.spanId, service: 'shipping-service' });
  expect(processSpan.attributes).toMatchObject({
    'messaging.system': 'rabbitmq',
    'messaging.operation.type': 'process',
    'messaging.destination.name': exchange,
    'messaging.destination.subscription.name': queue,
    'messaging.message.id': messageId,
    'outbox.consumer.attempt': 1,
  });
  // The handler ran inside the consumer span.
  expect(sent.activeSpanId).toBe(processSpan.spanId);
  // The batch span is a root of its own, with the database's attributes, linked from the message span.
  expect(batch).toMatchObject({ kind: 'INTERNAL', parentSpanId: undefined });
  expect(batch.attributes).toMatchObject({ 'db.system.name': 'postgresql', 'db.namespace': fx.schema, 'messaging.batch.message_count': 1 });
  // Start at the claim (the batch's start), end at the confirm: within the batch, before the consumer.
  expect(publish.startMs).toBe(batch.startMs);
  expect(publish.endMs).toBeLessThanOrEqual(batch.endMs);
  expect(publish.startMs).toBeGreaterThanOrEqual(insertedAt);
  expect(processSpan.startMs).toBeGreaterThanOrEqual(publish.startMs);
  const picture = waterfall([...allSpans().filter((s) => s.traceId === traceId), batch]);
  if (process.env['TRACE_WATERFALL_FILE']) {
    writeFileSync(
      process.env['TRACE_WATERFALL_FILE'],
      `trace ${traceId}\n${picture}\n${JSON.stringify([root, publish, batch, processSpan], null, 1)}\n`,
    );
  }
}, 30_000);

test('a failed attempt is an error span with its reason; a row without a valid traceparent gets a root span', async () => {
  const exchange = await broker.exchange(uniqueName('events'));
  const received = await broker.queue(uniqueName('events_q'), { exchange, pattern: '#' });
  const relay = await fx.spawnRelay(relayEnv({ OUTBOX_MAX_ATTEMPTS: '1', OTEL_BSP_SCHEDULE_DELAY: '50' }));
  await relay.ready();
  const Missing = defineMessage<{ n: number }>({ type: 'lost.event', exchange: uniqueName('missing') });
  let missingId = '';
  const serviceSpan = await inServiceTransaction('write lost event', async (client) => {
    missingId = await enqueue(client, Missing, { n: 1 }, { schema: fx.schema });
  });
  const [orphanId] = await fx.insert([
    { exchange, routing_key: 'k', payload: { n: 2 }, headers: { traceparent: 'not-a-traceparent', keep: 'me' } },
  ]);
  await waitFor('the dead row and the delivered one', async () => (await fx.counts()).dead === 1 && received.length === 1);

  const failed = await waitForSpan('the failed publish span', (s) => s.attributes['messaging.message.id'] === missingId);
  expect(failed).toMatchObject({
    kind: 'PRODUCER',
    traceId: serviceSpan.spanContext().traceId,
    parentSpanId: serviceSpan.spanContext().spanId,
  });
  expect(failed.status.code).toBe('ERROR');
  expect(failed.status.message).toMatch(/^unknown_exchange: exchange ".*" does not exist/);
  expect(failed.attributes).toMatchObject({ 'error.type': 'unknown_exchange', 'outbox.verdict': 'dead' });

  const orphan = await waitForSpan('the root publish span', (s) => s.attributes['messaging.message.id'] === orphanId);
  expect(orphan.parentSpanId).toBeUndefined();
  expect(orphan.status.code).toBe('UNSET');
  const delivered = received[0]!;
  expect(header(delivered, 'traceparent')).toBe(`00-${orphan.traceId}-${orphan.spanId}-01`);
  expect(header(delivered, 'keep')).toBe('me');
}, 30_000);

test('the consumer: a handler that throws is an error span, its retry a sibling, a duplicate says so; tracing: true takes the global provider', async () => {
  const queue = await broker.declareQueue(uniqueName('work'));
  let calls = 0;
  consumers.push(
    await createConsumer({
      amqpUrl: testAmqpUrl(),
      queue,
      pool: fx.pool,
      schema: fx.schema,
      tracing: true,
      retryMode: 'in-place',
      retryDelayMs: 10,
      handler: async () => {
        calls += 1;
        if (calls === 1) throw new Error('payment service down');
      },
    }),
  );
  const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
  const parent = '00f067aa0ba902b7';
  const messageId = '6f1f3f5a-0d3c-4b0e-9a1e-2b8f8f6f0c11';
  const send = (): boolean =>
    broker.channel.sendToQueue(queue, Buffer.from('{}'), {
      messageId,
      contentType: 'application/json',
      headers: { traceparent: `00-${traceId}-${parent}-01`, tracestate: 'vendor=x' },
    });
  send();
  await waitFor('the retry to succeed', () => calls === 2);
  send();
  const spans = await waitFor('three consumer spans', () => {
    const found = allSpans().filter((s) => s.traceId === traceId && s.kind === 'CONSUMER');
    return found.length === 3 ? found : undefined;
  });
  for (const span of spans) expect(span).toMatchObject({ parentSpanId: parent, service: 'orders-service', name: `process ${queue}` });
  const [first, retry, duplicate] = [...spans].sort((a, b) => a.startMs - b.startMs) as [ReceivedSpan, ReceivedSpan, ReceivedSpan];
  expect(first.status).toEqual({ code: 'ERROR', message: 'payment service down' });
  expect(first.events.map((e) => e.name)).toContain('exception');
  expect(first.attributes['outbox.consumer.attempt']).toBe(1);
  expect(retry.status.code).toBe('UNSET');
  expect(retry.attributes['outbox.consumer.attempt']).toBe(2);
  expect(duplicate.attributes['outbox.inbox.duplicate']).toBe(true);
  expect(duplicate.events.map((e) => e.name)).toContain('duplicate skipped');
}, 30_000);

test('the producer records the active context only when the caller set none, and nothing without an active span', async () => {
  const Note = defineMessage<{ n: number }>({ type: 'note', exchange: uniqueName('notes') });
  const ids: string[] = [];
  const span = await inServiceTransaction('write notes', async (client) => {
    ids.push(await enqueue(client, Note, { n: 1 }, { schema: fx.schema }));
    ids.push(
      await enqueue(client, Note, { n: 2 }, { schema: fx.schema, traceparent: '00-11111111111111111111111111111111-2222222222222222-00' }),
    );
    ids.push(await enqueue(client, Note, { n: 3 }, { schema: fx.schema, headers: { tracestate: 'mine=1' } }));
  });
  const client = await fx.pool.connect();
  try {
    ids.push(await enqueue(client, Note, { n: 4 }, { schema: fx.schema }));
  } finally {
    client.release();
  }
  const headers = await Promise.all(ids.map(async (id) => (await fx.row(id))['headers']));
  expect(headers).toEqual([
    { traceparent: `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01` },
    { traceparent: '00-11111111111111111111111111111111-2222222222222222-00' },
    { tracestate: 'mine=1' },
    {},
  ]);
  await fx.pool.query(`DELETE FROM ${fx.table}`);
});

/**
 * `node relay.js`: a relay from dist/ on the test schema (its environment), one message
 * published, then whether any OpenTelemetry module was loaded.
 */
const RELAY_SCRIPT = `'use strict';
const { startRelay } = require(process.env.DIST + '/app.js');
const { loadConfig } = require(process.env.DIST + '/config/load-config.js');
const { createLogger } = require(process.env.DIST + '/observability/logger.js');
const { Client } = require('pg');
(async () => {
  const config = loadConfig(process.env);
  const relay = await startRelay(config, createLogger({ level: 'info', secrets: [] }));
  await relay.started;
  const db = new Client({ connectionString: config.databaseUrl });
  await db.connect();
  const table = '"' + config.schema + '".messages';
  const { rows } = await db.query("INSERT INTO " + table + " (exchange, routing_key, payload, headers) VALUES ('amq.topic', 'k', '{}', $1) RETURNING message_id",
    [{ traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' }]);
  for (let i = 0; i < 400; i += 1) {
    const r = await db.query('SELECT published_at FROM ' + table + ' WHERE message_id = $1', [rows[0].message_id]);
    if (r.rows[0].published_at) break;
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
  await db.end();
  await relay.stop();
  // prom-client loads @opentelemetry/api (the no-op facade) for its exemplars, with or without tracing.
  const files = Object.keys(require.cache);
  const loaded = files.filter((f) => f.includes('@opentelemetry') && !/@opentelemetry[\\/\\\\]api[\\/\\\\]/.test(f));
  const tracing = files.some((f) => /dist[\\/\\\\]tracing[\\/\\\\]/.test(f));
  process.stderr.write('RESULT ' + JSON.stringify({ loaded: loaded.length, tracing }) + '\\n');
})().catch((err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1); });
`;

test('with the variables unset nothing is exported and OpenTelemetry is not even loaded; with an endpoint, protobuf by default, headers sent but never logged', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'outbox-tracing-'));
  const script = join(dir, 'relay.js');
  await writeFile(script, RELAY_SCRIPT);
  const base = {
    ...fx.env(),
    DIST: join(__dirname, '..', '..', 'dist'),
    NODE_PATH: join(__dirname, '..', '..', 'node_modules'),
    PATH: process.env['PATH'] ?? '',
  };
  const run = async (env: Record<string, string | undefined>): Promise<{ loaded: number; tracing: boolean; output: string }> => {
    const { stdout, stderr } = await promisify(execFile)(process.execPath, [script], { env: { ...base, ...env }, timeout: 20_000 });
    const result = /RESULT (.*)/.exec(stderr);
    if (!result) throw new Error(`no result from the relay process: ${stderr}`);
    return { ...(JSON.parse(result[1]!) as { loaded: number; tracing: boolean }), output: stdout + stderr };
  };
  try {
    const before = receiver.requests.length;
    const off = await run({ OTEL_SERVICE_NAME: 'not-used', OTEL_TRACES_SAMPLER: 'always_on' });
    expect(off).toMatchObject({ loaded: 0, tracing: false });
    expect(receiver.requests.length).toBe(before);

    const secret = 'sk-test-5f0c1a';
    const on = await run({ OTEL_EXPORTER_OTLP_ENDPOINT: receiver.url, OTEL_EXPORTER_OTLP_HEADERS: `x-api-key=${secret}` });
    expect(on).toMatchObject({ tracing: true });
    expect(on.loaded).toBeGreaterThan(0);
    expect(on.output).toContain('tracing on');
    expect(on.output).not.toContain(secret);
    const request = receiver.requests.slice(before).find((r) => r.contentType === 'application/x-protobuf');
    expect(request).toMatchObject({ path: '/v1/traces', headers: { 'x-api-key': secret } });
    expect(request!.bytes).toBeGreaterThan(0);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 40_000);
