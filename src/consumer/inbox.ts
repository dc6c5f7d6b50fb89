import type { ConsumeMessage } from 'amqplib';
import type { Pool, PoolClient } from 'pg';
import { qualified } from '../db/sql';
import { inTransaction } from '../db/transaction';
import { OutboxError } from '../errors';
import type { InboxMessage, MessageHandler } from './options';

/** The headers the consumer sets on a retried or dead-lettered copy. */
export const HEADER = Object.freeze({
  /** Failed attempts so far. */
  attempts: 'x-outbox-consumer-attempts',
  /** The last attempt's error, on one line. */
  error: 'x-outbox-consumer-error',
  /** The exchange and routing key the message was first published with. */
  exchange: 'x-outbox-consumer-exchange',
  routingKey: 'x-outbox-consumer-routing-key',
});

/** A failure before the handler ran (no database connection, the inbox insert failed): not the message's fault. */
export class InboxUnavailable extends Error {
  override readonly name = 'InboxUnavailable';
}

function decode(msg: ConsumeMessage): unknown {
  const type = msg.properties.contentType as string | undefined;
  if (type === undefined || /^application\/([\w.+-]*\+)?json\b/.test(type)) {
    try {
      return JSON.parse(msg.content.toString('utf8'));
    } catch {
      return msg.content;
    }
  }
  return msg.content;
}

/** A header as a string, when it is one (amqplib decodes long strings as Buffers). */
export function headerText(msg: ConsumeMessage, name: string): string | undefined {
  const value = (msg.properties.headers as Record<string, unknown> | undefined)?.[name];
  if (typeof value === 'string') return value;
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  return undefined;
}

/** Failed attempts recorded on the delivery by an earlier retry (0 on a first delivery). */
export function failedAttempts(msg: ConsumeMessage): number {
  const value = (msg.properties.headers as Record<string, unknown> | undefined)?.[HEADER.attempts];
  const n = typeof value === 'number' ? value : typeof value === 'string' ? Number(value) : 0;
  return Number.isInteger(n) && n > 0 ? n : 0;
}

/** The handler's view of a delivery. */
export function inboxMessage<TPayload>(msg: ConsumeMessage, messageId: string, failures: number): InboxMessage<TPayload> {
  return {
    messageId,
    type: msg.properties.type as string | undefined,
    payload: decode(msg) as TPayload,
    headers: (msg.properties.headers ?? {}) as Record<string, unknown>,
    correlationId: msg.properties.correlationId as string | undefined,
    routingKey: headerText(msg, HEADER.routingKey) ?? msg.fields.routingKey,
    exchange: headerText(msg, HEADER.exchange) ?? msg.fields.exchange,
    attempt: failures + 1,
    raw: msg,
  };
}

/** How the inbox is reached: the pool, the table, the consumer's name. */
export interface InboxTarget<TPayload> {
  readonly pool: Pool;
  /** The qualified inbox table. */
  readonly table: string;
  readonly name: string;
  readonly handler: MessageHandler<TPayload>;
  /** The clients checked out now, so that a shutdown past its timeout can drop them. */
  readonly checkedOut: Set<PoolClient>;
}

/** The inbox table of `schema`, quoted. */
export function inboxTable(schema: string): string {
  return qualified(schema, 'inbox');
}

/**
 * One attempt: a transaction that inserts `(name, message_id)` into the inbox and, when
 * that row is new, runs the handler; then commits. A duplicate's INSERT did nothing, and
 * committing that empty transaction is the same as rolling it back. Concurrent copies of
 * one message serialise on the inbox's primary key: the second waits for the first to
 * commit (then finds the row) or to roll back (then processes it).
 *
 * One round trip more than the handler's own statements: BEGIN and the INSERT are sent
 * apart (the INSERT needs its answer), COMMIT closes.
 *
 * Throws `InboxUnavailable` when it fails before the handler ran. `before`, asked once a
 * client is checked out, may still call the attempt off (`skipped`): a shutdown began.
 */
export async function processOnce<TPayload>(
  target: InboxTarget<TPayload>,
  message: InboxMessage<TPayload>,
  before?: () => boolean,
): Promise<'handled' | 'duplicate' | 'skipped'> {
  let client: PoolClient;
  try {
    client = await target.pool.connect();
  } catch (err: unknown) {
    throw new InboxUnavailable(`cannot reach the inbox database: ${(err as Error)?.message ?? String(err)}`, { cause: err });
  }
  target.checkedOut.add(client);
  let broken: Error | undefined;
  // The connection may drop while the handler runs no query: keep that from crashing
  // the process; the next query fails and the attempt with it.
  const onError = (err: Error): void => {
    broken = err;
  };
  client.on('error', onError);
  let handlerRan = false;
  try {
    if (before && !before()) return 'skipped';
    return await inTransaction(client, async () => {
      const { rowCount } = await client.query(`INSERT INTO ${target.table} (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [
        target.name,
        message.messageId,
      ]);
      if (rowCount === 0) return 'duplicate';
      handlerRan = true;
      await target.handler(message, client);
      return 'handled';
    });
  } catch (err: unknown) {
    if (!handlerRan) throw new InboxUnavailable(`inbox: ${(err as Error)?.message ?? String(err)}`, { cause: err });
    throw err;
  } finally {
    client.off('error', onError);
    // Not checked out any more: a shutdown past its timeout already dropped it.
    if (target.checkedOut.delete(client)) client.release(broken);
  }
}

/** Deletes inbox rows older than `retentionMs`; returns how many. */
export async function cleanupInbox(pool: Pool, retentionMs: number, schema = 'outbox'): Promise<number> {
  if (!Number.isFinite(retentionMs) || retentionMs < 0) throw new OutboxError('INVALID_ARGUMENT', 'cleanupInbox: retentionMs must be ≥ 0');
  const { rowCount } = await pool.query(`DELETE FROM ${inboxTable(schema)} WHERE processed_at < now() - $1 * interval '1 millisecond'`, [
    retentionMs,
  ]);
  return rowCount ?? 0;
}

/** Deletes at most 10,000 expired inbox rows (the periodic cleanup: short transactions). */
export async function cleanupInboxBatch(pool: Pool, table: string, retentionMs: number): Promise<void> {
  await pool.query(
    `DELETE FROM ${table} WHERE ctid IN (SELECT ctid FROM ${table} WHERE processed_at < now() - $1 * interval '1 millisecond' LIMIT 10000)`,
    [retentionMs],
  );
}
