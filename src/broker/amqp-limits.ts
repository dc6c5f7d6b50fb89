import type { OutboxMessage } from '../domain/message';
import { encodeHeaders, publishedHeaders } from './headers';

/**
 * AMQP 0-9-1 short strings (`shortstr`: exchange, routing key and the string
 * properties) carry their length in one octet: at most 255 bytes of UTF-8. amqplib
 * throws before sending anything longer ("must be a string (up to 255 chars)").
 */
export const SHORT_STRING_MAX_BYTES = 255;

/**
 * The longest per-message expiration RabbitMQ takes (ms, ten years): a longer one closes
 * the channel (`PRECONDITION_FAILED - invalid expiration`). A message with more time left
 * is sent without an expiration.
 */
export const MAX_EXPIRATION_MS = 315_360_000_000;

/**
 * The AMQP `expiration` of a message with `expiresAt` (epoch ms) sent at `nowMs`: the
 * milliseconds left, at least 1; undefined when it has no limit or more than
 * MAX_EXPIRATION_MS left.
 */
export function expirationOf(expiresAt: number | null | undefined, nowMs: number): string | undefined {
  if (expiresAt === null || expiresAt === undefined) return undefined;
  const left = Math.ceil(expiresAt - nowMs);
  return left > MAX_EXPIRATION_MS ? undefined : String(Math.max(1, left));
}

/** A UTF-16 code unit takes at most 3 bytes of UTF-8: a string this short needs no count. */
const SURELY_SHORT_CHARS = Math.floor(SHORT_STRING_MAX_BYTES / 3);

/** `field is N bytes; AMQP allows at most 255 bytes`, or undefined when `value` fits a short string. */
export function shortStringProblem(field: string, value: string): string | undefined {
  if (value.length <= SURELY_SHORT_CHARS) return undefined;
  const bytes = Buffer.byteLength(value, 'utf8');
  return bytes > SHORT_STRING_MAX_BYTES ? `${field} is ${bytes} bytes; AMQP allows at most ${SHORT_STRING_MAX_BYTES} bytes` : undefined;
}

/**
 * Why amqplib would refuse to send `message` (it throws before writing a frame), as one
 * error naming the column and the limit in bytes; undefined when it can be sent. Checks
 * every value the publisher hands amqplib: the exchange and routing key of
 * `basic.publish`, the short-string properties (message id, type, content type,
 * correlation id, app id), the timestamp (unsigned seconds) and the headers
 * (`encodeHeaders`: keys, integers, size). The broker's own judgements (a missing
 * exchange, a size limit) come later.
 */
export function messageProblem(message: OutboxMessage, appId: string): string | undefined {
  const problem =
    shortStringProblem('exchange', message.exchange) ??
    shortStringProblem('routing_key', message.routingKey) ??
    shortStringProblem('message_id (AMQP message-id)', message.messageId) ??
    (message.messageType === null ? undefined : shortStringProblem('message_type (AMQP type)', message.messageType)) ??
    shortStringProblem('content_type (AMQP content-type)', message.contentType) ??
    (message.correlationId === null ? undefined : shortStringProblem('correlation_id (AMQP correlation-id)', message.correlationId)) ??
    shortStringProblem('OUTBOX_APP_ID (AMQP app-id)', appId);
  if (problem !== undefined) return problem;
  if (message.createdAt.getTime() < 0) return 'created_at (AMQP timestamp) is before 1970; AMQP timestamps are unsigned seconds since 1970';
  const headers = encodeHeaders(publishedHeaders(message));
  return headers.ok ? undefined : headers.error;
}
