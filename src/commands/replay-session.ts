import type { MessageSigner } from '../broker/signer';
import { connect } from 'amqplib';
import type { Pool } from 'pg';
import { PublishChannel } from '../broker/publish-channel';
import { publishBatch } from '../broker/publisher';
import { TopologyProbe } from '../broker/topology';
import { redactUrl } from '../config/redact';
import type { OutboxMessage } from '../domain/message';
import type { PublishOutcome } from '../domain/outcome';
import { errorMessage, OutboxError } from '../errors';
import { AUDIT_MAX_IDS, type AuditLog } from '../outbox/audit';
import type { ReplaySelection, ReplayStore } from '../outbox/replay-store';
import { abortableDelay } from '../util/delay';
import { firstThatAnswers } from '../util/first-answer';
import { TokenBucket } from '../util/token-bucket';

/** Rows read per statement: the replay holds at most two pages (the one it sends and the next). */
export const REPLAY_PAGE_ROWS = 500;
/** The most messages published before their confirms are awaited and the progress saved. */
const MAX_CHUNK = 500;
/** The header every message published again carries. */
export const REPLAY_HEADER = 'x-outbox-replay';

/**
 * Messages sent before their confirms are awaited (one chunk): a fifth of a second's
 * worth at `rate`, at most MAX_CHUNK. The chunk is also what a replay killed at the
 * wrong instant may send twice, so a slow replay sends small chunks.
 */
export function chunkSize(rate: number | null): number {
  return rate === null ? MAX_CHUNK : Math.max(1, Math.min(MAX_CHUNK, Math.ceil(rate / 5)));
}

/** The broker side of a replay: its own connection, a confirm channel and a probe for exchanges. */
export interface ReplayBroker {
  readonly channel: PublishChannel;
  readonly probe: TopologyProbe;
  close(): Promise<void>;
}

/** Connects to the first of `urls` that answers, named `connectionName` in the management UI. */
export async function openReplayBroker(urls: readonly string[], connectionName: string): Promise<ReplayBroker> {
  const failures: string[] = [];
  const first = await firstThatAnswers(
    urls,
    (url) => connect(url, { clientProperties: { connection_name: connectionName }, timeout: 10_000 }),
    (url, err) => failures.push(`${redactUrl(url)}: ${errorMessage(err)}`),
  );
  if (!first) throw new OutboxError('BROKER_UNAVAILABLE', `cannot reach the broker: ${failures.join('; ')}`);
  const connected = first.value;
  connected.on('error', () => undefined);
  const channel = new PublishChannel(await connected.createConfirmChannel());
  return {
    channel,
    probe: new TopologyProbe(() => connected.createChannel()),
    close: () => connected.close().catch(() => undefined),
  };
}

/**
 * The messages a replay left out because they cannot be published as things stand:
 * counted per exchange (a missing exchange), per queue (a command the default exchange
 * returned: no queue of that name), and per reason for those the broker cannot take at
 * all (`too_large` for its max message size, `invalid_message` for what AMQP cannot
 * encode). Kept in the audit entry's arguments as `leftOut`.
 */
export interface LeftOut {
  readonly count: number;
  readonly exchanges: Readonly<Record<string, number>>;
  readonly queues: Readonly<Record<string, number>>;
  readonly unpublishable: Readonly<Record<string, number>>;
}

export const NOTHING_LEFT_OUT: LeftOut = Object.freeze({ count: 0, exchanges: {}, queues: {}, unpublishable: {} });

/** `leftOut` as an audit entry's arguments keep it (none when absent). */
export function leftOutOf(args: Readonly<Record<string, unknown>> | undefined): LeftOut {
  const kept = args?.['leftOut'] as Partial<LeftOut> | undefined;
  if (kept === undefined || typeof kept.count !== 'number') return NOTHING_LEFT_OUT;
  return { count: kept.count, exchanges: kept.exchanges ?? {}, queues: kept.queues ?? {}, unpublishable: kept.unpublishable ?? {} };
}

type LeftOutAs = { readonly as: 'exchanges' | 'queues' } | { readonly as: 'unpublishable'; readonly reason: string };

function withLeftOut(leftOut: LeftOut, message: OutboxMessage, why: LeftOutAs): LeftOut {
  const name = 'reason' in why ? why.reason : why.as === 'exchanges' ? message.exchange : message.routingKey;
  const counts = leftOut[why.as];
  return { ...leftOut, count: leftOut.count + 1, [why.as]: { ...counts, [name]: (counts[name] ?? 0) + 1 } };
}

