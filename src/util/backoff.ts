/**
 * The one backoff of the code base: a wait that starts at `firstMs` and doubles with each
 * failure in a row, capped at `maxMs`, then spread by a jitter. Every wait that grows
 * with failures uses it — a message's retry, reconnecting to a dependency, the relay's
 * sleeps after errors and while keys wait, a held destination's probes, the write guard,
 * the consumer's handler retries — each with its own numbers and jitter.
 */

/**
 * How the capped wait is spread:
 * - `none`: exactly the wait (one party waits — nothing to spread — or a queue that
 *   needs the wait to be at least this long);
 * - `full`: a whole number uniform in [0, wait) (AWS architecture blog, "Exponential
 *   Backoff And Jitter"): messages that failed together do not come back as one wave;
 * - `upper-quarter`: uniform in [¾, 1] · wait, rounded: clients that lost a dependency
 *   together do not come back as one wave, and the wait is never near zero the way full
 *   jitter can be (reconnects).
 */
export type Jitter = 'none' | 'full' | 'upper-quarter';

/** The numbers of one backoff. */
export interface BackoffShape {
  /** The wait after the first failure (ms), before jitter. */
  readonly firstMs: number;
  /** The longest wait (ms), before jitter. */
  readonly maxMs: number;
  readonly jitter: Jitter;
}

/**
 * The doubling stops here: 2^30 times any first wait of at least 1 ms is past 12 days,
 * beyond every cap in use, and the product stays finite (a first wait of 0 stays 0).
 */
const MAX_DOUBLINGS = 30;

/**
 * The wait after `failures` failures in a row (≥ 1; less counts as 1):
 * min(maxMs, firstMs · 2^(failures-1)), spread by the shape's jitter.
 */
export function backoffMs(failures: number, shape: BackoffShape, random: () => number = Math.random): number {
  const doublings = Math.min(Math.max(failures - 1, 0), MAX_DOUBLINGS);
  const ceiling = Math.min(shape.maxMs, shape.firstMs * 2 ** doublings);
  switch (shape.jitter) {
    case 'none':
      return Math.round(ceiling);
    case 'full':
      return Math.floor(random() * ceiling);
    case 'upper-quarter':
      return Math.round(ceiling * (0.75 + random() * 0.25));
  }
}

/** A retry policy: how long to wait before attempt `failedAttempts + 1`. */
export interface BackoffPolicy {
  /** `failedAttempts` ≥ 1: the number of attempts that have failed so far. */
  delayMs(failedAttempts: number): number;
}

/** A message's retries (OUTBOX_BACKOFF_BASE_MS, OUTBOX_BACKOFF_MAX_MS): full jitter. */
export function fullJitterBackoff(baseMs: number, maxMs: number, random: () => number = Math.random): BackoffPolicy {
  const shape: BackoffShape = { firstMs: baseMs, maxMs, jitter: 'full' };
  return { delayMs: (failedAttempts) => backoffMs(failedAttempts, shape, random) };
}

/**
 * Reconnecting to a dependency (the database, the broker, a LISTEN connection; the
 * relay and the consumer library alike): 250 ms doubling up to 15 s by default,
 * jittered in the upper quarter.
 */
export function reconnectDelayMs(consecutiveFailures: number, baseMs = 250, maxMs = 15_000, random: () => number = Math.random): number {
  return backoffMs(consecutiveFailures, { firstMs: baseMs, maxMs, jitter: 'upper-quarter' }, random);
}
