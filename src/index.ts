/**
 * outbox-relay's public API for Node.js programs: embed the relay, run migrations.
 * The producer and consumer libraries for services are exported from here too.
 */
export { startRelay, type RunningRelay } from './app';
export { loadConfig, type Config } from './config/load-config';
export { SETTINGS } from './config/settings';
export { loadMigrations, migrate, renderMigrationSql, verifySchema, type Migration } from './db/migrator';
export { OutboxError, type ErrorCode } from './errors';

// Producer: write messages inside your own transaction (SPEC §6).
export { defineMessage, type DefineMessageOptions, type MessageDefinition } from './producer/define-message';
export {
  enqueue,
  enqueueMany,
  message,
  type EnqueueItem,
  type EnqueueOptions,
  type Executor,
  type SqlClient,
  type ProducerOptions,
} from './producer/enqueue';

// Idempotent consumer: exactly-once processing on top of at-least-once delivery (SPEC §6).
export {
  cleanupInbox,
  createConsumer,
  type Consumer,
  type ConsumerLogger,
  type ConsumerOptions,
  type InboxMessage,
  type MessageHandler,
} from './consumer/consumer';
export { INBOX_MIGRATIONS_DIR, MIGRATIONS_DIR, type Ledger } from './db/migrator';
