import type { Config } from '../config/load-config';
import { OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { OperatorStore } from '../outbox/operator-store';
import type { Io } from './io';
import { withDatabase } from './with-database';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Validates `<message_id>… | --all`; returns undefined for all. */
export function selectIds(ids: readonly string[], all: boolean | undefined, verb: string): readonly string[] | undefined {
  if (all && ids.length > 0) throw new OutboxError('USAGE', `dead ${verb}: give message ids or --all, not both`);
  if (!all && ids.length === 0) throw new OutboxError('USAGE', `dead ${verb}: give one or more message ids, or --all`);
  const bad = ids.find((id) => !UUID.test(id));
  if (bad !== undefined) throw new OutboxError('INVALID_ARGUMENT', `dead ${verb}: "${bad}" is not a message id (a UUID)`);
  return all ? undefined : ids;
}

export async function deadListCommand(config: Config, log: Logger, io: Io, options: { json?: boolean; limit: number }): Promise<void> {
  const store = new OperatorStore(config.schema);
  const dead = await withDatabase(config, log, (pool) => store.listDead(pool, options.limit));
  if (options.json) {
    io.out(JSON.stringify(dead));
    return;
  }
  if (dead.length === 0) {
    io.out('no dead messages');
    return;
  }
  for (const m of dead) {
    const target = m.exchange === '' ? `queue "${m.routingKey}"` : `exchange "${m.exchange}" key "${m.routingKey}"`;
    io.out(`${m.messageId}  ${m.deadAt.toISOString()}  ${m.messageType ?? '-'}  ${target}  attempts=${m.attempts}  ${m.lastError ?? ''}`);
  }
}

export async function deadRetryCommand(
  config: Config,
  log: Logger,
  io: Io,
  ids: readonly string[],
  all: boolean | undefined,
): Promise<void> {
  const selected = selectIds(ids, all, 'retry');
  const store = new OperatorStore(config.schema);
  const changed = await withDatabase(config, log, (pool) => store.retryDead(pool, selected));
  io.out(`${changed.length} dead message${changed.length === 1 ? '' : 's'} made due again`);
  reportMissing(selected, changed);
}

export async function deadDiscardCommand(
  config: Config,
  log: Logger,
  io: Io,
  ids: readonly string[],
  all: boolean | undefined,
): Promise<void> {
  const selected = selectIds(ids, all, 'discard');
  const store = new OperatorStore(config.schema);
  const deleted = await withDatabase(config, log, (pool) => store.discardDead(pool, selected));
  io.out(`${deleted.length} dead message${deleted.length === 1 ? '' : 's'} discarded`);
  reportMissing(selected, deleted);
}

function reportMissing(selected: readonly string[] | undefined, done: readonly string[]): void {
  if (!selected) return;
  const found = new Set(done.map((id) => id.toLowerCase()));
  const missing = selected.filter((id) => !found.has(id.toLowerCase()));
  if (missing.length > 0) throw new OutboxError('NOT_FOUND', `not dead or not found: ${missing.join(', ')}`);
}
