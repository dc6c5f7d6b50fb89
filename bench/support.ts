import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'pg';
import { migrate } from '../src/db/migrator';
import { freePort } from '../test/helpers/ports';

/** Where the benchmark runs: the local services unless overridden. */
export const DATABASE_URL = process.env['OUTBOX_BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
export const AMQP_URL = process.env['OUTBOX_BENCH_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';

const BIN = join(__dirname, '..', 'bin', 'outbox-relay.js');

/** The 1 KiB JSON payload every scenario publishes (as the bare publisher's body, too). */
export const PAD = 'x'.repeat(1024 - 40);

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(3).toString('hex')}`;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Median, min and max of repeated measurements. */
export interface Figure {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly runs: readonly number[];
}

export function figure(runs: readonly number[]): Figure {
  const sorted = [...runs].sort((a, b) => a - b);
  return { median: sorted[Math.floor(sorted.length / 2)] as number, min: sorted[0] as number, max: sorted[sorted.length - 1] as number, runs };
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** A fresh, migrated outbox schema; `drop()` removes it. */
export async function outboxSchema(pool: Pool): Promise<{ schema: string; drop(): Promise<void> }> {
  const schema = uniqueName('bench');
  const client = await pool.connect();
  try {
    await migrate(client, schema);
  } finally {
    client.release();
  }
  return { schema, drop: async () => void (await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`)) };
}

/** Inserts `count` 1 KiB JSON messages to `exchange`, in chunks of 100,000 rows. */
export async function insertBacklog(pool: Pool, schema: string, exchange: string, count: number, keys: number): Promise<void> {
  for (let done = 0; done < count; done += 100_000) {
    const n = Math.min(100_000, count - done);
    await pool.query(
      `INSERT INTO "${schema}".messages (exchange, routing_key, payload, partition_key)
       SELECT $1, 'bench', jsonb_build_object('n', g, 'pad', $3::text),
              CASE WHEN $4::int > 0 THEN 'key-' || (g % $4::int) END
         FROM generate_series($5::int + 1, $5::int + $2::int) AS g`,
      [exchange, n, PAD, keys, done],
    );
  }
  await pool.query(`VACUUM ANALYZE "${schema}".messages`);
}

/** `outbox-relay run` as a separate process, as in production. */
export class RelayProcess {
  private output = '';
  private stopping = false;
  readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    readonly port: number,
  ) {
    this.exited = new Promise((resolve) => child.once('exit', () => resolve()));
    const keep = (chunk: Buffer): void => {
      this.output = (this.output + chunk.toString()).slice(-2_000);
    };
    child.stdout?.on('data', keep);
    child.stderr?.on('data', keep);
    void this.exited.then(() => {
      if (!this.stopping) console.error(`relay exited unexpectedly: ${this.output}`);
    });
  }

  /** Starts a relay; its HTTP port is chosen here so it is known without parsing logs. */
  static async start(env: Record<string, string>): Promise<RelayProcess> {
    const port = await freePort();
    // The same V8 flag as `npm start` and the image's entrypoint.
    const child = spawn(process.execPath, ['--max-semi-space-size=2', BIN, 'run'], {
      env: {
        PATH: process.env['PATH'],
        OUTBOX_DATABASE_URL: DATABASE_URL,
        OUTBOX_AMQP_URL: AMQP_URL,
        OUTBOX_HTTP_HOST: '127.0.0.1',
        OUTBOX_HTTP_PORT: String(port),
        ...env,
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new RelayProcess(child, port);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Peak resident set size so far (VmHWM), in MiB. */
  peakRssMiB(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
  }

  async metric(name: string): Promise<number> {
    const text = await (await fetch(`http://127.0.0.1:${this.port}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1] ?? Number.NaN);
  }

  async ready(): Promise<void> {
    const port = this.port;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const status = await fetch(`http://127.0.0.1:${port}/readyz`).then(
        (r) => r.status,
        () => 0,
      );
      if (status === 200) return;
      if (Date.now() > deadline) throw new Error(`relay not ready after 30 s: ${this.output}`);
      await sleep(20);
    }
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.child.kill('SIGTERM');
    await this.exited;
  }
}


export function newPool(max = 10): Pool {
  return new Pool({ connectionString: DATABASE_URL, max });
}
