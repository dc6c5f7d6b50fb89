import { createServer, type Server, type Socket } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { buildIfMissing, cli, envFor, expectOneLineFailure } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';

// The shutdown deadline holds whatever a dependency does: the process is gone within
// OUTBOX_SHUTDOWN_TIMEOUT_MS + 9 s of SIGTERM, even when its main thread never comes back
// (OTEL_BSP_MAX_EXPORT_BATCH_SIZE=0 once made the span flush loop until the heap ran out).
// Those OTEL_BSP_* values are refused at start now.

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('shutdown_deadline');
const SHUTDOWN_TIMEOUT_MS = 500;
/** The documented bound: OUTBOX_SHUTDOWN_TIMEOUT_MS + 8 s to close, + 1 s for the watchdog. */
const DEADLINE_MS = SHUTDOWN_TIMEOUT_MS + 9_000;
/** What a loaded machine may add to it before the test calls it a hang. */
const SLACK_MS = 10_000;

const dir = mkdtempSync(join(tmpdir(), 'outbox-deadline-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

test.each(['0', '-1', '1e9', 'all'])(
  'OTEL_BSP_MAX_EXPORT_BATCH_SIZE=%s: run exits 2 naming it, before it connects to anything',
  async (value) => {
    const result = await cli(
      ['run'],
      envFor(fx.schema, { OTEL_EXPORTER_OTLP_ENDPOINT: 'http://127.0.0.1:1', OTEL_BSP_MAX_EXPORT_BATCH_SIZE: value }),
    );
    expect(expectOneLineFailure(result, 2)).toContain('OTEL_BSP_MAX_EXPORT_BATCH_SIZE');
  },
);

test('a main thread that never comes back after SIGTERM: the watchdog ends the process within the deadline, saying why', async () => {
  // A dependency that, once the shutdown begins, keeps the main thread busy for ever.
  const preload = join(dir, 'block-on-sigterm.js');
  writeFileSync(preload, "process.once('SIGTERM', () => setImmediate(() => { for (;;) {} }));\n");
  const relay = await fx.spawnRelay({ NODE_OPTIONS: `--require ${preload}`, OUTBOX_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS) });
  await relay.ready();
  const signalledAt = Date.now();
  relay.kill('SIGTERM');
  let exit;
  try {
    exit = await relay.exitWithin(DEADLINE_MS + SLACK_MS);
  } finally {
    if (relay.running) relay.kill('SIGKILL');
  }
  expect(exit).toEqual({ code: null, signal: 'SIGKILL' });
  // Not before the grace the relay gives itself: the watchdog is the last resort.
  expect(Date.now() - signalledAt).toBeGreaterThanOrEqual(SHUTDOWN_TIMEOUT_MS + 8_000);
  expect(
    relay
      .logs()
      .some((l) => l['level'] === 'fatal' && String(l['msg']).startsWith('shutdown overran its time and the process does not answer')),
  ).toBe(true);
}, 60_000);

test('a collector that never answers: the relay still stops on time, exit 0', async () => {
  // Accepts the export's connection and never replies.
  const sockets: Socket[] = [];
  const silent: Server = createServer((socket) => sockets.push(socket));
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
  const { port } = silent.address() as { port: number };
  try {
    const relay = await fx.spawnRelay({
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${port}`,
      OTEL_BSP_SCHEDULE_DELAY: '0',
      OTEL_BSP_EXPORT_TIMEOUT: '600000',
      OUTBOX_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    });
    await relay.ready();
    await fx.insert([{ routing_key: 'nobody', payload: { n: 1 } }]);
    await new Promise((resolve) => setTimeout(resolve, 500));
    relay.kill('SIGTERM');
    expect(await relay.exitWithin(DEADLINE_MS + SLACK_MS)).toEqual({ code: 0, signal: null });
  } finally {
    for (const socket of sockets) socket.destroy();
    await new Promise((resolve) => silent.close(resolve));
  }
}, 60_000);
