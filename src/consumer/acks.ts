/**
 * The delivery tags of one channel not yet settled, in delivery order, so that the acks
 * of a batch can go as one `basic.ack` with `multiple` when the batch holds every
 * unsettled tag up to its highest (the usual case: batches take deliveries in order).
 * A frame less per message: on a machine where a socket write costs microseconds, that
 * counts (bench/consumer.ts).
 */
export class UnsettledTags {
  /** Delivery order; settled tags are skipped, and compacted away now and then. */
  private tags: number[] = [];
  private readonly settled = new Set<number>();

  /** A delivery arrived. */
  add(tag: number): void {
    this.tags.push(tag);
  }

  /** Settled one by one (a single ack, a nack). */
  settle(tag: number): void {
    this.settled.add(tag);
    this.trim();
  }

  /**
   * Settles `batch` (acked now): returns the tag up to which one ack with `multiple`
   * covers every unsettled tag (undefined: none), and the tags to ack one by one.
   */
  settleAll(batch: readonly number[]): { upTo: number | undefined; rest: number[] } {
    const acking = new Set(batch);
    let upTo: number | undefined;
    let index = 0;
    for (; index < this.tags.length; index += 1) {
      const tag = this.tags[index] as number;
      if (acking.delete(tag)) upTo = tag;
      else if (!this.settled.delete(tag)) break;
    }
    this.tags.splice(0, index);
    for (const tag of acking) this.settled.add(tag);
    this.trim();
    return { upTo, rest: [...acking] };
  }

  /** Drops the settled tags at the front, and compacts when settled ones pile up behind an old unsettled one. */
  private trim(): void {
    let index = 0;
    while (index < this.tags.length && this.settled.delete(this.tags[index] as number)) index += 1;
    if (index > 0) this.tags.splice(0, index);
    if (this.settled.size > 1_000 && this.settled.size > this.tags.length / 2) {
      this.tags = this.tags.filter((tag) => !this.settled.has(tag));
      this.settled.clear();
    }
  }
}
