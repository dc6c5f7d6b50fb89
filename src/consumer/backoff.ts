/**
 * The consumer's waits. The daemon's policies live in src/retry/, which this library may
 * not load (it stays importable without the daemon); these are the same formulas.
 */

/**
 * Capped exponential backoff with a little jitter, for reconnecting: a uniform delay in
 * [¾, 1] · min(maxMs, baseMs · 2^(n-1)). The wait grows, consumers that lost one broker
 * together do not come back as one wave, and it is never near zero (full jitter can be).
 */
export function reconnectDelayMs(consecutiveFailures: number, baseMs: number, maxMs: number, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(consecutiveFailures - 1, 0), 30));
  return Math.round(ceiling * (0.75 + random() * 0.25));
}

/**
 * The wait before retry `failures` of a failed handler: `baseMs` doubling per failure,
 * at most `maxMs`. No jitter: the retry queue expires messages from its head, so a wait
 * is at least this long and at most the longest wait ahead of it in the queue.
 */
export function retryDelayMs(failures: number, baseMs: number, maxMs: number): number {
  return Math.round(Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(failures - 1, 0), 30)));
}
