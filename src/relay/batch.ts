import type { HoldOrder, KeyRow, OutboxMessage, ParkOrder, ReleaseOrder } from '../domain/message';
import type { BatchTrace, BatchTracer, TracedOutcome } from '../domain/tracing';
import { inPhase } from './faults';
import type { BackoffPolicy } from '../util/backoff';
import type { HeldDestinations, HoldRelease } from './held-destinations';
import { keysToCheck, planBatch, type BatchPlan } from './ordering';
import type { BrokerPort, ClaimPort, Clock, QueuePort } from './ports';
import { sendBatch } from './send';
import { StageTimeline, type StageObserver } from './stage-timeline';
import { decideVerdicts, marksOf, type Verdict, type VerdictSettings } from './verdicts';

/** The settings one batch reads. */
export interface BatchSettings extends VerdictSettings {
  readonly batchSize: number;
  /**
   * Bytes of messages (body and headers, `claimBytes`) a batch holds at most: the claim
   * stops before the message that would exceed it. A message larger than this is claimed
   * alone; the blockers of held rows are claimed within what is left, and one of them
   * beyond it once per batch (without it a key could wait for ever behind a large message).
   */
  readonly batchBytes: number;
  readonly publishTimeoutMs: number;
  /** 0: published messages are deleted at once instead of marked. */
  readonly retentionMs: number;
}

/** What one claim-to-commit pass did: the loop's next delay and every metric and log come from it. */
export interface BatchReport {
  readonly claimed: number;
  /** The claim stopped at its limit of messages or (judged by their average size) of bytes: more may be due. */
  readonly full: boolean;
  /** The messages sent (or meant to be), in id order, and the verdict on each. */
  readonly messages: readonly OutboxMessage[];
  readonly verdicts: readonly Verdict[];
  /** Claimed rows the ordering parked behind a blocker that is not due. */
  readonly parkedBehindKey: number;
  /** Claimed rows waiting for an earlier message of their key in flight elsewhere, or held behind one of this batch. */
  readonly keptBack: number;
  /** Messages that got a verdict written: published, failed (dead included), expired, or waiting for a held destination. */
  readonly settled: number;
  /** Messages were sent but none got a verdict (the broker went away mid-batch). */
  readonly noProgress: boolean;
  /** The oldest claimed message that was neither published nor failed, if any (what a stall is stuck on). */
  readonly waitingMessageId?: string;
  readonly durationMs: number;
}

export interface BatchDeps {
  readonly queue: QueuePort;
  readonly broker: BrokerPort;
  readonly backoff: BackoffPolicy;
  readonly clock: Clock;
  /** The destinations this relay holds (the broker refused messages for them). */
  readonly holds: HeldDestinations;
  /** Spans of the batch and of each message; absent when tracing is off. */
  readonly tracer?: BatchTracer;
  /** Told each published message's stage times (OUTBOX_STAGE_TIMINGS); absent when off. */
  readonly stages?: StageObserver;
}

/**
 * One pass: claim due rows, keep each key's order, send, decide a verdict for every
 * message, write the marks, commit. The claim transaction stays open across the
 * publish (see docs/architecture.md for why): a relay that dies releases its rows at
 * once. Throws when the database or the broker connection fails, and a BatchFault
 * (relay/faults.ts) for any other failure; the transaction is then rolled back and every
 * claimed row stays as it was.
 */
