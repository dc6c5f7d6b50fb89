import { errorMessage, OutboxError } from '../errors';

/**
 * The one table of what a failure means, for the relay, its commands and the consumer
 * library alike:
 *
 * - `away`: the dependency cannot do any work now (unreachable, the connection reset or
 *   ended, shutting down, overloaded, a transient conflict). Nobody is to blame: wait,
 *   reconnect, and burn no attempt.
 * - `value`: the dependency refuses a value it was given (PostgreSQL: a data exception,
 *   an integrity violation, a program limit). Waiting does not change the value: it is
 *   that message's own failure.
 * - `setup`: anything else the server answered (a missing table, a privilege revoked,
 *   a queue declared otherwise, bad credentials): nothing works until someone fixes it.
 */
export type FaultKind = 'away' | 'value' | 'setup';

/**
 * PostgreSQL's SQLSTATEs, by class (the first two characters): a connection exception
 * (08), a serialization failure or deadlock (40), too many connections or no resources
 * (53), an operator's shutdown or a cancel such as a statement timeout (57), an I/O or
 * system error (58); a data exception (22: a NUL byte, an invalid byte sequence, a value
 * too long), an integrity violation (23), a program limit such as an index row too
 * large (54).
 */
const SQLSTATE_CLASSES: ReadonlyMap<string, FaultKind> = new Map([
  ['08', 'away'],
  ['40', 'away'],
  ['53', 'away'],
  ['57', 'away'],
  ['58', 'away'],
  ['22', 'value'],
  ['23', 'value'],
  ['54', 'value'],
]);

/** Single SQLSTATEs of other classes. */
const SQLSTATE_CODES: ReadonlyMap<string, FaultKind> = new Map([
  // read_only_sql_transaction: the host turned read-only (a demoted primary, a standby).
  // With a multi-host URL the relay leaves it for the writable one (db/host-picker.ts);
  // with one host there is nowhere to write until it is writable again.
  ['25006', 'away'],
  ['25P03', 'away'], // idle_in_transaction_session_timeout: the server ended the session
  ['55P03', 'away'], // lock_not_available
]);

/** The SQLSTATEs of a server that ended or refused the session (besides class 08). */
const SESSION_ENDED_SQLSTATES: ReadonlySet<string> = new Set(['57P01', '57P02', '57P03']);

/** Node's socket error codes: the connection was refused, reset or never found its host. */
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

/** node-postgres's messages for a connection that is gone. */
const CONNECTION_GONE_MESSAGES = ['Connection terminated', 'connection timeout', 'Client has encountered a connection error'];

/** node-postgres's and the server's messages for a database that is away (the above, and more). */
const DATABASE_AWAY_MESSAGES = [
  ...CONNECTION_GONE_MESSAGES,
  'timeout exceeded when trying to connect',
  'Client was closed',
  'terminating connection',
  'the database system is',
];

const SQLSTATE_SHAPE = /^[0-9A-Z]{5}$/;

/** What a SQLSTATE means (see FaultKind). */
export function sqlStateFault(state: string): FaultKind {
  return SQLSTATE_CODES.get(state) ?? SQLSTATE_CLASSES.get(state.slice(0, 2)) ?? 'setup';
}

/**
 * The SQLSTATE of an error the server sent (pg's DatabaseError, which has a `severity`);
 * undefined for errors of the socket or the driver (`ECONNRESET`, `EPIPE`, timeouts).
 */
export function sqlState(err: unknown): string | undefined {
  const { code, severity } = (err ?? {}) as { code?: unknown; severity?: unknown };
  return typeof severity === 'string' && typeof code === 'string' && SQLSTATE_SHAPE.test(code) ? code : undefined;
}

/** Whether an error carries a SQLSTATE-shaped code (the server's, or one the relay made, like host-picker's 08001). */
export function hasSqlState(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && SQLSTATE_SHAPE.test(code);
}

function codeAndMessage(err: unknown): { code: string | undefined; message: string | undefined } {
  if (typeof err !== 'object' || err === null) return { code: undefined, message: undefined };
  const { code, message } = err as { code?: unknown; message?: unknown };
  return { code: typeof code === 'string' ? code : undefined, message: typeof message === 'string' ? message : undefined };
}

