import { isSelftestMessage } from '../domain/selftest-message';
import { heldNote } from '../domain/held-note';
import { expiryMs, type FailedAttempt, type HoldOrder, type OutboxMessage, type ParkOrder, type ParkUntil } from '../domain/message';
import type { Failure, PublishOutcome } from '../domain/outcome';
import type { BackoffPolicy } from '../util/backoff';
import type { HeldDestinations, HoldPark } from './held-destinations';
import { KeyStops, type StopHold } from './key-stops';
import { PROBE_FIRST_MS } from './probe-schedule';

/**
 * The one decision of a batch about each message it published, from which both the
 * marks written to the table and the metrics and logs are derived (so they cannot
 * disagree):
 * - `published`: confirmed (or returned on a named exchange, counted as published);
 * - `failed`: an attempt burnt, retried after `retryInMs` or dead;
 * - `refused`: the broker nacked it: its destination refuses messages (held), not its
 *   fault; no attempt, it waits until `at` (the next probe, or the hold's horizon) with
 *   `note` as its last_error, and stops its key;
 * - `waiting`: not sent, its destination is held (relay/held-destinations.ts): the same;
 * - `parked`: behind an earlier message of its key that failed or waits for a held
 *   destination (then with that hold's `note`): waits until it is due;
 * - `kept_back`: left as it was for the next claim — behind an earlier message of its key
 *   that got no verdict (`key`), timed out while the broker blocked publishers
 *   (`broker_blocked`), or not sent at all (`not_sent`);
 * - `unconfirmed`: the connection or channel went away before its confirm;
 * - `expired`: its expires_at was reached before it was sent: never sent, and it does
 *   not hold its key.
 */
export type Verdict =
  | { readonly kind: 'published'; readonly returned: boolean }
  | ({ readonly kind: 'failed'; readonly retryInMs: number; readonly dead: boolean; readonly returned: boolean } & Failure)
  | ({ readonly kind: 'refused' } & Omit<HoldOrder, 'id'>)
  | ({ readonly kind: 'waiting' } & Omit<HoldOrder, 'id'>)
  | { readonly kind: 'parked'; readonly until: ParkUntil; readonly hold?: StopHold }
  | { readonly kind: 'kept_back'; readonly cause: 'key' | 'broker_blocked' | 'not_sent' }
  | { readonly kind: 'unconfirmed'; readonly error: string }
  | { readonly kind: 'expired' };

/** The settings the decision reads. */
export interface VerdictSettings {
  readonly maxAttempts: number;
  readonly unroutable: 'publish' | 'retry';
  readonly orderingOnDead: 'skip' | 'block';
}

/**
 * A command (default exchange) that no queue takes is a failure; an event nobody
 * subscribes to yet is published unless OUTBOX_UNROUTABLE=retry.
 */
export function returnCountsAsPublished(message: OutboxMessage, settings: Pick<VerdictSettings, 'unroutable'>): boolean {
  return message.exchange !== '' && settings.unroutable === 'publish';
}

function unroutableError(message: OutboxMessage, replyText: string): string {
  return message.exchange === ''
    ? `returned as unroutable: no queue named "${message.routingKey}" (${replyText})`
    : `returned as unroutable by exchange "${message.exchange}" with routing key "${message.routingKey}" (${replyText})`;
}

/** What a message's own outcome makes of it, before its key is considered. */
type OwnFailure = Failure & { readonly returned: boolean };

function ownVerdict(
  message: OutboxMessage,
  outcome: Exclude<PublishOutcome, { kind: 'refused' | 'destination_held' }>,
  settings: VerdictSettings,
  brokerWasBlocked: boolean,
): Verdict | OwnFailure {
  switch (outcome.kind) {
    case 'confirmed':
      return { kind: 'published', returned: false };
    case 'returned':
      if (returnCountsAsPublished(message, settings)) return { kind: 'published', returned: true };
      return { reason: 'unroutable', error: unroutableError(message, outcome.replyText), returned: true };
    case 'failed':
      // A confirm that timed out while the broker blocked publishers says nothing
      // about the message: no attempt is burnt.
      if (outcome.reason === 'timeout' && brokerWasBlocked) return { kind: 'kept_back', cause: 'broker_blocked' };
      return { reason: outcome.reason, error: outcome.error, returned: false };
    case 'unconfirmed':
      return { kind: 'unconfirmed', error: outcome.error };
    case 'kept_back':
      return { kind: 'kept_back', cause: 'not_sent' };
    case 'expired':
      return { kind: 'expired' };
  }
}

/** What the decision asks of the held destinations (relay/held-destinations.ts). */
export type HoldParks = Pick<HeldDestinations, 'parkOf'>;

/** Without held destinations to ask (a test of the verdicts alone): a refused message waits a first probe's time. */
function parkAlone(message: OutboxMessage, nowMs: number): HoldPark {
  const atMs = nowMs + PROBE_FIRST_MS;
  const note = heldNote({ exchange: message.exchange, routingKey: message.routingKey });
  return { atMs, keyAtMs: atMs, note, spread: false, spreadFromId: message.id };
}

/**
 * Turns outcomes (one per message, in id order) into verdicts. Within a key, a message
 * that is not published stops the key for the rest of the batch: its later messages
 * are not marked (they are published again after it, as duplicates if the broker took
 * them) and, when the stopper waits for a retry or is dead under `block`, they are
 * parked behind it. A retry never waits past the message's expires_at: it is then due
 * at its expiry, found expired, and its key (and what is parked behind it) moves on.
 * A message refused by the broker, or not sent because its destination is held, costs
 * no attempt: `holds` says where it waits (the next probe or the hold's horizon, never
 * past its expiry), and the later messages of its key wait with the hold's note.
 */
