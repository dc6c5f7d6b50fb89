import type { ConsumeMessage } from 'amqplib';
import type { Pool } from 'pg';
import type { FleetView } from '../../src/outbox/fleet-store';
import { cli, envFor } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import type { RelayProcess } from '../kit/relay-process';
import { TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';

const fx = OutboxFixture.forFile('fleet', { afterEach: 'reset' });
const broker = TestBroker.forFile();

/** The one of `relays` the lease names, once one of them leads. */
async function leaderOf(relays: readonly RelayProcess[], pool: Pool, schema: string): Promise<RelayProcess> {
  return waitFor('one of the relays to lead', async () => {
    const { rows } = await pool.query<{ pid: number }>(
      `SELECT r.pid FROM "${schema}".relay_lease l JOIN "${schema}".relay_replicas r ON r.replica_id = l.holder WHERE l.expires_at > now()`,
    );
    return relays.find((relay) => relay.pid === rows[0]?.pid);
  });
}

/** Database sessions the relays of this test hold, by the application_name they carry. */
async function relaySessions(pool: Pool, schema: string): Promise<number> {
  const { rows } = await pool.query<{ n: string }>(
    `SELECT count(*) AS n FROM pg_stat_activity
      WHERE application_name IN (SELECT 'outbox-relay ' || replica_id FROM "${schema}".relay_replicas
                                 UNION ALL SELECT 'outbox-relay ' || replica_id || ' lease' FROM "${schema}".relay_replicas
                                 UNION ALL SELECT 'outbox-relay ' || replica_id || ' listen' FROM "${schema}".relay_replicas)`,
  );
  return Number(rows[0]?.n);
}

/** First arrivals per key, as `seq` numbers (payload {"n","key","seq"}), and the duplicates. */
function arrivals(messages: readonly ConsumeMessage[]): { byKey: Map<string, number[]>; unique: number; duplicates: number } {
  const seen = new Set<number>();
  const byKey = new Map<string, number[]>();
  for (const m of messages) {
    const body = JSON.parse(m.content.toString()) as { n: number; key: string; seq: number };
    if (seen.has(body.n)) continue;
    seen.add(body.n);
    const list = byKey.get(body.key) ?? [];
    list.push(body.seq);
    byKey.set(body.key, list);
  }
  return { byKey, unique: seen.size, duplicates: messages.length - seen.size };
}

function expectKeysInOrder(byKey: Map<string, number[]>): void {
  for (const [key, seqs] of byKey) {
    const sorted = [...seqs].sort((a, b) => a - b);
    if (seqs.join() !== sorted.join()) throw new Error(`key ${key} arrived out of order: ${seqs.join(',')}`);
  }
}

async function publishedBy(relay: RelayProcess): Promise<number> {
  return Number((await relay.metrics()).value('outbox_messages_published_total'));
}

test('three replicas: one leads and publishes everything exactly once, in per-key order; the standbys show no outbox gauges and hold one connection each', async () => {
  const total = 6_000;
  const { exchange, received } = await broker.exchangeWithQueue('three');
  await fx.insertBacklog({ count: total, exchange, routingKey: 'k', keys: 100 });
  const relays = await Promise.all([1, 2, 3].map(() => fx.spawnRelay()));
  await waitFor('every message published', async () => (await fx.counts()).published === total, 60_000);
  await waitFor('every message received', () => received.length >= total, 30_000);
  await new Promise((resolve) => setTimeout(resolve, 300)); // anything extra would arrive right behind
  const { byKey, unique, duplicates } = arrivals(received);
  expect(unique).toBe(total);
  expect(duplicates).toBe(0);
  expectKeysInOrder(byKey);

  const leader = await leaderOf(relays, fx.pool, fx.schema);
  const standbys = relays.filter((r) => r !== leader);
  expect(await publishedBy(leader)).toBe(total);
  for (const standby of standbys) {
    const metrics = await standby.metrics();
    expect(metrics.value('outbox_messages_published_total')).toBe(0);
    expect(metrics.value('outbox_leader')).toBe(0);
    expect(metrics.type('outbox_lag_seconds')).toBeUndefined();
    expect(metrics.type('outbox_pending_messages')).toBeUndefined();
  }
  // status names the leader and counts the standbys.
  const status = await cli(['status', '--json'], envFor(fx.schema));
  const fleet = (JSON.parse(status.stdout) as { relays: FleetView }).relays;
  const pids = (list: readonly { pid: number }[]): number[] => list.map((r) => r.pid).sort((a, b) => a - b);
  expect(pids(fleet.replicas)).toEqual(pids(relays));
  expect(fleet.replicas.find((r) => r.role === 'leader')?.pid).toBe(leader.pid);
  expect(pids(fleet.replicas.filter((r) => r.role === 'standby'))).toEqual(pids(standbys));
  expect((await cli(['status'], envFor(fx.schema))).stdout).toMatch(
    new RegExp(`^relays +3 running: leader ${fleet.leader} \\(host .*, pid ${leader.pid}, since .*\\), 2 standbys$`, 'm'),
  );
  const leaderMetrics = await leader.metrics();
  expect(leaderMetrics.value('outbox_leader')).toBe(1);
  expect(leaderMetrics.type('outbox_lag_seconds')).toBe('gauge');

  // Idle: the standbys keep one connection each (their pools close what the start used);
  // the leader at most its pool, its lease and its LISTEN connection.
  await waitFor(
    'idle connections to settle at R + 4 or fewer',
    async () => (await relaySessions(fx.pool, fx.schema)) <= 3 + 4,
    20_000,
    250,
  );
}, 120_000);

test("kill -9 of the leader mid-drain: a standby takes over in about a second, not a TCP timeout; nothing lost, each key's first arrivals in order", async () => {
  const total = 12_000;
  const { exchange, received } = await broker.exchangeWithQueue('kill');
  await fx.insertBacklog({ count: total, exchange, routingKey: 'k', keys: 200 });
  const relays = await Promise.all([1, 2, 3].map(() => fx.spawnRelay({ OUTBOX_BATCH_SIZE: '200' })));
  const leader = await leaderOf(relays, fx.pool, fx.schema);
  await waitFor('the leader to be publishing', () => received.length > 2_000, 30_000, 5);
  leader.kill('SIGKILL');
  const killedAt = Date.now();
  const standbys = relays.filter((r) => r !== leader);
  await waitFor('a standby to publish', async () => (await Promise.all(standbys.map(publishedBy))).some((n) => n > 0), 10_000, 20);
  const takeoverMs = Date.now() - killedAt;
  console.info(`kill -9 of the leader: a standby published ${takeoverMs} ms later`);

  await waitFor('every message published', async () => (await fx.counts()).published === total, 60_000);
  await waitFor('every message received', () => arrivals(received).unique === total, 30_000);
  const { byKey, duplicates } = arrivals(received);
  expectKeysInOrder(byKey);
  // At most the batches the leader had in flight when it died come twice.
  expect(duplicates).toBeLessThanOrEqual(2 * 200);
  expect((await fx.counts()).attempts).toBe(0);
}, 120_000);

test('a frozen leader (SIGSTOP, longer than its lease) while producers write keyed events: every message reaches the consumer within 10 s of its commit, none lost, keys in order; the woken leader stands by', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('freeze');
  const arrivedAt = new Map<string, number>();
  const relays = await Promise.all([1, 2, 3].map(() => fx.spawnRelay()));
  const leader = await leaderOf(relays, fx.pool, fx.schema);

  // Producers: 200 events/s over 20 keys, each in its own transaction; the commit time is
  // taken when COMMIT returns.
  const committedAt = new Map<string, number>();
  const versions = new Map<string, number>();
  let producing = true;
  let n = 0;
  const produce = (async () => {
    while (producing) {
      n += 1;
      const key = `agg-${n % 20}`;
      const version = (versions.get(key) ?? 0) + 1;
      versions.set(key, version);
      const [messageId] = await fx.insert([{ exchange, routing_key: 'k', partition_key: key, payload: { n, key, seq: version } }]);
      committedAt.set(messageId!, Date.now());
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  const track = setInterval(() => {
    for (const m of received) {
      const id = String(m.properties.messageId);
      if (!arrivedAt.has(id)) arrivedAt.set(id, Date.now());
    }
  }, 5);
  try {
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    leader.kill('SIGSTOP');
    await new Promise((resolve) => setTimeout(resolve, 12_000));
    leader.kill('SIGCONT');
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    producing = false;
    await produce;
    await waitFor('every message received', () => committedAt.size > 0 && [...committedAt.keys()].every((id) => arrivedAt.has(id)), 30_000);
  } finally {
    producing = false;
    await produce;
    clearInterval(track);
  }
  const latencies = [...committedAt].map(([id, at]) => (arrivedAt.get(id) as number) - at);
  const maxMs = Math.max(...latencies);
  console.info(`frozen leader for 12 s: ${committedAt.size} messages, commit → consumer max ${maxMs} ms`);
  expect(maxMs).toBeLessThan(10_000);
  expectKeysInOrder(arrivals(received).byKey);
  await waitFor('the woken leader to stand by', () => leader.logged('no longer leading: standing by'), 10_000);
  expect(leader.running).toBe(true);
}, 120_000);

test('a rolling restart of every replica while producers write: nothing lost, no duplicates, keys in order', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('rolling');
  const relays = await Promise.all([1, 2, 3].map(() => fx.spawnRelay()));
  await Promise.all(relays.map((r) => r.ready()));
  await leaderOf(relays, fx.pool, fx.schema);
  let producing = true;
  let n = 0;
  const versions = new Map<string, number>();
  const produce = (async () => {
    while (producing) {
      n += 1;
      const key = `agg-${n % 20}`;
      const version = (versions.get(key) ?? 0) + 1;
      versions.set(key, version);
      await fx.insert([{ exchange, routing_key: 'k', partition_key: key, payload: { n, key, seq: version } }]);
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
  })();
  try {
    for (let i = 0; i < relays.length; i += 1) {
      const old = relays[i]!;
      expect((await old.stop()).code).toBe(0);
      relays[i] = await fx.spawnRelay();
      await relays[i]!.ready();
    }
  } finally {
    producing = false;
    await produce;
  }
  await waitFor('every message received', () => arrivals(received).unique === n, 30_000);
  const { byKey, duplicates } = arrivals(received);
  expectKeysInOrder(byKey);
  expect(duplicates).toBe(0);
}, 120_000);
