import { randomUUID } from 'node:crypto';
import type { CompiledQuery } from 'kysely';
import { qualified } from '../db/sql';
import { OutboxError } from '../errors';
import type { MessageDefinition } from './define-message';
import { activeTraceHeaders, type TraceHeaders } from './trace-headers';

/**
 * Where `enqueue` writes: the caller's open transaction — a node-postgres client
 * inside `BEGIN` (a `PoolClient` or `Client`), or a Kysely `Transaction`. The message
 * becomes visible to the relay when, and only if, that transaction commits.
 */
export type Executor = SqlClient | KyselyTransaction;

/** What `enqueue` needs of a node-postgres client (any wrapper with this method works). */
export interface SqlClient {
  query(text: string, values?: unknown[]): Promise<unknown>;
}

/**
 * What `enqueue` needs of a Kysely `Transaction`: every `Transaction<DB>`, whatever its
 * `DB`, has it. A `Kysely` instance outside a transaction does not (its `isTransaction`
 * is a `boolean`, not `true`), so passing one does not compile: its INSERT would commit
 * on its own, apart from the caller's change.
 *
 * Declared here instead of imported so that neither the producer nor its types need
 * kysely installed; the query is handed to the caller's transaction, so kysely is only
 * ever reached through it.
 */
export interface KyselyTransaction {
  readonly isTransaction: true;
  executeQuery(query: KyselyCompiledQuery): Promise<unknown>;
}

/** The compiled query `KyselyTransaction.executeQuery` receives: a raw SQL statement, as kysely's `CompiledQuery.raw` builds it. */
export interface KyselyCompiledQuery {
  readonly sql: string;
  readonly parameters: readonly unknown[];
  readonly query: { readonly kind: 'RawNode'; readonly sqlFragments: readonly string[]; readonly parameters: readonly [] };
  readonly queryId: { readonly queryId: string };
}

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

/** One message of `enqueueMany`. */
export interface EnqueueItem<TPayload = unknown> {
  readonly definition: MessageDefinition<TPayload>;
  readonly payload: TPayload;
  readonly options?: EnqueueOptions;
}

/**
 * An item of any payload type: every `EnqueueItem<T>` is one (`MessageDefinition<never>`
 * is what definitions of every payload type have in common).
 */
export interface AnyEnqueueItem {
  readonly definition: MessageDefinition<never>;
  readonly payload: unknown;
  readonly options?: EnqueueOptions;
}

/** The item an `enqueueMany` element must be: an `EnqueueItem` whose payload fits its own definition. */
export type CheckedItem<TItem> = TItem extends { readonly definition: MessageDefinition<infer TPayload> } ? EnqueueItem<TPayload> : never;

/** Builds an item with its payload type checked against the definition. */
export function message<TPayload>(
  definition: MessageDefinition<TPayload>,
  payload: NoInfer<TPayload>,
  options?: EnqueueOptions,
): EnqueueItem<TPayload> {
  return options === undefined ? { definition, payload } : { definition, payload, options };
}

