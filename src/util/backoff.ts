/**
 * Capped exponential backoff with a little jitter, for reconnecting to a dependency: a
 * uniform delay in [¾, 1] · min(maxMs, baseMs · 2^(n-1)). The wait grows, clients that
 * lost a dependency together do not come back as one wave, and it is never near zero the
 * way full jitter can be. Shared by the relay (src/retry) and the consumer library.
 */
export function reconnectDelayMs(consecutiveFailures: number, baseMs = 250, maxMs = 15_000, random: () => number = Math.random): number {
  const ceiling = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(consecutiveFailures - 1, 0), 30));
  return Math.round(ceiling * (0.75 + random() * 0.25));
}
