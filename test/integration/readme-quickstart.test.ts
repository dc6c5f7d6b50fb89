import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildIfMissing, cli, envFor, ROOT } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { waitFor } from '../kit/wait';

// The README's quick start, run as written (against this file's schema on the test
// services): a newcomer who follows it sees the event arrive.

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('readme_quickstart');

/** The sh blocks of the quick start's "your own service database" part, in order. */
function quickStartBlocks(): string[] {
  const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
  const start = readme.indexOf('To run the relay for your own service database');
  const end = readme.indexOf('\n## ', start);
  expect(start).toBeGreaterThan(0);
  return [...readme.slice(start, end).matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => m[1] as string);
}

/** A shell command of a block, joined over its continuation lines, with the test services and schema put in. */
function adapt(command: string): string {
  const db = new URL(testDatabaseUrl());
  return command
    .replaceAll('outbox.messages', `"${fx.schema}".messages`)
    .replace(
      'psql -h localhost -U postgres',
      `psql -h ${db.hostname} -p ${db.port || '5432'} -U ${db.username || 'postgres'} -d ${db.pathname.slice(1)}`,
    )
    .replaceAll('amqp://guest:guest@localhost:5672', testAmqpUrl().split(',')[0] as string);
}

let listener: ChildProcess | undefined;
afterEach(() => {
  listener?.kill('SIGKILL');
});

test('the three terminals of the quick start: the event written with one INSERT arrives at the queue bound for it', async () => {
  const [relayBlock, listenerBlock, insertBlock] = quickStartBlocks();
  expect(relayBlock).toContain('npx outbox-relay migrate');
  expect(relayBlock).toContain('npm start');
  expect(listenerBlock).toBeDefined();
  expect(insertBlock).toBeDefined();

  // Terminal 1: migrate (already done for this schema: it says so) and the relay.
  const migrate = await cli(['migrate'], envFor(fx.schema));
  expect(migrate).toMatchObject({ code: 0, stderr: '' });
  const relay = await fx.spawnRelay();
  await relay.ready();

  // Terminal 2: the listener, as written.
  let printed = '';
  const child = spawn('bash', ['-c', adapt(listenerBlock!)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  listener = child;
  child.stdout!.on('data', (chunk: Buffer) => (printed += chunk.toString('utf8')));
  child.stderr!.on('data', (chunk: Buffer) => (printed += chunk.toString('utf8')));
  const exited = new Promise((resolve) => child.once('close', resolve));
  await waitFor('the listener waiting', () => printed.includes('waiting for order.* events'), 20_000);

  // Terminal 3: the INSERT, as written (its psql command spans two lines).
  const insert = insertBlock!.slice(0, insertBlock!.indexOf('\nnpx outbox-relay status'));
  const psql = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
    const p = spawn('bash', ['-c', adapt(insert)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (c: Buffer) => (output += c.toString('utf8')));
    p.stderr.on('data', (c: Buffer) => (output += c.toString('utf8')));
    p.once('error', reject);
    p.once('close', (code) => resolve({ code, output }));
  });
  expect(psql).toEqual({ code: 0, output: 'INSERT 0 1\n' });
  const { rows } = await fx.pool.query<{ message_id: string }>(`SELECT message_id FROM ${fx.table}`);
  const messageId = rows[0]!.message_id;

  await waitFor('the event printed by the listener', () => printed.includes(`order.created ${messageId} {"orderId": 42}`), 20_000);
  const status = await cli(['status'], envFor(fx.schema));
  expect(status.stdout).toMatch(/^published +1 /m);
  child.kill('SIGINT');
  await exited;
  listener = undefined;
});
