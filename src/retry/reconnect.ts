import { abortableDelay } from '../util/delay';
import { reconnectDelayMs } from '../util/backoff';

/** A failed try, as the caller logs it. */
export interface RetryNotice {
  readonly err: unknown;
  readonly failures: number;
  readonly retryInMs: number;
  /** The first failure and every 10th: log these at warn, the rest at debug. */
  readonly loud: boolean;
}

/** Whether the n-th consecutive failure of an outage is worth a warning in the log. */
export function isLoudFailure(failures: number): boolean {
  return failures === 1 || failures % 10 === 0;
}

/**
 * Runs `attempt` until it succeeds, `signal` aborts (returns undefined) or it throws
 * an error `retryable` refuses (rethrown); waits a capped, jittered backoff between
 * tries and tells `onRetry` about each failure.
 */
export async function keepTrying<T>(
  attempt: (failures: number) => Promise<T>,
  options: { signal: AbortSignal; retryable?: (err: unknown) => boolean; onRetry: (notice: RetryNotice) => void },
): Promise<T | undefined> {
  let failures = 0;
  while (!options.signal.aborted) {
    try {
      return await attempt(failures);
    } catch (err: unknown) {
      if (options.retryable && !options.retryable(err)) throw err;
      failures += 1;
      const retryInMs = reconnectDelayMs(failures);
      options.onRetry({ err, failures, retryInMs, loud: isLoudFailure(failures) });
      await abortableDelay(retryInMs, options.signal);
    }
  }
  return undefined;
}
