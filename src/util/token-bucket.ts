/**
 * A token bucket: `ratePerSecond` tokens accrue continuously up to `capacity`; taking n
 * tokens may drive the balance below zero, and the caller then waits the time the
 * bucket needs to refill the debt. It starts empty, so from its creation on at most
 * `ratePerSecond × T` tokens are acted on in T seconds (a burst of `capacity` only
 * after an idle spell). Pure: the clock is injected.
 */
export class TokenBucket {
  private tokens: number;
  private updatedMs: number;

  constructor(
    readonly ratePerSecond: number,
    readonly capacity: number,
    private readonly nowMs: () => number = () => performance.now(),
  ) {
    if (!(ratePerSecond > 0) || !(capacity > 0)) throw new RangeError('a token bucket needs a positive rate and capacity');
    this.tokens = 0;
    this.updatedMs = nowMs();
  }

  /** Takes `n` tokens; returns how long (ms) to wait before acting on them (0: at once). */
  take(n: number): number {
    const now = this.nowMs();
    this.tokens = Math.min(this.capacity, this.tokens + ((now - this.updatedMs) * this.ratePerSecond) / 1000);
    this.updatedMs = now;
    this.tokens -= n;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.ratePerSecond;
  }
}
