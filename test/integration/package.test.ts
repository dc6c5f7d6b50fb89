import { execFile } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Client } from 'pg';
import { testDatabaseUrl } from '../kit/services';

/**
 * The package as a service gets it: `npm pack` of this repository (its `prepare` builds
 * dist/ from the sources, as `npm publish` would), installed with production
 * dependencies only into a new project, then loaded by child `node` processes started in
 * that project, each reporting what its `require` loaded.
 */

const run = promisify(execFile);
/**
 * The environment of every child: this one without what an enclosing `npm test` sets for
 * its own package (npm_package_*, the prefixes), which would point a nested npm at this
 * repository instead of the temporary project.
 */
const childEnv = Object.fromEntries(
  Object.entries(process.env).filter(([name]) => !/^npm_(package_|lifecycle_|command$|config_(local_|global_)?prefix$)/i.test(name)),
);
const ROOT = join(__dirname, '..', '..');
const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
/** The relay's tracing (loaded only when an OTLP endpoint is set); the libraries load none of it. */
const OPENTELEMETRY = [
  '@opentelemetry/api',
  '@opentelemetry/core',
  '@opentelemetry/sdk-trace-base',
  '@opentelemetry/exporter-trace-otlp-http',
  '@opentelemetry/exporter-trace-otlp-proto',
];
/** What a service that only produces must not pay for. */
const NOT_FOR_PRODUCERS = ['amqplib', 'prom-client', 'node-cron', 'zod', 'kysely', ...OPENTELEMETRY];
/** What the consumer must not load (it needs amqplib and pg). */
const NOT_FOR_CONSUMERS = ['prom-client', 'node-cron', 'zod', 'kysely', ...OPENTELEMETRY];

/**
 * Run in the project with `node probe.js <specifier>`: requires the specifier, then
 * prints the names of the packages in require.cache, the type of each export, whether
 * kysely can be resolved at all, and whether a deep import past the exports map fails.
 */
const PROBE = `'use strict';
const mod = require(process.argv[2]);
const packages = new Set();
for (const file of Object.keys(require.cache)) {
  const match = /.*node_modules[\\\\/]((?:@[^\\\\/]+[\\\\/])?[^\\\\/]+)/.exec(file);
  if (match) packages.add(match[1].replace(/\\\\/g, '/'));
}
let kyselyResolvable = true;
try { require.resolve('kysely'); } catch { kyselyResolvable = false; }
let deepImport = 'loaded';
try { require('outbox-relay/dist/app.js'); } catch (err) { deepImport = err.code; }
process.stdout.write(JSON.stringify({
  packages: [...packages].sort(),
  exports: Object.fromEntries(Object.entries(mod).map(([name, value]) => [name, typeof value])),
  kyselyResolvable,
  deepImport,
}));
`;

/**
 * Writes through the installed producer inside a real transaction, then rolls back:
 * `node write.js <schema>` prints the message id and how many rows the transaction saw.
 */
const WRITE = `'use strict';
const { defineMessage, enqueue } = require('outbox-relay/producer');
const { Client } = require('pg');
(async () => {
  const client = new Client({ connectionString: process.env.OUTBOX_DATABASE_URL });
  await client.connect();
  try {
    await client.query('BEGIN');
    const OrderCreated = defineMessage({ type: 'order.created', exchange: 'orders' });
    const id = await enqueue(client, OrderCreated, { orderId: 'o-1' }, { schema: process.argv[2], partitionKey: 'o-1' });
    const { rows } = await client.query('SELECT count(*)::int AS n FROM "' + process.argv[2] + '".messages WHERE message_id = $1', [id]);
    await client.query('ROLLBACK');
    process.stdout.write(JSON.stringify({ id, rows: rows[0].n }));
  } finally {
    await client.end();
  }
})().catch((err) => { process.stderr.write(String(err && err.stack || err)); process.exit(1); });
`;

interface Probe {
  readonly packages: readonly string[];
  readonly exports: Readonly<Record<string, string>>;
  readonly kyselyResolvable: boolean;
  readonly deepImport: string;
}

let workDir: string | undefined;
let appDir: string;
let tarball: string;
const schema = `package_test_${process.pid}_${Date.now()}`;
let schemaCreated = false;

async function inApp(file: string, args: readonly string[], env: Record<string, string> = {}): Promise<string> {
  const { stdout } = await run(file, args, { cwd: appDir, env: { ...childEnv, ...env }, timeout: 30_000 });
  return stdout;
}

async function probe(specifier: string): Promise<Probe> {
  return JSON.parse(await inApp(process.execPath, ['probe.js', specifier])) as Probe;
}

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'outbox-relay-package-'));
  appDir = join(workDir, 'app');
  await run('npm', ['pack', '--pack-destination', workDir, '--silent'], { cwd: ROOT, env: childEnv, timeout: 60_000 });
  const tarballs = (await readdir(workDir)).filter((f) => f.endsWith('.tgz'));
  expect(tarballs).toEqual([`outbox-relay-${VERSION}.tgz`]);
  tarball = join(workDir, tarballs[0]!);
  await mkdir(appDir);
  await writeFile(join(appDir, 'package.json'), JSON.stringify({ name: 'package-test-app', version: '1.0.0', private: true }));
  await writeFile(join(appDir, 'probe.js'), PROBE);
  await writeFile(join(appDir, 'write.js'), WRITE);
  const install = ['install', tarball, '--prefix', appDir, '--no-audit', '--no-fund', '--omit=dev'];
  await run('npm', install, { cwd: appDir, env: childEnv, timeout: 60_000 });
}, 100_000);

