import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { buildIfMissing, envFor, ROOT, STACK_FRAME } from '../kit/cli';
import { freePort } from '../kit/free-port';
import { OutboxFixture } from '../kit/outbox-fixture';
import { endpointStatus } from '../kit/relay-http';
import { waitFor } from '../kit/wait';
import { pipedCli, type Reader } from '../kit/piped-cli';

// Any command's output is whole when the process exits, whatever reads it: a pipe
// (64 KiB of buffer; the rest waits for the reader), a late or slow reader, a file. A
// reader that goes away early (`| head -c N`, `| true`) gets its bytes and the CLI says
// nothing about it: no EPIPE, no stack trace, the command's own exit code.

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('cli_output', { afterEach: 'keep relays' });
const DEAD = 3_000;
const AUDIT_ENTRIES = 1_500;
let bigHeadersId: string;

beforeAll(async () => {
  await fx.pool.query(
    `INSERT INTO ${fx.table} (routing_key, message_type, payload, attempts, last_error, next_attempt_at, dead_at)
     SELECT 'q', 'order.created', jsonb_build_object('n', n), 10, 'failed: ' || repeat(md5(n::text), 6), 'infinity', now() - n * interval '1 second'
       FROM generate_series(1, $1::int) AS n`,
    [DEAD],
  );
  // Entries of every size: most list a few ids, some 2,000 (audit --json is then ~2 MB).
  await fx.pool.query(
    `INSERT INTO "${fx.schema}".audit (command, arguments, count, message_ids)
     SELECT 'dead retry', jsonb_build_object('all', true), ids, ARRAY(SELECT gen_random_uuid() FROM generate_series(1, ids))
       FROM (SELECT CASE WHEN n % 100 = 0 THEN 2000 ELSE 1 + n % 7 END AS ids FROM generate_series(1, $1::int) AS n) AS e`,
    [AUDIT_ENTRIES],
  );
  bigHeadersId = randomUUID();
  // 200 KB of headers: inspect prints them in both forms.
  await fx.pool.query(`INSERT INTO ${fx.table} (message_id, routing_key, payload, headers) VALUES ($1, 'q', '{}', $2::jsonb)`, [
    bigHeadersId,
    JSON.stringify({ 'x-big': 'h'.repeat(200_000), 'x-small': 1 }),
  ]);
}, 120_000);

/** The commands with large outputs, and what their output must hold to be whole. */
const COMMANDS: Record<string, { args: () => string[]; whole: (out: string) => void }> = {
  'dead list --json': {
    args: () => ['dead', 'list', '--json', '--limit', String(DEAD)],
    whole: (out) => expect((JSON.parse(out) as unknown[]).length).toBe(DEAD),
  },
  'dead list': {
    args: () => ['dead', 'list', '--limit', String(DEAD)],
    whole: (out) => expect(out.split('\n').filter((l) => l.includes('order.created'))).toHaveLength(DEAD),
  },
  'audit --json': {
    args: () => ['audit', '--json', '--limit', String(AUDIT_ENTRIES)],
    whole: (out) => expect((JSON.parse(out) as unknown[]).length).toBe(AUDIT_ENTRIES),
  },
  audit: {
    args: () => ['audit', '--limit', String(AUDIT_ENTRIES)],
    whole: (out) => expect(out.split('\n').filter((l) => l.includes('dead retry'))).toHaveLength(AUDIT_ENTRIES),
  },
  'inspect --json': {
    args: () => ['inspect', bigHeadersId, '--json'],
    whole: (out) => expect((JSON.parse(out) as { headers: Record<string, string> }).headers['x-big']).toHaveLength(200_000),
  },
  inspect: {
    args: () => ['inspect', bigHeadersId],
    whole: (out) => {
      expect(out).toContain(`"x-big": "${'h'.repeat(200_000)}"`);
      expect(out.trimEnd().split('\n').pop()).toMatch(/^ahead/);
    },
  },
  'migrate --print --all': {
    args: () => ['migrate', '--print', '--all'],
    whole: (out) => expect(out).toMatch(/0004_expiry_and_audit[\s\S]*CREATE TABLE audit[\s\S]*$/),
  },
};
const NAMES = Object.keys(COMMANDS);

/** Each command's whole output, written to a file (a file takes every write at once). */
const expected = new Map<string, Buffer>();

async function expectedOutput(name: string): Promise<Buffer> {
  const known = expected.get(name);
  if (known) return known;
  const command = COMMANDS[name]!;
  const result = await pipedCli(command.args(), envFor(fx.schema), { kind: 'file' });
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  command.whole(result.received.toString('utf8'));
  expected.set(name, result.received);
  return result.received;
}