export async function runBatch(
  deps: BatchDeps,
  settings: BatchSettings,
  abandon: AbortSignal,
  claimLimit = settings.batchSize,
): Promise<BatchReport> {
  const { queue, broker, backoff, clock, tracer, holds } = deps;
  const started = clock.now();
  const timeline = deps.stages && new StageTimeline(deps.stages, () => clock.now());
  holds.tick(started);
  // Opened once the claim found rows; the batch span ends after the commit or the rollback.
  const spans: { trace?: BatchTrace } = {};
  const claiming = queue.withClaim(async (claim): Promise<Omit<BatchReport, 'durationMs'>> => {
    // A held destination whose next probe is long overdue: one parked row becomes due, to be
    // it. A destination that flows again and has a release due: its next chunk.
    const now = clock.now();
    const maxRelease = RELEASE_BATCHES * settings.batchSize;
    await inPhase('writes', [], () => release(claim, [...holds.lapses(now), ...holds.releases(now, maxRelease)], holds, clock));
    let claimed = await inPhase('writes', [], () => claim.claim(claimLimit, settings.batchBytes));
    if (claimed.length === 0)
      return { claimed: 0, full: false, messages: [], verdicts: [], parkedBehindKey: 0, keptBack: 0, settled: 0, noProgress: false };
    const full = claimed.length >= claimLimit || bytesOf(claimed) * (1 + 1 / claimed.length) > settings.batchBytes;
    const { claimed: all, keyRows } = await inPhase('writes', claimed, () =>
      withDueBlockers(claim, claimed, settings.orderingOnDead === 'block', clock.now(), settings.batchBytes),
    );
    claimed = all;
    timeline?.claimed();
    const { plan, verdicts } = await inPhase('messages', claimed, async () => {
      const plan = planBatch(claimed, keyRows, clock.now());
      const trace = (spans.trace = tracer?.start(started, claimed.length, plan.publish));
      const publishStarted = clock.now();
      try {
        const outcomes =
          plan.publish.length > 0
            ? await sendBatch(broker, trace?.messages ?? plan.publish, {
                timeoutMs: settings.publishTimeoutMs,
                signal: abandon,
                now: () => clock.now(),
                onSettled: timeline ? (m) => (trace?.settled(m), timeline.settled(m)) : trace?.settled,
                onWritten: timeline && ((m) => timeline.wrote(m)),
                gate: holds,
              })
            : [];
        holds.record(plan.publish, outcomes, publishStarted, clock.now());
        const blocked = broker.blockedAtAnyTimeSince(publishStarted);
        const verdicts = decideVerdicts(plan.publish, outcomes, settings, backoff, blocked, clock.now(), holds);
        trace?.decided(verdicts.map(tracedOutcome));
        return { plan, verdicts };
      } finally {
        holds.probesEnded(plan.publish, clock.now());
      }
    });
    const marks = marksOf(plan.publish, verdicts);
    const parked = splitHeldParks(plan, holds);
    const settled = new Set([
      ...marks.published,
      ...marks.failed.map((f) => f.id),
      ...marks.expired,
      ...plan.publish.filter((_, i) => verdicts[i]?.kind === 'refused' || verdicts[i]?.kind === 'waiting').map((m) => m.id),
    ]);
    await inPhase('writes', claimed, async () => {
      await claim.markPublished(marks.published, settings.retentionMs === 0);
      await claim.markFailed(marks.failed);
      await claim.markExpired(marks.expired);
      await claim.park([...parked.park, ...marks.park]);
      await claim.hold([...parked.hold, ...marks.hold]);
      for (const blockers of parked.blockers) await claim.release(blockers);
      // Destinations that take messages again: their parked rows come back, a chunk at a time.
      await release(claim, holds.releases(clock.now(), maxRelease), holds, clock);
    });
    return {
      claimed: claimed.length,
      full,
      messages: plan.publish,
      verdicts,
      parkedBehindKey: plan.park.length - parked.heldBack,
      keptBack: plan.keptBack + marks.keptBack + parked.heldBack,
      settled: settled.size,
      noProgress: plan.publish.length > 0 && settled.size === 0 && marks.park.length === 0 && marks.hold.length === 0,
      waitingMessageId: claimed.find((m) => !settled.has(m.id))?.messageId,
    };
  });
  const report = await claiming.catch((err: unknown) => {
    spans.trace?.end(err);
    throw err;
  });
  spans.trace?.end();
  timeline?.marked(report.messages.filter((_, i) => report.verdicts[i]?.kind === 'published'));
  return { ...report, durationMs: clock.now() - started };
}

/** A verdict as the message's span shows it. */
function tracedOutcome(verdict: Verdict): TracedOutcome {
  switch (verdict.kind) {
    case 'published':
      return { verdict: 'published', returned: verdict.returned };
    case 'failed':
      return {
        verdict: verdict.dead ? 'dead' : 'failed',
        returned: verdict.returned,
        error: { reason: verdict.reason, message: verdict.error },
      };
    case 'expired':
      return { verdict: 'expired', error: { reason: 'expired', message: 'expired before it could be published' } };
    case 'refused':
      return { verdict: 'refused', error: { reason: 'refused', message: verdict.note } };
    case 'kept_back':
      return { verdict: 'held' };
    case 'parked':
      return { verdict: 'parked' };
    case 'waiting':
      return { verdict: 'held' }; // not sent: its destination is held
    case 'unconfirmed':
      return { verdict: 'unconfirmed', error: { reason: 'connection_lost', message: verdict.error } };
  }
}