afterAll(async () => {
  try {
    if (schemaCreated) {
      const client = new Client({ connectionString: testDatabaseUrl() });
      try {
        await client.connect();
        await client.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`);
      } finally {
        await client.end();
      }
    }
  } finally {
    if (workDir !== undefined) await rm(workDir, { recursive: true, force: true });
  }
});

test('the tarball holds the build of the current sources and nothing else of dist/', async () => {
  const { stdout } = await run('tar', ['-tzf', tarball]);
  const compiled = stdout.split('\n').filter((entry) => /^package\/dist\/.*\.js$/.test(entry));
  expect(compiled).toEqual(
    expect.arrayContaining(['package/dist/index.js', 'package/dist/producer/index.js', 'package/dist/consumer/index.js']),
  );
  // prepack empties dist/, so a module whose source is gone is not published.
  const orphans = compiled.filter((entry) => !existsSync(join(ROOT, 'src', entry.slice('package/dist/'.length).replace(/\.js$/, '.ts'))));
  expect(orphans).toEqual([]);
}, 30_000);

test('the tarball holds the README and every file of docs/, which the README links into', async () => {
  const { stdout } = await run('tar', ['-tzf', tarball]);
  const entries = stdout.split('\n');
  const docs = (await readdir(join(ROOT, 'docs'))).filter((name) => name.endsWith('.md'));
  expect(docs.length).toBeGreaterThan(0);
  expect(entries).toEqual(expect.arrayContaining(['package/README.md', ...docs.map((name) => `package/docs/${name}`)]));
}, 30_000);

test('outbox-relay/producer loads neither amqplib, prom-client, node-cron, zod nor kysely (which is not even installed)', async () => {
  const loaded = await probe('outbox-relay/producer');
  expect(loaded.exports).toMatchObject({
    defineMessage: 'function',
    enqueue: 'function',
    enqueueMany: 'function',
    message: 'function',
    OutboxError: 'function',
  });
  expect(loaded.packages).toContain('outbox-relay');
  expect(loaded.packages.filter((name) => NOT_FOR_PRODUCERS.includes(name))).toEqual([]);
  expect(loaded.kyselyResolvable).toBe(false);
  expect(loaded.deepImport).toBe('ERR_PACKAGE_PATH_NOT_EXPORTED');
}, 30_000);

test('the installed producer writes a message inside a transaction, with no kysely installed', async () => {
  const env = { OUTBOX_DATABASE_URL: testDatabaseUrl(), OUTBOX_SCHEMA: schema };
  schemaCreated = true;
  await inApp(join(appDir, 'node_modules', '.bin', 'outbox-relay'), ['migrate'], env);
  const written = JSON.parse(await inApp(process.execPath, ['write.js', schema], env)) as { id: string; rows: number };
  expect(written.id).toMatch(/^[0-9a-f-]{36}$/);
  expect(written.rows).toBe(1);
}, 30_000);

test('outbox-relay/consumer loads amqplib and pg, but neither prom-client, node-cron, zod nor kysely', async () => {
  const loaded = await probe('outbox-relay/consumer');
  expect(loaded.exports).toMatchObject({ createConsumer: 'function', cleanupInbox: 'function', OutboxError: 'function' });
  expect(loaded.packages).toEqual(expect.arrayContaining(['outbox-relay', 'amqplib', 'pg']));
  expect(loaded.packages.filter((name) => NOT_FOR_CONSUMERS.includes(name))).toEqual([]);
}, 30_000);

test('outbox-relay exposes everything, and its require.cache shows the packages the libraries avoid', async () => {
  const loaded = await probe('outbox-relay');
  expect(loaded.exports).toMatchObject({
    startRelay: 'function',
    loadConfig: 'function',
    migrate: 'function',
    renderMigrationSql: 'function',
    defineMessage: 'function',
    enqueue: 'function',
    enqueueMany: 'function',
    createConsumer: 'function',
    cleanupInbox: 'function',
    OutboxError: 'function',
  });
  // The control for the two tests above: the same probe does see these packages when they are loaded.
  expect(loaded.packages).toEqual(expect.arrayContaining(['amqplib', 'prom-client', 'node-cron', 'zod']));
  expect(loaded.packages).not.toContain('kysely');
  // Tracing is loaded by a relay with an OTLP endpoint, never by the import (prom-client loads the no-op API itself).
  expect(loaded.packages.filter((name) => name.startsWith('@opentelemetry/') && name !== '@opentelemetry/api')).toEqual([]);
}, 30_000);

test('the outbox-relay bin of the installed package runs --version', async () => {
  const stdout = await inApp(join(appDir, 'node_modules', '.bin', 'outbox-relay'), ['--version']);
  expect(stdout.trim()).toBe(VERSION);
}, 30_000);
