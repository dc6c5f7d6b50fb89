import type { Clock } from './ports';

/** The oldest due message, as the stall check reads it. */
export interface DueHead {
  readonly id: string;
  readonly messageId: string;
}

/**
 * Whether the relay makes progress: while due messages exist and the database and
 * broker are up, some message must be published or get its failure recorded within
 * `timeoutMs`. Two facts decide it, so that neither a worker's empty claim (the rows
 * are locked by another batch) nor a busy replica beside this one can hide a stall:
 * the oldest due message in the table (read every second, locked rows included) has
 * stayed the same for the timeout, and this relay has published or failed nothing for
 * as long. The loop adds why it thinks it is stuck.
 *
 * The timeout counts from when the relay could have published that message: an idle
 * relay looks for messages only every `pollIntervalMs` (unless a NOTIFY wakes it), so a
 * message that became due just after a look waits that long without anything being
 * wrong. Its wait is counted from `pollIntervalMs` after it was first seen.
 */
export class StallWatch {
  private lastProgressAt: number;
  private head: (DueHead & { readonly since: number }) | undefined;
  private why: string | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly clock: Clock,
    /** The longest an idle relay goes without looking for due messages (OUTBOX_POLL_INTERVAL_MS). */
    private readonly pollIntervalMs: number,
  ) {
    this.lastProgressAt = clock.now();
  }

  /** A message was published or its failure recorded. */
  progressed(): void {
    this.lastProgressAt = this.clock.now();
    this.why = undefined;
  }

  /** What keeps due messages waiting, as the loop sees it (said with the stall). */
  sawDue(why: string): void {
    this.why = why;
  }

  /** The oldest due message now (undefined: nothing due), and whether both dependencies are up. */
  observe(head: DueHead | undefined, dependenciesUp: boolean): void {
    if (!dependenciesUp || head === undefined) {
      // A dependency that is down is reported as such; the clock starts again when it is back.
      this.head = undefined;
      if (!dependenciesUp) this.lastProgressAt = this.clock.now();
      return;
    }
    if (this.head?.id !== head.id) this.head = { ...head, since: this.clock.now() };
  }

  /** The reason the relay is stalled, or undefined while it is not. */
  stalledReason(): string | undefined {
    if (this.head === undefined) return undefined;
    const now = this.clock.now();
    const waitedMs = Math.min(now - this.head.since, now - this.lastProgressAt);
    if (Math.min(now - this.head.since - this.pollIntervalMs, waitedMs) < this.timeoutMs) return undefined;
    return (
      `nothing published or failed for ${Math.round(waitedMs / 1000)} s while due messages wait: ` +
      `${this.why ?? 'no batch got a verdict'} (stuck on message ${this.head.messageId})`
    );
  }
}
