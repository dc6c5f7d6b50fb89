import type { Config } from '../config/load-config';
import {
  INBOX_MIGRATIONS_DIR,
  loadMigrations,
  migrate,
  pendingMigrations,
  renderMigrationSql,
  type Ledger,
  type Migration,
} from '../db/migrator';
import { withClient } from '../db/transaction';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import type { Io } from './io';
import { withDatabase } from './with-database';

/** `outbox-relay migrate [--inbox] [--print [--all]]`. */
export async function migrateCommand(
  config: Config,
  log: Logger,
  io: Io,
  options: { print?: boolean; all?: boolean; inbox?: boolean },
): Promise<void> {
  const migrations = options.inbox ? loadMigrations(INBOX_MIGRATIONS_DIR) : loadMigrations();
  const ledger: Ledger = options.inbox ? 'inbox_schema_migrations' : 'schema_migrations';
  if (options.print) {
    io.out(options.all ? renderMigrationSql(config.schema, migrations, ledger) : await printPending(config, log, migrations, ledger));
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

/**
 * `migrate --print`: what is not yet applied to the configured schema, when its database
 * answers; every migration when it does not (said in the script's first line, so the
 * output stays one script a DBA can apply).
 */
async function printPending(config: Config, log: Logger, migrations: readonly Migration[], ledger: Ledger): Promise<string> {
  let pending: readonly Migration[];
  try {
    pending = await withDatabase(config, log, (pool) =>
      withClient(pool, (client) => pendingMigrations(client, config.schema, migrations, ledger)),
    );
  } catch (err: unknown) {
    if (!(err instanceof OutboxError) || err.code !== 'DATABASE_UNAVAILABLE') throw err;
    return (
      `-- the database did not answer (${errorMessage(err)}): every migration follows, as with --all\n` +
      renderMigrationSql(config.schema, migrations, ledger)
    );
  }
  if (pending.length === 0) {
    return `-- schema ${JSON.stringify(config.schema)} is up to date: no migration pending (--all prints every migration)`;
  }
  const which =
    pending.length === migrations.length
      ? 'every migration (none applied yet)'
      : `the ${pending.length} of ${migrations.length} migrations not yet applied`;
  return `-- ${which}; --all prints every migration\n${renderMigrationSql(config.schema, pending, ledger)}`;
}
