import { OutboxFixture } from '../kit/outbox-fixture';
import type { RelayProcess } from '../kit/relay-process';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('proc', { afterEach: 'reset' });
const broker = TestBroker.forFile();

/** Message numbers (`{"n": i}`) received, with how many arrived more than once. */
function tally(messages: readonly { content: Buffer }[]): { unique: Set<number>; duplicates: number } {
  const unique = new Set<number>();
  for (const m of messages) unique.add((JSON.parse(m.content.toString()) as { n: number }).n);
  return { unique, duplicates: messages.length - unique.size };
}

test('kill -9 mid-batch: a new relay delivers everything (duplicates allowed, counted)', async () => {
  const total = 20_000;
  const { exchange, received: queue } = await broker.exchangeWithQueue('kill');
  await fx.insertBacklog({ count: total, exchange, routingKey: 'k' });
  const first = await fx.spawnRelay();
  await waitFor('the first relay to be publishing', () => queue.length > 2_000, 30_000, 5);
  first.kill('SIGKILL');
  expect((await first.exited).signal).toBe('SIGKILL');
  const afterKill = await fx.counts();
  expect(afterKill.pending).toBeGreaterThan(0);

  await fx.spawnRelay();
  await waitFor('every message published', async () => (await fx.counts()).published === total, 60_000);
  await waitFor('every message received', () => tally(queue).unique.size === total, 30_000);
  const { unique, duplicates } = tally(queue);
  expect(unique.size).toBe(total);
  // At most the batches in flight when the relay died are published twice.
  expect(duplicates).toBeLessThanOrEqual(2 * 500);
  console.info(`kill -9: ${duplicates} duplicate deliveries of ${total}`);
  expect((await fx.counts()).attempts).toBe(0);
}, 120_000);

test('two relays on one database publish every message exactly once: one leads and publishes, the other stands by', async () => {
  const total = 10_000;
  const { exchange, received: queue } = await broker.exchangeWithQueue('two');
  await fx.insertBacklog({ count: total, exchange, routingKey: 'k' });
  const [a, b] = await Promise.all([fx.spawnRelay({ OUTBOX_BATCH_SIZE: '100' }), fx.spawnRelay({ OUTBOX_BATCH_SIZE: '100' })]);
  await waitFor('every message published', async () => (await fx.counts()).published === total, 60_000);
  await waitFor('every message received', () => queue.length >= total, 30_000);
  // Anything extra would arrive right behind; give it a moment to show up.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const { unique, duplicates } = tally(queue);
  expect(unique.size).toBe(total);
  expect(duplicates).toBe(0);
  // The replicas do not compete: the leader published everything, the standby nothing.
  const publishedBy = async (relay: RelayProcess): Promise<number> =>
    Number((await relay.metrics()).value('outbox_messages_published_total'));
  const counts = (await Promise.all([publishedBy(a!), publishedBy(b!)])).sort((x, y) => x - y);
  expect(counts).toEqual([0, total]);
}, 120_000);

test('SIGTERM mid-drain: exits 0 within the shutdown timeout, leaves nothing locked, a restart delivers the rest', async () => {
  const total = 20_000;
  const { exchange, received: queue } = await broker.exchangeWithQueue('term');
  await fx.insertBacklog({ count: total, exchange, routingKey: 'k' });
  const first = await fx.spawnRelay({ OUTBOX_SHUTDOWN_TIMEOUT_MS: '3000' });
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

  await fx.spawnRelay();
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
  const relay = await fx.spawnRelay({ OUTBOX_DATABASE_URL: db.toString(), OUTBOX_AMQP_URL: amqp.toString(), OUTBOX_LOG_LEVEL: 'debug' });
  await waitFor('a failed broker login logged', () => relay.logged('cannot connect to the broker'), 20_000);
  relay.kill('SIGTERM');
  expect((await relay.exitWithin(20_000)).code).toBe(0);
  const output = [...relay.stdout, ...relay.stderr].join('\n');
  expect(output).toContain('cannot connect to the broker');
  expect(output).not.toContain(dbSecret);
  expect(output).not.toContain(amqpSecret);
}, 60_000);

test('a relay on a schema that is not migrated exits 1 with the instruction', async () => {
  const relay = await fx.spawnRelay({ OUTBOX_SCHEMA: uniqueName('not_migrated') });
  const exit = await relay.exited;
  expect(exit.code).toBe(1);
  expect(relay.stderr.join('\n')).toMatch(/^outbox-relay: schema "not_migrated_[0-9a-f]+" is not migrated: run outbox-relay migrate$/m);
  expect(relay.stderr.join('\n')).not.toMatch(/^\s+at /m);
}, 30_000);
