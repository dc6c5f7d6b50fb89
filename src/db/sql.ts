import { escapeIdentifier } from 'pg';

/** The schema name as a quoted SQL identifier, safe to place in a statement. */
export function quoteIdent(name: string): string {
  return escapeIdentifier(name);
}

/** `"schema".name` for an object of the outbox schema. */
export function qualified(schema: string, name: string): string {
  return `${escapeIdentifier(schema)}.${escapeIdentifier(name)}`;
}

/** The LISTEN/NOTIFY channel the insert trigger of migration 0001 notifies. */
export function notifyChannel(schema: string): string {
  return `${schema}.messages`;
}
