import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from './cli';

const BIN = join(ROOT, 'bin', 'outbox-relay.js');

/**
 * What reads the CLI's stdout, as a shell pipeline builds it (a real pipe, 64 KiB of
 * buffer): `cat` at once, `cat` that starts late (the pipe fills and the CLI must wait),
 * a reader that takes small bites with pauses, `head -c N` (closes the pipe early),
 * `true` (never reads), or a file.
 */
export type Reader =
  | { readonly kind: 'cat' }
  | { readonly kind: 'late cat'; readonly delayMs: number }
  | { readonly kind: 'slow'; readonly biteBytes: number; readonly pauseMs: number }
  | { readonly kind: 'head'; readonly bytes: number }
  | { readonly kind: 'never' }
  | { readonly kind: 'file' };

export interface PipedResult {
  /** The CLI's own exit code (PIPESTATUS[0]). */
  readonly code: number;
  /** What the reader got (for `head`, its N bytes; for `never`, nothing). */
  readonly received: Buffer;
  readonly stderr: string;
}

const SLOW_READER = `
const [bite, pause] = process.argv.slice(1).map(Number);
const chunks = [];
process.stdin.on('readable', function take() {
  const chunk = process.stdin.read(bite) ?? process.stdin.read();
  if (chunk === null) return;
  chunks.push(chunk);
  process.stdin.off('readable', take);
  setTimeout(() => { process.stdin.on('readable', take); take(); }, pause);
});
process.stdin.on('end', () => process.stdout.write(Buffer.concat(chunks)));
`;

function readerCommand(reader: Reader, outFile: string): string {
  const q = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;
  switch (reader.kind) {
    case 'cat':
      return `| cat > ${q(outFile)}`;
    case 'late cat':
      return `| { sleep ${reader.delayMs / 1000}; cat > ${q(outFile)}; }`;
    case 'slow':
      return `| ${q(process.execPath)} -e ${q(SLOW_READER)} ${reader.biteBytes} ${reader.pauseMs} > ${q(outFile)}`;
    case 'head':
      return `| head -c ${reader.bytes} > ${q(outFile)}`;
    case 'never':
      return `| true`;
    case 'file':
      return `> ${q(outFile)}`;
  }
}

/**
 * Runs the built CLI with `args` and exactly `env` (plus PATH), its stdout going to
 * `reader` through a shell pipeline, its stderr to a file.
 */
export function pipedCli(args: readonly string[], env: Record<string, string>, reader: Reader, timeoutMs = 60_000): Promise<PipedResult> {
  const dir = mkdtempSync(join(tmpdir(), 'outbox-piped-'));
  const outFile = join(dir, 'out');
  const errFile = join(dir, 'err');
  const script = `"$CLI_NODE" "$CLI_BIN" "$@" 2> "$CLI_ERR" ${readerCommand(reader, outFile)}; echo "\${PIPESTATUS[0]}" > "$CLI_RC"`;
  return new Promise<PipedResult>((resolve, reject) => {
    const child = spawn('bash', ['-c', script, 'piped-cli', ...args], {
      cwd: ROOT,
      env: {
        PATH: process.env['PATH'] ?? '',
        ...env,
        CLI_NODE: process.execPath,
        CLI_BIN: BIN,
        CLI_ERR: errFile,
        CLI_RC: join(dir, 'rc'),
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`outbox-relay ${args.join(' ')} ${reader.kind} did not end within ${timeoutMs} ms`));
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', () => {
      clearTimeout(timer);
      try {
        const read = (name: string): Buffer => {
          try {
            return readFileSync(join(dir, name));
          } catch {
            return Buffer.alloc(0);
          }
        };
        resolve({ code: Number(read('rc').toString().trim()), received: read('out'), stderr: read('err').toString('utf8') });
      } catch (err: unknown) {
        reject(err as Error);
      }
    });
  }).finally(() => rmSync(dir, { recursive: true, force: true }));
}
