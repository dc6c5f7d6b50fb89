import { isDeepStrictEqual } from 'node:util';
import { Kysely, PostgresDialect, sql } from 'kysely';
import { Pool } from 'pg';
import { OutboxError } from '../../src/errors';
import type { Executor } from '../../src/producer/enqueue';
import { OutboxFixture } from './outbox-fixture';
import { testDatabaseUrl } from './services';
import { uniqueName } from './unique-name';

/** What one producer call did inside a business transaction. */
export type Outcome = { readonly ok: true; readonly ids: readonly string[] } | { readonly ok: false; readonly error: unknown };

/** A stored row as the probes compare it: JSON columns as text, instants as epoch milliseconds (text). */
export interface StoredRow {
  readonly message_id: string;
  readonly exchange: string;
  readonly routing_key: string;
  readonly message_type: string;
  readonly payload: string | null;
  readonly body: string | null;
  readonly content_type: string;
  readonly headers: string;
  readonly partition_key: string | null;
  readonly correlation_id: string | null;
  readonly available_ms: string;
  readonly expires_ms: string | null;
  /** available_at - now() in ms (the transaction's clock). */
  readonly delay_ms: number;
  /** expires_at - now() in ms. */
  readonly ttl_ms: number | null;
}

/**
 * A business transaction with a producer call in it, through a node-postgres client or a
 * Kysely transaction: the business row is written before the call and another after it,
 * then the transaction commits. `done` rejects unless both business rows committed, i.e.
 * unless the transaction stayed usable whatever the call did.
 */
export class ProducerProbe {
  readonly fx: OutboxFixture;
  private readonly kysely: Kysely<Record<string, never>>;

  private constructor(fx: OutboxFixture) {
    this.fx = fx;
    this.kysely = new Kysely({ dialect: new PostgresDialect({ pool: new Pool({ connectionString: testDatabaseUrl(), max: 2 }) }) });
  }

  /** A probe over a file's outbox, with the business table `orders` beside it. */
  static forFile(prefix: string): ProducerProbe {
    const probe = new ProducerProbe(OutboxFixture.forFile(prefix, { afterEach: 'keep relays' }));
    beforeAll(() => probe.fx.pool.query(`CREATE TABLE "${probe.fx.schema}".orders (id text PRIMARY KEY)`));
    afterAll(() => probe.kysely.destroy());
    return probe;
  }

  get schema(): string {
    return this.fx.schema;
  }

  /** Runs `call` in a business transaction of the kind `via`; `inspect` reads what it wrote before the commit. */
  async run(
    via: 'pg' | 'kysely',
    call: (executor: Executor) => Promise<readonly string[] | string>,
    inspect: (rows: readonly StoredRow[]) => void = () => undefined,
  ): Promise<Outcome> {
    const [before, after] = [uniqueName('o'), uniqueName('o')];
    const orders = `"${this.schema}".orders`;
    let outcome: Outcome;
    if (via === 'pg') {
      const client = await this.fx.pool.connect();
      try {
        await client.query('BEGIN');
        await client.query(`INSERT INTO ${orders} VALUES ($1)`, [before]);
        outcome = await settle(call(client));
        if (outcome.ok) inspect(await this.stored(client, outcome.ids));
        await client.query(`INSERT INTO ${orders} VALUES ($1)`, [after]);
        await client.query('COMMIT');
      } catch (err: unknown) {
        await client.query('ROLLBACK').catch(() => undefined);
        throw err;
      } finally {
        client.release();
      }
    } else {
      outcome = await this.kysely.transaction().execute(async (trx) => {
        await sql`INSERT INTO ${sql.table(`${this.schema}.orders`)} VALUES (${before})`.execute(trx);
        const result = await settle(call(trx));
        if (result.ok) {
          const { rows } =
            await sql<StoredRow>`${sql.raw(storedSql(this.schema))} WHERE message_id = ANY(${[...result.ids]}::uuid[])`.execute(trx);
          inspect([...rows].sort(byIds(result.ids)));
        }
        await sql`INSERT INTO ${sql.table(`${this.schema}.orders`)} VALUES (${after})`.execute(trx);
        return result;
      });
    }
    const { rows } = await this.fx.pool.query(`SELECT id FROM ${orders} WHERE id = ANY($1::text[])`, [[before, after]]);
    if (rows.length !== 2) throw new Error(`the business transaction did not commit both rows (${rows.length} of 2)`);
    return outcome;
  }

  /** The rows of `ids` as the producer's transaction sees them, in the order of `ids`. */
  private async stored(client: { query: Pool['query'] }, ids: readonly string[]): Promise<StoredRow[]> {
    const { rows } = await client.query<StoredRow>(`${storedSql(this.schema)} WHERE message_id = ANY($1::uuid[])`, [ids]);
    return rows.sort(byIds(ids));
  }
}

