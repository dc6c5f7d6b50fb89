import type { OutboxMessage } from '../domain/message';

/** The stages of a message between its commit and its mark, as `OUTBOX_STAGE_TIMINGS` measures them. */
export const STAGES = ['due_to_claimed', 'claimed_to_written', 'written_to_confirmed', 'confirmed_to_marked'] as const;
export type Stage = (typeof STAGES)[number];

/** Where the stage times go (the histogram outbox_stage_seconds{stage}). */
export type StageObserver = (stage: Stage, seconds: number) => void;

/**
 * One batch's timeline, from the relay's own clock: when each message became due (its
 * available_at, for a first attempt: the producer's transaction start, since available_at
 * defaults to now()), when the batch had claimed it, when its publish was written to the
 * socket, when its confirm came, when the batch's marks committed. Only built with
 * OUTBOX_STAGE_TIMINGS on: each message costs a few clock reads and four observations.
 */
export class StageTimeline {
  private claimedAt = 0;
  private readonly written = new Map<string, number>();
  private readonly confirmed = new Map<string, number>();

  constructor(
    private readonly observe: StageObserver,
    private readonly now: () => number,
  ) {}

  claimed(): void {
    this.claimedAt = this.now();
  }

  wrote(message: OutboxMessage): void {
    this.written.set(message.id, this.now());
  }

  settled(message: OutboxMessage): void {
    this.confirmed.set(message.id, this.now());
  }

  /** The batch committed: every published message's stages. */
  marked(published: readonly OutboxMessage[]): void {
    const markedAt = this.now();
    for (const message of published) {
      const written = this.written.get(message.id);
      const confirmed = this.confirmed.get(message.id);
      if (written === undefined || confirmed === undefined) continue;
      if (message.attempts === 0) this.observe('due_to_claimed', Math.max(0, this.claimedAt - message.availableAt.getTime()) / 1000);
      this.observe('claimed_to_written', (written - this.claimedAt) / 1000);
      this.observe('written_to_confirmed', (confirmed - written) / 1000);
      this.observe('confirmed_to_marked', (markedAt - confirmed) / 1000);
    }
  }
}
