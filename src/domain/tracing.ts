import type { OutboxMessage } from './message';

/**
 * What the relay's batch tells its tracing (src/tracing/ implements it; app.ts passes it
 * only when tracing is on, so a relay without it pays one `undefined` check per batch and
 * nothing per message).
 */
export interface BatchTracer {
  /**
   * Opens the spans of a batch that claimed `claimed` rows at `claimedAtMs` (epoch ms):
   * the batch span, and one span per message of `messages` (those it will send, in order).
   */
  start(claimedAtMs: number, claimed: number, messages: readonly OutboxMessage[]): BatchTrace;
}

/** The spans of one batch, from the claim to the commit. */
export interface BatchTrace {
  /**
   * `messages` as they are sent: each a copy whose `traceparent`/`tracestate` headers are
   * its span's context (its other headers unchanged; the row is not changed).
   */
  readonly messages: readonly OutboxMessage[];
  /** The broker's answer (or the end of waiting for it) for one sent message is in. */
  readonly settled: (message: OutboxMessage) => void;
  /** What became of each message, in the order of `messages`: ends their spans. */
  decided(outcomes: readonly TracedOutcome[]): void;
  /** The batch committed, or failed with `error` (rolled back): ends the batch span. */
  end(error?: unknown): void;
}

/** How one message's attempt ended, for its span. */
export interface TracedOutcome {
  /** The relay's verdict: published, failed, dead, expired, unconfirmed, held, parked, … */
  readonly verdict: string;
  /** Set when the attempt failed: the failure reason (the metric's label) and the error stored on the row. */
  readonly error?: { readonly reason: string; readonly message: string };
  /** Returned by the broker as unroutable. */
  readonly returned?: boolean;
}
