import { publishIdentity } from '../broker/signer';
import type { Config } from '../config/load-config';
import { verifySchemaOf } from '../db/migrator';
import type { OutboxMessage } from '../domain/message';
import { OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { AuditLog } from '../outbox/audit';
import { ReplayStore, type ReplaySelection } from '../outbox/replay-store';
import { escapeControls as shown } from '../util/terminal-text';
import type { Io } from './io';
import { parseInstant } from './instant-argument';
import { ReplayLock } from './replay-lock';
import { leftOutError } from './replay-left-out';
import { leftOutOf, openReplayBroker, replayMessages, type ReplayRun } from './replay-session';
import { withDatabase } from './with-database';

/** `outbox-relay replay` as commander hands it over: every value as typed. */
export interface ReplayOptions {
  readonly since?: string;
  readonly until?: string;
  readonly type?: string;
  readonly exchange?: string;
  readonly key?: string;
  readonly routingKey?: string;
  readonly rate?: string;
  readonly dryRun?: boolean;
  readonly restart?: boolean;
  readonly json?: boolean;
}

/** Messages per second when `--rate` is not given. */
export const DEFAULT_REPLAY_RATE = 500;
/** How many message ids `--dry-run` shows. */
const DRY_RUN_IDS = 20;
/** How often a progress line is written to stderr (ms). */
const PROGRESS_EVERY_MS = 5_000;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * The normalised arguments of a replay, as its audit entry keeps them: the selection
 * the user gave (instants in ISO 8601 UTC, ids lowercase, sorted, once each, absent
 * filters null), and what the first run settled (`asOf`, `maxId`, and `until` when
 * it defaulted to the start).
 */
type ReplayArguments = {
  readonly since: string | null;
  readonly until: string | null;
  readonly untilGiven: boolean;
  readonly ids: readonly string[] | null;
  readonly type: string | null;
  readonly exchange: string | null;
  readonly key: string | null;
  readonly routingKey: string | null;
};

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const plural = (n: number, word: string): string => `${fmt(n)} ${word}${n === 1 ? '' : 's'}`;

/** `--rate`: messages per second, or null for `unlimited`. */
export function parseRate(text: string | undefined): number | null {
  if (text === undefined) return DEFAULT_REPLAY_RATE;
  if (text === 'unlimited') return null;
  if (!/^\d+$/.test(text) || Number(text) < 1 || Number(text) > 1_000_000) {
    throw new OutboxError(
      'INVALID_ARGUMENT',
      `replay: --rate "${text}" must be a whole number of messages per second from 1 to 1000000, or unlimited`,
    );
  }
  return Number(text);
}

/** Validates the selection; throws a usage error naming the argument at fault. */
export function normaliseArguments(ids: readonly string[], options: ReplayOptions): ReplayArguments {
  if (ids.length > 0 && options.since !== undefined) throw new OutboxError('USAGE', 'replay: give message ids or --since, not both');
  if (ids.length === 0 && options.since === undefined)
    throw new OutboxError('USAGE', 'replay: give --since TS (and --until TS) or message ids');
  if (options.until !== undefined && options.since === undefined) throw new OutboxError('USAGE', 'replay: --until needs --since');
  const bad = ids.find((id) => !UUID.test(id));
  if (bad !== undefined) throw new OutboxError('INVALID_ARGUMENT', `replay: "${bad}" is not a message id (a UUID)`);
  const since = options.since === undefined ? null : parseInstant('replay: --since', options.since);
  const until = options.until === undefined ? null : parseInstant('replay: --until', options.until);
  if (since && until && until <= since) throw new OutboxError('INVALID_ARGUMENT', 'replay: --until must be later than --since');
  return {
    since: since?.toISOString() ?? null,
    until: until?.toISOString() ?? null,
    untilGiven: until !== null,
    ids: ids.length > 0 ? [...new Set(ids.map((id) => id.toLowerCase()))].sort() : null,
    type: options.type ?? null,
    exchange: options.exchange ?? null,
    key: options.key ?? null,
    routingKey: options.routingKey ?? null,
  };
}

/** The selection an audit entry's arguments describe. */
function selectionOf(args: Record<string, unknown>): ReplaySelection {
  const text = (name: string): string | null => (typeof args[name] === 'string' ? (args[name] as string) : null);
  const date = (name: string): Date | null => (text(name) === null ? null : new Date(text(name) as string));
  return {
    since: date('since'),
    until: date('until'),
    ids: Array.isArray(args['ids']) ? (args['ids'] as string[]) : null,
    type: text('type'),
    exchange: text('exchange'),
    key: text('key'),
    routingKey: text('routingKey'),
    asOf: date('asOf') ?? new Date(0),
    maxId: text('maxId') ?? '0',
  };
}

function describe(args: ReplayArguments, until: string | null): string {
  const parts = [args.ids ? `${plural(args.ids.length, 'id')} given` : `created from ${args.since} until ${until}`];
  if (args.type !== null) parts.push(`type "${shown(args.type)}"`);
  if (args.exchange !== null) parts.push(`exchange "${shown(args.exchange)}"`);
  if (args.routingKey !== null) parts.push(`routing key "${shown(args.routingKey)}"`);
  if (args.key !== null) parts.push(`key "${shown(args.key)}"`);
  return parts.join(', ');
}

function dryRunLine(m: OutboxMessage): string {
  const target = m.exchange === '' ? `queue "${shown(m.routingKey)}"` : `exchange "${shown(m.exchange)}" key "${shown(m.routingKey)}"`;
  return `${m.messageId}  ${m.createdAt.toISOString()}  ${shown(m.messageType ?? '-')}  ${target}  partition ${shown(m.partitionKey ?? '-')}`;
}

/**
 * `outbox-relay replay (--since TS [--until TS] | <message_id>…) [filters] [--dry-run]
 * [--rate N] [--restart] [--json]`: publishes again messages already published and
 * still kept, in id order, at most N per second, on a connection of its own; records
 * it in the audit table and, run again with the same arguments after an interruption,
 * goes on after the last confirmed message. `signal` stops it between chunks.
 */
export async function replayCommand(
  config: Config,
  log: Logger,
  io: Io,
  ids: readonly string[],
  options: ReplayOptions,
  signal: AbortSignal,
): Promise<void> {
  const given = normaliseArguments(ids, options);
  const rate = parseRate(options.rate);
  const store = new ReplayStore(config.schema);
  const audit = new AuditLog(config.schema);
  // What the first run settles, and what the runs record (left out), apart from the
  // arguments given: a run again finds its entry by the rest.
  const resolved = ['asOf', 'maxId', 'leftOut', ...(given.ids === null && !given.untilGiven ? ['until'] : [])];
  const status = options.json ? io.err : io.out;

  await withDatabase(config, log, async (pool) => {
    await verifySchemaOf(pool, config.schema);
    if (given.ids) {
      const missing = await store.unpublished(pool, given.ids);
      if (missing.length > 0) {
        throw new OutboxError(
          'NOT_FOUND',
          `replay: not published, or no longer kept: ${missing.slice(0, 10).join(', ')}${missing.length > 10 ? ', …' : ''}`,
        );
      }
    }
    // Taken before the entry is looked up or made: two identical replays started at once
    // would otherwise each make one and publish everything twice.
    const lock = options.dryRun ? undefined : await ReplayLock.take(pool, store, JSON.stringify(given));
    if (!options.dryRun && lock === undefined) {
      const running = await store.unfinished(pool, given, resolved);
      throw new OutboxError(
        'REPLAY_STOPPED',
        `replay: the same replay${running ? ` (#${running.id})` : ''} is running in another process right now; one replay of a selection runs at a time`,
      );
    }
    try {
      const existing = options.restart ? undefined : await store.unfinished(pool, given, resolved);
      const superseded = options.restart ? await store.unfinished(pool, given, resolved) : undefined;
      const fresh = existing ? undefined : await store.snapshot(pool);
      const args: Record<string, unknown> = existing
        ? existing.arguments
        : {
            ...given,
            until: given.until ?? (given.ids ? null : fresh?.asOf.toISOString()),
            asOf: fresh?.asOf.toISOString(),
            maxId: fresh?.maxId,
          };
      const selection = selectionOf(args);
      const cursor = existing?.cursor ?? '0';
      const done = existing?.count ?? 0;
      const leftOut = leftOutOf(existing?.arguments);
      const what = describe(given, typeof args['until'] === 'string' ? (args['until'] as string) : null);

      if (options.dryRun) {
        const [remaining, first] = await Promise.all([
          store.count(pool, selection, cursor),
          store.page(pool, selection, cursor, DRY_RUN_IDS),
        ]);
        if (options.json) {
          io.out(
            JSON.stringify({ count: remaining, firstIds: first.map((m) => m.messageId), resumes: existing?.id ?? null, selection: args }),
          );
          return;
        }
        const before = done + leftOut.count;
        io.out(
          existing
            ? `would resume replay #${existing.id} after ${fmt(before)} of ${fmt(before + remaining)} messages: ${plural(remaining, 'message')} left (${what})`
            : `would replay ${plural(remaining, 'message')} (${what})`,
        );
        if (first.length > 0) io.out(`the first ${first.length}:`);
        for (const m of first) io.out(`  ${dryRunLine(m)}`);
        return;
      }

      const auditId = existing?.id ?? (await audit.record(pool, { command: 'replay', arguments: args, count: 0, messageIds: [] }));
      if (superseded) await store.supersede(pool, superseded.id, auditId);
      const total = done + leftOut.count + (await store.count(pool, selection, cursor));
      status(
        existing
          ? `resuming replay #${auditId} after ${fmt(done + leftOut.count)} of ${plural(total, 'message')} (${what})`
          : `replay #${auditId}: ${plural(total, 'message')} to publish again (${what}), ${rate === null ? 'as fast as the broker confirms' : `at most ${fmt(rate)} per second`}`,
      );
      const broker = await openReplayBroker(config.amqpUrls, `${config.appId} (outbox-relay replay)`);
      const startedAt = performance.now();
      let run: ReplayRun;
      try {
        let lastProgressAt = startedAt;
        const before = done + leftOut.count;
        run = await replayMessages(
          { auditId, selection, cursor, done, leftOut, total },
          {
            pool,
            store,
            audit,
            broker,
            ...publishIdentity(config),
            publishTimeoutMs: config.publishTimeoutMs,
            rate,
            signal: AbortSignal.any([signal, (lock as ReplayLock).lost]),
            onProgress: (count) => {
              const now = performance.now();
              if (now - lastProgressAt < PROGRESS_EVERY_MS) return;
              lastProgressAt = now;
              io.err(
                `replay #${auditId}: ${fmt(count)} of ${fmt(total)} messages (${fmt((count - before) / ((now - startedAt) / 1000))} per second)`,
              );
            },
          },
        );
      } finally {
        await broker.close();
      }
      const seconds = (performance.now() - startedAt) / 1000;
      const perSecond = seconds > 0 ? run.replayed / seconds : 0;
      if (options.json) {
        io.out(
          JSON.stringify({
            replay: auditId,
            resumed: existing !== undefined,
            replayed: run.replayed,
            total,
            perSecond: Math.round(perSecond),
            seconds,
            leftOut: run.leftOut,
          }),
        );
      } else {
        io.out(
          `replayed ${plural(run.replayed, 'message')} (${fmt(perSecond)} per second) as replay #${auditId}${existing ? `; ${fmt(done + run.replayed)} in all` : ''}`,
        );
      }
      if (run.leftOut.count > 0) throw leftOutError(auditId, run.leftOut, total, args);
    } finally {
      await lock?.release();
    }
  });
}
