/**
 * Whether an error means "the database is unreachable or going away" — the relay then
 * backs off and reconnects without touching any message — rather than a bug or a
 * data problem. Keyed by SQLSTATE class/code and by Node's socket error codes.
 */
const CONNECTION_SQLSTATES: ReadonlySet<string> = new Set([
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '25P03', // idle_in_transaction_session_timeout
  '40001', // serialization_failure (transient)
  '40P01', // deadlock_detected (transient)
  '55P03', // lock_not_available
  '57014', // query_canceled (statement timeout)
  // read_only_sql_transaction: the host turned read-only (a demoted primary, a standby).
  // With a multi-host URL the relay leaves it for the writable one (db/host-picker.ts);
  // with one host there is nowhere to write until it is writable again.
  '25006',
]);

/** The SQLSTATEs of a server that ended or refused the session (besides class 08). */
const LOST_SQLSTATES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03']);

const SOCKET_CODES: ReadonlySet<string> = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'ECONNABORTED',
]);

/** Messages of node-postgres for a connection that is gone. */
const LOST_MESSAGES = ['Connection terminated', 'connection timeout', 'Client has encountered a connection error'];

const CONNECTION_MESSAGES = [
  'Connection terminated',
  'connection timeout',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error',
  'Client was closed',
  'terminating connection',
  'the database system is',
];

export function isTransientDatabaseError(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string') {
    if (code.startsWith('08')) return true; // connection_exception class
    if (CONNECTION_SQLSTATES.has(code) || SOCKET_CODES.has(code)) return true;
  }
  const message = (err as { message?: unknown }).message;
  return typeof message === 'string' && CONNECTION_MESSAGES.some((m) => message.includes(m));
}

/**
 * Whether an error means that the connection itself is gone or was refused (a socket
 * error, SQLSTATE class 08, the server shutting down) — not a statement that failed on
 * a healthy connection (a lock timeout, a serialization failure). A multi-host pool then
 * looks for the writable host again.
 */
export function isLostConnection(err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (code.startsWith('08') || LOST_SQLSTATES.has(code) || SOCKET_CODES.has(code))) return true;
  const message = (err as { message?: unknown }).message;
  return typeof message === 'string' && LOST_MESSAGES.some((m) => message.includes(m));
}