/** Options for the whole call. */
export interface ProducerOptions {
  /** The outbox schema (`OUTBOX_SCHEMA` of the relay). Default `outbox`. */
  readonly schema?: string;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

interface Row {
  message_id: string;
  exchange: string;
  routing_key: string;
  message_type: string;
  payload: unknown;
  body: string | null;
  content_type: string;
  headers: Record<string, unknown>;
  partition_key: string | null;
  correlation_id: string | null;
  available_at: string | null;
  delay_ms: number | null;
  expires_at: string | null;
  ttl_ms: number | null;
}

function invalid(type: string, what: string): OutboxError {
  return new OutboxError('INVALID_ARGUMENT', `enqueue(${type}): ${what}`);
}

function toRow(item: AnyEnqueueItem, active: () => TraceHeaders | undefined): Row {
  const { definition, payload } = item;
  const options = item.options ?? {};
  if (definition === null || typeof definition !== 'object' || typeof definition.type !== 'string') {
    throw new OutboxError('INVALID_ARGUMENT', 'enqueue: the definition must come from defineMessage()');
  }
  const type = definition.type;
  if (payload === undefined || payload === null) throw invalid(type, `payload is ${String(payload)}`);
  // The payload fits its definition: enqueueMany's signature checked each item.
  const route = definition.routingKey as string | ((payload: unknown) => string);
  const routingKey = options.routingKey ?? (typeof route === 'function' ? route(payload) : route);
  if (typeof routingKey !== 'string') throw invalid(type, 'routing key must be a string');
  if (definition.exchange === '' && routingKey === '')
    throw invalid(type, 'a command (default exchange) needs a routing key naming the target queue');
  const messageId = options.messageId ?? randomUUID();
  if (!UUID.test(messageId)) throw invalid(type, `messageId "${messageId}" is not a UUID`);
  if (
    options.headers !== undefined &&
    (options.headers === null || typeof options.headers !== 'object' || Array.isArray(options.headers))
  ) {
    throw invalid(type, 'headers must be an object');
  }
  const headers: Record<string, unknown> = { ...options.headers };
  if (options.traceparent !== undefined) headers['traceparent'] = options.traceparent;
  if (options.tracestate !== undefined) headers['tracestate'] = options.tracestate;
  if (!('traceparent' in headers) && !('tracestate' in headers)) Object.assign(headers, active());
  if (options.availableAt !== undefined && (!(options.availableAt instanceof Date) || Number.isNaN(options.availableAt.getTime()))) {
    throw invalid(type, 'availableAt must be a valid Date');
  }
  if (options.delayMs !== undefined && (!Number.isFinite(options.delayMs) || options.delayMs < 0)) {
    throw invalid(type, 'delayMs must be a finite number ≥ 0');
  }
  if (options.availableAt !== undefined && options.delayMs !== undefined) throw invalid(type, 'give availableAt or delayMs, not both');
  if (options.expiresAt !== undefined && (!(options.expiresAt instanceof Date) || Number.isNaN(options.expiresAt.getTime()))) {
    throw invalid(type, 'expiresAt must be a valid Date');
  }
  if (options.ttlMs !== undefined && (!Number.isFinite(options.ttlMs) || options.ttlMs <= 0)) {
    throw invalid(type, 'ttlMs must be a finite number > 0');
  }
  if (options.expiresAt !== undefined && options.ttlMs !== undefined) throw invalid(type, 'give expiresAt or ttlMs, not both');
  for (const [name, value] of [
    ['partitionKey', options.partitionKey],
    ['correlationId', options.correlationId],
  ] as const) {
    if (value !== undefined && typeof value !== 'string') throw invalid(type, `${name} must be a string`);
  }
  const raw = Buffer.isBuffer(payload);
  if (!raw) {
    let text: string | undefined;
    try {
      text = JSON.stringify(payload);
    } catch (err: unknown) {
      throw invalid(type, `payload is not JSON-serialisable (${(err as Error).message})`);
    }
    if (text === undefined) throw invalid(type, 'payload is not JSON-serialisable');
  }
  return {
    message_id: messageId,
    exchange: definition.exchange,
    routing_key: routingKey,
    message_type: type,
    payload: raw ? null : payload,
    body: raw ? (payload as Buffer).toString('base64') : null,
    content_type: raw && definition.contentType === 'application/json' ? 'application/octet-stream' : definition.contentType,
    headers,
    partition_key: options.partitionKey ?? null,
    correlation_id: options.correlationId ?? null,
    available_at: options.availableAt?.toISOString() ?? null,
    delay_ms: options.delayMs ?? null,
    expires_at: options.expiresAt?.toISOString() ?? null,
    ttl_ms: options.ttlMs ?? null,
  };
}

/**
 * One statement whatever the number of messages: the rows travel as one JSON parameter.
 * Row order is kept (WITH ORDINALITY), so identity ids follow it. `expires_at` is written
 * only when a message has one, so a service may upgrade this library before the outbox
 * schema has the column (migration 0004).
 */
function insertSql(schema: string, withExpiry: boolean): string {
  return `INSERT INTO ${qualified(schema, 'messages')}
    (message_id, exchange, routing_key, message_type, payload, body, content_type, headers, partition_key, correlation_id, available_at${
      withExpiry ? ', expires_at' : ''
    })
  SELECT r.message_id, r.exchange, r.routing_key, r.message_type,
         CASE WHEN r.body IS NULL THEN r.payload END,
         decode(r.body, 'base64'),
         r.content_type, r.headers, r.partition_key, r.correlation_id,
         COALESCE(r.available_at, now() + COALESCE(r.delay_ms, 0) * interval '1 millisecond')${
           withExpiry
             ? `,
         COALESCE(r.expires_at, now() + r.ttl_ms * interval '1 millisecond')`
             : ''
         }
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS e(doc, ord),
         jsonb_to_record(e.doc) AS r(message_id uuid, exchange text, routing_key text, message_type text, payload jsonb,
                                     body text, content_type text, headers jsonb, partition_key text,
                                     correlation_id text, available_at timestamptz, delay_ms double precision,
                                     expires_at timestamptz, ttl_ms double precision)
   ORDER BY e.ord`;
}

function isKysely(executor: Executor): executor is KyselyTransaction {
  return typeof (executor as Partial<KyselyTransaction>).executeQuery === 'function';
}

/**
 * The statement as kysely's `CompiledQuery.raw(text, values)` builds it, without loading
 * kysely; `satisfies` holds the shape to kysely's own type at compile time.
 */
function kyselyQuery(text: string, values: readonly unknown[]): KyselyCompiledQuery {
  const query: KyselyCompiledQuery = {
    sql: text,
    parameters: values,
    query: { kind: 'RawNode', sqlFragments: [text], parameters: [] },
    queryId: { queryId: randomUUID() },
  };
  return query satisfies CompiledQuery;
}

/**
 * Writes many messages with ONE INSERT statement inside the caller's transaction.
 * Items may have different payload types; each payload is checked against its own
 * definition at compile time (build items with `message()`).
 * Validates everything first: a bad argument throws `OutboxError('INVALID_ARGUMENT')`
 * before anything is written. Returns the message ids, in order.
 */
export async function enqueueMany<const TItems extends readonly AnyEnqueueItem[]>(
  executor: Executor,
  items: TItems & { readonly [K in keyof TItems]: CheckedItem<TItems[K]> },
  options: ProducerOptions = {},
): Promise<string[]> {
  if (!Array.isArray(items)) throw new OutboxError('INVALID_ARGUMENT', 'enqueueMany: items must be an array');
  if (items.length === 0) return [];
  // The active context is the same for every item of the call: read once, when first needed.
  let trace: { headers: TraceHeaders | undefined } | undefined;
  const active = (): TraceHeaders | undefined => (trace ??= { headers: activeTraceHeaders() }).headers;
  const rows = items.map((item: AnyEnqueueItem) => toRow(item, active));
  const text = insertSql(
    options.schema ?? 'outbox',
    rows.some((r) => r.expires_at !== null || r.ttl_ms !== null),
  );
  const values = [JSON.stringify(rows)];
  if (isKysely(executor)) await executor.executeQuery(kyselyQuery(text, values));
  else await executor.query(text, values);
  return rows.map((r) => r.message_id);
}

/**
 * Writes one message inside the caller's transaction; the payload's type is checked
 * against the definition at compile time. Returns the message id.
 */
export async function enqueue<TPayload>(
  executor: Executor,
  definition: MessageDefinition<TPayload>,
  payload: NoInfer<TPayload>,
  options?: EnqueueOptions & ProducerOptions,
): Promise<string> {
  const [id] = await enqueueMany(executor, [message(definition, payload, options)], options);
  return id as string;
}
