import type { ClientBase, Pool } from 'pg';
import { qualified, quoteIdent } from '../db/sql';

/** The columns the relay writes: marks, failures, parking. */
const WRITTEN_COLUMNS = ['published_at', 'attempts', 'last_error', 'next_attempt_at', 'dead_at'] as const;

/**
 * What the connected role lacks of the privileges the relay needs: USAGE on the schema;
 * on `<schema>.messages` SELECT, UPDATE of the columns it writes (table- or column-level
 * grants both count), DELETE (retention cleanup, or delete at publish); on the replicas'
 * tables what coordinating takes. One entry per missing privilege (per table for the
 * replicas' tables), named as GRANT would name it; empty when nothing is missing.
 * `fleet: false` leaves the replicas' tables out (the selftest claims without them).
 */
export async function missingPrivileges(db: Pool | ClientBase, schema: string, options: { fleet?: boolean } = {}): Promise<string[]> {
  const table = qualified(schema, 'messages');
  const { rows } = await db.query<{ usage: boolean; sel: boolean; del: boolean; upd: boolean[] }>(
    `SELECT has_schema_privilege($1, 'USAGE') AS usage,
            has_table_privilege($2, 'SELECT') AS sel,
            has_table_privilege($2, 'DELETE') AS del,
            ARRAY(SELECT has_column_privilege($2, c, 'UPDATE') FROM unnest($3::text[]) WITH ORDINALITY AS u(c, n) ORDER BY n) AS upd`,
    [schema, table, WRITTEN_COLUMNS],
  );
  const row = rows[0];
  if (!row) return [`USAGE on schema ${quoteIdent(schema)}`];
  const missing: string[] = [];
  if (!row.usage) missing.push(`USAGE on schema ${quoteIdent(schema)}`);
  if (!row.sel) missing.push(`SELECT on ${table}`);
  const notUpdatable = WRITTEN_COLUMNS.filter((_, i) => !row.upd[i]);
  if (notUpdatable.length > 0) missing.push(`UPDATE (${notUpdatable.join(', ')}) on ${table}`);
  if (!row.del) missing.push(`DELETE on ${table}`);
  if (!row.usage || options.fleet === false) return missing;
  for (const [name, privileges] of FLEET_PRIVILEGES) missing.push(...(await missingOn(db, qualified(schema, name), privileges)));
  return missing;
}

/** The replicas' coordination (migration 0005): the lease is read and renewed, each replica registers itself. */
const FLEET_PRIVILEGES: readonly (readonly [string, readonly string[]])[] = [
  ['relay_lease', ['SELECT', 'UPDATE']],
  ['relay_replicas', ['SELECT', 'INSERT', 'UPDATE', 'DELETE']],
];

/** What the connected role lacks of `privileges` on `table`: one entry naming them as GRANT would, or none. */
async function missingOn(db: Pool | ClientBase, table: string, privileges: readonly string[]): Promise<string[]> {
  const { rows } = await db.query<{ granted: boolean[] }>(
    `SELECT ARRAY(SELECT has_table_privilege($1, p) FROM unnest($2::text[]) WITH ORDINALITY AS u(p, n) ORDER BY n) AS granted`,
    [table, privileges],
  );
  const granted = rows[0]?.granted ?? [];
  const missing = privileges.filter((_, i) => granted[i] !== true);
  return missing.length === 0 ? [] : [`${missing.join(', ')} on ${table}`];
}

/** What the operator commands and the cleanup do with `<schema>.audit`, as GRANT names it. */
const AUDIT_PRIVILEGES = ['SELECT', 'INSERT', 'UPDATE', 'DELETE'] as const;

/**
 * What the connected role lacks of the privileges on `<schema>.audit`: SELECT (`audit`),
 * INSERT (`dead retry`, `dead discard`, `replay` record what they did), UPDATE (a replay's
 * progress), DELETE (the retention cleanup). One entry naming the missing ones, as GRANT
 * would; empty when nothing is missing.
 */
export async function missingAuditPrivileges(db: Pool | ClientBase, schema: string): Promise<string[]> {
  return missingOn(db, qualified(schema, 'audit'), AUDIT_PRIVILEGES);
}
