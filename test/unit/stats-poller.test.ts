import type { OutboxStats } from '../../src/domain/message';
import { createLogger } from '../../src/observability/logger';
import { createMetrics, type RelayMetrics } from '../../src/observability/metrics';
import { COUNTS_TIME_SHARE, LAG_REFRESH_MS, StatsPoller } from '../../src/observability/stats-poller';
import { LogCapture } from '../kit/log-capture';
import { parseMetrics, type Metrics } from '../kit/relay-http';

const STATS: OutboxStats = { due: 3, delayed: 2, dead: 1, expired: 5, lagSeconds: 7, blockedKeys: 4 };

function setup(
  readStats: () => Promise<OutboxStats>,
  options: { readLag?: () => Promise<number | null>; intervalMs?: number; clock?: () => number } = {},
) {
  const metrics = createMetrics({ defaultMetrics: false });
  const logs = new LogCapture();
  const log = createLogger({ level: 'debug', secrets: [], destination: logs.stream });
  const poller = new StatsPoller(readStats, metrics, log, options.intervalMs ?? 5_000, options.readLag, options.clock);
  return { poller, metrics, logs };
}

async function scrape(metrics: RelayMetrics): Promise<Metrics> {
  return parseMetrics(await metrics.registry.metrics());
}

function tableGauges(m: Metrics) {
  return {
    lag: m.value('outbox_lag_seconds'),
    due: m.value('outbox_pending_messages', { state: 'due' }),
    delayed: m.value('outbox_pending_messages', { state: 'delayed' }),
    dead: m.value('outbox_dead_messages'),
    expired: m.value('outbox_expired_messages'),
    blockedKeys: m.value('outbox_blocked_keys'),
  };
}

/** A reader that answers from a script, one entry per call (an Error is thrown), then repeats the last. */
function scripted<T>(script: readonly (T | Error)[]): { read: () => Promise<T>; calls: () => number } {
  let calls = 0;
  return {
    read: () => {
      const step = script[Math.min(calls, script.length - 1)] as T | Error;
      calls += 1;
      return step instanceof Error ? Promise.reject(step) : Promise.resolve(step);
    },
    calls: () => calls,
  };
}

function logsWith(logs: LogCapture, level: string, msg: string): Record<string, unknown>[] {
  return logs.entries().filter((e) => e['level'] === level && e['msg'] === msg);
}

const WARNED = 'cannot refresh outbox gauges; they keep their last values';
const RECOVERED = 'outbox gauges refreshed again';

describe('refresh failures', () => {
  test('are counted, warned once per streak, and leave the last values and their refresh time as they were', async () => {
    let now = 1_000_000;
    const failure = new Error('cannot subtract infinite timestamps');
    const stats = scripted([STATS, failure, failure, failure, { ...STATS, due: 9 }, failure]);
    const { poller, metrics, logs } = setup(stats.read, { clock: () => now });

    await poller.refresh();
    const good = await scrape(metrics);
    expect(tableGauges(good)).toEqual({ lag: 7, due: 3, delayed: 2, dead: 1, expired: 5, blockedKeys: 4 });
    expect(good.value('outbox_gauge_last_refresh_timestamp_seconds', { part: 'counts' })).toBe(1_000);
    expect(good.value('outbox_gauge_refresh_failures_total', { part: 'counts' })).toBe(0);

    for (let i = 0; i < 3; i += 1) {
      now += 5_000;
      await poller.refresh();
    }
    const failing = await scrape(metrics);
    expect(tableGauges(failing)).toEqual(tableGauges(good));
    expect(failing.value('outbox_gauge_refresh_failures_total', { part: 'counts' })).toBe(3);
    expect(failing.value('outbox_gauge_last_refresh_timestamp_seconds', { part: 'counts' })).toBe(1_000);
    const warned = logsWith(logs, 'warn', WARNED);
    expect(warned).toHaveLength(1);
    expect(warned[0]).toMatchObject({ part: 'counts', err: 'cannot subtract infinite timestamps' });
    expect(logsWith(logs, 'debug', 'cannot refresh outbox gauges')).toHaveLength(2);

    now += 5_000;
    await poller.refresh();
    const recovered = await scrape(metrics);
    expect(recovered.value('outbox_pending_messages', { state: 'due' })).toBe(9);
    expect(recovered.value('outbox_gauge_last_refresh_timestamp_seconds', { part: 'counts' })).toBe(1_020);
    expect(logsWith(logs, 'info', RECOVERED)).toEqual([expect.objectContaining({ part: 'counts', failures: 3 })]);

    // A new streak is warned about again.
    now += 5_000;
    await poller.refresh();
    expect(logsWith(logs, 'warn', WARNED)).toHaveLength(2);
    expect((await scrape(metrics)).value('outbox_gauge_refresh_failures_total', { part: 'counts' })).toBe(4);
  });

  test('that never succeeded show: failures counted, last refresh time 0, warned', async () => {
    const { poller, metrics, logs } = setup(() => Promise.reject(new Error('permission denied for table messages')), {
      readLag: () => Promise.reject(new Error('permission denied for table messages')),
    });
    await poller.refresh();
    await poller.refresh();
    const m = await scrape(metrics);
    for (const part of ['lag', 'counts']) {
      expect({ part, failures: m.value('outbox_gauge_refresh_failures_total', { part }) }).toEqual({ part, failures: 2 });
      expect({ part, at: m.value('outbox_gauge_last_refresh_timestamp_seconds', { part }) }).toEqual({ part, at: 0 });
    }
    expect(logsWith(logs, 'warn', WARNED).map((e) => e['part'])).toEqual(expect.arrayContaining(['lag', 'counts']));
    expect(logsWith(logs, 'warn', WARNED)).toHaveLength(2);
  });

  test('of the lag probe are apart from the counts', async () => {
    const lag = scripted<number | null>([new Error('canceling statement due to statement timeout'), 12]);
    const { poller, metrics, logs } = setup(() => Promise.resolve(STATS), { readLag: lag.read });
    await poller.refresh();
    let m = await scrape(metrics);
    expect(m.value('outbox_gauge_refresh_failures_total', { part: 'lag' })).toBe(1);
    expect(m.value('outbox_gauge_refresh_failures_total', { part: 'counts' })).toBe(0);
    // The counts do not set the lag when it has a probe of its own.
    expect(m.value('outbox_lag_seconds')).toBe(0);
    expect(logsWith(logs, 'warn', WARNED)).toEqual([expect.objectContaining({ part: 'lag' })]);
    await poller.refresh();
    m = await scrape(metrics);
    expect(m.value('outbox_lag_seconds')).toBe(12);
    expect(logsWith(logs, 'info', RECOVERED)).toEqual([expect.objectContaining({ part: 'lag', failures: 1 })]);
  });
});

