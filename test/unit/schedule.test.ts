import { HELD_RETRY_MS, nextStep } from '../../src/relay/schedule';

const SETTINGS = { batchSize: 100, pollIntervalMs: 500 };
const backoff = (n: number): number => n * 1_000;

describe('the loop schedule', () => {
  test('a full batch loops at once and wakes the other workers', () => {
    expect(nextStep({ kind: 'batch', claimed: 100, held: 0, noProgress: false }, 3, SETTINGS, backoff)).toEqual({
      delayMs: 0,
      idle: false,
      wakeOthers: true,
      consecutiveErrors: 0,
    });
  });

  test('a partial or empty batch waits for new work, the poll interval at most', () => {
    for (const claimed of [0, 1, 99]) {
      expect(nextStep({ kind: 'batch', claimed, held: 0, noProgress: false }, 0, SETTINGS, backoff)).toEqual({
        delayMs: 500,
        idle: true,
        wakeOthers: false,
        consecutiveErrors: 0,
      });
    }
  });

  test('rows held behind a key in flight elsewhere are claimed again after a few milliseconds', () => {
    expect(nextStep({ kind: 'batch', claimed: 100, held: 3, noProgress: false }, 0, SETTINGS, backoff)).toMatchObject({
      delayMs: HELD_RETRY_MS,
      idle: false,
    });
    expect(
      nextStep({ kind: 'batch', claimed: 5, held: 1, noProgress: false }, 0, { batchSize: 100, pollIntervalMs: 4 }, backoff),
    ).toMatchObject({ delayMs: 4 });
  });

  test('errors back off more with each consecutive one and reset after a good batch', () => {
    const first = nextStep({ kind: 'error' }, 0, SETTINGS, backoff);
    expect(first).toMatchObject({ delayMs: 1_000, consecutiveErrors: 1, idle: false });
    const second = nextStep({ kind: 'error' }, first.consecutiveErrors, SETTINGS, backoff);
    expect(second).toMatchObject({ delayMs: 2_000, consecutiveErrors: 2 });
    expect(
      nextStep({ kind: 'batch', claimed: 0, held: 0, noProgress: false }, second.consecutiveErrors, SETTINGS, backoff).consecutiveErrors,
    ).toBe(0);
  });

  test('a batch whose messages all went without a verdict backs off like an error', () => {
    expect(nextStep({ kind: 'batch', claimed: 100, held: 0, noProgress: true }, 1, SETTINGS, backoff)).toMatchObject({
      delayMs: 2_000,
      consecutiveErrors: 2,
      wakeOthers: false,
    });
  });

  test('while the broker blocks publishers the loop waits a poll interval and keeps its error count', () => {
    expect(nextStep({ kind: 'broker_blocked' }, 2, SETTINGS, backoff)).toEqual({
      delayMs: 500,
      idle: false,
      wakeOthers: false,
      consecutiveErrors: 2,
    });
  });
});
