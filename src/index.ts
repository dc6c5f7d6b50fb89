/**
 * outbox-relay's public API for Node.js programs: embed the relay, run migrations.
 * The producer and consumer libraries for services are exported from here too.
 */
export { startRelay, type RunningRelay } from './app';
export { loadConfig, type Config } from './config/load-config';
export { SETTINGS } from './config/settings';
export { loadMigrations, migrate, renderMigrationSql, verifySchema, type Migration } from './db/migrator';
export { OutboxError, type ErrorCode } from './errors';
