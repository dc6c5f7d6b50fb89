import type { Pool } from 'pg';
import { OutboxError } from '../../src/errors';
import { loadMigrations, verifySchemaOf } from '../../src/db/migrator';

/** A pool of one fake connection that answers the ledger queries with `ledger` (undefined: no ledger table). */
function fakePool(ledger: readonly { version: number; name: string; checksum: string }[] | undefined, fail?: Error) {
  const release = jest.fn();
  const query = jest.fn((sql: string) => {
    if (fail) return Promise.reject(fail);
    if (sql.includes('to_regclass')) return Promise.resolve({ rows: [{ exists: ledger !== undefined }] });
    return Promise.resolve({ rows: ledger ?? [] });
  });
  const pool = { connect: () => Promise.resolve({ query, release }) } as unknown as Pool;
  return { pool, release, query };
}

describe('verifySchemaOf: the schema check on a connection of a pool', () => {
  const migrations = loadMigrations();
  const applied = migrations.map((m) => ({ version: m.version, name: m.name, checksum: m.checksum }));

  test('a schema migrated to exactly this build: the latest version, the connection released', async () => {
    const { pool, release } = fakePool(applied);
    await expect(verifySchemaOf(pool, 'outbox')).resolves.toBe(migrations.at(-1)?.version);
    expect(release).toHaveBeenCalledTimes(1);
  });

  test('a schema not migrated: SCHEMA_NOT_MIGRATED naming it, the connection released', async () => {
    const { pool, release } = fakePool(undefined);
    const err = await verifySchemaOf(pool, 'orders_outbox').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(OutboxError);
    expect((err as OutboxError).code).toBe('SCHEMA_NOT_MIGRATED');
    expect((err as Error).message).toContain('schema "orders_outbox" is not migrated');
    expect(release).toHaveBeenCalledTimes(1);
  });

  test('a failing database: its error passed on, the connection released', async () => {
    const { pool, release } = fakePool(applied, new Error('Connection terminated'));
    await expect(verifySchemaOf(pool, 'outbox')).rejects.toThrow('Connection terminated');
    expect(release).toHaveBeenCalledTimes(1);
  });
});
