import { createHash } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { ClientBase, Pool } from 'pg';
import { OutboxError } from '../errors';
import { ADVISORY_LOCK_NAMESPACE, qualified, quoteIdent } from './sql';
import { inTransaction, withClient } from './transaction';

/** One plain SQL migration file, `NNNN_name.sql`. */
export interface Migration {
  readonly version: number;
  readonly name: string;
  readonly fileName: string;
  readonly sql: string;
  /** sha256 of the file's bytes, stored in the ledger to detect edits. */
  readonly checksum: string;
  /** `checksum`, plus what an earlier release recorded for the same statements (REWORDED_AFTER_RELEASE). */
  readonly acceptedChecksums: readonly string[];
}

/** The `migrations/` directory shipped with the package. */
export const MIGRATIONS_DIR = join(__dirname, '..', '..', 'migrations');

/** The inbox migrations of the idempotent consumer (`migrate --inbox`), with a ledger of their own. */
export const INBOX_MIGRATIONS_DIR = join(MIGRATIONS_DIR, 'inbox');

/** Ledger tables: the outbox's (`migrate`) and the consumer inbox's (`migrate --inbox`). */
export type Ledger = 'schema_migrations' | 'inbox_schema_migrations';

const FILE_PATTERN = /^(\d{4})_([a-z0-9_]+)\.sql$/;

/**
 * Files whose comments were reworded after a release. Their statements are byte for byte
 * the same, so a ledger row with the checksum that release recorded (`released`) is as
 * good as today's. It is accepted only while the file still hashes to `current`: any
 * further edit is MIGRATION_CHANGED again. `released` is this module's checksum (sha256
 * of the bytes) of the file as of commit 7bc2138 (`git show 7bc2138:migrations/<file> |
 * sha256sum`); test/integration/migrations-released.test.ts rebuilds those files from today's by
 * putting the old comment lines back and checks both sums. Only for comment edits: a
 * changed statement needs a new migration file.
 */
const REWORDED_AFTER_RELEASE: Readonly<Record<string, { readonly current: string; readonly released: readonly string[] }>> = {
  '0001_messages.sql': {
    current: '6a3d1d0d0a4b3b3613e5f90b3b33c71ca074ec2973732b3a0a6fd17324fa4f28',
    released: ['de425de425b16569f5c0a72257e9a88849b1771424c0717b68bb6bcb03e9a2db'],
  },
  '0002_ordering.sql': {
    current: '119c89c7a66b5044aad639c13c70fd872039e95b6940054b73fe20663ed465e9',
    released: ['f6b9ee8feb3590a4d0b584504ffc40affae8940ebc44dd48f6a0e8bb7e0135eb'],
  },
};

/** `checksum`, and the released checksums of REWORDED_AFTER_RELEASE while the file is unchanged since. */
function acceptedChecksums(fileName: string, checksum: string): readonly string[] {
  const reworded = REWORDED_AFTER_RELEASE[fileName];
  return Object.freeze(reworded?.current === checksum ? [checksum, ...reworded.released] : [checksum]);
}

/** Reads and orders the migration files of `dir`. */
export function loadMigrations(dir: string = MIGRATIONS_DIR): readonly Migration[] {
  const migrations = readdirSync(dir)
    .map((fileName) => ({ fileName, match: FILE_PATTERN.exec(fileName) }))
    .filter((f): f is { fileName: string; match: RegExpExecArray } => f.match !== null)
    .map(({ fileName, match }) => {
      const sql = readFileSync(join(dir, fileName), 'utf8');
      const checksum = createHash('sha256').update(sql).digest('hex');
      return {
        version: Number(match[1]),
        name: match[2] as string,
        fileName,
        sql,
        checksum,
        acceptedChecksums: acceptedChecksums(fileName, checksum),
      };
    })
    .sort((a, b) => a.version - b.version);
  migrations.forEach((m, index) => {
    if (m.version !== index + 1)
      throw new Error(`migrations must be numbered 0001, 0002, … without gaps; ${m.fileName} is out of sequence`);
  });
  return Object.freeze(migrations);
}

function ledgerDdl(schema: string, ledger: Ledger): string {
  return `CREATE TABLE IF NOT EXISTS ${qualified(schema, ledger)} (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)`;
}

interface LedgerRow {
  version: number;
  name: string;
  checksum: string;
}

async function readLedger(client: ClientBase, schema: string, ledger: Ledger): Promise<LedgerRow[] | undefined> {
  const exists = await client.query<{ exists: boolean }>(`SELECT to_regclass($1) IS NOT NULL AS exists`, [
    `${quoteIdent(schema)}.${ledger}`,
  ]);
  if (!exists.rows[0]?.exists) return undefined;
  const { rows } = await client.query<LedgerRow>(`SELECT version, name, checksum FROM ${qualified(schema, ledger)} ORDER BY version`);
  return rows;
}

function compare(ledger: readonly LedgerRow[], migrations: readonly Migration[]): { pending: Migration[]; unknown: LedgerRow[] } {
  const byVersion = new Map(migrations.map((m) => [m.version, m]));
  const unknown: LedgerRow[] = [];
  for (const row of ledger) {
    const migration = byVersion.get(row.version);
    if (!migration) {
      unknown.push(row);
      continue;
    }
    if (!migration.acceptedChecksums.includes(row.checksum)) {
      throw new OutboxError(
        'MIGRATION_CHANGED',
        `migration ${migration.fileName} was changed after it was applied (checksum differs` +
          ` from the ledger); restore the original file and add a new migration instead`,
      );
    }
  }
  const applied = new Set(ledger.map((r) => r.version));
  return { pending: migrations.filter((m) => !applied.has(m.version)), unknown };
}

