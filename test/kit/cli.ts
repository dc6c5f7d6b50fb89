import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { testAmqpUrl, testDatabaseUrl } from './services';

export const ROOT = join(__dirname, '..', '..');
const BIN = join(ROOT, 'bin', 'outbox-relay.js');
export const STACK_FRAME = '    at ';

/** Runs `npm run build` when dist/ has no CLI yet: `cli()` runs bin/outbox-relay.js, which loads dist/cli.js. */
export function buildIfMissing(): void {
  if (!existsSync(join(ROOT, 'dist', 'cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
}

export interface CliResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

/**
 * Runs the built CLI with exactly `env` (plus PATH): nothing of the test runner's
 * environment (DATABASE_URL, OUTBOX_*) leaks in.
 */
export function cli(args: readonly string[], env: Record<string, string>, timeoutMs = 30_000): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      cwd: ROOT,
      env: { PATH: process.env['PATH'] ?? '', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`outbox-relay ${args.join(' ')} did not exit within ${timeoutMs} ms; stdout: ${stdout} stderr: ${stderr}`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** The environment of a CLI run against `schema` on the test services. */
export function envFor(schema: string, overrides: Record<string, string> = {}): Record<string, string> {
  return { OUTBOX_DATABASE_URL: testDatabaseUrl(), OUTBOX_AMQP_URL: testAmqpUrl(), OUTBOX_SCHEMA: schema, ...overrides };
}

export function lines(text: string): string[] {
  return text.split('\n').filter((l) => l.length > 0);
}

/** An expected failure: the exit code, and ONE stderr line without a stack trace. */
export function expectOneLineFailure(result: CliResult, code: 1 | 2): string {
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code, stderr: expect.any(String) as unknown as string });
  expect(lines(result.stderr)).toHaveLength(1);
  expect(result.stderr).not.toContain(STACK_FRAME);
  return result.stderr;
}
