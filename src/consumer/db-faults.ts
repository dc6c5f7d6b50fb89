/**
 * What a failed statement of the consumer's own (the inbox insert, a savepoint, the
 * commit) says about whom it concerns, read from PostgreSQL's SQLSTATE:
 *
 * - `away`: the database cannot do any work now — no connection (no SQLSTATE at all: a
 *   refused or dropped socket, a pool timeout), a connection exception (class 08), too
 *   many connections or no resources (53), an operator's shutdown or a cancel (57), an
 *   I/O or system error (58), a host that turned read-only after a failover (25006),
 *   a serialization failure or deadlock (40), a lock not available (55P03). The
 *   delivery waits and tries again; it is nobody's attempt.
 * - `value`: the database refuses a value the delivery brought — a data exception (22:
 *   a NUL byte, an invalid byte sequence, a value too long), an integrity violation
 *   (23), a program limit such as an index row too large (54). Waiting does not change
 *   the value: it is that delivery's own failure, dead-lettered with the reason.
 * - `setup`: anything else (the inbox table missing, a privilege revoked, a syntax the
 *   server does not know): the inbox cannot be used until someone fixes it. Not the
 *   delivery's fault either: it waits, and the log says why at error level.
 */
export type DatabaseFault = 'away' | 'value' | 'setup';

/** SQLSTATE classes (the first two characters) that mean "not now". */
const AWAY_CLASSES = new Set(['08', '40', '53', '57', '58']);
/** Single SQLSTATEs outside those classes that also mean "not now". */
const AWAY_CODES = new Set(['25006', '55P03']);
/** SQLSTATE classes that blame a value. */
const VALUE_CLASSES = new Set(['22', '23', '54']);

/**
 * The SQLSTATE of an error the server sent (pg's DatabaseError, which has a `severity`);
 * undefined for errors of the socket or the driver (`ECONNRESET`, `EPIPE`, timeouts).
 */
export function sqlState(err: unknown): string | undefined {
  const { code, severity } = (err ?? {}) as { code?: unknown; severity?: unknown };
  return typeof severity === 'string' && typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code) ? code : undefined;
}

/** Whom a failed statement concerns (see DatabaseFault). */
export function databaseFault(err: unknown): DatabaseFault {
  const state = sqlState(err);
  if (state === undefined) return 'away';
  if (AWAY_CODES.has(state) || AWAY_CLASSES.has(state.slice(0, 2))) return 'away';
  if (VALUE_CLASSES.has(state.slice(0, 2))) return 'value';
  return 'setup';
}
