/**
 * `outbox-relay/producer`: writes messages into the outbox inside the service's own
 * transaction (node-postgres or Kysely). Loads no broker client, metrics or scheduler
 * code, and never kysely itself: a service that only produces pays for none of them.
 *
 * ```ts
 * import { defineMessage, enqueue } from 'outbox-relay/producer';
 * ```
 */

/** Typed message definitions: the payload type that `enqueue` checks at compile time. */
export { defineMessage, type DefineMessageOptions, type MessageDefinition } from './define-message';

/** Writing messages inside the caller's transaction, one INSERT per call. */
export {
  enqueue,
  enqueueMany,
  message,
  type AnyEnqueueItem,
  type CheckedItem,
  type EnqueueItem,
  type EnqueueOptions,
  type Executor,
  type KyselyCompiledQuery,
  type KyselyTransaction,
  type ProducerOptions,
  type SqlClient,
} from './enqueue';

/** What a bad argument throws: code `INVALID_ARGUMENT`, before anything is written. */
export { OutboxError, type ErrorCode } from '../errors';
