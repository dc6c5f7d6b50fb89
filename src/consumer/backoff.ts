/**
 * The consumer's waits: reconnecting as the relay does (util/backoff), and the delays of
 * a failed handler's retries.
 */

export { reconnectDelayMs } from '../util/backoff';

/**
 * The wait before retry `failures` of a failed handler: `baseMs` doubling per failure,
 * at most `maxMs`. No jitter: the retry queue expires messages from its head, so a wait
 * is at least this long and at most the longest wait ahead of it in the queue.
 */
export function retryDelayMs(failures: number, baseMs: number, maxMs: number): number {
  return Math.round(Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(failures - 1, 0), 30)));
}
