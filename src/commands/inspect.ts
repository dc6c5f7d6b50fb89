import type { Config } from '../config/load-config';
import { verifySchemaOf } from '../db/migrator';
import { OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { instantText, type InspectedMessage, type Instant, type MessageState } from '../outbox/inspection';
import { InspectStore } from '../outbox/inspect-store';
import { escapeControls } from '../util/terminal-text';
import { isMessageId } from './dead';
import type { Io } from './io';
import { withDatabase } from './with-database';

/** How many of the key's messages ahead `inspect` lists (it counts them all). */
export const INSPECT_FIRST_AHEAD = 5;

const STATE_TEXT: Readonly<Record<MessageState, string>> = {
  'pending-due': 'pending-due (may be published now)',
  'pending-delayed': 'pending-delayed (waits for available_at or its next attempt)',
  'pending-held':
    'pending-held (its destination refuses messages, see last_error: a full queue or one without a leader; sent, costing no attempt, once it takes messages again)',
  parked: 'parked (waits behind earlier messages of its key)',
  published: 'published',
  dead: 'dead (failed OUTBOX_MAX_ATTEMPTS times; dead retry or dead discard)',
  expired: 'expired (reached expires_at unpublished; never sent)',
};

/**
 * `outbox-relay inspect <message_id> [--json]`: one message, every column but its body,
 * its state, and the unpublished messages of its key ahead of it. Which dead messages hold
 * a key follows OUTBOX_ORDERING_ON_DEAD as this command is configured.
 */
export async function inspectCommand(config: Config, log: Logger, io: Io, messageId: string, options: { json?: boolean }): Promise<void> {
  if (!isMessageId(messageId)) throw new OutboxError('INVALID_ARGUMENT', `inspect: "${messageId}" is not a message id (a UUID)`);
  const store = new InspectStore(config.schema);
  const message = await withDatabase(config, log, async (pool) => {
    await verifySchemaOf(pool, config.schema);
    return store.inspect(pool, messageId, { deadHoldsKey: config.orderingOnDead === 'block', firstAhead: INSPECT_FIRST_AHEAD });
  });
  if (!message) throw new OutboxError('NOT_FOUND', `inspect: message ${messageId} not found in schema "${config.schema}"`);
  io.out(options.json ? inspectJson(message) : inspectText(message).join('\n'));
}

const orNull = (instant: Instant | null): string | null => (instant === null ? null : instantText(instant));

/**
 * One JSON object; instants ISO 8601 in UTC (or `infinity` / `-infinity`). The headers
 * come last, as PostgreSQL writes the jsonb: integers of any size stay exact.
 */
export function inspectJson(m: InspectedMessage): string {
  const { headersText, ...columns } = m;
  const shown = {
    ...columns,
    createdAt: instantText(m.createdAt),
    availableAt: instantText(m.availableAt),
    expiresAt: orNull(m.expiresAt),
    dueAt: instantText(m.dueAt),
    nextAttemptAt: orNull(m.nextAttemptAt),
    publishedAt: orNull(m.publishedAt),
    deadAt: orNull(m.deadAt),
    expiredAt: orNull(m.expiredAt),
  };
  return `${JSON.stringify(shown).slice(0, -1)},"headers":${headersText}}`;
}

/** The text form: one column per line, then the key's messages ahead. Stored text shows its control characters escaped. */
export function inspectText(m: InspectedMessage): string[] {
  const field = (name: string, value: string | number | null): string =>
    `${name.padEnd(16)}${typeof value === 'string' ? escapeControls(value) : (value ?? '-')}`;
  const lines = [
    field('message_id', m.messageId),
    field('state', STATE_TEXT[m.state]),
    field('id', m.id),
    field('exchange', m.exchange === '' ? "'' (default exchange: a command to the queue routing_key names)" : m.exchange),
    field('routing_key', m.routingKey),
    field('message_type', m.messageType),
    field('content_type', m.contentType),
    field(m.bodyColumn, `${m.bodyBytes} bytes (${m.bodyColumn === 'payload' ? 'JSON; body is null' : 'raw bytes; payload is null'})`),
    field('headers', m.headersText),
    field('partition_key', m.partitionKey),
    field('correlation_id', m.correlationId),
    field('created_at', instantText(m.createdAt)),
    field('available_at', instantText(m.availableAt)),
    field('expires_at', orNull(m.expiresAt)),
    field('attempts', m.attempts),
    field('next_attempt_at', orNull(m.nextAttemptAt)),
    field('last_error', m.lastError === null ? null : oneLine(m.lastError)),
    field('published_at', orNull(m.publishedAt)),
    field('dead_at', orNull(m.deadAt)),
    field('expired_at', orNull(m.expiredAt)),
  ];
  if (!m.ahead) {
    lines.push(field('ahead', 'no partition key: waits for no other message'));
    return lines;
  }
  const { count, holding, first, key } = m.ahead;
  if (count === 0) {
    lines.push(field('ahead', `nothing unpublished before it in key ${JSON.stringify(key)}`));
    return lines;
  }
  lines.push(
    field(
      'ahead',
      `${count} unpublished message${count === 1 ? '' : 's'} before it in key ${JSON.stringify(key)}, ${holding} holding the key`,
    ),
  );
  for (const a of first) {
    const error = a.lastError === null ? '' : `  ${oneLine(a.lastError)}`;
    lines.push(`  ${a.messageId}  ${a.state}  attempts=${a.attempts}  ${a.holdsKey ? 'holds the key' : 'does not hold the key'}${error}`);
  }
  if (count > first.length) lines.push(`  … and ${count - first.length} more`);
  return lines;
}

function oneLine(text: string): string {
  return escapeControls(text.replace(/\s*\n\s*/g, ' '));
}
