import { backoffMs, reconnectDelayMs } from '../util/backoff';

/**
 * Delay before claiming again when claimed rows had to wait for an earlier message of
 * their key that another batch is publishing right now: it is done in milliseconds.
 */
export const KEPT_BACK_RETRY_MS = 10;

/** What one turn of a worker ran into. */
export type Turn =
  | {
      readonly kind: 'batch';
      readonly claimed: number;
      /** The claim stopped at its limit of messages or bytes; absent: judged by `claimed` against the batch size. */
      readonly full?: boolean;
      readonly keptBack: number;
      readonly noProgress: boolean;
      /** Messages that got a verdict (published, failed or dead); 0 with keptBack > 0: the whole claim waited. */
      readonly settled: number;
    }
  /** Claim again shortly (a recovery step: a batch narrowed down, a failure recorded, a probe passed). */
  | { readonly kind: 'again' }
  /** The batch threw (database or broker connection lost, or a bug). */
  | { readonly kind: 'error' }
  /**
   * Wait a poll interval: the broker refuses publishes (a resource alarm), so publishing
   * would only time out; or the relay's failing writes are not due for a probe yet.
   */
  | { readonly kind: 'wait' };

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
  /** Sleep the whole delay: another worker's wake-up does not cut it short. */
  readonly sleep: boolean;
  readonly consecutiveErrors: number;
  /** Turns in a row whose whole claim waited for keys in flight elsewhere. */
  readonly consecutiveKeptBack: number;
}

/** The streaks a worker carries from turn to turn. */
export interface Streaks {
  readonly consecutiveErrors: number;
  readonly consecutiveKeptBack: number;
}

/**
 * The loop's schedule, pure: 0 after a full batch (and the other workers join in);
 * 10 ms when some rows waited for an earlier message of their key in flight elsewhere;
 * when every claimed row waited (other batches own all the keys it found: more workers
 * than keys can keep busy), a sleep that doubles with each such turn in a row, from
 * 10 ms up to the poll interval — the batches owning those keys go on meanwhile, and
 * claiming the same rows again every few milliseconds only cost the database and the
 * relay; after a partial or empty batch, wait for new work; after an error, or a batch
 * whose messages all went without a verdict, capped exponential backoff growing with
 * each consecutive error; while the broker blocks publishers, the poll interval.
 */
export function nextStep(
  turn: Turn,
  streaks: Streaks,
  settings: ScheduleSettings,
  errorDelayMs: (consecutiveErrors: number) => number = reconnectDelayMs,
): NextStep {
  const { consecutiveErrors } = streaks;
  const wait = (delayMs: number, idle = false, errors = 0): NextStep => ({
    delayMs,
    idle,
    wakeOthers: false,
    sleep: false,
    consecutiveErrors: errors,
    consecutiveKeptBack: 0,
  });
  switch (turn.kind) {
    case 'wait':
      return wait(settings.pollIntervalMs, false, consecutiveErrors);
    case 'error':
      return wait(errorDelayMs(consecutiveErrors + 1), false, consecutiveErrors + 1);
    case 'again':
      return wait(Math.min(KEPT_BACK_RETRY_MS, settings.pollIntervalMs));
    case 'batch': {
      if (turn.noProgress) return wait(errorDelayMs(consecutiveErrors + 1), false, consecutiveErrors + 1);
      if (turn.keptBack > 0 && turn.settled === 0) {
        const keptBack = streaks.consecutiveKeptBack + 1;
        const delayMs = backoffMs(keptBack, { firstMs: KEPT_BACK_RETRY_MS, maxMs: settings.pollIntervalMs, jitter: 'none' });
        return { ...wait(delayMs), sleep: true, consecutiveKeptBack: keptBack };
      }
      if (turn.keptBack > 0) return wait(Math.min(KEPT_BACK_RETRY_MS, settings.pollIntervalMs));
      if (turn.full ?? turn.claimed >= settings.batchSize) return { ...wait(0), wakeOthers: true };
      return wait(settings.pollIntervalMs, true);
    }
  }
}
