import fc from 'fast-check';
import { UnsettledTags } from '../../src/consumer/acks';

/**
 * Acks as one `basic.ack multiple` where they can be, against a model of the broker: a
 * multiple ack settles every outstanding tag up to it, a single one its tag, and acking
 * a tag that is not outstanding closes the channel. Whatever the order in which
 * deliveries are settled (batches finishing out of order, single acks and rejects, owed
 * acks paid at any moment), the broker ends up with exactly the intended tags acked,
 * each once, and never one that was meant to stay (a delivery still in progress).
 */

const steps = fc.array(
  fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('batch' as const), picks: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }) }), weight: 4 },
    { arbitrary: fc.record({ kind: fc.constant('single' as const), pick: fc.nat() }), weight: 1 },
    { arbitrary: fc.record({ kind: fc.constant('pay' as const) }), weight: 1 },
  ),
  { maxLength: 60 },
);

test('acks through UnsettledTags settle exactly what was meant, each once, never a tag still in progress', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 80 }), steps, (delivered, plan) => {
      const window = new UnsettledTags();
      const outstanding = new Set<number>(); // the broker's view
      const meant = new Set<number>();
      const errors: string[] = [];
      const all = Array.from({ length: delivered }, (_, i) => i + 1);
      for (const tag of all) {
        window.add(tag);
        outstanding.add(tag);
      }
      const ackOne = (tag: number): void => {
        if (!outstanding.delete(tag)) errors.push(`ack of tag ${tag}, not outstanding`);
      };
      const ackUpTo = (upTo: number): void => {
        for (const tag of [...outstanding]) {
          if (tag > upTo) continue;
          if (!meant.has(tag)) errors.push(`multiple ack up to ${upTo} took tag ${tag}, still in progress`);
          outstanding.delete(tag);
        }
      };
      for (const step of plan) {
        const open = all.filter((tag) => !meant.has(tag));
        if (step.kind === 'pay') {
          for (const tag of window.takeOwed()) ackOne(tag);
          continue;
        }
        if (open.length === 0) continue;
        if (step.kind === 'single') {
          const tag = open[step.pick % open.length] as number;
          meant.add(tag);
          ackOne(tag);
          window.settle(tag);
          continue;
        }
        const batch = [...new Set(step.picks.map((p) => open[p % open.length] as number))];
        for (const tag of batch) meant.add(tag);
        const upTo = window.ackAll(batch);
        if (upTo !== undefined) ackUpTo(upTo);
      }
      for (const tag of window.takeOwed()) ackOne(tag);
      expect(errors).toEqual([]);
      expect(all.filter((tag) => !outstanding.has(tag))).toEqual([...meant].sort((a, b) => a - b));
      expect(window.owing).toBe(false);
    }),
    { numRuns: 500 },
  );
});

test('batches finishing out of order: the later one owes its acks, then one frame acks both', () => {
  const window = new UnsettledTags();
  for (let tag = 1; tag <= 10; tag += 1) window.add(tag);
  expect(window.ackAll([1, 2, 3, 4])).toBe(4);
  expect(window.ackAll([7, 8])).toBeUndefined(); // 5 and 6 are in a batch still running
  expect(window.owing).toBe(true);
  expect(window.ackAll([5, 6])).toBe(8);
  expect(window.owing).toBe(false);
  window.settle(9); // rejected, say
  expect(window.ackAll([10])).toBe(10);
});

test('behind a delivery held for long, owed acks are paid one by one, and done tags are compacted away', () => {
  const window = new UnsettledTags();
  window.add(1); // held (a retry in place)
  let paid = 0;
  let multiples = 0;
  for (let tag = 2; tag <= 50_000; tag += 1) {
    window.add(tag);
    if (window.ackAll([tag]) !== undefined) multiples += 1;
    if (tag % 100 === 0) paid += window.takeOwed().length;
  }
  expect(multiples).toBe(0);
  const internals = window as unknown as { tags: number[]; done: Set<number> };
  expect(internals.tags.length + internals.done.size).toBeLessThan(3_000);
  expect(paid + window.takeOwed().length).toBe(49_999);
  expect(window.ackAll([1])).toBe(1);
});
