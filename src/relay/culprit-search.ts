import type { OutboxMessage } from '../domain/message';

/**
 * Finds the message that makes batches fail, without a table of known errors: after a
 * batch fails while handling its messages, the next claims take half as many rows
 * (the culprit is among the oldest due ones, which every claim takes first), down to
 * one; a single claimed message whose batch fails is the culprit and gets the failure.
 * Each good batch doubles the claim again, up to the batch size. Bounded: a culprit in a
 * batch of n is found after log2(n) + 1 failed batches, whose published messages are
 * published again (at-least-once).
 */
export class CulpritSearch {
  private limit: number;

  constructor(private readonly batchSize: number) {
    this.limit = batchSize;
  }

  /** How many rows the next claim takes. */
  get claimLimit(): number {
    return this.limit;
  }

  /** A batch succeeded: claim more again. */
  succeeded(): void {
    this.limit = Math.min(this.batchSize, this.limit * 2);
  }

  /**
   * A batch failed while handling `claimed`. Returns the culprit when the batch held a
   * single message, or undefined when the next claims must narrow it down.
   */
  failed(claimed: readonly OutboxMessage[]): OutboxMessage | undefined {
    if (claimed.length <= 1) return claimed[0];
    this.limit = Math.max(1, Math.floor(claimed.length / 2));
    return undefined;
  }

  /** The relay's own writes failed: retry one message at a time, so nothing is published over and over. */
  narrowToOne(): void {
    this.limit = 1;
  }
}
