import { reconnectDelayMs } from '../retry/backoff';

/**
 * Delay before claiming again when claimed rows had to wait for an earlier message of
 * their key that another batch is publishing right now: it is done in milliseconds.
 */
export const HELD_RETRY_MS = 10;

/** What one turn of a worker ran into. */
export type Turn =
  | { readonly kind: 'batch'; readonly claimed: number; readonly held: number; readonly noProgress: boolean }
  /** The batch threw (database or broker connection lost, or a bug). */
  | { readonly kind: 'error' }
  /** The broker refuses publishes (a resource alarm): publishing would only time out. */
  | { readonly kind: 'broker_blocked' };

export interface ScheduleSettings {
  readonly batchSize: number;
  readonly pollIntervalMs: number;
}

/** What a worker does after a turn. */
export interface NextStep {
  readonly delayMs: number;
  /** Wait for new work (peek, NOTIFY) rather than sleep a fixed time. */
  readonly idle: boolean;
  /** A backlog: wake the other workers so they join in. */
  readonly wakeOthers: boolean;
  readonly consecutiveErrors: number;
}

/**
 * The loop's schedule, pure: 0 after a full batch (and the other workers join in);
 * 10 ms when rows waited for an earlier message of their key in flight elsewhere;
 * after a partial or empty batch, wait for new work; after an error, or a batch whose
 * messages all went without a verdict, capped exponential backoff growing with each
 * consecutive error; while the broker blocks publishers, the poll interval.
 */
export function nextStep(
  turn: Turn,
  consecutiveErrors: number,
  settings: ScheduleSettings,
  backoffMs: (consecutiveErrors: number) => number = reconnectDelayMs,
): NextStep {
  const wait = (delayMs: number, idle = false, errors = 0): NextStep => ({ delayMs, idle, wakeOthers: false, consecutiveErrors: errors });
  switch (turn.kind) {
    case 'broker_blocked':
      return wait(settings.pollIntervalMs, false, consecutiveErrors);
    case 'error':
      return wait(backoffMs(consecutiveErrors + 1), false, consecutiveErrors + 1);
    case 'batch':
      if (turn.noProgress) return wait(backoffMs(consecutiveErrors + 1), false, consecutiveErrors + 1);
      if (turn.held > 0) return wait(Math.min(HELD_RETRY_MS, settings.pollIntervalMs));
      if (turn.claimed >= settings.batchSize) return { delayMs: 0, idle: false, wakeOthers: true, consecutiveErrors: 0 };
      return wait(settings.pollIntervalMs, true);
  }
}
