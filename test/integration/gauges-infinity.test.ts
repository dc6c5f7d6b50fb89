import { cli, envFor, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { readMetrics, type Metrics } from '../kit/relay-http';
import { testAmqpUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';

/**
 * `infinity` / `-infinity` in available_at for the operator: `status`, `status --json`
 * and the table gauges of a running relay, next to a message 10 minutes overdue; and
 * the lag gauge following the table within a second.
 */
const fx = OutboxFixture.forFile('gauges_inf', { afterEach: 'reset' });
const broker = TestBroker.forFile();

/** A broker URL no relay can connect to: nothing is published, the gauges still refresh. */
const NO_BROKER = 'amqp://guest:guest@127.0.0.1:1';
/** The relay's own cadence of the gauges (app.ts), not the fixture's quick one. */
const PRODUCTION_TUNING = {};

/** Inserts one message with `available_at` given as PostgreSQL text; returns its message id. */
async function insertAt(availableAt: string, options: { exchange?: string; createdAt?: string } = {}): Promise<string> {
  const { rows } = await fx.pool.query<{ message_id: string }>(
    `INSERT INTO ${fx.table} (exchange, routing_key, payload, available_at, created_at)
     VALUES ($1, 'gauges.infinity', '{"n": 1}', $2::timestamptz, coalesce($3::timestamptz, now())) RETURNING message_id`,
    [options.exchange ?? '', availableAt, options.createdAt ?? null],
  );
  return rows[0]!.message_id;
}

function minutesAgo(minutes: number): string {
  return new Date(Date.now() - minutes * 60_000).toISOString();
}

/** `-infinity`, `infinity`, one message 10 minutes overdue, one dead message. */
async function insertInfinitiesAndOverdue(): Promise<{ overdue: string }> {
  await insertAt('-infinity');
  await insertAt('infinity');
  const overdue = await insertAt(minutesAgo(10));
  await fx.pool.query(`INSERT INTO ${fx.table} (routing_key, payload, dead_at, attempts) VALUES ('gauges.dead', '{}', now(), 10)`);
  return { overdue };
}

async function statusJson(): Promise<Record<string, unknown>> {
  const result = await cli(['status', '--json'], envFor(fx.schema));
  expect(result).toMatchObject({ code: 0, stderr: '' });
  expect(lines(result.stdout)).toHaveLength(1);
  return JSON.parse(result.stdout) as Record<string, unknown>;
}

async function statusText(): Promise<string> {
  const result = await cli(['status'], envFor(fx.schema));
  expect(result).toMatchObject({ code: 0, stderr: '' });
  return result.stdout;
}

function tableGauges(m: Metrics) {
  return {
    due: m.value('outbox_pending_messages', { state: 'due' }),
    delayed: m.value('outbox_pending_messages', { state: 'delayed' }),
    dead: m.value('outbox_dead_messages'),
  };
}

describe('status with infinity and -infinity in available_at', () => {
  test('next to a message 10 minutes overdue: exit 0, -infinity due, infinity delayed, the lag from the overdue one', async () => {
    const { overdue } = await insertInfinitiesAndOverdue();

    const report = await statusJson();
    expect(report).toMatchObject({ schema: fx.schema, pending: 3, due: 2, delayed: 1, dead: 1, published: 0 });
    expect(report['lagSeconds']).toBeGreaterThanOrEqual(599);
    expect(report['lagSeconds']).toBeLessThan(660);
    expect(report['oldestPending']).toEqual({
      messageId: overdue,
      createdAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/) as unknown,
      dueAt: expect.stringMatching(/Z$/) as unknown,
    });

    const text = await statusText();
    expect(text).toMatch(/pending\s+3 \(due 2, delayed 1\)/);
    expect(text).toMatch(/dead\s+1/);
    expect(Number(/lag\s+(\d+\.\d{3}) s/.exec(text)?.[1])).toBeGreaterThanOrEqual(599);
    expect(text).toContain(overdue);
  });

  test('a -infinity message counts for the lag from its created_at, and is printed as -infinity', async () => {
    const forever = await insertAt('-infinity', { createdAt: minutesAgo(20) });
    await insertAt(minutesAgo(10));
    await insertAt('infinity');

    const report = await statusJson();
    expect(report).toMatchObject({ pending: 3, due: 2, delayed: 1 });
    expect(report['lagSeconds']).toBeGreaterThanOrEqual(1_199);
    expect(report['lagSeconds']).toBeLessThan(1_260);
    expect(report['oldestPending']).toMatchObject({ messageId: forever, dueAt: '-infinity', createdAt: expect.stringMatching(/Z$/) });

    const text = await statusText();
    expect(text).toContain(`${forever} (created `);
    expect(text).toContain('due -infinity)');
  });

  test('only delayed messages: lag 0, the next one due shown; infinity, and instants past a JavaScript Date, printed as PostgreSQL writes them', async () => {
    const farthest = await insertAt('infinity');
    const report = await statusJson();
    expect(report).toMatchObject({ pending: 1, due: 0, delayed: 1, lagSeconds: 0 });
    expect(report['oldestPending']).toMatchObject({ messageId: farthest, dueAt: 'infinity' });
    expect(await statusText()).toContain('due infinity)');

    // Year 294276: a valid timestamptz, beyond what a JavaScript Date holds (275760).
    const far = await insertAt('294276-01-01 00:00:00+00');
    const later = await statusJson();
    expect(later).toMatchObject({ pending: 2, due: 0, delayed: 2, lagSeconds: 0 });
    expect(later['oldestPending']).toMatchObject({ messageId: far, dueAt: expect.stringMatching(/^294276-01-01/) });
  });

  test('a -infinity message whose created_at is infinity (written by hand) is due and makes no lag', async () => {
    const odd = await insertAt('-infinity', { createdAt: 'infinity' });
    const report = await statusJson();
    expect(report).toMatchObject({ pending: 1, due: 1, delayed: 0, lagSeconds: 0 });
    expect(report['oldestPending']).toEqual({ messageId: odd, createdAt: 'infinity', dueAt: '-infinity' });
  });
});

describe('the gauges of a running relay', () => {
  test('with infinity and -infinity pending: the overdue lag (~600 s) and the right pending counts, no refresh failure', async () => {
    await insertInfinitiesAndOverdue();
    const { relay } = await fx.startRelay({ OUTBOX_AMQP_URL: NO_BROKER }, PRODUCTION_TUNING);
    const m = await waitFor('the gauges refreshed', async () => {
      const metrics = await readMetrics(relay.port);
      return (metrics.value('outbox_lag_seconds') ?? 0) > 0 && metrics.value('outbox_dead_messages') === 1 ? metrics : undefined;
    });
    expect(tableGauges(m)).toEqual({ due: 2, delayed: 1, dead: 1 });
    expect(m.value('outbox_lag_seconds')).toBeGreaterThanOrEqual(599);
    expect(m.value('outbox_lag_seconds')).toBeLessThan(660);
    for (const part of ['lag', 'counts']) {
      expect({ part, failures: m.value('outbox_gauge_refresh_failures_total', { part }) }).toEqual({ part, failures: 0 });
      expect(m.value('outbox_gauge_last_refresh_timestamp_seconds', { part })).toBeGreaterThan(0);
    }
  });

  test('publishes a -infinity message and counts it', async () => {
    const { exchange, received } = await broker.exchangeWithQueue('gauges_inf');
    const { relay, logs } = await fx.startRelay({}, PRODUCTION_TUNING);
    const id = await insertAt('-infinity', { exchange });
    await waitFor('the -infinity message delivered', () => received.length === 1);
    expect(received[0]!.properties.messageId).toBe(id);
    await waitFor('marked published', async () => (await fx.row(id))['published_at'] instanceof Date);
    await waitFor('counted', async () => (await readMetrics(relay.port)).value('outbox_messages_published_total') === 1);
    expect(logs.entries().filter((e) => /batch failed/.test(String(e['msg'])))).toEqual([]);
  });

  test('after the outbox drains, outbox_lag_seconds reads 0 within 2 s', async () => {
    const { exchange, received } = await broker.exchangeWithQueue('gauges_drain');
    // The broker unreachable at first, so that the messages wait and the lag grows.
    const proxy = await TcpProxy.inFrontOf(testAmqpUrl());
    try {
      proxy.cut();
      const { relay } = await fx.startRelay({ OUTBOX_AMQP_URL: proxy.url(testAmqpUrl()) }, PRODUCTION_TUNING);
      await insertAt(minutesAgo(10), { exchange });
      await insertAt('-infinity', { exchange, createdAt: minutesAgo(5) });
      await waitFor('lag ~600 s', async () => ((await readMetrics(relay.port)).value('outbox_lag_seconds') ?? 0) >= 599);

      proxy.restore();
      await waitFor('both delivered', () => received.length === 2, 30_000);
      await waitFor('the outbox drained', async () => (await fx.counts()).pending === 0);
      const m = await waitFor(
        'outbox_lag_seconds 0 within 2 s of the drain',
        async () => {
          const metrics = await readMetrics(relay.port);
          return metrics.value('outbox_lag_seconds') === 0 ? metrics : undefined;
        },
        2_000,
      );
      expect(m.value('outbox_pending_messages', { state: 'due' })).toBe(0);
    } finally {
      await fx.stopRelays();
      await proxy.close();
    }
  });
});