/** Where a replay starts: its audit entry, its cursor, and how many it had published or left out before. */
export interface ReplayStart {
  readonly auditId: string;
  readonly selection: ReplaySelection;
  /** The id of the last message published again and confirmed, or left out ('0': none yet). */
  readonly cursor: string;
  /** Published again so far. */
  readonly done: number;
  readonly leftOut: LeftOut;
  readonly total: number;
}

/** What a run of a replay did. */
export interface ReplayRun {
  /** Published again by this run. */
  readonly replayed: number;
  /** Left out in all runs of this replay (its destination does not exist). */
  readonly leftOut: LeftOut;
}

export interface ReplayDeps {
  readonly pool: Pool;
  readonly store: ReplayStore;
  readonly audit: AuditLog;
  readonly broker: ReplayBroker;
  readonly appId: string;
  /** Signs as the relay does (OUTBOX_SIGNING_KEY_FILE); absent: unsigned. */
  readonly signer?: MessageSigner;
  /** The AMQP `user-id` (OUTBOX_PUBLISH_USER_ID); absent: none. */
  readonly userId?: string;
  readonly publishTimeoutMs: number;
  /** At most this many messages per second; null: as fast as the broker confirms. */
  readonly rate: number | null;
  /** Aborting stops after the chunk in flight is confirmed and saved; a string reason is said. */
  readonly signal: AbortSignal;
  /** After each confirmed chunk: how many are done (published again or left out) in all. */
  readonly onProgress: (done: number) => void;
}

/** The message as the relay published it, plus `x-outbox-replay: true`. */
function replayed(message: OutboxMessage): OutboxMessage {
  return { ...message, headers: { ...message.headers, [REPLAY_HEADER]: true } };
}

function outcomeText(outcome: PublishOutcome): string {
  switch (outcome.kind) {
    case 'returned':
      return `the broker returned it as unroutable (${outcome.replyText}): no queue is bound for its routing key`;
    case 'failed':
      return outcome.error;
    case 'unconfirmed':
      return `no confirm (${outcome.error})`;
    default:
      return `not confirmed (${outcome.kind})`;
  }
}

/** Whether a replayed message is done with: confirmed, an event returned by a named exchange, or expired (not sent). */
function settledOk(outcome: PublishOutcome, message: OutboxMessage): boolean {
  return outcome.kind === 'confirmed' || outcome.kind === 'expired' || (outcome.kind === 'returned' && message.exchange !== '');
}

/** Each message of a chunk, in order: published again, left out (and why), or where the replay stops. */
type Settled =
  { readonly kind: 'replayed' } | ({ readonly kind: 'left out' } & LeftOutAs) | { readonly kind: 'stop'; readonly why: string };

function settle(chunk: readonly OutboxMessage[], outcomes: readonly PublishOutcome[], missing: ReadonlySet<string>): Settled[] {
  let sent = 0;
  return chunk.map((message): Settled => {
    if (missing.has(message.exchange)) return { kind: 'left out', as: 'exchanges' };
    const outcome = outcomes[sent++] as PublishOutcome;
    if (settledOk(outcome, message)) return { kind: 'replayed' };
    // Lasting facts about this message, which no run again would change: a command the
    // default exchange returned (no queue of that name), an exchange deleted since the
    // probe, a message the broker or AMQP cannot take. (A channel the broker closed over
    // it leaves the rest of the chunk unconfirmed: the replay stops there, and a run again
    // goes on after it.) A nack, a timeout or a lost connection may pass: they stop it.
    if (outcome.kind === 'returned') return { kind: 'left out', as: 'queues' };
    if (outcome.kind === 'failed' && outcome.reason === 'unknown_exchange') return { kind: 'left out', as: 'exchanges' };
    if (outcome.kind === 'failed' && (outcome.reason === 'too_large' || outcome.reason === 'invalid_message')) {
      return { kind: 'left out', as: 'unpublishable', reason: outcome.reason };
    }
    return { kind: 'stop', why: outcomeText(outcome) };
  });
}

