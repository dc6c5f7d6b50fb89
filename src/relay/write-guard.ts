import { backoffMs } from '../util/backoff';
import type { Clock } from './ports';

/** First wait before probing the relay's writes again, and the longest wait (ms). */
const PROBE_AFTER_MS = 5_000;
const LONGEST_WAIT_MS = 30 * 60_000;

/**
 * The relay's own writes to the outbox table (marks, failures, deletes) after they
 * failed: nothing is claimed — so nothing is published again and again — until a probe
 * of the same statements, changing nothing, passes; then one message at a time. A
 * failure the probe cannot see (a trigger, a constraint) comes back with the next batch:
 * each time it does, the wait before the next try doubles, up to 30 minutes, so the
 * messages of that batch are re-published at that pace at most.
 */
export class WriteGuard {
  private failures = 0;
  private retryAt = 0;
  private probing = false;

  constructor(private readonly clock: Clock) {}

  /** Whether the writes are known to fail (claiming stops). */
  get failing(): boolean {
    return this.probing;
  }

  /** A batch's writes failed. Returns true for the first failure of a streak (log it). */
  failed(): boolean {
    this.failures += 1;
    this.probing = true;
    this.retryAt = this.clock.now() + backoffMs(this.failures, { firstMs: PROBE_AFTER_MS, maxMs: LONGEST_WAIT_MS, jitter: 'none' });
    return this.failures === 1;
  }

  dueForProbe(): boolean {
    return this.clock.now() >= this.retryAt;
  }

  probePassed(): void {
    this.probing = false;
  }

  probeFailed(): void {
    this.retryAt = this.clock.now() + PROBE_AFTER_MS;
  }

  /** A batch committed. Returns true when that ends a streak of failures. */
  recovered(): boolean {
    const was = this.failures > 0;
    this.failures = 0;
    this.probing = false;
    return was;
  }
}
