import type { OutboxMessage } from './message';

/** The `message_type` of the canary `outbox-relay selftest` inserts. */
export const SELFTEST_MESSAGE_TYPE = 'outbox-relay.selftest';
/** The header (`true`) that marks the canary. */
export const SELFTEST_HEADER = 'x-outbox-selftest';

/**
 * Whether `message` is a self-test canary: its type, its header, and an `expires_at`
 * (every canary has one). A canary is a probe, not an event anyone waits for: a relay
 * never makes it dead (it would count as a dead message and fire the dead-message alert
 * when a self-test was interrupted and its temporary exchange went away); it is retried
 * until its `expires_at`, and then expires.
 */
export function isSelftestMessage(message: Pick<OutboxMessage, 'messageType' | 'headers' | 'expiresAt'>): boolean {
  return (
    message.messageType === SELFTEST_MESSAGE_TYPE &&
    message.headers[SELFTEST_HEADER] === true &&
    message.expiresAt !== undefined &&
    message.expiresAt !== null
  );
}
