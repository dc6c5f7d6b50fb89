/**
 * Commit-side latency on a service's own kind of traffic, as pgbench makes it: arrivals at
 * random (a Poisson process: exponential gaps, so bursts and lulls), four client
 * connections, each transaction updating one of 1,000 domain rows and inserting its event
 * keyed by that row, the event stamped by `clock_timestamp()` at its INSERT. An amqplib
 * consumer on the queue takes each message's latency from that stamp to its arrival (the
 * database and the bench share the machine's clock). The relays run with
 * OUTBOX_STAGE_TIMINGS, so the leader's histogram says where the time went.
 */
import type { PoolClient, Pool } from 'pg';
import type { RelayProcess } from '../test/kit/relay-process';
import { STAGES, type Stage } from '../src/relay/stage-timeline';
import { outboxSchema, percentile, sleep, startRelay, topology } from './support';

/** A payload of about 200 bytes, the size of most integration events. */
const SMALL_PAD = 'x'.repeat(150);
const CLIENTS = 4;
const DOMAIN_ROWS = 1_000;

export interface BurstyResult {
  readonly rate: number;
  readonly replicas: number;
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  readonly count: number;
  /** Transactions per second actually committed. */
  readonly achievedRate: number;
  /** Per stage, from the leader's outbox_stage_seconds: the bucket bounds under which half and 99 % fell (ms). */
  readonly stages: Readonly<Record<Stage, { readonly p50: number; readonly p99: number; readonly count: number }>>;
}

/** An exponential gap of mean 1/`rate` s, in ms. */
function poissonGapMs(rate: number): number {
  return (-Math.log(1 - Math.random()) / rate) * 1000;
}

/** Every relay's outbox_stage_seconds buckets, summed: stage -> upper bound (s) -> count so far. */
type StageBuckets = Map<Stage, Map<number, number>>;

async function stageBuckets(relays: readonly RelayProcess[]): Promise<StageBuckets> {
  const result: StageBuckets = new Map(STAGES.map((stage) => [stage, new Map<number, number>()]));
  for (const scrape of await Promise.all(relays.map((r) => r.metrics()))) {
    for (const sample of scrape.samples) {
      const buckets = result.get(sample.labels['stage'] as Stage);
      if (sample.name !== 'outbox_stage_seconds_bucket' || buckets === undefined) continue;
      const le = sample.labels['le'] === '+Inf' ? Number.POSITIVE_INFINITY : Number(sample.labels['le']);
      buckets.set(le, (buckets.get(le) ?? 0) + sample.value);
    }
  }
  return result;
}

/**
 * The quantile bounds of each stage over the messages observed between two scrapes: the
 * warm-up's messages (the relay's first batches, its JIT still cold) are left out, as the
 * end-to-end figures leave them out.
 */
function stageQuantiles(before: StageBuckets, after: StageBuckets): BurstyResult['stages'] {
  const result = {} as Record<Stage, { p50: number; p99: number; count: number }>;
  for (const stage of STAGES) {
    const buckets = new Map<number, number>();
    for (const [le, n] of after.get(stage) ?? []) buckets.set(le, n - (before.get(stage)?.get(le) ?? 0));
    const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
    const total = sorted.at(-1)?.[1] ?? 0;
    const bound = (q: number): number => (sorted.find(([, n]) => n >= q * total)?.[0] ?? Number.NaN) * 1000;
    result[stage] = { p50: bound(0.5), p99: bound(0.99), count: total };
  }
  return result;
}

/**
 * `rate` transactions a second at random arrival times for `seconds` (the first second is
 * not measured), drained by `replicas` relays; `env` adds relay settings.
 */
export async function burstyLatency(
  pool: Pool,
  rate: number,
  seconds: number,
  replicas: number,
  env: Record<string, string> = {},
): Promise<BurstyResult> {
  const topo = await topology();
  const outbox = await outboxSchema(pool);
  const domain = `"${outbox.schema}".accounts`;
  await pool.query(`CREATE TABLE ${domain} (id int PRIMARY KEY, balance bigint NOT NULL)`);
  await pool.query(`INSERT INTO ${domain} SELECT g, 0 FROM generate_series(1, ${DOMAIN_ROWS}) g`);
  const relays: RelayProcess[] = [];
  const latencies: number[] = [];
  const warmup = rate; // the first second's events
  let received = 0;
  let warmedUp: Promise<StageBuckets> | undefined;
  await topo.broker.consume(topo.queue, (msg) => {
    const arrived = Date.now();
    const body = JSON.parse(msg.content.toString()) as { n: number; at: number };
    received += 1;
    if (body.n > warmup) latencies.push(arrived - body.at);
    // The stages are counted from here: the warm-up's messages have arrived.
    if (received === warmup) warmedUp = stageBuckets(relays);
  });
  let clients: PoolClient[] = [];
  try {
    for (let i = 0; i < replicas; i += 1) {
      relays.push(await startRelay({ OUTBOX_SCHEMA: outbox.schema, OUTBOX_LOG_LEVEL: 'warn', OUTBOX_STAGE_TIMINGS: 'true', ...env }));
    }
    await Promise.all(relays.map((r) => r.ready()));
    while (!(await Promise.all(relays.map(async (r) => (await r.metrics()).value('outbox_leader') === 1))).some(Boolean)) await sleep(20);
    clients = await Promise.all(Array.from({ length: CLIENTS }, () => pool.connect()));
    const total = rate * seconds;
    const startedAt = performance.now();
    let scheduled = startedAt;
    let next = 0;
    // As pgbench -R: the arrival times are drawn in advance; a client that is busy when one
    // comes starts it late, and that wait counts, since the event is stamped at its INSERT.
    const schedule = (): { n: number; at: number } | undefined => {
      if (next >= total) return undefined;
      next += 1;
      scheduled += poissonGapMs(rate);
      return { n: next, at: scheduled };
    };
    await Promise.all(
      clients.map(async (client) => {
        for (let job = schedule(); job !== undefined; job = schedule()) {
          const wait = job.at - performance.now();
          if (wait > 0.5) await sleep(wait);
          const key = 1 + Math.floor(Math.random() * DOMAIN_ROWS);
          await client.query('BEGIN');
          await client.query(`UPDATE ${domain} SET balance = balance + 1 WHERE id = $1`, [key]);
          await client.query(
            `INSERT INTO "${outbox.schema}".messages (exchange, routing_key, partition_key, payload)
             VALUES ($1, 'bench', $2, jsonb_build_object('n', $3::int, 'at', extract(epoch FROM clock_timestamp()) * 1000, 'pad', $4::text))`,
            [topo.exchange, `account-${key}`, job.n, SMALL_PAD],
          );
          await client.query('COMMIT');
        }
      }),
    );
    const achievedRate = total / ((performance.now() - startedAt) / 1000);
    const deadline = performance.now() + 15_000;
    while (received < total && performance.now() < deadline) await sleep(20);
    const stages = stageQuantiles(await (warmedUp ?? stageBuckets([])), await stageBuckets(relays));
    latencies.sort((a, b) => a - b);
    return {
      rate,
      replicas,
      p50: percentile(latencies, 50),
      p99: percentile(latencies, 99),
      max: latencies.at(-1) ?? Number.NaN,
      count: latencies.length,
      achievedRate,
      stages,
    };
  } finally {
    clients.forEach((c) => c.release());
    await Promise.all(relays.map((r) => r.stop()));
    await outbox.drop();
    await topo.drop();
  }
}
