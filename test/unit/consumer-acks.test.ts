import fc from 'fast-check';
import { UnsettledTags } from '../../src/consumer/acks';

/**
 * The acks of a batch as one `basic.ack multiple` where they can be, against a model of
 * the broker: a multiple ack settles every outstanding tag up to it, a single one its
 * tag, and acking a tag that is not outstanding closes the channel. Whatever the order in
 * which deliveries are settled (batches finishing out of order, single acks, nacks), the
 * broker ends up with exactly the intended tags acked, each once, and nothing else.
 */

const steps = fc.array(
  fc.oneof(
    { arbitrary: fc.record({ kind: fc.constant('batch' as const), picks: fc.array(fc.nat(), { minLength: 1, maxLength: 8 }) }), weight: 3 },
    { arbitrary: fc.record({ kind: fc.constant('single' as const), pick: fc.nat() }), weight: 1 },
  ),
  { maxLength: 60 },
);

test('acks through UnsettledTags settle exactly what was meant, each once, never an unknown tag', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 80 }), steps, (delivered, plan) => {
      const window = new UnsettledTags();
      const outstanding = new Set<number>(); // the broker's view
      const meant = new Set<number>();
      const errors: string[] = [];
      for (let tag = 1; tag <= delivered; tag += 1) {
        window.add(tag);
        outstanding.add(tag);
      }
      const ackOne = (tag: number): void => {
        if (!outstanding.delete(tag)) errors.push(`ack of tag ${tag}, not outstanding`);
      };
      for (const step of plan) {
        const open = [...Array(delivered).keys()].map((i) => i + 1).filter((tag) => !meant.has(tag));
        if (open.length === 0) break;
        if (step.kind === 'single') {
          const tag = open[step.pick % open.length] as number;
          meant.add(tag);
          ackOne(tag);
          window.settle(tag);
          continue;
        }
        const batch = [...new Set(step.picks.map((p) => open[p % open.length] as number))];
        for (const tag of batch) meant.add(tag);
        const { upTo, rest } = window.settleAll(batch);
        if (upTo !== undefined) for (const tag of [...outstanding]) if (tag <= upTo) ackOne(tag);
        for (const tag of rest) ackOne(tag);
      }
      expect(errors).toEqual([]);
      const acked = [...Array(delivered).keys()].map((i) => i + 1).filter((tag) => !outstanding.has(tag));
      expect(acked).toEqual([...meant].sort((a, b) => a - b));
    }),
    { numRuns: 500 },
  );
});

test('a batch taking the oldest deliveries in order is one multiple ack', () => {
  const window = new UnsettledTags();
  for (let tag = 1; tag <= 10; tag += 1) window.add(tag);
  expect(window.settleAll([1, 2, 3, 4])).toEqual({ upTo: 4, rest: [] });
  expect(window.settleAll([6, 7])).toEqual({ upTo: undefined, rest: [6, 7] }); // 5 is still out
  window.settle(5);
  expect(window.settleAll([8, 9, 10])).toEqual({ upTo: 10, rest: [] });
});

test('behind a delivery held for a long time, settled tags are compacted away', () => {
  const window = new UnsettledTags();
  window.add(1); // held (a retry in place)
  for (let tag = 2; tag <= 50_000; tag += 1) {
    window.add(tag);
    window.settleAll([tag]);
  }
  const internals = window as unknown as { tags: number[]; settled: Set<number> };
  expect(internals.tags.length + internals.settled.size).toBeLessThan(3_000);
  expect(window.settleAll([1])).toEqual({ upTo: 1, rest: [] });
});
