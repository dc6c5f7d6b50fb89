import { escapeIdentifier, type Pool } from 'pg';
import { migrate } from '../../src/db/migrator';

/** Creates `schema` with every migration applied, as `outbox-relay migrate` does. */
export async function migrateSchema(pool: Pool, schema: string): Promise<void> {
  const client = await pool.connect();
  try {
    await migrate(client, schema);
  } finally {
    client.release();
  }
}

/** Drops `schema` and everything in it, if it exists. */
export async function dropSchema(pool: Pool, schema: string): Promise<void> {
  await pool.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`);
}
