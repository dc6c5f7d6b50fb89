import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, escapeIdentifier } from 'pg';
import { ROOT } from '../kit/cli';
import { testDatabaseUrl } from '../kit/services';

// The leak check (test/kit/leak-check-environment.ts) proven on fixtures that leave a
// relay process, an in-process relay, a pg pool and a timer open: Jest runs them
// (test/fixtures/leaks), and each fails its file, naming what it left. The clean control
// runs in a Jest of its own: what the leaking files left behind lives on in their
// process and would be counted against whatever file runs after them.

interface FileResult {
  readonly name: string;
  readonly status: 'passed' | 'failed';
  readonly message: string;
  readonly assertionResults: readonly { readonly status: string }[];
}

interface FixtureRun {
  readonly code: number | null;
  /** Per fixture file name. */
  readonly results: ReadonlyMap<string, FileResult>;
  readonly output: string;
}

/** Runs Jest on the fixture files matching `pattern`; whatever they leave on purpose is removed afterwards. */
async function runFixtures(pattern: string): Promise<FixtureRun> {
  const dir = mkdtempSync(join(tmpdir(), 'outbox-leak-fixtures-'));
  const leftovers = join(dir, 'leftovers.jsonl');
  const outputFile = join(dir, 'results.json');
  try {
    const jest = join(ROOT, 'node_modules', 'jest', 'bin', 'jest.js');
    const config = join(ROOT, 'test', 'fixtures', 'leaks', 'jest.config.ts');
    // As npm test runs: no --forceExit.
    const args = [jest, '--config', config, '--runInBand', '--ci', '--json', '--outputFile', outputFile, pattern];
    const child = spawn(process.execPath, args, {
      cwd: ROOT,
      env: { ...process.env, OUTBOX_LEAK_FIXTURE_LEFTOVERS: leftovers },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString('utf8')));
    // A run that never ends is a failure of its own (the teardown's net ends a held one after 5 s).
    const hang = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const code = await new Promise<number | null>((resolve) => child.once('close', resolve)).finally(() => clearTimeout(hang));
    if (!existsSync(outputFile)) throw new Error(`jest wrote no results (exit ${code}):\n${output.slice(-4_000)}`);
    const report = JSON.parse(readFileSync(outputFile, 'utf8')) as { testResults: FileResult[] };
    return { code, output, results: new Map(report.testResults.map((r) => [r.name.slice(r.name.lastIndexOf('/') + 1), r])) };
  } finally {
    await removeLeftovers(leftovers);
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Kills the processes and drops the schemas the fixtures left behind on purpose. */
async function removeLeftovers(leftoversFile: string): Promise<void> {
  if (!existsSync(leftoversFile)) return;
  const leftovers = readFileSync(leftoversFile, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as { pid?: number; schema?: string });
  for (const { pid } of leftovers) {
    if (pid === undefined) continue;
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  const client = new Client({ connectionString: testDatabaseUrl() });
  await client.connect();
  try {
    for (const { schema } of leftovers) if (schema) await client.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`);
  } finally {
    await client.end();
  }
}

let leaking: FixtureRun;
let clean: FixtureRun;

beforeAll(async () => {
  leaking = await runFixtures('(relay-process|pool-and-timer|in-process-relay)\\.leak\\.ts$');
  clean = await runFixtures('clean\\.leak\\.ts$');
}, 180_000);

function fixture(run: FixtureRun, name: string): FileResult {
  const result = run.results.get(name);
  if (!result) throw new Error(`no result for ${name}; jest said:\n${run.output.slice(-4_000)}`);
  return result;
}

test('the run of the leaking files fails', () => {
  expect({ code: leaking.code, files: [...leaking.results.keys()].sort() }).toEqual({
    code: 1,
    files: ['in-process-relay.leak.ts', 'pool-and-timer.leak.ts', 'relay-process.leak.ts'],
  });
});

test('a relay process left running fails its file, which names the relay and the child process', () => {
  const result = fixture(leaking, 'relay-process.leak.ts');
  expect(result.status).toBe('failed');
  // The test itself passed: the file fails for the leak alone.
  expect(result.assertionResults.map((a) => a.status)).toEqual(['passed']);
  expect(result.message).toMatch(/this test file left resources open/);
  expect(result.message).toMatch(/relay process: pid \d+, `outbox-relay run`, port \d+/);
  expect(result.message).toMatch(/\d+ × child process \(ProcessWrap\)/);
});

test('a pool never ended and an interval never cleared fail their file, named as a PostgreSQL socket and a timer', () => {
  const result = fixture(leaking, 'pool-and-timer.leak.ts');
  expect(result.status).toBe('failed');
  expect(result.assertionResults.map((a) => a.status)).toEqual(['passed']);
  expect(result.message).toMatch(/\d+ × TCP socket \(TCPSocketWrap\)/);
  expect(result.message).toMatch(/TCP socket 127\.0\.0\.1:\d+ → \S+:\d+ \(PostgreSQL\)/);
  expect(result.message).toMatch(/\d+ × timer \(setTimeout\/setInterval\) \(Timeout\)/);
});

test('an in-process relay never stopped fails its file, which names the relay, its pool and its sockets', () => {
  const result = fixture(leaking, 'in-process-relay.leak.ts');
  expect(result.status).toBe('failed');
  expect(result.assertionResults.map((a) => a.status)).toEqual(['passed']);
  expect(result.message).toMatch(/in-process relay: schema t_leakrelay_[0-9a-f]+, port \d+/);
  expect(result.message).toMatch(/pg pool: OutboxFixture pool of schema t_leakrelay_[0-9a-f]+/);
  expect(result.message).toMatch(/listening TCP server \(TCPServerWrap\)/);
  expect(result.message).toMatch(/\(RabbitMQ\)/);
});

test('the control, which closes everything it opened, passes', () => {
  const result = fixture(clean, 'clean.leak.ts');
  expect({ code: clean.code, status: result.status, message: result.message }).toEqual({ code: 0, status: 'passed', message: '' });
});

test('a run ends by itself, without forceExit and its "Force exiting Jest" line; one held open by leaks is ended 5 s after, naming what held it', () => {
  expect(clean.output).not.toMatch(/Force exiting|did not exit|still open/);
  expect(leaking.output).not.toMatch(/Force exiting/);
  expect(leaking.output).toMatch(/test run: still open 5000 ms after the last test file \(.*ProcessWrap.*\); exiting/);
});
