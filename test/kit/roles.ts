import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { escapeIdentifier, escapeLiteral, type Pool } from 'pg';
import { testDatabaseUrl } from './services';

/** The least-privilege example of the migrations directory (not a migration). */
export const ROLES_FILE = join(__dirname, '..', '..', 'migrations', 'roles.example.sql');

/**
 * migrations/roles.example.sql as psql runs it with `-v name=value`: `:"name"` becomes a
 * quoted identifier, `:'name'` a literal, and DBNAME is psql's own variable. Anything
 * psql-specific beyond that fails here, so the file stays appliable by both.
 */
export function renderRolesSql(vars: Record<string, string>): string {
  const text = readFileSync(ROLES_FILE, 'utf8');
  const value = (name: string): string => {
    const v = vars[name];
    if (v === undefined) throw new Error(`roles.example.sql uses psql variable ${name}, which the test does not set`);
    return v;
  };
  const sql = text
    .replace(/:"([A-Za-z_]+)"/g, (_, name: string) => escapeIdentifier(value(name)))
    .replace(/:'([A-Za-z_]+)'/g, (_, name: string) => escapeLiteral(value(name)));
  const metaCommand = sql.split('\n').find((l) => l.trimStart().startsWith('\\'));
  if (metaCommand) throw new Error(`roles.example.sql contains a psql meta-command: ${metaCommand}`);
  return sql;
}

/** The test database's name, as psql's DBNAME would give it. */
export function testDatabaseName(): string {
  return decodeURIComponent(new URL(testDatabaseUrl()).pathname.slice(1));
}

/** The test database URL, logged in as `role` with `password`. */
export function urlAs(role: string, password: string): string {
  const url = new URL(testDatabaseUrl());
  url.username = role;
  url.password = password;
  return url.toString();
}

/** Drops cluster-wide test roles (what they own or were granted first), those that exist. */
export async function dropRoles(pool: Pool, roles: readonly string[]): Promise<void> {
  for (const role of roles) {
    const exists = await pool.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
    if (exists.rowCount === 0) continue;
    await pool.query(`DROP OWNED BY ${escapeIdentifier(role)}`);
    await pool.query(`DROP ROLE ${escapeIdentifier(role)}`);
  }
}
