import { chunkSize } from '../../src/commands/replay-session';
import { TokenBucket } from '../../src/util/token-bucket';

describe('TokenBucket', () => {
  test('starts empty: n tokens at rate r wait n / r seconds, and the debt carries over', () => {
    let now = 0;
    const bucket = new TokenBucket(100, 10, () => now);
    expect(bucket.take(10)).toBe(100);
    now = 100;
    expect(bucket.take(10)).toBe(100);
    now = 150;
    expect(bucket.take(10)).toBe(150);
  });

  test('an idle spell fills it up to its capacity, never beyond', () => {
    let now = 0;
    const bucket = new TokenBucket(100, 10, () => now);
    now = 60_000;
    expect(bucket.take(10)).toBe(0);
    expect(bucket.take(1)).toBe(10);
  });

  test('at most rate × T taken in T seconds from the start', () => {
    let now = 0;
    const bucket = new TokenBucket(50, 10, () => now);
    let taken = 0;
    while (now < 10_000) {
      now += bucket.take(10);
      taken += 10;
    }
    expect(taken).toBeLessThanOrEqual(50 * 10 + 10);
  });

  test('a rate or capacity that is not positive is refused', () => {
    expect(() => new TokenBucket(0, 1)).toThrow(RangeError);
    expect(() => new TokenBucket(1, 0)).toThrow(RangeError);
  });
});

test('replay chunks: a fifth of a second at the rate, from 1 to 500', () => {
  expect([chunkSize(1), chunkSize(50), chunkSize(500), chunkSize(100_000), chunkSize(null)]).toEqual([1, 10, 100, 500, 500]);
});
