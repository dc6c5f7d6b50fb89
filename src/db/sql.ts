import { escapeIdentifier } from 'pg';

/** The schema name as a quoted SQL identifier, safe to place in a statement. */
export function quoteIdent(name: string): string {
  return escapeIdentifier(name);
}

/** `"schema".name` for an object of the outbox schema. */
export function qualified(schema: string, name: string): string {
  return `${escapeIdentifier(schema)}.${escapeIdentifier(name)}`;
}

/**
 * First key of every advisory lock this project takes (two-int form), so they never
 * collide with an application's own advisory locks in the one-bigint form.
 */
export const ADVISORY_LOCK_NAMESPACE = 0x6f62_7872; // "obxr"

/** The LISTEN/NOTIFY channel of an outbox: the optional insert trigger and producers notify it. */
export function notifyChannel(schema: string): string {
  return `${schema}.messages`;
}
