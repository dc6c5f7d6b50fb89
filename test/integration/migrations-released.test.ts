import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { escapeIdentifier } from 'pg';
import { loadMigrations, migrate, MIGRATIONS_DIR, verifySchema, type Migration } from '../../src/db/migrator';
import { OutboxError } from '../../src/errors';
import { withClient } from '../kit/pg-client';
import { rejection } from '../kit/rejection';
import { uniqueName } from '../kit/unique-name';

/** Schemas created by the tests, dropped after all tests. */
const extraSchemas: string[] = [];

afterAll(async () => {
  await withClient(async (client) => {
    for (const schema of extraSchemas) await client.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`);
  });
});

/**
 * Comment lines reworded after the files were released (commit 7bc2138), with the sha256
 * that release recorded in ledgers. Putting the released lines back rebuilds those files
 * byte for byte (`git show 7bc2138:migrations/<file> | sha256sum` gives the same sums).
 */
const REWORDED_COMMENTS: readonly { file: string; now: string; released: string; releasedChecksum: string }[] = [
  {
    file: '0001_messages.sql',
    now: '    -- Relay-owned. Insertion order: per-key ordering (README "Ordering") follows it.',
    released: '    -- Relay-owned. Insertion order: the per-key ordering of SPEC §3.4 follows it.',
    releasedChecksum: 'de425de425b16569f5c0a72257e9a88849b1771424c0717b68bb6bcb03e9a2db',
  },
  {
    file: '0002_ordering.sql',
    now: '-- outbox-relay migration 0002: per-key ordering (README "Ordering").',
    released: '-- outbox-relay migration 0002: per-key ordering (SPEC §3.4).',
    releasedChecksum: 'f6b9ee8feb3590a4d0b584504ffc40affae8940ebc44dd48f6a0e8bb7e0135eb',
  },
];

/** A copy of migrations/ in a temporary directory, with `edit` applied to the text of each file it names. */
function editedMigrationsDir(edits: Readonly<Record<string, (sql: string) => string>>): string {
  const dir = mkdtempSync(join(tmpdir(), 'outbox-migrations-'));
  cpSync(MIGRATIONS_DIR, dir, { recursive: true });
  for (const [file, edit] of Object.entries(edits)) {
    const path = join(dir, file);
    writeFileSync(path, edit(readFileSync(path, 'utf8')));
  }
  return dir;
}

describe('migrations whose comments were reworded after their release', () => {
  const dirs: string[] = [];
  /** The files as the previous release shipped them. */
  let released: readonly Migration[];
  /** A schema migrated with those files: its ledger holds the released checksums. */
  const schema = uniqueName('t_released');

  beforeAll(async () => {
    const dir = editedMigrationsDir(
      Object.fromEntries(REWORDED_COMMENTS.map(({ file, now, released: old }) => [file, (sql: string) => sql.replace(now, old)])),
    );
    dirs.push(dir);
    released = loadMigrations(dir);
    extraSchemas.push(schema);
    await withClient(async (client) => {
      await expect(migrate(client, schema, released)).resolves.toHaveLength(released.length);
    });
  });

  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('putting the old comment lines back gives the released checksums; only comment lines differ', () => {
    const current = loadMigrations();
    for (const { file, now, released: old, releasedChecksum } of REWORDED_COMMENTS) {
      expect(now.trimStart().startsWith('--') && old.trimStart().startsWith('--')).toBe(true);
      const today = current.find((m) => m.fileName === file)!;
      expect(today.sql.split('\n').filter((line) => line === now)).toHaveLength(1);
      const then = released.find((m) => m.fileName === file)!;
      expect(then.checksum).toBe(releasedChecksum);
      expect(today.checksum).not.toBe(releasedChecksum);
      expect(today.acceptedChecksums).toEqual([today.checksum, releasedChecksum]);
      const changedLines = today.sql.split('\n').filter((line, i) => line !== then.sql.split('\n')[i]);
      expect(changedLines).toEqual([now]);
    }
  });

  test('a schema migrated with the released files is accepted by verifySchema and migrate; its ledger keeps the released checksums', async () => {
    await withClient(async (client) => {
      await expect(verifySchema(client, schema)).resolves.toBe(loadMigrations().length);
      await expect(migrate(client, schema)).resolves.toEqual([]);
      const { rows } = await client.query<{ version: number; checksum: string }>(
        `SELECT version, checksum FROM ${escapeIdentifier(schema)}.schema_migrations ORDER BY version`,
      );
      expect(rows).toEqual(released.map((m) => ({ version: m.version, checksum: m.checksum })));
    });
  });

  test.each([
    [
      'a changed statement',
      '0002_ordering.sql',
      (sql: string) => sql.replace('WHERE published_at IS NULL AND partition_key IS NOT NULL', 'WHERE published_at IS NULL'),
    ],
    ['a further comment edit', '0001_messages.sql', (sql: string) => `${sql}\n-- an innocent-looking edit\n`],
  ] as const)('on that schema, %s is still MIGRATION_CHANGED', async (_what, file, edit) => {
    const dir = editedMigrationsDir({ [file]: edit });
    dirs.push(dir);
    const changed = loadMigrations(dir);
    const target = changed.find((m) => m.fileName === file)!;
    expect(target.sql).not.toBe(loadMigrations().find((m) => m.fileName === file)!.sql);
    await withClient(async (client) => {
      for (const attempt of [() => migrate(client, schema, changed), () => verifySchema(client, schema, changed)]) {
        const err = await rejection(attempt());
        expect(err).toBeInstanceOf(OutboxError);
        expect((err as OutboxError).code).toBe('MIGRATION_CHANGED');
        expect(err.message).toContain(file);
      }
    });
  });
});