async function expectWhole(name: string, reader: Reader): Promise<void> {
  const whole = await expectedOutput(name);
  const result = await pipedCli(COMMANDS[name]!.args(), envFor(fx.schema), reader);
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  if (reader.kind === 'never') return;
  if (reader.kind === 'head') {
    expect(result.received.equals(whole.subarray(0, reader.bytes))).toBe(true);
    return;
  }
  // Compared by length first: a mismatch then says how much arrived, not 2 MB of text.
  expect({ bytes: result.received.length }).toEqual({ bytes: whole.length });
  expect(result.received.equals(whole)).toBe(true);
}

test.each(NAMES)('%s through a pipe to a reader that reads at once: the whole output, exit 0', async (name) => {
  await expectWhole(name, { kind: 'cat' });
});

test('a reader that starts late (the pipe fills): the whole output', async () => {
  await expectWhole('dead list --json', { kind: 'late cat', delayMs: 1_500 });
  await expectWhole('inspect', { kind: 'late cat', delayMs: 1_000 });
});

test('a reader that closes the pipe early (| head -c, | true): its bytes, exit 0, nothing on stderr', async () => {
  await expectWhole('dead list', { kind: 'head', bytes: 100 });
  await expectWhole('dead list --json', { kind: 'head', bytes: 70_000 });
  await expectWhole('audit', { kind: 'never' });
});

test('whatever the command and the reader: the output is whole, or the prefix the reader took (property)', async () => {
  const reader: fc.Arbitrary<Reader> = fc.oneof(
    fc.constant<Reader>({ kind: 'cat' }),
    fc.constant<Reader>({ kind: 'file' }),
    fc.constant<Reader>({ kind: 'never' }),
    fc.integer({ min: 50, max: 800 }).map((delayMs): Reader => ({ kind: 'late cat', delayMs })),
    fc
      .record({ biteBytes: fc.integer({ min: 512, max: 65_536 }), pauseMs: fc.integer({ min: 0, max: 3 }) })
      .map((r): Reader => ({ kind: 'slow', ...r })),
    fc.integer({ min: 0, max: 400_000 }).map((bytes): Reader => ({ kind: 'head', bytes })),
  );
  await fc.assert(
    fc.asyncProperty(fc.constantFrom(...NAMES), reader, async (name, r) => {
      await expectWhole(name, r);
    }),
    { numRuns: 12 },
  );
}, 300_000);

test('a write error that is not a reader going away (a full disk) is one line on stderr and exit 1', async () => {
  const full = await cliToDevFull(['dead', 'list', '--json', '--limit', String(DEAD)]);
  expect(full.code).toBe(1);
  expect(full.stderr).toMatch(/^outbox-relay: cannot write the output: .*ENOSPC.*\n$/);
  expect(full.stderr).not.toContain(STACK_FRAME);
});

test('the relay (run) with its log going to a full disk or a closed pipe: it relays on, says so once, exits 0 on SIGTERM', async () => {
  for (const target of ['/dev/full', 'closed pipe'] as const) {
    const port = await freePort();
    const env = { PATH: process.env['PATH'] ?? '', ...envFor(fx.schema), OUTBOX_HTTP_PORT: String(port), OUTBOX_HTTP_HOST: '127.0.0.1' };
    const full = target === '/dev/full' ? openSync('/dev/full', 'w') : undefined;
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'outbox-relay.js'), 'run'], {
      env,
      stdio: ['ignore', full ?? 'pipe', 'pipe'],
    });
    if (full !== undefined) closeSync(full);
    // The pipe's reader goes away at once: every log line then meets EPIPE.
    child.stdout?.destroy();
    let stderr = '';
    child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
      child.once('close', (code, signal) => resolve({ code, signal })),
    );
    try {
      await waitFor(`the relay ready with its log on ${target}`, async () => (await endpointStatus(port, '/readyz')) === 200, 30_000);
      const [id] = await fx.insert([{ exchange: 'amq.topic', routing_key: 'cli_output.relays_on', payload: { target } }]);
      await waitFor('the message published', async () => {
        const { rows } = await fx.pool.query(`SELECT 1 FROM ${fx.table} WHERE message_id = $1 AND published_at IS NOT NULL`, [id]);
        return rows.length === 1;
      });
      child.kill('SIGTERM');
      expect(await exited).toEqual({ code: 0, signal: null });
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    expect(stderr).not.toContain(STACK_FRAME);
    expect(stderr).toBe(target === '/dev/full' ? 'outbox-relay: cannot write log lines to stdout (ENOSPC); dropping them\n' : '');
  }
});

/** The CLI with its stdout on /dev/full (every write fails with ENOSPC). */
async function cliToDevFull(args: string[]): Promise<{ code: number | null; stderr: string }> {
  const full = openSync('/dev/full', 'w');
  try {
    return await new Promise((resolve, reject) => {
      const child = spawn(process.execPath, [join(ROOT, 'bin', 'outbox-relay.js'), ...args], {
        env: { PATH: process.env['PATH'] ?? '', ...envFor(fx.schema) },
        stdio: ['ignore', full, 'pipe'],
      });
      let stderr = '';
      child.stderr?.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stderr }));
    });
  } finally {
    closeSync(full);
  }
}
