import pino, { type DestinationStream, type Logger } from 'pino';
import { maskSecrets } from '../config/redact';

export type { Logger } from 'pino';

/**
 * The root logger: JSON lines on stdout. Every line passes through `maskSecrets`
 * before it is written, so a password that reaches a log line by any path (a driver's
 * error message, say) is still masked.
 */
export function createLogger(options: {
  level: string;
  secrets: readonly string[];
  /** Default: stdout (1). Commands other than `run` log to stderr (2). */
  fd?: 1 | 2;
  /** For tests: capture lines instead of writing to a file descriptor. */
  destination?: DestinationStream;
}): Logger {
  const { secrets } = options;
  return pino(
    {
      level: options.level,
      base: { service: 'outbox-relay' },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      hooks: secrets.length > 0 ? { streamWrite: (line: string) => maskSecrets(line, secrets) } : {},
    },
    // Synchronous writes: the relay logs per event, not per message, and a log line
    // must not be lost when the process exits right after writing it.
    options.destination ?? pino.destination({ fd: options.fd ?? 1, sync: true }),
  );
}
