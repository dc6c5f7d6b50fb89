import type { Clock } from './ports';

/**
 * Whether the relay makes progress: while due messages exist and the database and
 * broker are up, some message must be published or get its failure recorded within
 * `timeoutMs`. Fed by the loop; read on every turn.
 */
export class StallWatch {
  private lastProgressAt: number;
  /** Since when due messages are known to wait without progress; undefined: nothing due. */
  private dueSince: number | undefined;
  private stuckOn: { messageId?: string; why: string } | undefined;

  constructor(
    private readonly timeoutMs: number,
    private readonly clock: Clock,
  ) {
    this.lastProgressAt = clock.now();
  }

  /** A message was published or its failure recorded. */
  progressed(): void {
    this.lastProgressAt = this.clock.now();
    this.dueSince = undefined;
    this.stuckOn = undefined;
  }

  /** Due messages wait; `why` says what keeps them (with the message it is stuck on, when known). */
  sawDue(why: string, messageId?: string): void {
    this.dueSince ??= this.clock.now();
    if (messageId !== undefined || this.stuckOn === undefined) this.stuckOn = { messageId, why };
  }

  /** Nothing is due: not stalled. */
  nothingDue(): void {
    this.dueSince = undefined;
    this.stuckOn = undefined;
    this.lastProgressAt = this.clock.now();
  }

  /** A dependency is down: that is reported as such, and the clock starts again when it is back. */
  paused(): void {
    this.lastProgressAt = this.clock.now();
    this.dueSince = undefined;
  }

  /** The reason the relay is stalled, or undefined while it is not. */
  stalledReason(): string | undefined {
    if (this.dueSince === undefined) return undefined;
    const since = Math.max(this.lastProgressAt, this.dueSince);
    const waitedMs = this.clock.now() - since;
    if (waitedMs < this.timeoutMs) return undefined;
    const on = this.stuckOn?.messageId === undefined ? '' : ` (stuck on message ${this.stuckOn.messageId})`;
    return `nothing published or failed for ${Math.round(waitedMs / 1000)} s while due messages wait: ${this.stuckOn?.why ?? 'unknown'}${on}`;
  }
}
