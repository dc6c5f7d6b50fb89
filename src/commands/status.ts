import type { Config } from '../config/load-config';
import { verifySchemaOf } from '../db/migrator';
import type { Logger } from '../observability/logger';
import { instantText } from '../outbox/inspection';
import { readFleet, type FleetView } from '../outbox/fleet-store';
import { StatusStore, type HeldWaiting } from '../outbox/status-store';
import type { Io } from './io';
import { withDatabase } from './with-database';

/**
 * What `status --json` prints: one object. Instants are ISO 8601 in UTC
 * (`2026-11-24T07:12:27.047Z`), or `infinity` / `-infinity`.
 */
export interface StatusReport {
  readonly schema: string;
  readonly pending: number;
  readonly due: number;
  readonly delayed: number;
  readonly dead: number;
  /** Expired messages still retained: they reached expires_at unpublished and are never sent (not counted as dead). */
  readonly expired: number;
  readonly published: number;
  /** Whether `published` is an estimate (a table of more than 100,000 rows is not counted row by row). */
  readonly publishedEstimated: boolean;
  readonly lagSeconds: number;
  readonly oldestPending: { readonly messageId: string; readonly createdAt: string; readonly dueAt: string } | null;
  /** The running replicas (seen within the last 45 s) and which one leads (publishes); `leader` null while none does. */
  readonly relays: FleetView;
  /**
   * Pending messages that wait for destinations (exchange and routing key) the broker
   * refuses messages for — a queue full under x-overflow reject-publish — as their rows
   * say (last_error `destination held: …`): how many, and the destinations with the most.
   */
  readonly held: { readonly messages: number; readonly destinations: readonly HeldWaiting[] };
}

/** How many held destinations `status` names. */
const HELD_SHOWN = 10;

export async function statusCommand(config: Config, log: Logger, io: Io, options: { json?: boolean }): Promise<void> {
  const store = new StatusStore(config.schema);
  const report = await withDatabase(config, log, async (pool): Promise<StatusReport> => {
    await verifySchemaOf(pool, config.schema);
    const [stats, details, held, relays] = await Promise.all([
      store.stats(pool),
      store.statusDetails(pool),
      store.heldWaiting(pool, HELD_SHOWN),
      readFleet(pool, config.schema),
    ]);
    const { count, estimatedRows } = details.published;
    return {
      schema: config.schema,
      pending: stats.due + stats.delayed,
      due: stats.due,
      delayed: stats.delayed,
      dead: stats.dead,
      expired: stats.expired,
      published: count ?? Math.max(0, estimatedRows - stats.due - stats.delayed - stats.dead - stats.expired),
      publishedEstimated: count === null,
      lagSeconds: Math.round(stats.lagSeconds * 1000) / 1000,
      oldestPending: details.oldestPending && {
        messageId: details.oldestPending.messageId,
        createdAt: instantText(details.oldestPending.createdAt),
        dueAt: instantText(details.oldestPending.dueAt),
      },
      held,
      relays,
    };
  });
  if (options.json) {
    io.out(JSON.stringify(report));
    return;
  }
  const oldest = report.oldestPending
    ? `${report.oldestPending.messageId} (created ${report.oldestPending.createdAt}, due ${report.oldestPending.dueAt})`
    : '-';
  io.out(
    [
      `schema          ${report.schema}`,
      `pending         ${report.pending} (due ${report.due}, delayed ${report.delayed})`,
      `dead            ${report.dead}`,
      `expired         ${report.expired} (reached expires_at unpublished; kept for OUTBOX_RETENTION)`,
      report.publishedEstimated
        ? `published       about ${report.published} (estimated from table statistics; kept for OUTBOX_RETENTION)`
        : `published       ${report.published} (kept for OUTBOX_RETENTION)`,
      `lag             ${report.lagSeconds.toFixed(3)} s`,
      `oldest pending  ${oldest}`,
      `relays          ${relaysLine(report.relays)}`,
      `held            ${heldText(report.held)}`,
    ].join('\n'),
  );
}

/** `3 running: leader 550045d0e5b6 (host vm, pid 8299, since …), 2 standbys`, or why none leads. */
function relaysLine(fleet: FleetView): string {
  const running = fleet.replicas.length;
  const leader = fleet.replicas.find((r) => r.role === 'leader');
  const standbys = running - (leader ? 1 : 0);
  const standbyText = `${standbys} ${standbys === 1 ? 'standby' : 'standbys'}`;
  if (running === 0) return 'none running (no replica seen in the last 45 s)';
  if (!leader) return `${running} running, none leading (a takeover takes a few seconds), ${standbyText}`;
  return `${running} running: leader ${leader.replicaId} (host ${leader.host}, pid ${leader.pid}, since ${fleet.leadingSince ?? '?'}), ${standbyText}`;
}

/** The `held` line: what waits for destinations that refuse messages. */
function heldText(held: StatusReport['held']): string {
  if (held.messages === 0) return 'none (no message waits for a destination that refuses messages)';
  const count = held.destinations.length;
  const names = held.destinations.map(
    (d) => `exchange ${JSON.stringify(d.exchange)} routing key ${JSON.stringify(d.routingKey)} (${d.messages})`,
  );
  const more = count === HELD_SHOWN ? ', …' : '';
  return `${held.messages} message${held.messages === 1 ? '' : 's'} wait for ${count === 1 ? 'a destination that refuses' : 'destinations that refuse'} messages (a full queue?): ${names.join(', ')}${more}`;
}
