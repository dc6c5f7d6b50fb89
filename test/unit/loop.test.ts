import { waitFor } from '../kit/wait';
import { fakeMessage } from './fake-message';
import { loopUnderTest } from './loop-under-test';

const setup = loopUnderTest;

describe('the relay loop, with fakes of the queue, the broker and the wake source', () => {
  let stops: (() => Promise<void>)[] = [];
  afterEach(async () => {
    await Promise.all(stops.map((stop) => stop()));
    stops = [];
  });
  const started = (parts: ReturnType<typeof setup>): ReturnType<typeof setup> => {
    parts.loop.start();
    stops.push(() => parts.loop.stop());
    return parts;
  };

  test('drains a backlog of several batches, each message once, keys in order', async () => {
    const { queue, broker, health } = started(
      (() => {
        const parts = setup();
        for (let i = 0; i < 45; i += 1) parts.queue.add(fakeMessage({ partitionKey: `k${i % 3}` }));
        return parts;
      })(),
    );
    await waitFor('queue.pending().length === 0', () => queue.pending().length === 0, 5_000);
    expect(queue.published()).toHaveLength(45);
    expect(new Set(broker.sent.map((m) => m.id)).size).toBe(45);
    for (const key of ['k0', 'k1', 'k2']) {
      const ids = broker.sent.filter((m) => m.partitionKey === key).map((m) => Number(m.id));
      expect(ids).toEqual([...ids].sort((a, b) => a - b));
    }
    expect(health.databaseUp).toBe(true);
    expect(health.running).toBe(true);
  });

  test('a later message of a key that became due first never hogs the claim: its earlier message is claimed with it', async () => {
    const parts = setup({ batchSize: 1, concurrency: 1 });
    const earlier = fakeMessage({ partitionKey: 'k' });
    const later = fakeMessage({ partitionKey: 'k' });
    parts.queue.add(later, earlier); // the claim (which reads in due order) meets the later one first
    started(parts);
    await waitFor('both published', () => parts.queue.published().length === 2, 5_000);
    expect(parts.broker.sent.map((m) => m.id)).toEqual([earlier.id, later.id]);
  });

  test('an idle loop picks up a message soon after it appears (peek), without a notification', async () => {
    const { queue } = started(setup());
    await waitFor('queue.claims > 0', () => queue.claims > 0);
    queue.add(fakeMessage());
    await waitFor('queue.published().length === 1', () => queue.published().length === 1, 2_000);
  });

  test('while the broker blocks publishers nothing is claimed; after it unblocks the backlog goes out', async () => {
    const parts = setup();
    parts.broker.blocked = true;
    parts.queue.add(fakeMessage(), fakeMessage());
    started(parts);
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(parts.queue.claims).toBe(0);
    expect(parts.health.beats).toBeGreaterThan(0);
    parts.broker.blocked = false;
    await waitFor('parts.queue.published().length === 2', () => parts.queue.published().length === 2);
  });

  test('a confirm timeout while the broker blocked burns no attempt and counts as no failure', async () => {
    const parts = setup();
    parts.broker.decide = () => {
      parts.broker.blockedSince = Date.now();
      return { kind: 'failed', reason: 'timeout', error: 'no broker confirm within 1000 ms' };
    };
    parts.queue.add(fakeMessage());
    started(parts);
    await waitFor('parts.reports.some((r) => r.claimed > 0)', () => parts.reports.some((r) => r.claimed > 0));
    expect(parts.reports.find((r) => r.claimed > 0)?.verdicts).toEqual([{ kind: 'kept_back', cause: 'broker_blocked' }]);
    expect(parts.queue.rows[0]?.attempts).toBe(0);
  });

  test('a disconnected broker: the loop waits without claiming, and resumes when it is back', async () => {
    const parts = setup();
    parts.broker.setConnected(false);
    parts.queue.add(fakeMessage());
    started(parts);
    await new Promise((resolve) => setTimeout(resolve, 80));
    expect(parts.queue.claims).toBe(0);
    parts.broker.setConnected(true);
    await waitFor('parts.queue.published().length === 1', () => parts.queue.published().length === 1);
  });

  test('the database down: not ready, backs off, burns nothing; back up: ready and draining', async () => {
    const parts = setup();
    parts.queue.failWith = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    parts.queue.add(fakeMessage());
    started(parts);
    await waitFor('parts.queue.claims >= 3', () => parts.queue.claims >= 3);
    expect(parts.health.databaseUp).toBe(false);
    expect(parts.broker.sent).toHaveLength(0);
    parts.queue.failWith = undefined;
    await waitFor('parts.queue.published().length === 1', () => parts.queue.published().length === 1);
    expect(parts.health.databaseUp).toBe(true);
    expect(parts.queue.rows[0]?.attempts).toBe(0);
  });

  test('failures are recorded with their attempt; the message goes dead after the last one', async () => {
    const parts = setup({ maxAttempts: 2 });
    parts.broker.decide = () => ({ kind: 'failed', reason: 'timeout', error: 'no broker confirm within 1000 ms' });
    parts.queue.add(fakeMessage());
    started(parts);
    await waitFor('parts.queue.rows[0]?.dead === true', () => parts.queue.rows[0]?.dead === true);
    expect(parts.queue.rows[0]?.attempts).toBe(2);
    const failed = parts.reports.flatMap((r) => r.verdicts).filter((v) => v.kind === 'failed');
    expect(failed.map((v) => v.kind === 'failed' && v.dead)).toEqual([false, true]);
  });

  test('stop() with nothing in flight resolves at once, stops claiming and is idempotent', async () => {
    const parts = setup();
    parts.loop.start();
    await waitFor('parts.queue.claims > 0', () => parts.queue.claims > 0);
    const first = parts.loop.stop();
    expect(parts.loop.stop()).toBe(first);
    await first;
    const claims = parts.queue.claims;
    parts.queue.add(fakeMessage());
    await new Promise((resolve) => setTimeout(resolve, 60));
    expect(parts.queue.claims).toBe(claims);
    expect(parts.health.running).toBe(false);
  });

  test('stop() during a batch whose confirms never come: abandoned after the shutdown timeout, nothing marked', async () => {
    const parts = setup({ shutdownTimeoutMs: 100, concurrency: 1 });
    parts.broker.confirmDelayMs = 60_000;
    parts.queue.add(fakeMessage(), fakeMessage());
    parts.loop.start();
    await waitFor('parts.broker.sent.length === 2', () => parts.broker.sent.length === 2);
    const before = Date.now();
    await parts.loop.stop();
    expect(Date.now() - before).toBeLessThan(2_000);
    expect(parts.queue.published()).toHaveLength(0);
    expect(parts.queue.rows.every((r) => r.attempts === 0 && !r.locked)).toBe(true);
  });
});
