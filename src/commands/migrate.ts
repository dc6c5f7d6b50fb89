import type { Config } from '../config/load-config';
import { loadMigrations, migrate, renderMigrationSql } from '../db/migrator';
import type { Logger } from '../observability/logger';
import type { Io } from './io';
import { withDatabase } from './with-database';

/** `outbox-relay migrate [--print]`. */
export async function migrateCommand(config: Config, log: Logger, io: Io, options: { print?: boolean }): Promise<void> {
  const migrations = loadMigrations();
  if (options.print) {
    io.out(renderMigrationSql(config.schema, migrations));
    return;
  }
  await withDatabase(config, log, async (pool) => {
    const client = await pool.connect();
    try {
      const applied = await migrate(client, config.schema, migrations);
      if (applied.length === 0) {
        io.out(`schema "${config.schema}" is up to date (${migrations.length} migration${migrations.length === 1 ? '' : 's'} applied)`);
      }
      for (const m of applied) io.out(`applied ${m.fileName} to schema "${config.schema}"`);
    } finally {
      client.release();
    }
  });
}
