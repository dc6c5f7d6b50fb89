/**
 * `outbox-relay`: everything — embed the relay, run migrations, and the producer and
 * consumer libraries. A service that only produces or only consumes imports
 * `outbox-relay/producer` or `outbox-relay/consumer`, which load far less.
 */
export { startRelay, type RunningRelay } from './app';
export { loadConfig, type Config } from './config/load-config';
export { SETTINGS } from './config/settings';
export { loadMigrations, migrate, renderMigrationSql, verifySchema, type Migration } from './db/migrator';
export { INBOX_MIGRATIONS_DIR, MIGRATIONS_DIR, type Ledger } from './db/migrator';
export { OutboxError, type ErrorCode } from './errors';

/** Producer: write messages inside your own transaction (see `outbox-relay/producer`). */
export * from './producer/index';

/** Idempotent consumer: exactly-once processing on top of at-least-once delivery (see `outbox-relay/consumer`). */
export * from './consumer/index';
