import fc from 'fast-check';
import { StallWatch } from '../../src/relay/stall';

// A stall is reported only about a message the relay could have published: an idle relay
// looks for due messages every OUTBOX_POLL_INTERVAL_MS, so a message is overdue only a
// poll interval after it became due, and stalled OUTBOX_STALL_TIMEOUT_MS after that.

class FakeClock {
  ms = 1_000_000;
  now(): number {
    return this.ms;
  }
}

const HEAD = { id: '7', messageId: '00000000-0000-4000-8000-000000000007' };

/** Runs the stall check every second (as the loop does) until `untilMs` after the head appeared; the first instant it reports a stall. */
function firstStall(settings: { pollIntervalMs: number; stallTimeoutMs: number }, untilMs: number): number | undefined {
  const clock = new FakeClock();
  const watch = new StallWatch(settings.stallTimeoutMs, clock, settings.pollIntervalMs);
  const start = clock.ms;
  // The relay did something long ago, then the head became due.
  for (let t = 0; t <= untilMs; t += 1_000) {
    clock.ms = start + t;
    watch.observe(HEAD, true);
    if (watch.stalledReason() !== undefined) return t;
  }
  return undefined;
}

test('the issue: polling hourly, a message due for 61 s (nothing has looked at it yet) is no stall', () => {
  expect(firstStall({ pollIntervalMs: 3_600_000, stallTimeoutMs: 60_000 }, 61_000)).toBeUndefined();
  expect(firstStall({ pollIntervalMs: 3_600_000, stallTimeoutMs: 60_000 }, 3_599_000)).toBeUndefined();
});

test('a stall is reported once the relay could have published and the timeout passed, never before (property)', () => {
  fc.assert(
    fc.property(
      fc.record({
        pollIntervalMs: fc.oneof(fc.integer({ min: 10, max: 3_600_000 }), fc.constantFrom(10, 100, 3_600_000)),
        stallTimeoutMs: fc.oneof(fc.integer({ min: 1_000, max: 600_000 }), fc.constantFrom(1_000, 60_000)),
      }),
      (settings) => {
        const earliest = settings.pollIntervalMs + settings.stallTimeoutMs;
        const at = firstStall(settings, earliest + 2_000);
        expect(at).toBeDefined();
        expect(at!).toBeGreaterThanOrEqual(earliest);
        expect(at!).toBeLessThan(earliest + 1_000 + 1);
      },
    ),
    { numRuns: 200 },
  );
});

test('progress, a new head or a dependency down restarts the count; the reason names the message and the real wait', () => {
  const clock = new FakeClock();
  const watch = new StallWatch(5_000, clock, 100);
  watch.observe(HEAD, true);
  clock.ms += 5_200;
  watch.sawDue('due messages wait for an earlier message of their key');
  expect(watch.stalledReason()).toMatch(
    /^nothing published or failed for 5 s while due messages wait: due messages wait for an earlier message of their key \(stuck on message 0{8}-0{4}-4000-8000-0{11}7\)$/,
  );
  watch.progressed();
  expect(watch.stalledReason()).toBeUndefined();
  watch.observe(undefined, false);
  clock.ms += 60_000;
  watch.observe(HEAD, true);
  expect(watch.stalledReason()).toBeUndefined();
});
