import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const BIN = join(__dirname, '..', '..', 'bin', 'outbox-relay.js');

/** A relay running as a separate process (`outbox-relay run`), as in production. */
export class RelayProcess {
  readonly stdout: string[] = [];
  readonly stderr: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  private constructor(readonly child: ChildProcess) {
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => this.stdout.push(...chunk.split('\n').filter((l) => l.length > 0)));
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => this.stderr.push(...chunk.split('\n').filter((l) => l.length > 0)));
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  /** Starts `outbox-relay run` with exactly `env` (plus PATH). */
  static start(env: NodeJS.ProcessEnv, args: readonly string[] = ['run']): RelayProcess {
    const child = spawn(process.execPath, [BIN, ...args], {
      env: { PATH: process.env['PATH'], ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new RelayProcess(child);
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

  /** The exit, or a failure carrying the process's last output if it takes longer than `ms`. */
  async exitWithin(ms: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`relay did not exit within ${ms} ms; last output:\n${[...this.stdout, ...this.stderr].slice(-8).join('\n')}`)),
        ms,
      );
    });
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  kill(signal: NodeJS.Signals): void {
    this.child.kill(signal);
  }

  /** Ends the process if a test left it running (SIGKILL). */
  async ensureStopped(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.exited;
  }
}