/**
 * Whom a failed statement of one's own concerns, when any failure of it is a database
 * failure (the consumer's inbox statements): no SQLSTATE at all (a refused or dropped
 * socket, a pool timeout) is `away`; else the table.
 */
export function databaseFault(err: unknown): FaultKind {
  const state = sqlState(err);
  return state === undefined ? 'away' : sqlStateFault(state);
}

/**
 * Whether an error means "the database is unreachable or going away" — back off and
 * reconnect without touching any message — rather than a bug or a data problem: a socket
 * error, node-postgres's words for a lost connection, or a SQLSTATE the table calls `away`.
 */
export function isDatabaseAway(err: unknown): boolean {
  const { code, message } = codeAndMessage(err);
  if (code !== undefined && (SOCKET_CODES.has(code) || (SQLSTATE_SHAPE.test(code) && sqlStateFault(code) === 'away'))) return true;
  return message !== undefined && DATABASE_AWAY_MESSAGES.some((m) => message.includes(m));
}

/**
 * Whether the database connection itself is gone or was refused (a socket error,
 * SQLSTATE class 08, the server shutting down) — not a statement that failed on a
 * healthy connection (a lock timeout, a serialization failure). A multi-host pool then
 * looks for the writable host again.
 */
export function isDatabaseConnectionGone(err: unknown): boolean {
  const { code, message } = codeAndMessage(err);
  if (code !== undefined && (code.startsWith('08') || SESSION_ENDED_SQLSTATES.has(code) || SOCKET_CODES.has(code))) return true;
  return message !== undefined && CONNECTION_GONE_MESSAGES.some((m) => message.includes(m));
}

/** Whether an error means a dependency of the relay went away: the broker, or the database (no message or write is to blame). */
export function isOutage(err: unknown): boolean {
  return (err instanceof OutboxError && err.code === 'BROKER_UNAVAILABLE') || isDatabaseAway(err);
}

/**
 * AMQP reply codes: CONNECTION_FORCED (320) is the broker shutting down or an operator
 * closing the connection; ACCESS_REFUSED (403, bad credentials or vhost), NOT_FOUND (404,
 * a missing queue or exchange), PRECONDITION_FAILED (406, a topology the broker's
 * disagrees with) and NOT_ALLOWED (530) refuse what was asked until someone fixes it;
 * any other code the broker closes with (a frame error, a message it cannot take) is
 * about what it received.
 */
const AMQP_REPLY_CODES: ReadonlyMap<number, FaultKind> = new Map([
  [320, 'away'],
  [403, 'setup'],
  [404, 'setup'],
  [406, 'setup'],
  [530, 'setup'],
]);

// amqplib's texts for a close the server initiated: "Connection closed: 501 (FRAME-ERROR) with
// message …", "Channel closed by server: 403 (ACCESS-REFUSED) with message …". A socket
// error ("read ECONNRESET") has no code.
const SERVER_CLOSE = /closed(?: by server)?: (\d{3}) \(/;
/** The reply code inside any of amqplib's texts for a server's answer ("… 404 (NOT-FOUND) …"). */
const REPLY_IN_TEXT = /\b(\d{3}) \(/g;

/** What an AMQP reply code means (see FaultKind; an unknown code is about what the broker received). */
export function amqpReplyFault(replyCode: number): FaultKind {
  return AMQP_REPLY_CODES.get(replyCode) ?? 'value';
}

/**
 * Whether the broker closed a channel or connection because of what it received (a reply
 * code other than CONNECTION_FORCED), as opposed to a network loss or a shutdown; `text`
 * is the close's text as amqplib words it.
 */
export function isClosedForWhatItReceived(text: string): boolean {
  const code = SERVER_CLOSE.exec(text)?.[1];
  return code !== undefined && amqpReplyFault(Number(code)) !== 'away';
}

/**
 * Whether a failure to connect or to declare is a refusal that waiting will not mend:
 * a reply code the table calls `setup` (bad credentials or vhost, a missing queue or
 * exchange, a disagreeing topology), given as the error's code or in its text.
 */
export function isBrokerSetupRefusal(err: unknown): boolean {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'number' && amqpReplyFault(code) === 'setup') return true;
  return [...errorMessage(err).matchAll(REPLY_IN_TEXT)].some((match) => amqpReplyFault(Number(match[1])) === 'setup');
}
