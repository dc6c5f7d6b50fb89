import { cli, envFor } from '../kit/cli';
import { FullQueues, insertKeyed, missing, orderViolations, outboxFacts, type FullQueueType } from '../kit/full-queue';
import { OutboxFixture } from '../kit/outbox-fixture';
import { endpointStatus } from '../kit/relay-http';
import { TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';
import { maxProbesWithin } from '../../src/relay/probe-schedule';

/**
 * Queues that refuse publishers while full (`x-max-length` + `x-overflow: reject-publish`),
 * classic and quorum, with no consumer for longer than every attempt of a message would
 * last; another queue on the same exchange consumed all along. The relay runs as a process.
 */

const fx = OutboxFixture.forFile('held', { afterEach: 'reset' });
// Quorum queues are durable by nature.
const broker = TestBroker.forFile({ durable: true });

/** Short attempt settings: three attempts with 200–1,000 ms backoff are over in about a second. */
const RELAY_ENV = {
  OUTBOX_MAX_ATTEMPTS: '3',
  OUTBOX_BACKOFF_BASE_MS: '200',
  OUTBOX_BACKOFF_MAX_MS: '1000',
  OUTBOX_BATCH_SIZE: '100',
  OUTBOX_POLL_INTERVAL_MS: '100',
};
const TYPES: readonly FullQueueType[] = ['classic', 'quorum'];
const MAX_LENGTH = 50;
/** Messages per full queue written before the relay starts, and while it is held. */
const BEFORE = 300;
const WHILE_HELD = 50;
const KEYS = 10;
/** How long the queues stay full (the 15 s). */
const FULL_MS = 15_000;
const HELD_LOG = 'destination held: the broker refuses its messages';
const FLOWING_LOG = 'destination flows again';

test('queues full for 15 s (classic and quorum): nothing dead, no attempt, the other destination flows, few probes, then everything in per-key order', async () => {
  const queues = await FullQueues.declare(broker, TYPES, MAX_LENGTH);
  const { exchange, other } = queues;
  const classic = queues.full.get('classic')!;
  for (const type of TYPES) {
    await insertKeyed(fx.pool, fx.table, {
      exchange,
      routingKey: queues.full.get(type)!.routingKey,
      count: BEFORE,
      keys: KEYS,
      prefix: `${type}-`,
    });
  }
  // Keys that go first to a full queue, then to the flowing one: the second waits for the first (per-key order).
  const crossKeys = ['cross-1', 'cross-2', 'cross-3'];
  const cross = await fx.insert(
    crossKeys.flatMap((key) => [
      { exchange, routing_key: classic.routingKey, partition_key: key, payload: { key, n: 1 } },
      { exchange, routing_key: other.routingKey, partition_key: key, payload: { key, n: 2 } },
    ]),
  );
  // A deadline that passes while the message waits: it expires, unsent.
  const expiring = await fx.insert(
    [1, 2].map((n) => ({ exchange, routing_key: classic.routingKey, payload: { expiring: n }, expires_at: new Date(Date.now() + 5_000) })),
  );
  await insertKeyed(fx.pool, fx.table, { exchange, routingKey: other.routingKey, count: 100, keys: KEYS, prefix: 'other-' });

  const relay = await fx.spawnRelay(RELAY_ENV);
  await relay.ready();
  const gauge = async (): Promise<number | undefined> => (await relay.metrics()).value('outbox_held_destinations');
  const refused = async (): Promise<number> => (await relay.metrics()).value('outbox_publishes_refused_total') ?? 0;
  await waitFor('both full queues held', async () => (await gauge()) === 2, 20_000, 50);
  const heldAt = Date.now();
  const heldLines = relay.logs().filter((l) => l['msg'] === HELD_LOG);
  expect(heldLines.map((l) => [l['exchange'], l['routingKey']]).sort()).toEqual(
    TYPES.map((t) => [exchange, queues.full.get(t)!.routingKey]).sort(),
  );
  expect(relay.stdout.join('\n')).not.toMatch(/"payload"|"content"/);

  // The other destination flows while the full ones are held, also what is written meanwhile.
  for (const type of TYPES) {
    await insertKeyed(fx.pool, fx.table, {
      exchange,
      routingKey: queues.full.get(type)!.routingKey,
      count: WHILE_HELD,
      keys: KEYS,
      prefix: `${type}-`,
    });
  }
  await insertKeyed(fx.pool, fx.table, { exchange, routingKey: other.routingKey, count: 100, keys: KEYS, prefix: 'other-late-' });
  await waitFor('the other destination delivered', () => other.delivered.length >= 200, 20_000, 20);
  const crossSecond = new Set([cross[1], cross[3], cross[5]]);
  expect(other.delivered.filter((id) => crossSecond.has(id))).toEqual([]);

  // After the initial burst (what was in flight when the first refusals came), only probes.
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const refusedAfterBurst = await refused();
  const burstEndAt = Date.now();

  // What an operator sees meanwhile: ready, not stalled; status and inspect say what waits.
  expect(await endpointStatus(relay.port, '/readyz')).toBe(200);
  const status = await cli(['status', '--json'], envFor(fx.schema));
  expect(status).toMatchObject({ code: 0, stderr: '' });
  const held = (JSON.parse(status.stdout) as { held: { messages: number; destinations: { exchange: string; routingKey: string }[] } }).held;
  expect(held.messages).toBeGreaterThan(2 * (BEFORE - MAX_LENGTH));
  expect(held.destinations.map((d) => d.routingKey).sort()).toEqual(TYPES.map((t) => queues.full.get(t)!.routingKey).sort());
  const text = await cli(['status'], envFor(fx.schema));
  expect(text.stdout).toMatch(new RegExp(`held\\s+\\d+ messages wait for destinations that refuse messages`));
  const { rows: waiting } = await fx.pool.query<{ message_id: string }>(
    `SELECT message_id FROM ${fx.table} WHERE routing_key = $1 AND published_at IS NULL AND partition_key IS NULL AND expires_at IS NULL LIMIT 1`,
    [classic.routingKey],
  );
  const { rows: waitingKeyed } = await fx.pool.query<{ message_id: string }>(
    `SELECT message_id FROM ${fx.table} WHERE routing_key = $1 AND published_at IS NULL ORDER BY id LIMIT 1`,
    [queues.full.get('quorum')!.routingKey],
  );
  for (const messageId of [waiting[0]?.message_id, waitingKeyed[0]?.message_id]) {
    if (messageId === undefined) continue;
    const inspected = await cli(['inspect', messageId, '--json'], envFor(fx.schema));
    expect(JSON.parse(inspected.stdout)).toMatchObject({
      state: 'pending-held',
      attempts: 0,
      lastError: expect.stringMatching(/^destination held: exchange /),
    });
  }

  await new Promise((resolve) => setTimeout(resolve, Math.max(0, heldAt + FULL_MS - Date.now())));
  const heldMs = Date.now() - heldAt;
  const refusedWhileHeld = await refused();
  const probed = refusedWhileHeld - refusedAfterBurst;
  const beforeHeld = await outboxFacts(fx.pool, fx.table);
  expect(beforeHeld.dead).toBe(2); // the two expired messages only (they carry dead_at; never sent)
  const { rows: expired } = await fx.pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM ${fx.table} WHERE expired_at IS NOT NULL AND message_id = ANY($1::uuid[])`,
    [expiring],
  );
  expect(Number(expired[0]?.n)).toBe(2);
  expect(beforeHeld.withAttempts).toBe(0);
  // No flood: per held destination, the initial in-flight refusals, then one probe at a time
  // (100 ms doubling to 5 s: at most maxProbesWithin of them), plus a lapsed probe or two.
  expect(probed).toBeLessThanOrEqual(TYPES.length * (maxProbesWithin(heldMs - (burstEndAt - heldAt)) + 3));
  expect(refusedWhileHeld).toBeLessThanOrEqual(
    TYPES.length * (BEFORE + crossKeys.length + 2) + TYPES.length * (maxProbesWithin(heldMs) + 3),
  );

  // The consumers are back: everything arrives, in per-key order; nothing dead, no attempt counted.
  const roomAt = Date.now();
  await queues.drain();
  const facts = await waitFor(
    'every message delivered',
    async () => {
      const f = await outboxFacts(fx.pool, fx.table);
      const all = TYPES.every(
        (t) => missing(queues.full.get(t)!.delivered, f, queues.full.get(t)!.routingKey).length <= (t === 'classic' ? 2 : 0),
      );
      return all && f.pending === 0 ? f : undefined;
    },
    60_000,
    100,
  );
  const drainedMs = Date.now() - roomAt;
  for (const type of TYPES) {
    const destination = queues.full.get(type)!;
    expect(missing(destination.delivered, facts, destination.routingKey).sort()).toEqual(type === 'classic' ? [...expiring].sort() : []);
    expect(orderViolations(destination.delivered, facts)).toEqual([]);
  }
  expect(missing(other.delivered, facts, other.routingKey)).toEqual([]);
  expect(orderViolations(other.delivered, facts)).toEqual([]);
  expect(facts.dead).toBe(2);
  expect(facts.withAttempts).toBe(0);
  // A key's later message (to the flowing queue) was published only after its earlier one (to the full queue).
  const { rows: publishedAt } = await fx.pool.query<{ message_id: string; at: Date }>(
    `SELECT message_id, published_at AS at FROM ${fx.table} WHERE message_id = ANY($1::uuid[])`,
    [cross],
  );
  const at = new Map(publishedAt.map((r) => [r.message_id, r.at.getTime()]));
  for (let i = 0; i < crossKeys.length; i += 1) expect(at.get(cross[2 * i + 1]!)!).toBeGreaterThanOrEqual(at.get(cross[2 * i]!)!);

  await waitFor('both destinations flowing again', async () => (await gauge()) === 0, 20_000, 100);
  const flowing = relay.logs().filter((l) => l['msg'] === FLOWING_LOG);
  expect(flowing.map((l) => l['routingKey']).sort()).toEqual(TYPES.map((t) => queues.full.get(t)!.routingKey).sort());
  console.info(
    `held destinations: ${TYPES.join(' and ')} queues of x-max-length ${MAX_LENGTH} full for ${Math.round(heldMs / 1000)} s ` +
      `(OUTBOX_MAX_ATTEMPTS 3, backoff 200-1,000 ms), ${2 * (BEFORE + WHILE_HELD) + crossKeys.length} messages to them: ` +
      `0 dead, 0 attempts, ${refusedWhileHeld} refused publishes while held (${probed} in the last ${Math.round((heldMs - (burstEndAt - heldAt)) / 1000)} s), ` +
      `other destination ${other.delivered.length} delivered meanwhile; all delivered ${drainedMs} ms after the consumers came back, in per-key order`,
  );
}, 120_000);
