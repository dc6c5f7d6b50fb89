import { randomBytes } from 'node:crypto';
import { Writable } from 'node:stream';
import { Pool } from 'pg';
import { startRelay, type RelayTuning, type RunningRelay } from '../../src/app';
import { loadConfig } from '../../src/config/load-config';
import { migrate } from '../../src/db/migrator';
import { createLogger } from '../../src/observability/logger';
import { testAmqpUrl, testDatabaseUrl } from './services';

/** A unique, lower-case identifier for this test's schema, exchanges and queues. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(4).toString('hex')}`;
}

/** A row as a producer writes it (any subset of the producer columns). */
export interface ProducerRow {
  exchange?: string;
  routing_key: string;
  message_type?: string | null;
  payload?: unknown;
  body?: Buffer | null;
  content_type?: string;
  headers?: Record<string, unknown>;
  partition_key?: string | null;
  correlation_id?: string | null;
  available_at?: Date;
  message_id?: string;
}

/** Log lines a relay wrote, parsed. */
export class LogCapture {
  readonly lines: string[] = [];
  readonly stream = new Writable({
    write: (chunk: Buffer, _encoding, callback) => {
      this.lines.push(...chunk.toString('utf8').split('\n').filter((l) => l.length > 0));
      callback();
    },
  });

  entries(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  has(msg: string): boolean {
    return this.entries().some((e) => e['msg'] === msg);
  }
}

/**
 * One test file's outbox: its own schema in the test database, migrated; helpers to
 * insert rows and to start relays against it. `close()` stops every relay it started
 * (a test that leaves one running fails) and drops the schema.
 */
export class OutboxFixture {
  readonly pool: Pool;
  private readonly relays: RunningRelay[] = [];

  private constructor(readonly schema: string) {
    this.pool = new Pool({ connectionString: testDatabaseUrl(), max: 4 });
  }

  static async create(prefix: string): Promise<OutboxFixture> {
    const fixture = new OutboxFixture(uniqueName(`t_${prefix}`));
    const client = await fixture.pool.connect();
    try {
      await migrate(client, fixture.schema);
    } finally {
      client.release();
    }
    return fixture;
  }

  get table(): string {
    return `"${this.schema}".messages`;
  }

  /** Environment for a relay on this schema; fast timings unless overridden. */
  env(overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
    return {
      OUTBOX_DATABASE_URL: testDatabaseUrl(),
      OUTBOX_AMQP_URL: testAmqpUrl(),
      OUTBOX_SCHEMA: this.schema,
      OUTBOX_HTTP_HOST: '127.0.0.1',
      OUTBOX_HTTP_PORT: '0',
      OUTBOX_POLL_INTERVAL_MS: '200',
      OUTBOX_BACKOFF_BASE_MS: '50',
      OUTBOX_BACKOFF_MAX_MS: '200',
      OUTBOX_LOG_LEVEL: 'info',
      ...overrides,
    };
  }

  /** Starts an in-process relay; logs are captured, not printed. */
  async startRelay(overrides: Record<string, string> = {}, tuning: RelayTuning = { statsIntervalMs: 200 }): Promise<{ relay: RunningRelay; logs: LogCapture; baseUrl: string }> {
    const config = loadConfig(this.env(overrides));
    const logs = new LogCapture();
    const log = createLogger({ level: config.logLevel, secrets: [], destination: logs.stream });
    const relay = await startRelay(config, log, tuning);
    this.relays.push(relay);
    await relay.started;
    return { relay, logs, baseUrl: `http://127.0.0.1:${relay.port}` };
  }

  /** Inserts rows in one transaction; returns their message ids in order. */
  async insert(rows: readonly ProducerRow[]): Promise<string[]> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const ids: string[] = [];
      for (const row of rows) {
        const columns = Object.keys(row).filter((k) => (row as unknown as Record<string, unknown>)[k] !== undefined);
        const values = columns.map((k) => {
          const v = (row as unknown as Record<string, unknown>)[k];
          return k === 'payload' || k === 'headers' ? JSON.stringify(v) : v;
        });
        const { rows: inserted } = await client.query<{ message_id: string }>(
          `INSERT INTO ${this.table} (${columns.join(', ')}) VALUES (${columns.map((_, i) => `$${i + 1}`).join(', ')}) RETURNING message_id`,
          values,
        );
        ids.push(inserted[0]!.message_id);
      }
      await client.query('COMMIT');
      return ids;
    } catch (err) {
      await client.query('ROLLBACK');
      throw err;
    } finally {
      client.release();
    }
  }

  /** Inserts `count` JSON messages `{"n": i}` (i = 1…count) with one statement. */
  async insertMany(count: number, target: { exchange?: string; routingKey: string; partitionKey?: string }): Promise<void> {
    await this.pool.query(
      `INSERT INTO ${this.table} (exchange, routing_key, payload, partition_key)
       SELECT $1, $2, jsonb_build_object('n', g), $4 FROM generate_series(1, $3::int) AS g`,
      [target.exchange ?? '', target.routingKey, count, target.partitionKey ?? null],
    );
  }

  async counts(): Promise<{ pending: number; published: number; dead: number; attempts: number }> {
    const { rows } = await this.pool.query<{ pending: string; published: string; dead: string; attempts: string }>(
      `SELECT count(*) FILTER (WHERE published_at IS NULL AND dead_at IS NULL) AS pending,
              count(*) FILTER (WHERE published_at IS NOT NULL) AS published,
              count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
              coalesce(sum(attempts), 0) AS attempts
         FROM ${this.table}`,
    );
    const r = rows[0]!;
    return { pending: Number(r.pending), published: Number(r.published), dead: Number(r.dead), attempts: Number(r.attempts) };
  }

  async row(messageId: string): Promise<Record<string, unknown>> {
    const { rows } = await this.pool.query(`SELECT * FROM ${this.table} WHERE message_id = $1`, [messageId]);
    return rows[0] as Record<string, unknown>;
  }

  /** Rows still locked by some transaction (must be none after a relay stops). */
  async lockedRows(): Promise<number> {
    const { rows } = await this.pool.query<{ n: string }>(
      `SELECT count(*) AS n FROM (SELECT 1 FROM ${this.table} FOR UPDATE SKIP LOCKED) AS free`,
    );
    const { rows: all } = await this.pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${this.table}`);
    return Number(all[0]!.n) - Number(rows[0]!.n);
  }

  async stopRelays(): Promise<void> {
    await Promise.all(this.relays.splice(0).map((r) => r.stop()));
  }

  async close(): Promise<void> {
    await this.stopRelays();
    await this.pool.query(`DROP SCHEMA IF EXISTS "${this.schema}" CASCADE`);
    await this.pool.end();
  }
}
