/** A retry policy: how long to wait before attempt `attempt + 1`. */
export interface BackoffPolicy {
  /** `failedAttempts` ≥ 1: the number of attempts that have failed so far. */
  delayMs(failedAttempts: number): number;
}

/**
 * Exponential backoff with full jitter (AWS architecture blog, "Exponential Backoff
 * And Jitter"): a uniform delay in [0, min(max, base · 2^(n-1))]. Full jitter spreads
 * retries of messages that failed together, so they do not come back as one wave.
 */
export function fullJitterBackoff(baseMs: number, maxMs: number, random: () => number = Math.random): BackoffPolicy {
  return {
    delayMs(failedAttempts: number): number {
      const exponent = Math.min(Math.max(failedAttempts - 1, 0), 52);
      const ceiling = Math.min(maxMs, baseMs * 2 ** exponent);
      return Math.floor(random() * ceiling);
    },
  };
}

export { reconnectDelayMs } from '../util/backoff';
