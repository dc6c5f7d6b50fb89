import { OutboxError } from '../errors';

/** The failure of a self-test stopped by a signal (its reason, the signal's name, is said). */
export function interruption(signal: AbortSignal): OutboxError {
  return new OutboxError('CHECK_FAILED', `selftest interrupted${typeof signal.reason === 'string' ? ` by ${signal.reason}` : ''}`);
}

/** `work`, or the interruption as soon as `signal` aborts. */
export async function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw interruption(signal);
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(interruption(signal));
    signal.addEventListener('abort', onAbort, { once: true });
  });
  try {
    return await Promise.race([work, aborted]);
  } finally {
    if (onAbort) signal.removeEventListener('abort', onAbort);
  }
}
