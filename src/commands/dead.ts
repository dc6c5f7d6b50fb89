import type { PoolClient } from 'pg';
import type { Config } from '../config/load-config';
import { verifySchemaOf } from '../db/migrator';
import { quoteIdent } from '../db/sql';
import { withPoolTransaction } from '../db/transaction';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { AuditLog, type AuditedCommand } from '../outbox/audit';
import { DeadStore, type DeadFilter } from '../outbox/dead-store';
import { escapeControls as shown } from '../util/terminal-text';
import type { Io } from './io';
import { withDatabase } from './with-database';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Whether `text` is a message id as PostgreSQL's uuid reads it in its canonical form (any case). */
export function isMessageId(text: string): boolean {
  return UUID.test(text);
}

/** Validates `<message_id>… | --all`; returns undefined for all. */
export function selectIds(ids: readonly string[], all: boolean | undefined, verb: string): readonly string[] | undefined {
  if (all && ids.length > 0) throw new OutboxError('USAGE', `dead ${verb}: give message ids or --all, not both`);
  if (!all && ids.length === 0) throw new OutboxError('USAGE', `dead ${verb}: give one or more message ids, or --all`);
  const bad = ids.find((id) => !isMessageId(id));
  if (bad !== undefined) throw new OutboxError('INVALID_ARGUMENT', `dead ${verb}: "${bad}" is not a message id (a UUID)`);
  return all ? undefined : ids;
}

/** `dead list`'s options as commander gives them: the filters, each optional, combine. */
export interface DeadListOptions {
  readonly json?: boolean;
  readonly limit: number;
  readonly type?: string;
  readonly exchange?: string;
  readonly key?: string;
  readonly routingKey?: string;
  readonly since?: string;
}

export async function deadListCommand(config: Config, log: Logger, io: Io, options: DeadListOptions): Promise<void> {
  const store = new DeadStore(config.schema);
  const filter: DeadFilter = {
    messageType: options.type,
    exchange: options.exchange,
    partitionKey: options.key,
    routingKey: options.routingKey,
    since: options.since,
  };
  const dead = await withDatabase(config, log, async (pool) => {
    await verifySchemaOf(pool, config.schema);
    // PostgreSQL judges the instant, so that everything a timestamptz takes is accepted.
    const problem = filter.since === undefined ? undefined : await store.instantProblem(pool, filter.since);
    if (problem !== undefined) {
      throw new OutboxError(
        'INVALID_ARGUMENT',
        `dead list: --since ${JSON.stringify(filter.since)} is not a timestamp: ${problem} (give an ISO 8601 instant such as 2026-05-01T12:00:00Z)`,
      );
    }
    return store.listDead(pool, filter, options.limit);
  });
  if (options.json) {
    io.out(JSON.stringify(dead));
    return;
  }
  if (dead.length === 0) {
    const filtered = Object.values(filter).some((v) => v !== undefined);
    io.out(filtered ? 'no dead messages match' : 'no dead messages');
    return;
  }
  for (const m of dead) {
    const target = m.exchange === '' ? `queue "${shown(m.routingKey)}"` : `exchange "${shown(m.exchange)}" key "${shown(m.routingKey)}"`;
    io.out(
      `${m.messageId}  ${m.deadAt.toISOString()}  ${shown(m.messageType ?? '-')}  ${target}  attempts=${m.attempts}  ${shown(m.lastError ?? '')}`,
    );
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
  const store = new DeadStore(config.schema);
  const changed = await audited(config, log, 'dead retry', selected, (client) => store.retryDead(client, selected));
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
  const store = new DeadStore(config.schema);
  const deleted = await audited(config, log, 'dead discard', selected, (client) => store.discardDead(client, selected));
  io.out(`${deleted.length} dead message${deleted.length === 1 ? '' : 's'} discarded`);
  reportMissing(selected, deleted);
}

/**
 * Runs an operator action and its audit entry in one transaction: neither exists without
 * the other. An action that changed no message records nothing. A role that may change
 * the messages but not write the audit changes nothing either.
 */
async function audited(
  config: Config,
  log: Logger,
  command: AuditedCommand,
  selected: readonly string[] | undefined,
  change: (client: PoolClient) => Promise<string[]>,
): Promise<string[]> {
  const audit = new AuditLog(config.schema);
  try {
    return await withDatabase(config, log, async (pool) => {
      await verifySchemaOf(pool, config.schema);
      return withPoolTransaction(pool, async (client) => {
        const changed = await change(client);
        if (changed.length > 0) {
          await audit.record(client, {
            command,
            arguments: selected ? { ids: selected } : { all: true },
            count: changed.length,
            messageIds: changed,
          });
        }
        return changed;
      });
    });
  } catch (err: unknown) {
    if ((err as { code?: unknown }).code === '42501') {
      const schema = quoteIdent(config.schema);
      throw new OutboxError(
        'PRIVILEGES_MISSING',
        `${command}: nothing changed: ${errorMessage(err)} (the role needs SELECT, UPDATE, DELETE on ${schema}.messages and INSERT on ${schema}.audit; see migrations/roles.example.sql)`,
        { cause: err },
      );
    }
    throw err;
  }
}

function reportMissing(selected: readonly string[] | undefined, done: readonly string[]): void {
  if (!selected) return;
  const found = new Set(done.map((id) => id.toLowerCase()));
  const missing = selected.filter((id) => !found.has(id.toLowerCase()));
  if (missing.length > 0) throw new OutboxError('NOT_FOUND', `not dead or not found: ${missing.join(', ')}`);
}
