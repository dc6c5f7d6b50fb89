import type { OutboxMessage } from '../../src/domain/message';
import { maxProbesWithin, SETTLE_MS } from '../../src/relay/probe-schedule';
import { waitFor } from '../kit/wait';
import { fakeMessage } from './fake-message';
import { LOOP_SETTINGS, loopUnderTest } from './loop-under-test';

/**
 * The loop with a destination that refuses messages (the fake broker nacks them, as a
 * queue full under reject-publish does), for longer than every attempt would last.
 */
describe('the relay loop with a held destination', () => {
  let stop: (() => Promise<void>) | undefined;
  afterEach(async () => {
    await stop?.();
    stop = undefined;
  });

  test('refusals cost nothing: nothing dead, the other destination flows, one probe at a time, then all in per-key order', async () => {
    const parts = loopUnderTest({ maxAttempts: 3 });
    const { queue, broker, holdEvents } = parts;
    let full = true;
    let refused = 0;
    const delivered: OutboxMessage[] = [];
    broker.decide = (message) => {
      if (message.routingKey === 'a' && full) {
        refused += 1;
        return { kind: 'refused' };
      }
      delivered.push(message);
      return { kind: 'confirmed' };
    };
    const toA = Array.from({ length: 40 }, (_, i) => fakeMessage({ routingKey: 'a', partitionKey: `k${i % 4}` }));
    queue.add(...toA);
    parts.loop.start();
    stop = () => parts.loop.stop();
    const heldAt = Date.now();
    await waitFor('the destination held', () => parts.holds.isHeld({ exchange: 'orders', routingKey: 'a' }));
    // Another destination of the same exchange, written while the first is held, flows.
    const toB = Array.from({ length: 20 }, (_, i) => fakeMessage({ routingKey: 'b', partitionKey: `k${i % 4}x` }));
    queue.add(...toB);
    await waitFor('the other destination published', () => toB.every((m) => queue.published().includes(m.id)), 5_000);
    // Held for many times what three attempts with this backoff (1 ms) would last.
    await new Promise((resolve) => setTimeout(resolve, 1_500));
    const heldMs = Date.now() - heldAt;
    expect(queue.rows.filter((r) => r.dead)).toEqual([]);
    expect(queue.rows.every((r) => r.attempts === 0)).toBe(true);
    expect(queue.published().filter((id) => toA.some((m) => m.id === id))).toEqual([]);
    // What was in flight when the first refusal came (two batches), then one probe at a time.
    const bound = LOOP_SETTINGS.concurrency * LOOP_SETTINGS.batchSize + maxProbesWithin(heldMs) + 1;
    expect(refused).toBeLessThanOrEqual(bound);

    full = false;
    await waitFor('every message of the held destination published', () => queue.pending().length === 0, 10_000);
    expect(queue.rows.filter((r) => r.dead || r.attempts > 0)).toEqual([]);
    for (let k = 0; k < 4; k += 1) {
      const ids = delivered.filter((m) => m.partitionKey === `k${k}`).map((m) => Number(m.id));
      expect(ids).toEqual([...ids].sort((x, y) => x - y));
      expect(new Set(ids).size).toBe(10);
    }
    await waitFor('the hold ended', () => holdEvents.length === 2, SETTLE_MS + 3_000);
    expect(holdEvents).toEqual(['held orders/a', 'flowing orders/a']);
    // A refused or waiting message counts as progress: never a stall.
    expect(parts.health.problems.get('stalled')).toBeUndefined();
  }, 20_000);

  test('while held, its messages leave the due head: claims find the other destination, not the same waiting rows again', async () => {
    const parts = loopUnderTest({ batchSize: 5, concurrency: 1 });
    const { queue, broker } = parts;
    broker.decide = (message) => (message.routingKey === 'a' ? { kind: 'refused' } : { kind: 'confirmed' });
    queue.add(...Array.from({ length: 50 }, () => fakeMessage({ routingKey: 'a' })));
    parts.loop.start();
    stop = () => parts.loop.stop();
    await waitFor('every message of the held destination parked', () => queue.rows.every((r) => r.note !== undefined), 5_000);
    const claimsWhenParked = queue.claims;
    queue.add(...Array.from({ length: 10 }, () => fakeMessage({ routingKey: 'b' })));
    await waitFor('the other destination published', () => queue.published().length === 10, 5_000);
    // 10 messages in batches of 5: a few claims, not one per waiting row.
    expect(queue.claims - claimsWhenParked).toBeLessThan(10);
    // Parked until the next probe (one) or the horizon (the rest): not due meanwhile.
    const due = queue.pending().filter((r) => r.dueAt <= Date.now());
    expect(due.length).toBeLessThanOrEqual(1);
  });
});
