import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { trackOpen } from './open-resources';
import { waitFor } from './wait';

/** The built consumer library, as a service loads it (run `npm run build` first). */
const LIBRARY = join(__dirname, '..', '..', 'dist', 'consumer', 'index.js');

/**
 * A service instance's consumer, in a process of its own: createConsumer from dist/ with
 * the options in OUTBOX_TEST_CONSUMER (JSON), a pg pool on DATABASE_URL, and a handler
 * that records each message in `<schema>.processed` (instance, key, n, message id). It
 * prints `consuming` once it consumes and stops on SIGTERM.
 */
const SCRIPT = `
const { Pool } = require('pg');
const { createConsumer } = require(${JSON.stringify(LIBRARY)});
const options = JSON.parse(process.env.OUTBOX_TEST_CONSUMER);
const instance = process.env.OUTBOX_TEST_INSTANCE;
const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: 4 });
pool.on('error', () => undefined);
const table = '"' + options.schema + '".processed';
createConsumer({
  ...options,
  pool,
  handler: async (msg, tx) => {
    await tx.query('INSERT INTO ' + table + ' (instance, key, n, message_id) VALUES ($1, $2, $3, $4)', [instance, msg.partitionKey ?? null, msg.payload.n, msg.messageId]);
  },
}).then((consumer) => {
  console.log('consuming');
  process.once('SIGTERM', () => consumer.stop().then(() => pool.end()).then(() => process.exit(0)));
}, (err) => {
  console.error(err.message);
  process.exit(1);
});
`;

/** A consumer instance running as a process (for tests that kill it). */
export class ConsumerProcess {
  readonly output: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(
    readonly instance: string,
    private readonly child: ChildProcess,
    dir: string,
  ) {
    for (const stream of [child.stdout, child.stderr]) stream?.setEncoding('utf8').on('data', (chunk: string) => this.output.push(chunk));
    this.exited = new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal })));
    const untrack = trackOpen(this, { kind: 'consumer process', detail: `instance ${instance}, pid ${child.pid}` });
    void this.exited.then(() => {
      untrack();
      rmSync(dir, { recursive: true, force: true });
    });
  }

  /** Starts an instance with these createConsumer options (JSON: no handler, no pool). */
  static start(instance: string, databaseUrl: string, options: Record<string, unknown>): ConsumerProcess {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-consumer-'));
    const script = join(dir, 'consumer.js');
    writeFileSync(script, SCRIPT);
    const child = spawn(process.execPath, [script], {
      // Resolves pg from this repository's node_modules, as the library does.
      cwd: join(__dirname, '..', '..'),
      env: {
        PATH: process.env['PATH'],
        NODE_PATH: join(__dirname, '..', '..', 'node_modules'),
        DATABASE_URL: databaseUrl,
        OUTBOX_TEST_INSTANCE: instance,
        OUTBOX_TEST_CONSUMER: JSON.stringify(options),
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new ConsumerProcess(instance, child, dir);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until it consumes; fails with its output if it exits first. */
  async consuming(timeoutMs = 20_000): Promise<void> {
    await waitFor(
      `consumer ${this.instance} consuming`,
      () => {
        if (!this.running) throw new Error(`consumer ${this.instance} exited: ${this.output.join('')}`);
        return this.output.join('').includes('consuming');
      },
      timeoutMs,
    );
  }

  /** kill -9: no goodbye to the broker or the database. */
  async killHard(): Promise<void> {
    this.child.kill('SIGKILL');
    await this.exited;
  }

  /** SIGTERM and the exit; SIGKILL after 10 s. */
  async stop(): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), 10_000);
    await this.exited;
    clearTimeout(timer);
  }
}
