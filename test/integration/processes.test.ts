import { OutboxFixture, uniqueName } from '../helpers/outbox-fixture';
import { RelayProcess } from '../helpers/relay-process';
import { testAmqpUrl } from '../helpers/services';
import { TestBroker } from '../helpers/test-broker';
import { waitFor } from '../helpers/wait';

let fx: OutboxFixture;
let broker: TestBroker;
const processes: RelayProcess[] = [];

function spawnRelay(overrides: Record<string, string> = {}): RelayProcess {
  const relay = RelayProcess.start(fx.env({ OUTBOX_LOG_LEVEL: 'info', ...overrides }));
  processes.push(relay);
  return relay;
}

beforeAll(async () => {
  fx = await OutboxFixture.create('proc');
  broker = await TestBroker.connect();
});

afterEach(async () => {
  await Promise.all(processes.splice(0).map((p) => p.ensureStopped()));
  await fx.pool.query(`DELETE FROM ${fx.table}`);
});

afterAll(async () => {
  await broker.close();
  await fx.close();
});

/** Message numbers (`{"n": i}`) received, with how many arrived more than once. */
function tally(messages: readonly { content: Buffer }[]): { unique: Set<number>; duplicates: number } {
  const unique = new Set<number>();
  for (const m of messages) unique.add((JSON.parse(m.content.toString()) as { n: number }).n);
  return { unique, duplicates: messages.length - unique.size };
}

test('kill -9 mid-batch: a new relay delivers everything (duplicates allowed, counted)', async () => {
  const total = 20_000;
  const exchange = await broker.exchange(uniqueName('kill'));
  const queue = await broker.queue(uniqueName('killq'), { exchange, pattern: '#' });
  await fx.insertMany(total, { exchange, routingKey: 'k' });
  const first = spawnRelay();
  await waitFor('the first relay to be publishing', () => queue.length > 2_000, 30_000, 5);
  first.kill('SIGKILL');
  expect((await first.exited).signal).toBe('SIGKILL');
  const afterKill = await fx.counts();
  expect(afterKill.pending).toBeGreaterThan(0);

  spawnRelay();
  await waitFor('every message published', async () => (await fx.counts()).published === total, 60_000);
  await waitFor('every message received', () => tally(queue).unique.size === total, 30_000);
  const { unique, duplicates } = tally(queue);
  expect(unique.size).toBe(total);
  // At most the batches in flight when the relay died are published twice.
  expect(duplicates).toBeLessThanOrEqual(2 * 500);
  console.info(`kill -9: ${duplicates} duplicate deliveries of ${total}`);
  expect((await fx.counts()).attempts).toBe(0);
}, 120_000);

test('two relays on one database publish every message exactly once', async () => {
  const total = 10_000;
  const exchange = await broker.exchange(uniqueName('two'));
  const queue = await broker.queue(uniqueName('twoq'), { exchange, pattern: '#' });
  await fx.insertMany(total, { exchange, routingKey: 'k' });
  const a = spawnRelay({ OUTBOX_BATCH_SIZE: '100' });
  const b = spawnRelay({ OUTBOX_BATCH_SIZE: '100' });
  await waitFor('every message published', async () => (await fx.counts()).published === total, 60_000);
  await waitFor('every message received', () => queue.length >= total, 30_000);
  // Anything extra would arrive right behind; give it a moment to show up.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const { unique, duplicates } = tally(queue);
  expect(unique.size).toBe(total);
  expect(duplicates).toBe(0);
  // Both did part of the work.
  const publishedBy = async (relay: RelayProcess): Promise<number> => {
    const port = relay.logs().find((l) => l['msg'] === 'serving /metrics, /healthz and /readyz')?.['port'];
    const text = await (await fetch(`http://127.0.0.1:${String(port)}/metrics`)).text();
    return Number(/^outbox_messages_published_total (\d+)$/m.exec(text)?.[1]);
  };
  const [byA, byB] = await Promise.all([publishedBy(a), publishedBy(b)]);
  expect(byA + byB).toBe(total);
  expect(byA).toBeGreaterThan(0);
  expect(byB).toBeGreaterThan(0);
}, 120_000);

test('SIGTERM mid-drain: exits 0 within the shutdown timeout, leaves nothing locked, a restart delivers the rest', async () => {
  const total = 20_000;
  const exchange = await broker.exchange(uniqueName('term'));
  const queue = await broker.queue(uniqueName('termq'), { exchange, pattern: '#' });
  await fx.insertMany(total, { exchange, routingKey: 'k' });
  const first = spawnRelay({ OUTBOX_SHUTDOWN_TIMEOUT_MS: '3000' });
  await waitFor('the relay to be publishing', () => queue.length > 2_000, 30_000, 5);
  const signalledAt = Date.now();
  first.kill('SIGTERM');
  const exit = await first.exited;
  expect(exit.code).toBe(0);
  expect(Date.now() - signalledAt).toBeLessThan(3_000 + 2_000);
  expect(first.logged('stopped')).toBe(true);
  expect(await fx.lockedRows()).toBe(0);
  const stopped = await fx.counts();
  expect(stopped.pending).toBeGreaterThan(0);
  expect(stopped.attempts).toBe(0);

  spawnRelay();
  await waitFor('every message published', async () => (await fx.counts()).published === total, 60_000);
  await waitFor('every message received', () => tally(queue).unique.size === total, 30_000);
  // A graceful stop marks what the broker confirmed: nothing is published twice.
  expect(tally(queue).duplicates).toBe(0);
}, 120_000);

test('a password never appears in a log line', async () => {
  const dbSecret = 'db-Secret-4711';
  const amqpSecret = 'amqp-Secret-0815';
  const db = new URL(fx.env()['OUTBOX_DATABASE_URL'] as string);
  db.password = dbSecret; // trust auth ignores it; the URL still carries it
  const amqp = new URL(testAmqpUrl());
  amqp.password = amqpSecret; // wrong: the broker refuses the login, and the relay logs that
  const relay = spawnRelay({ OUTBOX_DATABASE_URL: db.toString(), OUTBOX_AMQP_URL: amqp.toString(), OUTBOX_LOG_LEVEL: 'debug' });
  await waitFor('a failed broker login logged', () => relay.logged('cannot connect to the broker'), 20_000);
  relay.kill('SIGTERM');
  expect((await relay.exitWithin(20_000)).code).toBe(0);
  const output = [...relay.stdout, ...relay.stderr].join('\n');
  expect(output).toContain('cannot connect to the broker');
  expect(output).not.toContain(dbSecret);
  expect(output).not.toContain(amqpSecret);
}, 60_000);

test('a relay on a schema that is not migrated exits 1 with the instruction', async () => {
  const relay = spawnRelay({ OUTBOX_SCHEMA: uniqueName('not_migrated') });
  const exit = await relay.exited;
  expect(exit.code).toBe(1);
  expect(relay.stderr.join('\n')).toMatch(/^outbox-relay: schema "not_migrated_[0-9a-f]+" is not migrated: run outbox-relay migrate$/m);
  expect(relay.stderr.join('\n')).not.toMatch(/^\s+at /m);
}, 30_000);
