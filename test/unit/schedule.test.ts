import { KEPT_BACK_RETRY_MS, nextStep, type Streaks, type Turn } from '../../src/relay/schedule';

const SETTINGS = { batchSize: 100, pollIntervalMs: 500 };
const backoff = (n: number): number => n * 1_000;

/** A streak of `errors` consecutive errors and no held turns. */
const errors = (consecutiveErrors: number): Streaks => ({ consecutiveErrors, consecutiveKeptBack: 0 });

/** A committed batch: `settled` defaults to every claimed row not held. */
function batch(claimed: number, held: number, noProgress = false, settled = claimed - held): Turn {
  return { kind: 'batch', claimed, keptBack: held, noProgress, settled };
}

describe('the loop schedule', () => {
  test('a full batch loops at once and wakes the other workers', () => {
    expect(nextStep(batch(100, 0), errors(3), SETTINGS, backoff)).toEqual({
      delayMs: 0,
      idle: false,
      wakeOthers: true,
      sleep: false,
      consecutiveErrors: 0,
      consecutiveKeptBack: 0,
    });
  });

  test('a partial or empty batch waits for new work, the poll interval at most', () => {
    for (const claimed of [0, 1, 99]) {
      expect(nextStep(batch(claimed, 0), errors(0), SETTINGS, backoff)).toEqual({
        delayMs: 500,
        idle: true,
        wakeOthers: false,
        sleep: false,
        consecutiveErrors: 0,
        consecutiveKeptBack: 0,
      });
    }
  });

  test('rows held behind a key in flight elsewhere are claimed again after a few milliseconds', () => {
    expect(nextStep(batch(100, 3), errors(0), SETTINGS, backoff)).toMatchObject({
      delayMs: KEPT_BACK_RETRY_MS,
      idle: false,
      sleep: false,
    });
    expect(nextStep(batch(5, 1), errors(0), { batchSize: 100, pollIntervalMs: 4 }, backoff)).toMatchObject({ delayMs: 4 });
  });

  test('a claim whose every row waited for keys in flight elsewhere sleeps longer each time in a row, up to the poll interval', () => {
    let streaks: Streaks = errors(0);
    const delays: number[] = [];
    for (let turn = 0; turn < 8; turn += 1) {
      const next = nextStep(batch(100, 100, false, 0), streaks, SETTINGS, backoff);
      expect(next).toMatchObject({ idle: false, sleep: true, wakeOthers: false, consecutiveKeptBack: turn + 1 });
      delays.push(next.delayMs);
      streaks = next;
    }
    expect(delays).toEqual([
      KEPT_BACK_RETRY_MS,
      2 * KEPT_BACK_RETRY_MS,
      4 * KEPT_BACK_RETRY_MS,
      8 * KEPT_BACK_RETRY_MS,
      16 * KEPT_BACK_RETRY_MS,
      32 * KEPT_BACK_RETRY_MS,
      500,
      500,
    ]);
    // One message settled: the streak ends, the next wait is the short one again.
    expect(nextStep(batch(100, 99, false, 1), streaks, SETTINGS, backoff)).toMatchObject({
      delayMs: KEPT_BACK_RETRY_MS,
      sleep: false,
      consecutiveKeptBack: 0,
    });
  });

  test('a recovery step claims again after a few milliseconds', () => {
    expect(nextStep({ kind: 'again' }, errors(2), SETTINGS, backoff)).toMatchObject({
      delayMs: KEPT_BACK_RETRY_MS,
      idle: false,
      sleep: false,
    });
  });

  test('errors back off more with each consecutive one and reset after a good batch', () => {
    const first = nextStep({ kind: 'error' }, errors(0), SETTINGS, backoff);
    expect(first).toMatchObject({ delayMs: 1_000, consecutiveErrors: 1, idle: false });
    const second = nextStep({ kind: 'error' }, first, SETTINGS, backoff);
    expect(second).toMatchObject({ delayMs: 2_000, consecutiveErrors: 2 });
    expect(nextStep(batch(0, 0), second, SETTINGS, backoff).consecutiveErrors).toBe(0);
  });

  test('a batch whose messages all went without a verdict backs off like an error', () => {
    expect(nextStep(batch(100, 0, true, 0), errors(1), SETTINGS, backoff)).toMatchObject({
      delayMs: 2_000,
      consecutiveErrors: 2,
      wakeOthers: false,
    });
  });

  test('while the broker blocks publishers the loop waits a poll interval and keeps its error count', () => {
    expect(nextStep({ kind: 'wait' }, errors(2), SETTINGS, backoff)).toEqual({
      delayMs: 500,
      idle: false,
      wakeOthers: false,
      sleep: false,
      consecutiveErrors: 2,
      consecutiveKeptBack: 0,
    });
  });
});
