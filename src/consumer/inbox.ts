import type { ConsumeMessage } from 'amqplib';
import type { ClientBase, Pool, PoolClient } from 'pg';
import { qualified } from '../db/sql';
import { RELAY_HEADERS } from '../domain/relay-headers';
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

/** A failure that is not the message's: the database away, the inbox unusable. The delivery waits. */
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
    partitionKey: partitionKeyOf(msg),
    position: positionOf(msg),
    raw: msg,
  };
}

/** The relay's `x-outbox-partition-key`; undefined for a message without a key. */
export function partitionKeyOf(msg: ConsumeMessage): string | undefined {
  return headerText(msg, RELAY_HEADERS.partitionKey);
}

/** The relay's `x-outbox-position`, when the message carries it as an integer. */
export function positionOf(msg: ConsumeMessage): number | undefined {
  const value = (msg.properties.headers as Record<string, unknown> | undefined)?.[RELAY_HEADERS.position];
  return typeof value === 'number' && Number.isInteger(value) ? value : undefined;
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
 * Records the message ids of a batch as processed by `name`; returns the ids that were
 * new (the others are duplicates: processed before, or by a copy earlier in the batch).
 * Concurrent copies of one message serialise on the primary key: the second waits for
 * the first's transaction to commit (then it is a duplicate) or roll back (then new).
 * The ids are inserted in sorted order, so two batches never wait for each other's rows
 * in opposite orders (a deadlock).
 */
export async function insertInboxRows(
  client: ClientBase,
  table: string,
  name: string,
  messageIds: readonly string[],
): Promise<Set<string>> {
  if (messageIds.length === 1) {
    const { rowCount } = await client.query(`INSERT INTO ${table} (consumer, message_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [
      name,
      messageIds[0],
    ]);
    return new Set(rowCount === 1 ? messageIds : []);
  }
  const { rows } = await client.query<{ message_id: string }>(
    `INSERT INTO ${table} (consumer, message_id)
       SELECT $1, id FROM unnest($2::text[]) AS ids(id) ORDER BY id
     ON CONFLICT DO NOTHING RETURNING message_id`,
    [name, messageIds],
  );
  return new Set(rows.map((row) => row.message_id));
}

/** Removes the inbox rows of the messages of a batch that were not processed after all (a failed handler). */
export async function deleteInboxRows(client: ClientBase, table: string, name: string, messageIds: readonly string[]): Promise<void> {
  await client.query(`DELETE FROM ${table} WHERE consumer = $1 AND message_id = ANY($2::text[])`, [name, messageIds]);
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