describe('the lag probe', () => {
  test('settles the due gauge between counts: 0 when nothing is due, at least 1 when something is', async () => {
    const counts = scripted<OutboxStats>([
      { ...STATS, due: 0 },
      { ...STATS, due: 5 },
    ]);
    const lag = scripted<number | null>([12.5, null, null]);
    // One instant for the whole test: the probe and the count of a refresh start together,
    // whatever millisecond the real clock would show between them.
    const { poller, metrics } = setup(counts.read, { readLag: lag.read, clock: () => 1_000_000 });
    await poller.refresh(); // counts: due 0; probe: something is due
    expect(tableGauges(await scrape(metrics))).toMatchObject({ lag: 12.5, due: 1 });
    await poller.refresh(); // counts: due 5 (already stale); probe: nothing is due
    expect(tableGauges(await scrape(metrics))).toMatchObject({ lag: 0, due: 0, delayed: 2 });
  });

  test('without a lag reader, the lag comes with the counts', async () => {
    const { poller, metrics } = setup(() => Promise.resolve(STATS), { clock: () => 2_000_000 });
    await poller.refresh();
    const m = await scrape(metrics);
    expect(m.value('outbox_lag_seconds')).toBe(7);
    expect(m.value('outbox_gauge_last_refresh_timestamp_seconds', { part: 'lag' })).toBe(2_000);
  });
});

describe('the schedule', () => {
  beforeEach(() => jest.useFakeTimers({ now: 1_000_000 }));
  afterEach(() => jest.useRealTimers());

  test('probes the lag every second and counts every interval, less often when a count is slow', async () => {
    let countMs = 0;
    let counts = 0;
    let probes = 0;
    const { poller } = setup(
      async () => {
        counts += 1;
        // The count takes countMs of the clock.
        jest.setSystemTime(Date.now() + countMs);
        return STATS;
      },
      {
        readLag: () => {
          probes += 1;
          return Promise.resolve(1);
        },
        intervalMs: 5_000,
      },
    );
    poller.start();
    await jest.advanceTimersByTimeAsync(60 * LAG_REFRESH_MS);
    // Quick counts: at 0, 5 s, … 60 s.
    expect({ probes, counts }).toEqual({ probes: 61, counts: 13 });

    countMs = 1_000;
    probes = 0;
    counts = 0;
    await jest.advanceTimersByTimeAsync(120 * LAG_REFRESH_MS);
    // Each count of 1 s waits 1 s × (1 / share − 1) after it ended.
    const gapMs = countMs + countMs * (1 / COUNTS_TIME_SHARE - 1);
    expect(probes).toBe(120);
    expect(counts).toBeGreaterThanOrEqual(Math.floor((120 * LAG_REFRESH_MS) / gapMs));
    expect(counts).toBeLessThanOrEqual(Math.ceil((120 * LAG_REFRESH_MS) / gapMs));
    await poller.stop();
  });

  test('polls every interval when it is shorter than a second', async () => {
    let probes = 0;
    const { poller } = setup(() => Promise.resolve(STATS), {
      readLag: () => {
        probes += 1;
        return Promise.resolve(null);
      },
      intervalMs: 200,
    });
    poller.start();
    await jest.advanceTimersByTimeAsync(1_000);
    await poller.stop();
    expect(probes).toBe(6);
  });
});