export function decideVerdicts(
  messages: readonly OutboxMessage[],
  outcomes: readonly PublishOutcome[],
  settings: VerdictSettings,
  backoff: BackoffPolicy,
  brokerWasBlocked: boolean,
  nowMs = Date.now(),
  holds?: HoldParks,
): Verdict[] {
  const stops = new KeyStops();
  return messages.map((message, index): Verdict => {
    if (stops.isStopped(message)) {
      const until = stops.until(message);
      if (!until) return { kind: 'kept_back', cause: 'key' };
      const hold = stops.hold(message);
      return hold === undefined ? { kind: 'parked', until } : { kind: 'parked', until, hold };
    }
    const outcome = outcomes[index] as PublishOutcome;
    const expiresAt = expiryMs(message);
    if (outcome.kind === 'refused' || outcome.kind === 'destination_held') {
      const refused = outcome.kind === 'refused';
      const park = holds ? holds.parkOf(message, nowMs, refused) : refused ? parkAlone(message, nowMs) : undefined;
      if (!park) {
        // Its destination flows again since it was kept back: claimed again at once.
        stops.stop(message);
        return { kind: 'kept_back', cause: 'not_sent' };
      }
      const { note, spreadFromId } = park;
      stops.stop(message, { at: new Date(Math.min(park.keyAtMs, Math.max(expiresAt, nowMs))) }, { note, spreadFromId });
      const at = new Date(park.atMs);
      return { kind: refused ? 'refused' : 'waiting', at, note, ...(park.spread ? { spreadFromId } : {}) };
    }
    const own = ownVerdict(message, outcome, settings, brokerWasBlocked);
    if ('kind' in own) {
      if (own.kind !== 'published' && own.kind !== 'expired') stops.stop(message);
      return own;
    }
    const { dead, retryInMs } = failedAttempt(message, settings.maxAttempts, backoff, nowMs);
    stops.stop(message, !dead ? { inMs: retryInMs } : settings.orderingOnDead === 'block' ? { forever: true } : undefined);
    return { kind: 'failed', ...own, retryInMs, dead };
  });
}

/**
 * The arithmetic of one failed attempt of `message`, written once: its count of failed
 * attempts with this one, whether that makes it dead, and the wait before its next
 * attempt (the backoff, but never past its expires_at: it is then claimed and expires).
 * A self-test canary is never dead: it is retried until its expires_at, then expires.
 */
export function failedAttempt(
  message: OutboxMessage,
  maxAttempts: number,
  backoff: BackoffPolicy,
  nowMs: number,
): { readonly attempts: number; readonly dead: boolean; readonly retryInMs: number } {
  const attempts = message.attempts + 1;
  const dead = attempts >= maxAttempts && !isSelftestMessage(message);
  const timeLeft = Math.max(0, expiryMs(message) - nowMs);
  return { attempts, dead, retryInMs: Math.min(backoff.delayMs(attempts), timeLeft) };
}

/** What a batch writes to the table for its published messages. */
export interface Marks {
  readonly published: string[];
  readonly failed: FailedAttempt[];
  /** Later messages of a key whose earlier message did not go through. */
  readonly park: ParkOrder[];
  /** Messages held behind an earlier message of their key (claimed again shortly). */
  readonly keptBack: number;
  /** Messages whose expires_at was reached: marked expired, never sent. */
  readonly expired: string[];
  /** Messages that wait for a held destination (refused, not sent, or behind one of their key that does): no attempt. */
  readonly hold: HoldOrder[];
}

export function marksOf(messages: readonly OutboxMessage[], verdicts: readonly Verdict[]): Marks {
  const marks: Marks = { published: [], failed: [], park: [], keptBack: 0, expired: [], hold: [] };
  let keptBack = 0;
  verdicts.forEach((verdict, index) => {
    const { id } = messages[index] as OutboxMessage;
    if (verdict.kind === 'published') marks.published.push(id);
    else if (verdict.kind === 'failed') marks.failed.push({ id, error: verdict.error, retryInMs: verdict.retryInMs, dead: verdict.dead });
    else if (verdict.kind === 'refused' || verdict.kind === 'waiting') {
      const { at, note, spreadFromId } = verdict;
      marks.hold.push(spreadFromId === undefined ? { id, at, note } : { id, at, note, spreadFromId });
    } else if (verdict.kind === 'parked' && verdict.hold !== undefined && 'at' in verdict.until)
      marks.hold.push({ id, at: verdict.until.at, ...verdict.hold });
    else if (verdict.kind === 'parked') marks.park.push({ id, until: verdict.until });
    else if (verdict.kind === 'expired') marks.expired.push(id);
    else if (verdict.kind === 'kept_back' && verdict.cause === 'key') keptBack += 1;
  });
  return { ...marks, keptBack };
}

/** Verdicts and their marks in one call. */
export function decideMarks(
  messages: readonly OutboxMessage[],
  outcomes: readonly PublishOutcome[],
  settings: VerdictSettings,
  backoff: BackoffPolicy,
  brokerWasBlocked: boolean,
  holds?: HoldParks,
  nowMs = Date.now(),
): Marks {
  return marksOf(messages, decideVerdicts(messages, outcomes, settings, backoff, brokerWasBlocked, nowMs, holds));
}
