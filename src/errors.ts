/**
 * The closed set of error codes outbox-relay raises on purpose. Each one maps to a
 * CLI exit code (see `exitCodeFor`): configuration and usage problems exit 2, every
 * other expected failure exits 1 with a one-line message and no stack trace.
 */
export type ErrorCode =
  | 'CONFIG_INVALID'
  | 'USAGE'
  | 'SCHEMA_NOT_MIGRATED'
  | 'SCHEMA_TOO_NEW'
  | 'MIGRATION_CHANGED'
  | 'DATABASE_UNAVAILABLE'
  | 'BROKER_UNAVAILABLE'
  | 'CHECK_FAILED'
  | 'PRIVILEGES_MISSING'
  | 'INVALID_ARGUMENT'
  | 'NOT_FOUND'
  /**
   * A replay that did not do it all: stopped before its end (a nack, the broker gone, a
   * signal; its progress is saved), finished with messages left out (their destination
   * does not exist), or not started because the same replay runs elsewhere.
   */
  | 'REPLAY_STOPPED';

/** An expected failure: its message is meant for the operator, on one line. */
export class OutboxError extends Error {
  override readonly name = 'OutboxError';

  constructor(
    readonly code: ErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** Coerces anything thrown into an Error, so `catch (err: unknown)` has one path. */
export function toError(err: unknown): Error {
  if (err instanceof Error) return err;
  if (typeof err === 'string') return new Error(err);
  try {
    return new Error(JSON.stringify(err));
  } catch {
    return new Error(String(err));
  }
}

/** The message of anything thrown, collapsed onto one line. */
export function errorMessage(err: unknown): string {
  const e = toError(err);
  const message = e.message || e.name || 'unknown error';
  return message.replace(/\s*\n\s*/g, ' ').trim();
}

/** CLI exit codes: 2 for bad configuration or usage, 1 for any other failure. */
export function exitCodeFor(err: unknown): 1 | 2 {
  if (err instanceof OutboxError && (err.code === 'CONFIG_INVALID' || err.code === 'USAGE' || err.code === 'INVALID_ARGUMENT')) {
    return 2;
  }
  return 1;
}
