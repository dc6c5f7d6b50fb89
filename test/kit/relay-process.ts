import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { freePort } from './free-port';
import { trackOpen } from './open-resources';
import { endpointStatus, readMetrics, type Metrics } from './relay-http';
import { waitFor } from './wait';

const BIN = join(__dirname, '..', '..', 'bin', 'outbox-relay.js');
/** The V8 flags `npm start` and the image's entrypoint run the relay with. */
const PRODUCTION_NODE_FLAGS = ['--max-semi-space-size=2'];

export interface RelayExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/**
 * A relay running as a separate process (`outbox-relay run`), as in production: for
 * tests that kill it, for the chaos suite and for the benchmark.
 */
export class RelayProcess {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<RelayExit>;
  /** Whether `stop()` or `kill()` asked it to exit (an exit without is a crash). */
  private stopRequested = false;
  /** Stopped by `freeze()` and not yet continued. */
  private frozen = false;

  private constructor(
    readonly child: ChildProcess,
    /** The HTTP port of /metrics, /healthz and /readyz. */
    readonly port: number,
  ) {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.stdout.push(...chunk.split('\n').filter((l) => l.length > 0)));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => this.stderr.push(...chunk.split('\n').filter((l) => l.length > 0)));
    // 'close', not 'exit': the stdout and stderr pipes are drained and closed too.
    this.exited = new Promise((resolve) =>
      child.once('close', (code: number | null, signal: NodeJS.Signals | null) => resolve({ code, signal })),
    );
    const untrack = trackOpen(this, {
      kind: 'relay process',
      detail: `pid ${child.pid}, \`outbox-relay ${child.spawnargs.slice(2 + PRODUCTION_NODE_FLAGS.length).join(' ')}\`, port ${port}`,
    });
    void this.exited.then(untrack);
  }

  /**
   * Starts `outbox-relay <args>` (default `run`) with exactly `env` plus PATH. When `env`
   * sets no OUTBOX_HTTP_PORT (or 0), a free port is chosen here, so that `port` is known
   * without reading the logs. `bin` runs another build (the bench's baseline of an earlier commit).
   */
  static async start(env: NodeJS.ProcessEnv, args: readonly string[] = ['run'], bin = BIN): Promise<RelayProcess> {
    const configured = Number(env['OUTBOX_HTTP_PORT'] ?? '0');
    const port = configured > 0 ? configured : await freePort();
    const child = spawn(process.execPath, [...PRODUCTION_NODE_FLAGS, bin, ...args], {
      env: { PATH: process.env['PATH'], ...env, OUTBOX_HTTP_PORT: String(port) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new RelayProcess(child, port);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** Neither exited nor killed by a signal yet. */
  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Whether it exited without `stop()` or `kill()` asking it to. */
  get crashed(): boolean {
    return !this.running && !this.stopRequested;
  }

  /** Parsed JSON log lines. */
  logs(): Record<string, unknown>[] {
    return this.stdout.flatMap((line) => {
      try {
        return [JSON.parse(line) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  }

  logged(msg: string): boolean {
    return this.logs().some((l) => l['msg'] === msg);
  }

  /** The last `lines` lines it wrote (stdout and stderr), for failure messages. */
  lastOutput(lines = 8): string {
    return [...this.stdout, ...this.stderr].slice(-lines).join('\n');
  }

  /** Waits for /readyz to answer 200; fails early, with its output, if the process exits. */
  async ready(timeoutMs = 30_000): Promise<void> {
    await waitFor(
      `relay pid ${this.pid} ready on port ${this.port}`,
      async () => {
        if (!this.running) throw new Error(`relay exited before it was ready; last output:\n${this.lastOutput()}`);
        return (await endpointStatus(this.port, '/readyz')) === 200;
      },
      timeoutMs,
      20,
    );
  }

  metrics(): Promise<Metrics> {
    return readMetrics(this.port);
  }

  /** Peak resident set size so far (VmHWM), in MiB. */
  peakRssMiB(): number {
    const status = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? 0) / 1024;
  }

  /** The exit, or a failure carrying the process's last output if it takes longer than `ms`. */
  async exitWithin(ms: number): Promise<RelayExit> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`relay did not exit within ${ms} ms; last output:\n${this.lastOutput()}`)), ms);
    });
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.stopRequested = true;
    this.child.kill(signal);
  }

  /**
   * Stops the process without ending it (SIGSTOP): a paused VM, a node swapping, a
   * debugger. It holds its connections and does nothing until `thaw()`. Not a crash.
   */
  freeze(): void {
    this.child.kill('SIGSTOP');
    this.frozen = true;
  }

  /** Lets a frozen process go on (SIGCONT). */
  thaw(): void {
    if (this.frozen && this.running) this.child.kill('SIGCONT');
    this.frozen = false;
  }

  /** Graceful stop: SIGTERM, then the exit (a frozen process is thawed to receive it). */
  async stop(): Promise<RelayExit> {
    if (this.running) this.kill('SIGTERM');
    this.thaw();
    return this.exited;
  }

  /** Ends the process if a test left it running (SIGKILL). */
  async ensureStopped(): Promise<void> {
    if (this.running) this.kill('SIGKILL');
    await this.exited;
  }
}