/**
 * Publishes the selection again after `start.cursor`, in id order (the relays'
 * per-key publish order), chunk by chunk: each chunk is pipelined, its confirms
 * awaited, and the audit entry's cursor and count moved past the settled prefix
 * before the next chunk is sent. A message whose destination does not exist (its exchange,
 * or for a command the queue) is left out and counted, and the replay goes on: that lasts
 * until someone declares it, so stopping there would stop every run again. A nack or a
 * lost connection stops it with an error naming the message; the saved cursor is where
 * the same command run again goes on.
 */
export async function replayMessages(start: ReplayStart, deps: ReplayDeps): Promise<ReplayRun> {
  const { pool, store, audit, broker, signal } = deps;
  const size = chunkSize(deps.rate);
  const bucket = deps.rate === null ? undefined : new TokenBucket(deps.rate, size);
  const knownExchanges = new Set<string>(['']);
  let cursor = start.cursor;
  let done = start.done;
  let leftOut = start.leftOut;
  let replayedNow = 0;
  const handled = (): string => `${(done + leftOut.count).toLocaleString('en-US')} of ${start.total.toLocaleString('en-US')}`;
  const interrupted = (): OutboxError => {
    const why = typeof signal.reason === 'string' ? ` (${signal.reason})` : '';
    return new OutboxError(
      'REPLAY_STOPPED',
      `replay #${start.auditId} interrupted${why} after ${handled()} messages; run the same command again to go on`,
    );
  };
  const stopped = (message: OutboxMessage, why: string): OutboxError =>
    new OutboxError(
      'REPLAY_STOPPED',
      `replay #${start.auditId} stopped at message ${message.messageId}: ${why}; ${handled()} done, run the same command again to go on`,
    );

  let next = store.page(pool, start.selection, cursor, REPLAY_PAGE_ROWS);
  for (;;) {
    const page = await next;
    if (page.length === 0) break;
    const last = page[page.length - 1] as OutboxMessage;
    next = page.length < REPLAY_PAGE_ROWS ? Promise.resolve([]) : store.page(pool, start.selection, last.id, REPLAY_PAGE_ROWS);
    // Read ahead while this page is sent; a failure surfaces when it is awaited.
    next.catch(() => undefined);

    const unknown = [...new Set(page.map((m) => m.exchange))].filter((e) => !knownExchanges.has(e));
    const missing = await broker.probe.missing('exchange', unknown);
    for (const e of unknown) if (!missing.has(e)) knownExchanges.add(e);

    for (let from = 0; from < page.length; from += size) {
      if (signal.aborted) throw interrupted();
      const chunk = page.slice(from, from + size);
      const sendable = chunk.filter((m) => !missing.has(m.exchange));
      let outcomes: PublishOutcome[] = [];
      if (sendable.length > 0) {
        if (bucket) await abortableDelay(bucket.take(sendable.length), signal);
        if (signal.aborted) throw interrupted();
        outcomes = await publishBatch(broker.channel, sendable.map(replayed), {
          appId: deps.appId,
          signer: deps.signer,
          userId: deps.userId,
          timeoutMs: deps.publishTimeoutMs,
        });
      }
      // As the relay counts them (OUTBOX_UNROUTABLE=publish): an event a named exchange
      // routed to no queue was taken by the broker; one that expired meanwhile is left out.
      const settled = settle(chunk, outcomes, missing);
      const stop = settled.findIndex((s) => s.kind === 'stop');
      const prefix = stop < 0 ? chunk.length : stop;
      if (prefix > 0) {
        const sent: OutboxMessage[] = [];
        settled.slice(0, prefix).forEach((s, i) => {
          const message = chunk[i] as OutboxMessage;
          if (s.kind === 'replayed') sent.push(message);
          else if (s.kind === 'left out') leftOut = withLeftOut(leftOut, message, s);
        });
        cursor = (chunk[prefix - 1] as OutboxMessage).id;
        const listed = done < AUDIT_MAX_IDS ? sent.slice(0, AUDIT_MAX_IDS - done).map((m) => m.messageId) : [];
        done += sent.length;
        replayedNow += sent.length;
        await audit.replayProgress(pool, start.auditId, { cursor, count: done, messageIds: listed, finished: false, leftOut });
        deps.onProgress(done + leftOut.count);
      }
      const stopping = settled[stop];
      if (stopping?.kind === 'stop') throw stopped(chunk[stop] as OutboxMessage, stopping.why);
    }
  }
  await audit.finishReplay(pool, start.auditId);
  return { replayed: replayedNow, leftOut };
}
