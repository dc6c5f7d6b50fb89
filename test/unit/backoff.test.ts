import fc from 'fast-check';
import { backoffMs, fullJitterBackoff, reconnectDelayMs, type Jitter } from '../../src/util/backoff';

/** A random source that always returns `value`. */
const fixed = (value: number) => (): number => value;

describe('fullJitterBackoff', () => {
  const BASE = 100;
  const MAX = 10_000;

  test('random 0 gives no delay, whatever the attempt', () => {
    const policy = fullJitterBackoff(BASE, MAX, fixed(0));
    for (const attempts of [1, 2, 5, 10, 60, 1_000]) expect(policy.delayMs(attempts)).toBe(0);
  });

  test('random just below 1 gives just under the ceiling, never the ceiling itself', () => {
    const policy = fullJitterBackoff(BASE, MAX, fixed(0.999));
    for (const [attempts, ceiling] of [
      [1, 100],
      [2, 200],
      [3, 400],
      [7, 6_400],
      [8, 10_000],
      [30, 10_000],
    ] as const) {
      const delay = policy.delayMs(attempts);
      expect(delay).toBeLessThan(ceiling);
      expect(delay).toBeGreaterThanOrEqual(Math.floor(ceiling * 0.999) - 1);
    }
  });

  test('the ceiling doubles per failed attempt, starting at the base', () => {
    const policy = fullJitterBackoff(BASE, MAX, fixed(0.5));
    expect([1, 2, 3, 4, 5, 6, 7].map((n) => policy.delayMs(n))).toEqual([50, 100, 200, 400, 800, 1_600, 3_200]);
  });

  test('the ceiling is capped at the maximum, even for huge attempt counts', () => {
    const policy = fullJitterBackoff(BASE, MAX, fixed(0.5));
    for (const attempts of [8, 9, 20, 53, 54, 100, 1_000_000, Number.MAX_SAFE_INTEGER]) {
      const delay = policy.delayMs(attempts);
      expect(Number.isFinite(delay)).toBe(true);
      expect(delay).toBe(5_000);
    }
  });

  test('attempt counts below 1 behave like the first attempt', () => {
    const policy = fullJitterBackoff(BASE, MAX, fixed(0.5));
    expect(policy.delayMs(0)).toBe(50);
    expect(policy.delayMs(-3)).toBe(50);
  });

  test('a base equal to the maximum never grows', () => {
    const policy = fullJitterBackoff(2_000, 2_000, fixed(0.5));
    expect([1, 2, 10].map((n) => policy.delayMs(n))).toEqual([1_000, 1_000, 1_000]);
  });

  test('with Math.random every delay is a whole number in [0, ceiling) and the delays are spread', () => {
    const policy = fullJitterBackoff(BASE, MAX);
    for (const [attempts, ceiling] of [
      [1, 100],
      [4, 800],
      [12, 10_000],
    ] as const) {
      const delays = Array.from({ length: 2_000 }, () => policy.delayMs(attempts));
      for (const d of delays) {
        expect(Number.isInteger(d)).toBe(true);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(ceiling);
      }
      // Full jitter: both the lower and the upper quarter of the range are used.
      expect(delays.some((d) => d < ceiling / 4)).toBe(true);
      expect(delays.some((d) => d >= (ceiling * 3) / 4)).toBe(true);
    }
  });
});

describe('reconnectDelayMs', () => {
  test('stays within [75 %, 100 %] of a ceiling that starts at the base', () => {
    expect(reconnectDelayMs(1, 250, 15_000, fixed(0))).toBe(188); // 187.5 rounded
    expect(reconnectDelayMs(1, 250, 15_000, fixed(0.999999))).toBe(250);
  });

  test('the ceiling doubles per consecutive failure and is capped', () => {
    const upper = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => reconnectDelayMs(n, 250, 15_000, fixed(0.999999)));
    expect(upper).toEqual([250, 500, 1_000, 2_000, 4_000, 8_000, 15_000, 15_000]);
    for (const failures of [30, 31, 100, 1_000_000]) {
      expect(reconnectDelayMs(failures, 250, 15_000, fixed(0.999999))).toBe(15_000);
      expect(reconnectDelayMs(failures, 250, 15_000, fixed(0))).toBe(11_250);
    }
  });

  test('defaults: base 250 ms, cap 15 s, never zero', () => {
    for (let failures = 0; failures <= 40; failures += 1) {
      for (let i = 0; i < 50; i += 1) {
        const delay = reconnectDelayMs(failures);
        const ceiling = Math.min(15_000, 250 * 2 ** Math.max(failures - 1, 0));
        expect(delay).toBeGreaterThanOrEqual(Math.round(ceiling * 0.75));
        expect(delay).toBeLessThanOrEqual(ceiling);
        expect(delay).toBeGreaterThan(0);
      }
    }
  });
});

describe('backoffMs, the one formula', () => {
  const shape = fc.record({
    firstMs: fc.integer({ min: 0, max: 86_400_000 }),
    maxMs: fc.integer({ min: 1, max: 604_800_000 }),
    jitter: fc.constantFrom<Jitter>('none', 'full', 'upper-quarter'),
  });
  const failures = fc.integer({ min: -5, max: 1_000_000 });
  const random = fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true });

  test('every wait is a whole number from 0 to min(maxMs, firstMs · 2^(n-1))', () => {
    fc.assert(
      fc.property(shape, failures, random, (s, n, r) => {
        const delay = backoffMs(n, s, () => r);
        const ceiling = Math.min(s.maxMs, s.firstMs * 2 ** Math.min(Math.max(n - 1, 0), 30));
        expect(Number.isInteger(delay)).toBe(true);
        expect(delay).toBeGreaterThanOrEqual(s.jitter === 'upper-quarter' ? Math.round(ceiling * 0.75) : 0);
        expect(delay).toBeLessThanOrEqual(ceiling);
        if (s.jitter === 'full' && ceiling > 0) expect(delay).toBeLessThan(ceiling);
        if (s.jitter === 'none') expect(delay).toBe(ceiling);
      }),
    );
  });

  test('for the same random draw, more failures never wait less', () => {
    fc.assert(
      fc.property(shape, failures, failures, random, (s, a, b, r) => {
        const [fewer, more] = a <= b ? [a, b] : [b, a];
        expect(backoffMs(fewer, s, () => r)).toBeLessThanOrEqual(backoffMs(more, s, () => r));
      }),
    );
  });

  test('without jitter: the first wait, doubling, then the cap', () => {
    const s = { firstMs: 10, maxMs: 1_000, jitter: 'none' } as const;
    expect([1, 2, 3, 4, 5, 6, 7, 8, 100].map((n) => backoffMs(n, s))).toEqual([10, 20, 40, 80, 160, 320, 640, 1_000, 1_000]);
    expect(backoffMs(1, { firstMs: 0.5, maxMs: 10, jitter: 'none' })).toBe(1); // rounded
    expect(backoffMs(5, { firstMs: 0, maxMs: 10, jitter: 'none' })).toBe(0);
  });

  test('the relay settings bounds never reach the doubling limit: 2^30 · 1 ms exceeds the largest cap', () => {
    // OUTBOX_BACKOFF_BASE_MS ≥ 1 and OUTBOX_BACKOFF_MAX_MS ≤ 604 800 000: the cap bites first.
    expect(2 ** 30).toBeGreaterThan(604_800_000);
    expect(fullJitterBackoff(1, 604_800_000, fixed(0.5)).delayMs(31)).toBe(302_400_000);
  });
});
