import { writeSync } from 'node:fs';
import pino, { type DestinationStream, type Logger } from 'pino';
import { maskUrlsInJson } from '../config/redact';
import { terminalSafe } from '../util/terminal-text';

export type { Logger } from 'pino';

/**
 * The root logger: JSON lines on stdout. Code logs URLs through `redactUrl`; as a last
 * line of defence every line passes through `maskUrlsInJson` before it is written, so
 * a URL credential that reaches a log line by another path (a driver's error message
 * quoting a connection string, say) is masked too. That masking only rewrites the
 * contents of JSON strings, so each line stays valid JSON whatever the password. A
 * control character a logged value brings (an exchange name, a broker's error) is
 * written as its JSON escape, so the line cannot act on a terminal showing it.
 */
export function createLogger(options: {
  level: string;
  /** The configured URLs holding credentials (`secretsOf`), looked for whole in each line. */
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
      hooks: { streamWrite: (line: string) => terminalSafe(maskUrlsInJson(line, secrets)) },
    },
    // Synchronous writes: the relay logs per event, not per message, and a log line
    // must not be lost when the process exits right after writing it.
    options.destination ?? fileDescriptor(options.fd ?? 1),
  );
}

/**
 * Log lines to `fd`. A write that fails (a full disk, a closed pipe) never ends the
 * process with a stack trace: the first failure is said in one line on stderr (when the
 * logs go elsewhere), the lines that cannot be written are dropped, and the relay goes
 * on. pino already drops lines quietly after EPIPE.
 */
function fileDescriptor(fd: 1 | 2): DestinationStream {
  const destination = pino.destination({ fd, sync: true });
  let said = false;
  destination.on('error', (err: NodeJS.ErrnoException) => {
    if (said || err.code === 'EPIPE' || fd === 2) return;
    said = true;
    try {
      writeSync(2, `outbox-relay: cannot write log lines to stdout (${err.code ?? err.message}); dropping them\n`);
    } catch {
      // stderr is gone too: nothing left to tell.
    }
  });
  return destination;
}
