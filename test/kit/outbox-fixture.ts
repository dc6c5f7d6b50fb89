import { Pool } from 'pg';
import { startRelay, type RelayTuning, type RunningRelay } from '../../src/app';
import { loadConfig } from '../../src/config/load-config';
import type { Migration } from '../../src/db/migrator';
import { createLogger } from '../../src/observability/logger';
import { LogCapture } from './log-capture';
import { trackOpen } from './open-resources';
import { insertBacklog, insertRows, type Backlog, type ProducerRow } from './outbox-rows';
import { dropSchema, migrateSchema } from './outbox-schema';
import { RelayProcess } from './relay-process';
import { testAmqpUrl, testDatabaseUrl } from './services';
import { uniqueName } from './unique-name';

/**
 * One test file's outbox: its own schema in the test database, migrated; helpers to
 * insert rows and to start relays against it, in-process or as processes. `close()`
 * stops every relay it started and drops the schema.
 */
export class OutboxFixture {
  readonly pool: Pool;
  /** In-process relays, each with the function that records it closed. */
  private readonly relays: { relay: RunningRelay; untrack: () => void }[] = [];
  private readonly processes: RelayProcess[] = [];
  private readonly untrackPool: () => void;

  private constructor(readonly schema: string) {
    this.pool = new Pool({ connectionString: testDatabaseUrl(), max: 4 });
    this.untrackPool = trackOpen(this.pool, { kind: 'pg pool', detail: `OutboxFixture pool of schema ${schema}` });
  }

  /** A migrated outbox; with `migrations`, only those are applied (the schema an earlier release left). */
  static async create(prefix: string, migrations?: readonly Migration[]): Promise<OutboxFixture> {
    const fixture = new OutboxFixture(uniqueName(`t_${prefix}`));
    await migrateSchema(fixture.pool, fixture.schema, migrations);
    return fixture;
  }

  /**
   * The outbox of a whole test file, with its hooks: migrated before all tests, closed
   * after all. After each test: its relays are stopped (`'stop relays'`, the default),
   * and every message deleted too (`'reset'`), or nothing (`'keep relays'`, for a relay
   * that the file starts once for all its tests).
   */
  static forFile(prefix: string, options: { readonly afterEach?: 'stop relays' | 'reset' | 'keep relays' } = {}): OutboxFixture {
    const fixture = new OutboxFixture(uniqueName(`t_${prefix}`));
    const afterEachTest = options.afterEach ?? 'stop relays';
    beforeAll(() => migrateSchema(fixture.pool, fixture.schema));
    if (afterEachTest === 'stop relays') afterEach(() => fixture.stopRelays());
    if (afterEachTest === 'reset') afterEach(() => fixture.reset());
    afterAll(() => fixture.close());
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
  async startRelay(
    overrides: Record<string, string> = {},
    tuning: RelayTuning = { statsIntervalMs: 200 },
  ): Promise<{ relay: RunningRelay; logs: LogCapture; baseUrl: string }> {
    const config = loadConfig(this.env(overrides));
    const logs = new LogCapture();
    const log = createLogger({ level: config.logLevel, secrets: [], destination: logs.stream });
    const relay = await startRelay(config, log, tuning);
    this.relays.push({
      relay,
      untrack: trackOpen(relay, { kind: 'in-process relay', detail: `schema ${config.schema}, port ${relay.port}` }),
    });
    await relay.started;
    return { relay, logs, baseUrl: `http://127.0.0.1:${relay.port}` };
  }

  /** Starts `outbox-relay run` as a process on this schema (stopped by `stopRelays()`). */
  async spawnRelay(overrides: Record<string, string> = {}): Promise<RelayProcess> {
    const relay = await RelayProcess.start(this.env(overrides));
    this.processes.push(relay);
    return relay;
  }

  /** Inserts rows in one transaction; returns their message ids in order. */
  insert(rows: readonly ProducerRow[]): Promise<string[]> {
    return insertRows(this.pool, this.table, rows);
  }

  /** Inserts a backlog of JSON messages `{"n": 1…count}` (see `insertBacklog`). */
  insertBacklog(backlog: Backlog): Promise<void> {
    return insertBacklog(this.pool, this.table, backlog);
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

  /** Stops every relay it started: in-process ones gracefully, processes with SIGKILL. */
  async stopRelays(): Promise<void> {
    await Promise.all([
      ...this.relays.splice(0).map(({ relay, untrack }) => relay.stop().then(untrack)),
      ...this.processes.splice(0).map((p) => p.ensureStopped()),
    ]);
  }

  /** Stops every relay and deletes every message: the next test starts from an empty outbox. */
  async reset(): Promise<void> {
    await this.stopRelays();
    await this.pool.query(`DELETE FROM ${this.table}`);
  }

  async close(): Promise<void> {
    await this.stopRelays();
    await dropSchema(this.pool, this.schema);
    await this.pool.end();
    this.untrackPool();
  }
}
