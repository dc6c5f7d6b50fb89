import type { KeyRow, OutboxMessage } from '../domain/message';
import type { BatchTrace, BatchTracer, TracedOutcome } from '../domain/tracing';
import { inPhase } from './faults';
import type { BackoffPolicy } from '../retry/backoff';
import { keysToCheck, planBatch } from './ordering';
import type { BrokerPort, ClaimPort, Clock, QueuePort } from './ports';
import { sendBatch } from './send';
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
  readonly held: number;
  /** Messages that got a verdict written: published, failed (dead included) or expired. */
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
  /** Spans of the batch and of each message; absent when tracing is off. */
  readonly tracer?: BatchTracer;
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
  const { queue, broker, backoff, clock, tracer } = deps;
  const started = clock.now();
  // Opened once the claim found rows; the batch span ends after the commit or the rollback.
  const spans: { trace?: BatchTrace } = {};
  const claiming = queue.withClaim(async (claim): Promise<Omit<BatchReport, 'durationMs'>> => {
    let claimed = await inPhase('writes', [], () => claim.claim(claimLimit, settings.batchBytes));
    if (claimed.length === 0)
      return { claimed: 0, full: false, messages: [], verdicts: [], parkedBehindKey: 0, held: 0, settled: 0, noProgress: false };
    const full = claimed.length >= claimLimit || bytesOf(claimed) * (1 + 1 / claimed.length) > settings.batchBytes;
    const { claimed: all, keyRows } = await inPhase('writes', claimed, () =>
      withDueBlockers(claim, claimed, settings.orderingOnDead === 'block', clock.now(), settings.batchBytes),
    );
    claimed = all;
    const { plan, verdicts } = await inPhase('messages', claimed, async () => {
      const plan = planBatch(claimed, keyRows, clock.now());
      const trace = (spans.trace = tracer?.start(started, claimed.length, plan.publish));
      const publishStarted = clock.now();
      const outcomes =
        plan.publish.length > 0
          ? await sendBatch(broker, trace?.messages ?? plan.publish, {
              timeoutMs: settings.publishTimeoutMs,
              signal: abandon,
              now: () => clock.now(),
              onSettled: trace?.settled,
            })
          : [];
      const verdicts = decideVerdicts(plan.publish, outcomes, settings, backoff, broker.blockedAtAnyTimeSince(publishStarted), clock.now());
      trace?.decided(verdicts.map(tracedOutcome));
      return { plan, verdicts };
    });
    const marks = marksOf(plan.publish, verdicts);
    const settled = new Set([...marks.published, ...marks.failed.map((f) => f.id), ...marks.expired]);
    await inPhase('writes', claimed, async () => {
      await claim.markPublished(marks.published, settings.retentionMs === 0);
      await claim.markFailed(marks.failed);
      await claim.markExpired(marks.expired);
      await claim.park([...plan.park, ...marks.park]);
    });
    return {
      claimed: claimed.length,
      full,
      messages: plan.publish,
      verdicts,
      parkedBehindKey: plan.park.length,
      held: plan.held + marks.held,
      settled: settled.size,
      noProgress: plan.publish.length > 0 && settled.size === 0 && marks.park.length === 0,
      waitingMessageId: claimed.find((m) => !settled.has(m.id))?.messageId,
    };
  });
  const report = await claiming.catch((err: unknown) => {
    spans.trace?.end(err);
    throw err;
  });
  spans.trace?.end();
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
    case 'held':
    case 'parked':
      return { verdict: verdict.kind };
    default: {
      // unconfirmed (the connection went away), or waiting without an attempt burnt
      const kind: string = verdict.kind;
      return { verdict: kind, error: { reason: kind === 'unconfirmed' ? 'connection_lost' : kind, message: verdict.error } };
    }
  }
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
