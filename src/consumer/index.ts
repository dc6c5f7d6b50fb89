/**
 * `outbox-relay/consumer`: the idempotent consumer — exactly-once processing on top of
 * at-least-once delivery, for a consumer whose effects live in its own PostgreSQL
 * database. Loads amqplib and pg, but no metrics, scheduler or configuration code.
 *
 * ```ts
 * import { createConsumer } from 'outbox-relay/consumer';
 * ```
 */

/** The consumer, its options and what its handler receives; inbox cleanup on demand. */
export {
  cleanupInbox,
  createConsumer,
  type Consumer,
  type ConsumerLogger,
  type ConsumerOptions,
  type InboxMessage,
  type MessageHandler,
} from './consumer';

/** What a bad argument throws (code `INVALID_ARGUMENT`). */
export { OutboxError, type ErrorCode } from '../errors';
