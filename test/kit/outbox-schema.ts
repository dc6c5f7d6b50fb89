import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { escapeIdentifier, type Pool } from 'pg';
import { INBOX_MIGRATIONS_DIR, loadMigrations, migrate, MIGRATIONS_DIR, type Migration } from '../../src/db/migrator';

/** Creates `schema` with every migration applied (or those given: an earlier release's schema), as `outbox-relay migrate` does. */
export async function migrateSchema(pool: Pool, schema: string, migrations?: readonly Migration[]): Promise<void> {
  const client = await pool.connect();
  try {
    await migrate(client, schema, migrations);
  } finally {
    client.release();
  }
}

/** Creates the idempotent consumer's inbox in `schema`, as `outbox-relay migrate --inbox` does. */
export async function migrateInboxSchema(pool: Pool, schema: string): Promise<void> {
  const client = await pool.connect();
  try {
    await migrate(client, schema, loadMigrations(INBOX_MIGRATIONS_DIR), 'inbox_schema_migrations');
  } finally {
    client.release();
  }
}

/** Drops `schema` and everything in it, if it exists. */
export async function dropSchema(pool: Pool, schema: string): Promise<void> {
  await pool.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`);
}

/** Applies migrations/optional/notify-on-insert.sql to `schema` (it is written for "outbox"). */
export async function installOptionalTrigger(pool: Pool, schema: string): Promise<void> {
  const sql = readFileSync(join(MIGRATIONS_DIR, 'optional', 'notify-on-insert.sql'), 'utf8').replace(
    /\boutbox\./g,
    `${escapeIdentifier(schema)}.`,
  );
  await pool.query(sql);
}
