import type { ConsumeMessage } from 'amqplib';
import { partitionKeyOf } from './inbox';

/** What the consumer needs to know of an admitted delivery, read once from its properties. */
export interface Admitted {
  readonly ok: true;
  /** AMQP `message-id`: the inbox key. */
  readonly messageId: string;
  /** `x-outbox-partition-key`; undefined: no key, no order to keep. */
  readonly key: string | undefined;
}

/** A delivery refused before the inbox, with the reason its dead letter carries. */
export interface Refused {
  readonly ok: false;
  readonly reason: string;
}

/**
 * The one place where a delivery is accepted or refused before it reaches the inbox.
 * Refused: no message id (nothing to deduplicate by), or one the inbox could not store
 * faithfully — a NUL character (PostgreSQL text cannot hold it), or U+FFFD, which is
 * what the AMQP client makes of bytes that are not UTF-8: two different invalid ids
 * would read alike and the second be skipped as a duplicate of the first. A refusal is
 * the delivery's own failure: dead-lettered (or rejected) with the reason, at once,
 * because no retry changes the message.
 */
export function admit(msg: ConsumeMessage): Admitted | Refused {
  const messageId = msg.properties.messageId as unknown;
  if (typeof messageId !== 'string' || messageId === '')
    return { ok: false, reason: 'message without a message-id cannot be deduplicated' };
  if (messageId.includes('\u0000')) return { ok: false, reason: 'message-id contains a NUL character, which the inbox cannot store' };
  if (messageId.includes('\uFFFD'))
    return { ok: false, reason: 'message-id is not valid UTF-8 (or contains U+FFFD): it cannot be told apart from other ids' };
  return { ok: true, messageId, key: partitionKeyOf(msg) };
}
