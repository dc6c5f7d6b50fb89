import { randomUUID } from 'node:crypto';
import type { MessageDefinition } from './define-message';
import { MAX_JSONB_BYTES, serializeJson } from './json-value';
import { checkOffsetMs, checkText, describe, quoted, timestamptzText, ValueProblem } from './storable';
import type { TraceHeaders } from './trace-headers';

/** Per-message options of `enqueue`. */
export interface EnqueueOptions {
  /** Ordering key, e.g. the aggregate id. */
  readonly partitionKey?: string;
  /** AMQP `correlation-id`. */
  readonly correlationId?: string;
  /** Extra AMQP headers (JSON values). */
  readonly headers?: Readonly<Record<string, unknown>>;
  /**
   * W3C trace context: copied unchanged into the `traceparent` header. When neither this,
   * `tracestate` nor a `traceparent`/`tracestate` key of `headers` is given and the service
   * uses OpenTelemetry, the active span's context is recorded instead.
   */
  readonly traceparent?: string;
  /** W3C trace state: copied unchanged into the `tracestate` header. */
  readonly tracestate?: string;
  /** Not published before this instant. */
  readonly availableAt?: Date;
  /** Not published before this many ms from now (database clock). */
  readonly delayMs?: number;
  /** Not published at or after this instant: the message then expires, unsent (the row's `expires_at`). */
  readonly expiresAt?: Date;
  /** Not published this many ms or more from now (database clock); the other way to set `expires_at`. */
  readonly ttlMs?: number;
  /** The AMQP `message-id`; generated (UUID v4) when absent. */
  readonly messageId?: string;
  /** Overrides the definition's routing key. */
  readonly routingKey?: string;
}

/** One message of a call, checked and written as the JSON object the INSERT reads with jsonb_to_record. */
export interface RowJson {
  readonly messageId: string;
  /** The caller gave the messageId (otherwise it was generated). */
  readonly chosenId: boolean;
  readonly type: string;
  /** A JSON object: the row's columns (payload and headers as JSON values). */
  readonly text: string;
  /** At least the bytes this row takes in the jsonb parameter. */
  readonly jsonbBytes: number;
  /** Whether the row sets expires_at (the INSERT then names the column). */
  readonly expires: boolean;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Bytes of jsonb for a row's own keys and entries, beyond its values. */
const ROW_OVERHEAD_BYTES = 512;

/** A problem that is not about one value: it names the message only. */
export class MessageProblem extends Error {}

/** A string column: storable text, or null when absent. */
function optionalText(path: string, value: unknown): string | null {
  return value === undefined || value === null ? null : checkText(path, value);
}

/** The payload as the row carries it: JSON for the payload column, or base64 for body. */
function payloadJson(payload: unknown): { payload: string; body: string | null; jsonbBytes: number } {
  if (Buffer.isBuffer(payload)) {
    const base64 = payload.toString('base64');
    if (base64.length > MAX_JSONB_BYTES) {
      throw new ValueProblem(
        'payload',
        `is a Buffer of ${payload.length} bytes; the producer writes at most ${Math.floor((MAX_JSONB_BYTES / 4) * 3)} bytes`,
      );
    }
    return { payload: 'null', body: base64, jsonbBytes: base64.length };
  }
  if (payload === undefined || payload === null) throw new ValueProblem('payload', `is ${String(payload)}`);
  const json = serializeJson(payload, 'payload');
  return { payload: json.text, body: null, jsonbBytes: json.jsonbBytes };
}

/** The headers: a plain object of JSON values, with the trace context. */
function headersJson(options: EnqueueOptions, active: () => TraceHeaders | undefined): { text: string; jsonbBytes: number } {
  const given: unknown = options.headers;
  if (given !== undefined && (given === null || typeof given !== 'object' || Array.isArray(given) || given instanceof Map)) {
    throw new ValueProblem('headers', `must be an object, not ${describe(given)}`);
  }
  const headers: Record<string, unknown> = { ...options.headers };
  if (options.traceparent !== undefined) headers['traceparent'] = checkText('traceparent', options.traceparent);
  if (options.tracestate !== undefined) headers['tracestate'] = checkText('tracestate', options.tracestate);
  if (!('traceparent' in headers) && !('tracestate' in headers)) Object.assign(headers, active());
  const json = serializeJson(headers, 'headers');
  if (!json.text.startsWith('{')) throw new ValueProblem('headers', 'must serialise to a JSON object (its toJSON returned something else)');
  return json;
}

/**
 * Checks one message and writes it as the row's JSON: every value is one PostgreSQL
 * stores (see storable.ts and json-value.ts), so the INSERT cannot fail on it. Throws a
 * ValueProblem (naming the field) or a MessageProblem.
 */
export function toRowJson(
  definition: MessageDefinition<unknown>,
  payload: unknown,
  options: EnqueueOptions,
  active: () => TraceHeaders | undefined,
): RowJson {
  const type = definition.type;
  const exchange = checkText('exchange (of the definition)', definition.exchange);
  const contentType = checkText('contentType (of the definition)', definition.contentType);
  if (contentType === '') throw new ValueProblem('contentType (of the definition)', 'must not be empty');
  const messageId = options.messageId ?? randomUUID();
  if (typeof messageId !== 'string' || !UUID.test(messageId)) {
    throw new ValueProblem(
      'messageId',
      typeof messageId === 'string' ? `${quoted(messageId)} is not a UUID` : `must be a UUID string, not ${describe(messageId)}`,
    );
  }
  const body = payloadJson(payload);
  // The payload fits its definition: enqueueMany's signature checked each item.
  const route = definition.routingKey as string | ((payload: unknown) => string);
  const routingKey = checkText('routing key', options.routingKey ?? (typeof route === 'function' ? route(payload) : route));
  if (exchange === '' && routingKey === '')
    throw new MessageProblem('a command (default exchange) needs a routing key naming the target queue');
  const headers = headersJson(options, active);
  if (options.availableAt !== undefined && options.delayMs !== undefined) throw new MessageProblem('give availableAt or delayMs, not both');
  if (options.expiresAt !== undefined && options.ttlMs !== undefined) throw new MessageProblem('give expiresAt or ttlMs, not both');
  const columns = {
    message_id: messageId,
    exchange,
    routing_key: routingKey,
    message_type: checkText('type (of the definition)', type),
    body: body.body,
    content_type: body.body !== null && contentType === 'application/json' ? 'application/octet-stream' : contentType,
    partition_key: optionalText('partitionKey', options.partitionKey),
    correlation_id: optionalText('correlationId', options.correlationId),
    available_at: options.availableAt === undefined ? null : timestamptzText('availableAt', options.availableAt),
    delay_ms: options.delayMs === undefined ? null : checkOffsetMs('delayMs', options.delayMs, false),
    expires_at: options.expiresAt === undefined ? null : timestamptzText('expiresAt', options.expiresAt),
    ttl_ms: options.ttlMs === undefined ? null : checkOffsetMs('ttlMs', options.ttlMs, true),
  };
  const plain = JSON.stringify(columns);
  return {
    messageId,
    chosenId: options.messageId !== undefined,
    type,
    text: `${plain.slice(0, -1)},"payload":${body.payload},"headers":${headers.text}}`,
    jsonbBytes: ROW_OVERHEAD_BYTES + plain.length * 3 + body.jsonbBytes + headers.jsonbBytes,
    expires: columns.expires_at !== null || columns.ttl_ms !== null,
  };
}
