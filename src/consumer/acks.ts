/**
 * The delivery tags of one channel not yet settled, in delivery order, so that acks go
 * as one `basic.ack` with `multiple` for every run of deliveries done from the oldest:
 * batches take deliveries in order, but several run at once and finish in any order.
 * A batch that finishes before an older one owes its acks until the older one is done,
 * then one frame acks both; what is owed longer (behind a delivery held for long, a
 * retry in place) is acked one by one by `takeOwed`, which the session calls after a
 * short delay. A frame less per message: on the test machine a socket write costs
 * more CPU than the consumer's own work on a message (bench/consumer.ts).
 */
export class UnsettledTags {
  /** Delivery order; settled tags are dropped from the front, and compacted away now and then. */
  private tags: number[] = [];
  /** Settled one by one (acked, rejected) or acked by a `multiple`: no longer the broker's. */
  private readonly done = new Set<number>();
  /** To be acked, not sent yet. */
  private readonly owed = new Set<number>();

  /** A delivery arrived. */
  add(tag: number): void {
    this.tags.push(tag);
  }

  /** Settled one by one (a single ack, a nack). */
  settle(tag: number): void {
    this.done.add(tag);
    this.trim();
  }

  /** Whether acks are owed (`takeOwed` will send them). */
  get owing(): boolean {
    return this.owed.size > 0;
  }

  /**
   * `batch` is to be acked: returns the tag to ack with `multiple` now, covering every
   * owed tag from the oldest unsettled one (undefined: the oldest is not done yet, the
   * batch's acks are owed).
   */
  ackAll(batch: readonly number[]): number | undefined {
    for (const tag of batch) this.owed.add(tag);
    let upTo: number | undefined;
    let index = 0;
    for (; index < this.tags.length; index += 1) {
      const tag = this.tags[index] as number;
      if (this.owed.delete(tag)) upTo = tag;
      else if (!this.done.delete(tag)) break;
    }
    this.tags.splice(0, index);
    this.compact();
    return upTo;
  }

  /** The owed tags, to be acked one by one now (they count as done from here on). */
  takeOwed(): number[] {
    const owed = [...this.owed].sort((a, b) => a - b);
    for (const tag of owed) this.done.add(tag);
    this.owed.clear();
    this.trim();
    return owed;
  }

  /** Drops the done tags at the front. */
  private trim(): void {
    let index = 0;
    while (index < this.tags.length && this.done.delete(this.tags[index] as number)) index += 1;
    if (index > 0) this.tags.splice(0, index);
    this.compact();
  }

  /** Behind an old unsettled tag, done ones pile up: filter them out now and then. */
  private compact(): void {
    if (this.done.size <= 1_000 || this.done.size <= this.tags.length / 2) return;
    this.tags = this.tags.filter((tag) => !this.done.has(tag));
    this.done.clear();
  }
}
