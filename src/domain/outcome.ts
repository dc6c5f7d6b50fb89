/** Why a publish attempt did not end in a broker confirm (the `reason` label). */
export type FailureReason = 'unroutable' | 'unknown_exchange' | 'too_large' | 'timeout' | 'invalid_message' | 'connection_lost';

export const FAILURE_REASONS: readonly FailureReason[] = [
  'unroutable',
  'unknown_exchange',
  'too_large',
  'timeout',
  'invalid_message',
  'connection_lost',
];

/** A message-level failure: it costs the message an attempt. */
export interface Failure {
  readonly reason: FailureReason;
  readonly error: string;
}

/**
 * The failure of a message that cannot be sent as it is — a row that could not be read
 * into a message, headers or properties amqplib cannot encode, a message the broker
 * closes the connection on each time: the one place `invalid_message` is given.
 */
export function invalidMessage(error: string): Failure {
  return { reason: 'invalid_message', error };
}

/**
 * What the broker made of one message of a batch:
 * - `confirmed`: the broker confirmed it (positive ack);
 * - `returned`: confirmed, but returned as unroutable (no queue bound);
 * - `failed`: a message-level failure that costs an attempt;
 * - `unconfirmed`: the connection or channel went away first: no verdict, no attempt
 *   burnt, the message stays pending for a later batch;
 * - `refused`: the broker nacked it (a negative confirm: the destination's answer, a
 *   queue full under `x-overflow: reject-publish` or without a leader — never the
 *   message's fault). No attempt; its destination is held (relay/held-destinations.ts);
 * - `kept_back`: never sent (the relay's ordering kept it back for a later claim);
 * - `destination_held`: never sent, its destination refuses messages and it is not the probe;
 * - `expired`: never sent, its expires_at was reached.
 */
export type PublishOutcome =
  | { readonly kind: 'confirmed' }
  | { readonly kind: 'returned'; readonly replyText: string }
  | ({ readonly kind: 'failed' } & Failure)
  | { readonly kind: 'unconfirmed'; readonly error: string }
  | { readonly kind: 'refused' }
  | { readonly kind: 'kept_back' }
  | { readonly kind: 'destination_held' }
  | { readonly kind: 'expired' };

/**
 * What the broker adapter knows of a message before it is sent: it cannot succeed
 * (`fail`), it may close the channel (`apart`: over a size limit the broker taught
 * before, so it is sent alone after the others), or nothing against it (`send`).
 */
export type Preflight = { readonly kind: 'send' } | { readonly kind: 'apart' } | ({ readonly kind: 'fail' } & Failure);