/** The most rows one release of a destination that flows again makes due, in batches. */
const RELEASE_BATCHES = 2;

/** Runs `orders` (ClaimPort.release) and tells `holds` how many rows each made due. */
async function release(claim: ClaimPort, orders: readonly HoldRelease[], holds: HeldDestinations, clock: Clock): Promise<void> {
  for (const order of orders) holds.released(order, await claim.release(order), clock.now());
}

/** What becomes of the ordering's park orders behind messages that wait for held destinations. */
interface HeldParks {
  readonly park: ParkOrder[];
  readonly hold: HoldOrder[];
  /** Blockers to make due, by hold. */
  readonly blockers: ReleaseOrder[];
  /** Rows left as they were (claimed again shortly, with their blockers). */
  readonly heldBack: number;
}

/**
 * The ordering's park orders. A row behind a message waiting for a held destination
 * (parked until that hold's horizon) waits for the hold too: while it is held, the row
 * is parked with its note (released with the others); once it flows, the row is left
 * for the next claim and its blocker made due, so that a key whose later messages were
 * released first goes in order without waiting for another chunk.
 */
function splitHeldParks(plan: BatchPlan, holds: HeldDestinations): HeldParks {
  const park: ParkOrder[] = [];
  const hold: HoldOrder[] = [];
  const blockers = new Map<string, { upTo: Date; ids: string[] }>();
  let heldBack = 0;
  for (const order of plan.park) {
    const held = 'at' in order.until ? holds.holdForPark(order.until.at.getTime()) : undefined;
    const blocker = plan.parkedBehind.get(order.id);
    if (!held || !('at' in order.until)) park.push(order);
    else if (!held.flowing || blocker === undefined)
      hold.push({ id: order.id, at: order.until.at, note: held.note, spreadFromId: held.spreadFromId });
    else {
      heldBack += 1;
      const entry = blockers.get(held.note) ?? { upTo: new Date(held.upToMs), ids: [] };
      if (!entry.ids.includes(blocker)) entry.ids.push(blocker);
      blockers.set(held.note, entry);
    }
  }
  const releases = [...blockers].map(([note, { upTo, ids }]) => ({ note, upTo, ids, limit: ids.length }));
  return { park, hold, blockers: releases, heldBack };
}

/** The bytes the claim counted for `messages`. */
function bytesOf(messages: readonly OutboxMessage[]): number {
  return messages.reduce((sum, m) => sum + (m.claimBytes ?? m.content.length), 0);
}

/** Rounds of claiming the blockers of held rows (a chain of them is rare and short). */
const BLOCKER_ROUNDS = 3;

/**
 * The ordering reads of a claim, with the blockers of held rows claimed too when they
 * are due and free: a key's later message that became due before its earlier one (an
 * older `available_at`) is claimed first, and without this its batch would hold it
 * every time while the earlier one waited outside the claim window.
 */
async function withDueBlockers(
  claim: ClaimPort,
  first: readonly OutboxMessage[],
  deadHoldsKey: boolean,
  nowMs: number,
  batchBytes: number,
): Promise<{ claimed: OutboxMessage[]; keyRows: KeyRow[] }> {
  let claimed = [...first];
  let keyRows = await claim.keyRows(keysToCheck(claimed), deadHoldsKey);
  let beyondBudget = false;
  for (let round = 0; round < BLOCKER_ROUNDS; round += 1) {
    const blockers = planBatch(claimed, keyRows, nowMs).dueBlockers;
    if (blockers.length === 0) break;
    // What is left of the budget; the claim returns one row even when nothing is left.
    const left = batchBytes - bytesOf(claimed);
    if (left <= 0 && beyondBudget) break;
    const more = await claim.claimIds(blockers, Math.max(0, left));
    if (more.length === 0) break;
    if (bytesOf(more) > left) beyondBudget = true;
    claimed = [...claimed, ...more];
    keyRows = await claim.keyRows(keysToCheck(claimed), deadHoldsKey);
  }
  return { claimed, keyRows };
}
