import { randomUUID } from 'node:crypto';
import type { CompiledQuery } from 'kysely';
import { qualified } from '../db/sql';
import { OutboxError } from '../errors';
import type { MessageDefinition } from './define-message';
import { MAX_JSONB_BYTES } from './json-value';
import { MessageProblem, toRowJson, type EnqueueOptions, type RowJson } from './row';
import { checkText, describe, shown, ValueProblem } from './storable';
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

export type { EnqueueOptions } from './row';

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

/** PostgreSQL's longest identifier (bytes): a longer schema name would be cut to another one. */
const MAX_IDENTIFIER_BYTES = 63;

function invalid(message: string): OutboxError {
  return new OutboxError('INVALID_ARGUMENT', message);
}

/** The schema option: a name PostgreSQL keeps as it is. */
function schemaOf(options: ProducerOptions, call: string): string {
  const schema: unknown = options.schema ?? 'outbox';
  try {
    checkText('schema', schema);
  } catch (err: unknown) {
    if (err instanceof ValueProblem) throw invalid(`${call}: ${err.message}`);
    throw err;
  }
  const bytes = Buffer.byteLength(schema as string, 'utf8');
  if (bytes === 0 || bytes > MAX_IDENTIFIER_BYTES) {
    throw invalid(`${call}: schema must be 1 to ${MAX_IDENTIFIER_BYTES} bytes (a PostgreSQL name), not ${bytes}`);
  }
  return schema as string;
}

/** One item checked and written as its row's JSON; any problem becomes an INVALID_ARGUMENT naming the item and the field. */
function itemRow(item: unknown, where: string, active: () => TraceHeaders | undefined): RowJson {
  if (item === null || typeof item !== 'object')
    throw invalid(`${where}enqueue: each item must be { definition, payload, options }, not ${describe(item)}`);
  const { definition, payload, options } = item as Partial<AnyEnqueueItem>;
  if (definition === null || typeof definition !== 'object' || typeof definition.type !== 'string') {
    throw invalid(`${where}enqueue: the definition must come from defineMessage()`);
  }
  if (options !== undefined && options !== null && typeof options !== 'object') {
    throw invalid(`${where}enqueue(${shown(definition.type)}): options must be an object, not ${describe(options)}`);
  }
  try {
    return toRowJson(definition as MessageDefinition<unknown>, payload, options ?? {}, active);
  } catch (err: unknown) {
    if (err instanceof ValueProblem || err instanceof MessageProblem)
      throw invalid(`${where}enqueue(${shown(definition.type)}): ${err.message}`);
    throw err;
  }
}

/**
 * One statement whatever the number of messages: the rows travel as one JSON parameter.
 * Row order is kept (WITH ORDINALITY), so identity ids follow it. `expires_at` is written
 * only when a message has one, so a service may upgrade this library before the outbox
 * schema has the column (migration 0004). `skipTaken`: a row whose message_id is already
 * in the table is skipped instead of failing the statement (which would abort the
 * caller's transaction); the caller compares the rows written with the rows sent. ON
 * CONFLICT without a target needs no privilege beyond INSERT.
 */
function insertSql(schema: string, withExpiry: boolean, skipTaken: boolean): string {
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
   ORDER BY e.ord${skipTaken ? '\n  ON CONFLICT DO NOTHING' : ''}`;
}

/** The rows an INSERT wrote, as node-postgres (`rowCount`) or kysely (`numAffectedRows`) reports it; undefined when unknown. */
function rowsWritten(result: unknown): number | undefined {
  if (result === null || typeof result !== 'object') return undefined;
  const { rowCount, numAffectedRows } = result as { rowCount?: unknown; numAffectedRows?: unknown };
  if (typeof rowCount === 'number') return rowCount;
  if (typeof numAffectedRows === 'bigint') return Number(numAffectedRows);
  return undefined;
}

/** The error for messages skipped because their messageId was taken: the transaction is still usable. */
function takenIds(call: 'enqueue' | 'enqueueMany', rows: readonly RowJson[], written: number): OutboxError {
  if (call === 'enqueue') {
    const row = rows[0] as RowJson;
    return invalid(
      `enqueue(${shown(row.type)}): messageId ${row.messageId} is already in the outbox; nothing was written (the transaction is still usable)`,
    );
  }
  const given = rows.filter((r) => r.chosenId).map((r) => r.messageId);
  const ids = given.length > 5 ? `${given.slice(0, 5).join(', ')}, …` : given.join(', ');
  return invalid(
    `enqueueMany: ${rows.length - written} of the ${rows.length} messages were not written: their messageId is already in the outbox (one of ${ids}); ` +
      `the other ${written} were written in this transaction, which is still usable: roll it back to undo them`,
  );
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
  if (!Array.isArray(items)) throw invalid(`enqueueMany: items must be an array, not ${describe(items)}`);
  return write(executor, items, options, 'enqueueMany');
}

/** Checks every item, then sends one INSERT; `call` names the function in error messages. */
async function write(
  executor: Executor,
  items: readonly unknown[],
  options: ProducerOptions,
  call: 'enqueue' | 'enqueueMany',
): Promise<string[]> {
  if (options === null || typeof options !== 'object') throw invalid(`${call}: options must be an object, not ${describe(options)}`);
  const schema = schemaOf(options, call);
  if (items.length === 0) return [];
  // The active context is the same for every item of the call: read once, when first needed.
  let trace: { headers: TraceHeaders | undefined } | undefined;
  const active = (): TraceHeaders | undefined => (trace ??= { headers: activeTraceHeaders() }).headers;
  const where = (index: number): string => (call === 'enqueue' ? '' : `enqueueMany items[${index}]: `);
  const firstIndex = new Map<string, number>();
  let jsonbBytes = 0;
  const rows = items.map((item, index) => {
    const row = itemRow(item, where(index), active);
    const earlier = firstIndex.get(row.messageId.toLowerCase());
    if (earlier !== undefined) {
      throw invalid(
        `${where(index)}enqueue(${shown(row.type)}): messageId ${row.messageId} is also the messageId of items[${earlier}]; each message needs its own`,
      );
    }
    firstIndex.set(row.messageId.toLowerCase(), index);
    jsonbBytes += row.jsonbBytes;
    return row;
  });
  if (jsonbBytes > MAX_JSONB_BYTES) {
    throw invalid(
      `${call}: the ${rows.length} message(s) take about ${jsonbBytes} bytes as jsonb, more than the ${MAX_JSONB_BYTES} one INSERT carries; write them in several calls`,
    );
  }
  // A generated id is never taken: only ids the caller chose may meet an earlier message.
  const skipTaken = rows.some((r) => r.chosenId);
  const text = insertSql(
    schema,
    rows.some((r) => r.expires),
    skipTaken,
  );
  const values = [`[${rows.map((r) => r.text).join(',')}]`];
  const result = isKysely(executor) ? await executor.executeQuery(kyselyQuery(text, values)) : await executor.query(text, values);
  const written = skipTaken ? rowsWritten(result) : undefined;
  if (written !== undefined && written < rows.length) throw takenIds(call, rows, written);
  return rows.map((r) => r.messageId);
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
  const [id] = await write(executor, [message(definition, payload, options)], options ?? {}, 'enqueue');
  return id as string;
}
