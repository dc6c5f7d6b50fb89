import { Pool } from 'pg';
import { buildIfMissing, cli } from '../kit/cli';
import { insertBacklog } from '../kit/outbox-rows';
import { PgCluster, type PgNode } from '../kit/pg-cluster';
import { endpointStatus } from '../kit/relay-http';
import { RelayProcess } from '../kit/relay-process';
import { testAmqpUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

// A PostgreSQL failover under a draining relay, on a primary and a streaming standby of
// the test's own (test/kit/pg-cluster.ts): the primary is stopped with `pg_ctl stop -m
// immediate` mid-drain and the standby promoted. The relay has both hosts in its URL and
// must follow by itself; every message the new primary holds must arrive.
//
// With asynchronous replication (the default), marks the old primary committed but never
// shipped are lost with it and those messages are published again. Every duplicate must
// be one of them, or a message the old primary never marked durably: a batch in flight at
// the kill, or one whose commit the relay saw but the WAL writer had not yet written (the
// relay commits its marks with synchronous_commit = off: src/outbox/message-queue.ts),
// first delivered just before the kill.
//
// With synchronous replication (synchronous_standby_names on the primary) the relay's
// marks wait for the standby too, so the only duplicates are the batches in flight at the
// kill: at most two batches (the relay's batches in flight at once).

const MESSAGES = 20_000;
const BATCH_SIZE = 250;
/**
 * How long before the kill a message never marked durably on the old primary may have
 * been first delivered: the batches in flight, and commits within the WAL writer's
 * delay (3 × wal_writer_delay = 600 ms at most), with room for a loaded machine.
 */
const UNMARKED_WINDOW_MS = 2_000;

let cluster: PgCluster | undefined;
let relay: RelayProcess | undefined;
let broker: TestBroker | undefined;

afterAll(async () => {
  try {
    await relay?.ensureStopped();
  } finally {
    try {
      await broker?.close();
    } finally {
      await cluster?.close();
    }
  }
});

/** /readyz of `port` every 50 ms, as (time, ready) at each change. */
function watchReadiness(port: number): { changes: { at: number; ready: boolean }[]; stop: () => void } {
  const changes: { at: number; ready: boolean }[] = [];
  let stopped = false;
  void (async () => {
    while (!stopped) {
      const ready = (await endpointStatus(port, '/readyz').catch(() => 0)) === 200;
      if (changes[changes.length - 1]?.ready !== ready) changes.push({ at: Date.now(), ready });
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  return { changes, stop: () => void (stopped = true) };
}

/** message_id → published_at (text, to the microsecond) of every row of `node`. */
async function marks(node: PgNode): Promise<Map<string, string | null>> {
  const rows = await node.query<{ id: string; at: string | null }>(
    'SELECT message_id::text AS id, published_at::text AS at FROM outbox.messages',
  );
  return new Map(rows.map((r) => [r.id, r.at]));
}

/** Runs one failover: the cluster, the drain, the kill, the promotion, and what arrived. */
async function failover(replication: 'asynchronous' | 'synchronous'): Promise<void> {
  buildIfMissing();
  const started = await PgCluster.primaryAndStandby();
  cluster = started.cluster;
  const { primary, standby } = started;
  const url = `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/postgres?target_session_attrs=read-write`;

  // The schema, by the CLI through the multi-host URL (it picks the primary).
  const migrated = await cli(['migrate'], { OUTBOX_DATABASE_URL: url });
  expect({ code: migrated.code, stderr: migrated.stderr }).toEqual({ code: 0, stderr: '' });

  broker = await TestBroker.connect();
  const exchange = await broker.exchange(uniqueName('failover'));
  const queue = await broker.declareQueue(uniqueName('failoverq'), { exchange, pattern: '#' });
  const arrivals = new Map<string, number[]>();
  let delivered = 0;
  await broker.consume(queue, (msg) => {
    const id = String(msg.properties.messageId);
    arrivals.set(id, [...(arrivals.get(id) ?? []), Date.now()]);
    delivered += 1;
  });

  const pool = new Pool({ connectionString: primary.url(), max: 2 });
  pool.on('error', () => undefined);
  try {
    await insertBacklog(pool, 'outbox.messages', { count: MESSAGES, exchange, routingKey: 'failover.backlog' });
  } finally {
    await pool.end();
  }
  // The messages themselves are on the standby before the drain starts: what the test
  // loses on purpose are the relay's marks, not the producer's rows.
  await waitFor('the standby replaying the backlog', () => cluster!.caughtUp(primary), 30_000, 50);
  if (replication === 'synchronous') await cluster.makeSynchronous(primary);

  relay = await RelayProcess.start({
    OUTBOX_DATABASE_URL: url,
    OUTBOX_AMQP_URL: testAmqpUrl(),
    OUTBOX_HTTP_HOST: '127.0.0.1',
    OUTBOX_BATCH_SIZE: String(BATCH_SIZE),
    OUTBOX_LOG_LEVEL: 'info',
    OUTBOX_APP_ID: uniqueName('failover'),
  });
  await relay.ready();
  const readiness = watchReadiness(relay.port);

  // Mid-drain: a quarter delivered.
  await waitFor('a quarter of the backlog delivered', () => arrivals.size >= MESSAGES / 4, 60_000, 5);
  const killedAt = Date.now();
  const deliveredAtKill = arrivals.size;
  await cluster.kill(primary);
  // Promotion: from the promote request; `promote` returns once the standby takes writes.
  const promotedAt = Date.now();
  await cluster.promote(standby);

  try {
    // Every message the new primary holds arrives, and all of them are marked there.
    const held = await marks(standby);
    expect(held.size).toBe(MESSAGES);
    await waitFor(
      'every message of the new primary delivered and marked',
      async () => {
        if (![...held.keys()].every((id) => arrivals.has(id))) return false;
        const rows = await standby.query<{ n: string }>('SELECT count(*) AS n FROM outbox.messages WHERE published_at IS NULL');
        return rows[0]?.n === '0';
      },
      60_000,
      100,
    );
    await relay.ready(10_000);
  } catch (err) {
    throw new Error(
      `${(err as Error).message}\n${arrivals.size} of ${MESSAGES} delivered; relay output:\n${relay.lastOutput(15)}\nnew primary log:\n${standby.lastLog()}`,
      { cause: err },
    );
  } finally {
    readiness.stop();
  }
  expect(relay.running).toBe(true);
  const chosen = relay
    .logs()
    .filter((l) => l['msg'] === 'database host chosen')
    .map((l) => l['host']);
  expect(chosen).toEqual([`127.0.0.1:${primary.port}`, `127.0.0.1:${standby.port}`]);

  // What the old primary had committed: it comes back on a port of its own, out of the URL.
  const oldPrimary = await cluster.restartElsewhere(primary);
  const before = await marks(oldPrimary);
  const after = await marks(standby);
  /** Marked on the old primary, but the new one has another (later) mark: lost with the old primary. */
  const lostMarks = new Set([...before].filter(([id, at]) => at !== null && after.get(id) !== at).map(([id]) => id));
  const markedOnOld = [...before.values()].filter((at) => at !== null).length;

  const duplicates = [...arrivals].filter(([, times]) => times.length > 1);
  const extraDeliveries = delivered - arrivals.size;
  const neverMarked = duplicates.filter(([id]) => !lostMarks.has(id));
  const unexplained = neverMarked.filter(([id, times]) => {
    const first = times[0] ?? Infinity;
    return before.get(id) !== null || first < killedAt - UNMARKED_WINDOW_MS || first > promotedAt;
  });
  const lostMarkDeliveredOnce = [...lostMarks].filter((id) => (arrivals.get(id)?.length ?? 0) < 2);
  // The publishes from the new primary: of each message it marked itself, the last delivery
  // (an earlier one, if any, came from the old primary).
  const fromNewPrimary = [...after].filter(([id, at]) => at !== null && before.get(id) !== at).map(([id]) => id);
  const firstAfterPromotion = Math.min(...fromNewPrimary.map((id) => Math.max(...(arrivals.get(id) ?? [Infinity]))));
  const notReady = readiness.changes.find((c) => !c.ready && c.at >= killedAt);
  const readyAgain = readiness.changes.find((c) => c.ready && c.at > (notReady?.at ?? killedAt));

  console.info(
    [
      `failover (${replication} replication): ${MESSAGES} messages, primary stopped (immediate) after ${deliveredAtKill} delivered, standby promotion requested ${promotedAt - killedAt} ms later`,
      `lost 0: all ${after.size} messages of the new primary delivered`,
      `duplicates: ${duplicates.length} messages delivered twice or more (${extraDeliveries} extra deliveries);` +
        ` the old primary had marked ${markedOnOld}, ${lostMarks.size} of those marks never reached the standby` +
        ` and were published again; ${neverMarked.length} had no durable mark on the old primary` +
        (replication === 'asynchronous'
          ? ' (in flight at the kill, or committed with synchronous_commit = off in its last fraction of a second)'
          : ' (in flight at the kill)'),
      `time from promotion to the first publish on the new primary: ${firstAfterPromotion - promotedAt} ms` +
        (readyAgain ? `; /readyz 200 again ${readyAgain.at - promotedAt} ms after promotion` : ''),
    ].join('\n'),
  );

  expect(unexplained.map(([id]) => id)).toEqual([]);
  // Every lost mark is published again: the duplicates are exactly the lost marks and the never-marked.
  expect(lostMarkDeliveredOnce).toEqual([]);
  expect(duplicates.length).toBe(lostMarks.size + neverMarked.length);
  // Synchronous: a mark the relay saw committed is on the standby; what it re-publishes is
  // the batches in flight (a mark may be on the old primary's disk, waiting for the
  // standby's ack, when the kill came: that batch was in flight too).
  if (replication === 'synchronous') expect(duplicates.length).toBeLessThanOrEqual(2 * BATCH_SIZE);
  expect(Number.isFinite(firstAfterPromotion)).toBe(true);
  expect(notReady).toBeDefined();
  expect(readyAgain).toBeDefined();

  // The one-shot commands take the same URL and find the new primary (the old port is dead).
  const status = await cli(['status', '--json'], { OUTBOX_DATABASE_URL: url });
  expect(status.code).toBe(0);
  expect(JSON.parse(status.stdout)).toMatchObject({ pending: 0, dead: 0 });
  await relay.ensureStopped();
  await broker.close();
  await cluster.close();
  [relay, broker, cluster] = [undefined, undefined, undefined];
}

test('asynchronous replication: the relay follows a failover to the promoted standby by itself; nothing lost, every duplicate a lost mark', async () => {
  await failover('asynchronous');
}, 150_000);

test('synchronous replication: the relay follows the failover; its marks waited for the standby, so only the batches in flight are published twice', async () => {
  await failover('synchronous');
}, 150_000);