function byIds(ids: readonly string[]): (a: StoredRow, b: StoredRow) => number {
  return (a, b) => ids.indexOf(a.message_id) - ids.indexOf(b.message_id);
}

/** The stored rows, without their WHERE clause. */
function storedSql(schema: string): string {
  return `SELECT message_id::text, exchange, routing_key, message_type, payload::text AS payload, encode(body, 'base64') AS body,
                 content_type, headers::text AS headers, partition_key, correlation_id,
                 (extract(epoch FROM available_at) * 1000)::text AS available_ms,
                 (extract(epoch FROM expires_at) * 1000)::text AS expires_ms,
                 (extract(epoch FROM available_at - now()) * 1000)::float8 AS delay_ms,
                 (extract(epoch FROM expires_at - now()) * 1000)::float8 AS ttl_ms
            FROM "${schema}".messages`;
}

async function settle(call: Promise<readonly string[] | string>): Promise<Outcome> {
  try {
    const ids = await call;
    return { ok: true, ids: typeof ids === 'string' ? [ids] : ids };
  } catch (error: unknown) {
    return { ok: false, error };
  }
}

/** Fails unless `outcome` is an `INVALID_ARGUMENT` whose one-line message matches `expected`. */
export function expectInvalid(outcome: Outcome, expected?: RegExp): OutboxError {
  if (outcome.ok) throw new Error(`expected INVALID_ARGUMENT, but the call wrote ${outcome.ids.length} message(s)`);
  const { error } = outcome;
  if (!(error instanceof OutboxError) || error.code !== 'INVALID_ARGUMENT') {
    throw new Error(
      `expected an OutboxError INVALID_ARGUMENT, got ${error instanceof Error ? `${error.name}: ${error.message}` : String(error)}`,
    );
  }
  if (error.message.includes('\n')) throw new Error(`the message has more than one line: ${error.message}`);
  if (expected && !expected.test(error.message))
    throw new Error(`the message ${JSON.stringify(error.message)} does not match ${String(expected)}`);
  return error;
}

/** What a probe wrote, as the stored row must give it back. */
export interface ProbeInput {
  readonly payload: unknown;
  readonly messageId?: string;
  readonly routingKey?: string;
  readonly traceparent?: string;
  readonly tracestate?: string;
  readonly partitionKey?: string;
  readonly correlationId?: string;
  readonly headers?: Readonly<Record<string, unknown>>;
  readonly availableAt?: Date;
  readonly delayMs?: number;
  readonly expiresAt?: Date;
  readonly ttlMs?: number;
}

/** The JSON `value` stands for, as any JSON reader gets it back. */
function asJson(value: unknown): unknown {
  return JSON.parse(JSON.stringify(value) as string) as unknown;
}

/** Milliseconds from now (ms), as stored: exact to the microsecond the interval keeps. */
function closeTo(actual: number | null, expected: number): boolean {
  return actual !== null && Math.abs(actual - expected) <= 0.001 + Math.abs(expected) * 1e-12;
}

/** The differences between the stored `row` and what `input` asked for; empty when it is stored exactly. */
export function storedDifferences(row: StoredRow, input: ProbeInput): string[] {
  const problems: string[] = [];
  const same = (what: string, actual: unknown, expected: unknown): void => {
    if (!isDeepStrictEqual(actual, expected))
      problems.push(`${what}: stored ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
  };
  if (Buffer.isBuffer(input.payload)) same('body', row.body, input.payload.toString('base64'));
  else same('payload', row.payload === null ? null : JSON.parse(row.payload), asJson(input.payload));
  const trace = {
    ...(input.traceparent === undefined ? {} : { traceparent: input.traceparent }),
    ...(input.tracestate === undefined ? {} : { tracestate: input.tracestate }),
  };
  same('headers', JSON.parse(row.headers), asJson({ ...input.headers, ...trace }));
  if (input.messageId !== undefined) same('message_id', row.message_id, input.messageId.toLowerCase());
  if (input.routingKey !== undefined) same('routing_key', row.routing_key, input.routingKey);
  same('partition_key', row.partition_key, input.partitionKey ?? null);
  same('correlation_id', row.correlation_id, input.correlationId ?? null);
  if (input.availableAt) same('available_at (ms)', Number(row.available_ms), input.availableAt.getTime());
  if (input.delayMs !== undefined && !closeTo(row.delay_ms, input.delayMs))
    problems.push(`delay: stored ${row.delay_ms} ms, expected ${input.delayMs}`);
  if (input.expiresAt) same('expires_at (ms)', row.expires_ms === null ? null : Number(row.expires_ms), input.expiresAt.getTime());
  if (input.ttlMs !== undefined && !closeTo(row.ttl_ms, input.ttlMs))
    problems.push(`ttl: stored ${row.ttl_ms} ms, expected ${input.ttlMs}`);
  if (input.expiresAt === undefined && input.ttlMs === undefined) same('expires_at', row.expires_ms, null);
  return problems;
}
