import type { Config } from '../config/load-config';
import { INBOX_MIGRATIONS_DIR, loadMigrations, migrate, renderMigrationSql, type Ledger } from '../db/migrator';
import { withClient } from '../db/transaction';
import type { Logger } from '../observability/logger';
import type { Io } from './io';
import { withDatabase } from './with-database';

/** `outbox-relay migrate [--inbox] [--print]`. */
export async function migrateCommand(config: Config, log: Logger, io: Io, options: { print?: boolean; inbox?: boolean }): Promise<void> {
  const migrations = options.inbox ? loadMigrations(INBOX_MIGRATIONS_DIR) : loadMigrations();
  const ledger: Ledger = options.inbox ? 'inbox_schema_migrations' : 'schema_migrations';
  if (options.print) {
    io.out(renderMigrationSql(config.schema, migrations, ledger));
    return;
  }
  await withDatabase(config, log, async (pool) => {
    const applied = await withClient(pool, (client) => migrate(client, config.schema, migrations, ledger));
    if (applied.length === 0) {
      io.out(`schema "${config.schema}" is up to date (${migrations.length} migration${migrations.length === 1 ? '' : 's'} applied)`);
    }
    for (const m of applied) io.out(`applied ${m.fileName} to schema "${config.schema}"`);
  });
}
