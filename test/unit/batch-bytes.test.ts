import fc from 'fast-check';
import type { OutboxMessage } from '../../src/domain/message';
import { waitFor } from '../kit/wait';
import { fakeMessage } from './fake-message';
import { loopUnderTest } from './loop-under-test';

/**
 * OUTBOX_BATCH_BYTES: whatever the sizes, a batch holds at most the budget of message
 * bytes — or a message larger than it alone — plus, at most once, one earlier message of
 * a key it waits for (without which that key could wait for ever behind a large one).
 */
const bytes = (messages: readonly OutboxMessage[]): number => messages.reduce((sum, m) => sum + (m.claimBytes ?? 0), 0);

/** Whether `batch` keeps the budget: within it, or over it by the first message alone, or by one message taken beyond it. */
function keepsBudget(batch: readonly OutboxMessage[], budget: number): boolean {
  const bound = Math.max(budget, batch[0]?.claimBytes ?? 0);
  const total = bytes(batch);
  return total <= bound || batch.some((m, i) => i > 0 && total - (m.claimBytes ?? 0) <= bound);
}

test('generated sizes, keys and due orders: every batch keeps the budget, and every message is published in its key order', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(
        fc.record({
          size: fc.oneof(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 300, max: 5_000 })),
          key: fc.constantFrom(null, 'a', 'b', 'c', 'd', 'e'),
        }),
        {
          minLength: 1,
          maxLength: 40,
        },
      ),
      fc.integer({ min: 100, max: 3_000 }),
      fc.integer({ min: 0, max: 2 ** 31 }),
      async (specs, budget, seed) => {
        const parts = loopUnderTest({ batchBytes: budget, batchSize: 10 });
        const messages = specs.map((s) => fakeMessage({ partitionKey: s.key, claimBytes: s.size }));
        // The claim reads in due order: a later message of a key may come before an earlier one.
        const order = messages.map((m, i) => ({ m, rank: (i * 7919 + seed) % 97 })).sort((x, y) => x.rank - y.rank);
        parts.queue.add(...order.map((o) => o.m));
        parts.loop.start();
        try {
          await waitFor('every message published', () => parts.queue.published().length === messages.length, 5_000);
        } finally {
          await parts.loop.stop();
        }
        for (const batch of parts.queue.batches)
          expect({ sizes: batch.map((m) => m.claimBytes), budget, keeps: keepsBudget(batch, budget) }).toMatchObject({ keeps: true });
        for (const key of ['a', 'b', 'c', 'd', 'e']) {
          const ids = parts.broker.sent.filter((m) => m.partitionKey === key).map((m) => Number(m.id));
          expect(ids).toEqual([...ids].sort((x, y) => x - y));
        }
      },
    ),
    { numRuns: 60 },
  );
});

test('messages larger than the budget go one per batch; small ones fill a batch up to it', async () => {
  const parts = loopUnderTest({ batchBytes: 1_000, batchSize: 100, concurrency: 1 });
  parts.queue.add(...[2_000, 3_000].map((claimBytes) => fakeMessage({ claimBytes })));
  parts.queue.add(...Array.from({ length: 10 }, () => fakeMessage({ claimBytes: 300 })));
  parts.loop.start();
  try {
    await waitFor('every message published', () => parts.queue.published().length === 12, 5_000);
  } finally {
    await parts.loop.stop();
  }
  expect(parts.queue.batches.map((b) => b.map((m) => m.claimBytes))).toEqual([
    [2_000],
    [3_000],
    [300, 300, 300],
    [300, 300, 300],
    [300, 300, 300],
    [300],
  ]);
});
