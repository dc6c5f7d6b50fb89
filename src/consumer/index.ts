/**
 * `outbox-relay/consumer`: the idempotent consumer — exactly-once processing on top of
 * at-least-once delivery, for a consumer whose effects live in its own PostgreSQL
 * database. It keeps consuming through lost connections and cancels by the broker,
 * retries failed messages through a retry queue and dead-letters them after
 * `maxRetries`. Loads amqplib and pg, but no metrics library, scheduler or
 * configuration code (its metrics go into the prom-client registry the service passes).
 *
 * ```ts
 * import { createConsumer } from 'outbox-relay/consumer';
 * ```
 */

/** The consumer and what it reports. */
export { createConsumer, type Consumer, type ConsumerStats } from './consumer';

/** Its options and what its handler receives. */
export type {
  ConsumerLogger,
  ConsumerOptions,
  ConsumerState,
  ConsumerTopology,
  ConsumerTracerProvider,
  ConsumerTracingOption,
  InboxMessage,
  MessageHandler,
  StateChange,
} from './options';

/** The registry it registers its metrics in (a prom-client `Registry`), and the outcome labels. */
export type { ConsumerMetricsRegistry, MessageOutcome, ReconnectCause } from './metrics';

/** The headers of a retried or dead-lettered copy; inbox cleanup on demand. */
export { cleanupInbox, HEADER as CONSUMER_HEADERS } from './inbox';

/** What a bad argument throws (code `INVALID_ARGUMENT`), or a broker that refuses (`BROKER_UNAVAILABLE`). */
export { OutboxError, type ErrorCode } from '../errors';