function tooNew(schema: string, unknown: readonly LedgerRow[], migrations: readonly Migration[]): OutboxError {
  const newest = Math.max(...unknown.map((r) => r.version));
  return new OutboxError(
    'SCHEMA_TOO_NEW',
    `schema "${schema}" is at migration ${newest}, newer than this outbox-relay knows (${migrations.length}); upgrade outbox-relay`,
  );
}

/**
 * Applies the pending migrations in one transaction, serialised by an advisory lock so
 * that many sidecars starting at once apply each file exactly once. Idempotent: with
 * nothing pending it changes nothing. Returns the migrations it applied.
 */
export async function migrate(
  client: ClientBase,
  schema: string,
  migrations: readonly Migration[] = loadMigrations(),
  ledger: Ledger = 'schema_migrations',
): Promise<readonly Migration[]> {
  return inTransaction(client, async () => {
    await client.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [ADVISORY_LOCK_NAMESPACE, `migrate:${schema}`]);
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    await client.query(ledgerDdl(schema, ledger));
    const pending = await pendingMigrations(client, schema, migrations, ledger);
    for (const migration of pending) {
      await client.query(`SET LOCAL search_path TO ${quoteIdent(schema)}`);
      await client.query(migration.sql);
      await client.query(`INSERT INTO ${qualified(schema, ledger)} (version, name, checksum) VALUES ($1, $2, $3)`, [
        migration.version,
        migration.name,
        migration.checksum,
      ]);
    }
    return pending;
  });
}

/**
 * The migrations not yet applied to `schema` (all of them when it has no ledger), read
 * without changing anything. Throws like `migrate` for a changed file or a newer schema.
 */
export async function pendingMigrations(
  client: ClientBase,
  schema: string,
  migrations: readonly Migration[] = loadMigrations(),
  ledger: Ledger = 'schema_migrations',
): Promise<readonly Migration[]> {
  const applied = (await readLedger(client, schema, ledger)) ?? [];
  const { pending, unknown } = compare(applied, migrations);
  if (unknown.length > 0) throw tooNew(schema, unknown, migrations);
  return pending;
}

/**
 * The SQL `migrate` would run on an empty database, for a DBA to review and apply with
 * psql or another tool. It records itself in the same ledger, so a later
 * `outbox-relay migrate` sees the migrations as applied.
 */
export function renderMigrationSql(
  schema: string,
  migrations: readonly Migration[] = loadMigrations(),
  ledger: Ledger = 'schema_migrations',
): string {
  const parts = [
    `-- outbox-relay migrations for schema ${quoteIdent(schema)}; apply as it is, e.g. psql -v ON_ERROR_STOP=1 -f`,
    'BEGIN;',
    `SELECT pg_advisory_xact_lock(${ADVISORY_LOCK_NAMESPACE}, hashtext('migrate:' || ${escapeLiteral(schema)}));`,
    `CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)};`,
    `${ledgerDdl(schema, ledger)};`,
  ];
  for (const m of migrations) {
    parts.push(
      `\n-- ${m.fileName}`,
      `SET LOCAL search_path TO ${quoteIdent(schema)};`,
      m.sql.trimEnd(),
      `INSERT INTO ${qualified(schema, ledger)} (version, name, checksum) VALUES` +
        ` (${m.version}, ${escapeLiteral(m.name)}, ${escapeLiteral(m.checksum)});`,
    );
  }
  parts.push('COMMIT;', '');
  return parts.join('\n');
}

function migrateCommandFor(ledger: Ledger): string {
  return ledger === 'schema_migrations' ? 'outbox-relay migrate' : 'outbox-relay migrate --inbox';
}

function escapeLiteral(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

/**
 * Checked by `run` and `check` at start: the schema must be migrated to exactly the
 * migrations this build ships. Throws an actionable `OutboxError` otherwise.
 */
export async function verifySchema(
  client: ClientBase,
  schema: string,
  migrations: readonly Migration[] = loadMigrations(),
  ledger: Ledger = 'schema_migrations',
): Promise<number> {
  const applied = await readLedger(client, schema, ledger);
  if (applied === undefined || applied.length === 0) {
    throw new OutboxError('SCHEMA_NOT_MIGRATED', `schema "${schema}" is not migrated: run ${migrateCommandFor(ledger)}`);
  }
  const { pending, unknown } = compare(applied, migrations);
  if (unknown.length > 0) throw tooNew(schema, unknown, migrations);
  if (pending.length > 0) {
    throw new OutboxError(
      'SCHEMA_NOT_MIGRATED',
      `schema "${schema}" lacks migration ${pending.map((m) => m.fileName).join(', ')}: run ${migrateCommandFor(ledger)}`,
    );
  }
  return migrations.length;
}

/**
 * `verifySchema` on a connection of `pool`: the check the relay and every command that
 * reads or writes the outbox run first. Returns the latest applied migration's version.
 */
export function verifySchemaOf(pool: Pool, schema: string): Promise<number> {
  return withClient(pool, (client) => verifySchema(client, schema));
}
