import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { connect } from 'amqplib';
import { Pool } from 'pg';
import { runCleanup } from '../src/outbox/retention';
import { checkpoint, cpuBetween, cpuSecondsOf, perMessage, sampleCpu, walDuring, walPosition, type CpuSpent } from './cost';
import {
  AMQP_URL,
  DATABASE_URL,
  insertBacklog,
  outboxSchema,
  PAD,
  percentile,
  publishConfirmed,
  publishedBy,
  sleep,
  startRelay,
  topology,
} from './support';

/** A rate and what each message cost the machine (CPU µs per message, by part). */
export interface Throughput {
  readonly rate: number;
  readonly cpu: CpuSpent;
}

/** The ceiling: a plain amqplib confirm-channel publisher, 1,000 confirms outstanding. */
export async function bare(count: number): Promise<Throughput> {
  const topo = await topology();
  const model = await connect(AMQP_URL);
  const channel = await model.createConfirmChannel();
  const cpuBefore = sampleCpu();
  const started = performance.now();
  await publishConfirmed(channel, topo.exchange, count, (n) => ({ mandatory: true, messageId: String(n) }));
  const rate = count / ((performance.now() - started) / 1000);
  const cpu = perMessage(cpuBetween(cpuBefore, sampleCpu()), count);
  await model.close();
  await topo.drop();
  return { rate, cpu };
}

export interface DrainResult extends Throughput {
  /** WAL bytes PostgreSQL wrote per message while the relays drained. */
  readonly walPerMessage: number;
  /** From the last message published until every relay's outbox_lag_seconds read 0 (ms). */
  readonly lagClearedMs: number;
}

/**
 * Drain of a pre-inserted backlog by `relays` relay processes, steady phase (from the
 * moment all are ready): the rate, the WAL written and the CPU spent per message.
 */
export async function drain(
  pool: Pool,
  count: number,
  keys: number,
  relays: number,
  env: Record<string, string> = {},
  /** Another build's bin/outbox-relay.js (the tracing bench's baseline). */
  bin?: string,
): Promise<DrainResult> {
  const topo = await topology();
  const outbox = await outboxSchema(pool);
  try {
    await checkpoint(pool);
    await insertBacklog(pool, outbox.schema, topo.exchange, count, keys);
    const processes = await Promise.all(
      Array.from({ length: relays }, () => startRelay({ OUTBOX_SCHEMA: outbox.schema, OUTBOX_LOG_LEVEL: 'warn', ...env }, bin)),
    );
    try {
      await Promise.all(processes.map((p) => p.ready()));
      const published = (): Promise<number> => publishedBy(processes);
      const pids = processes.map((p) => p.pid);
      const walBefore = await walPosition(pool);
      const cpuBefore = sampleCpu(pids);
      const startedAt = performance.now();
      const before = await published();
      let now = before;
      while (now < count) {
        await sleep(10);
        now = await published();
      }
      const endedAt = performance.now();
      const cpu = perMessage(cpuBetween(cpuBefore, sampleCpu(pids)), count - before);
      const walPerMessage = Number((await walPosition(pool)) - walBefore) / (count - before);
      for (;;) {
        const lags = await Promise.all(processes.map(async (p) => (await p.metrics()).value('outbox_lag_seconds') ?? Number.NaN));
        if (lags.every((lag) => lag === 0) || performance.now() - endedAt > 30_000) break;
        await sleep(20);
      }
      return { rate: (count - before) / ((endedAt - startedAt) / 1000), cpu, walPerMessage, lagClearedMs: performance.now() - endedAt };
    } finally {
      await Promise.all(processes.map((p) => p.stop()));
    }
  } finally {
    await outbox.drop();
    await topo.drop();
  }
}

/** WAL per message of the retention cleanup, as it runs days after the publish. */
export interface CleanupWal {
  /** With the server's settings (full-page images as they are). */
  readonly asConfigured: number;
  /** With wal_compression = lz4 set for the cleanup's session (null when the role may not set it). */
  readonly lz4: number | null;
}

/**
 * The WAL the retention cleanup writes per message: a backlog is published, vacuumed
 * (as autovacuum does soon after), a checkpoint passes (as many do in a retention
 * period), then the cleanup deletes it. The first change of each page after a
 * checkpoint logs the page's image (without its free hole), so this is where history
 * kept for OUTBOX_RETENTION costs WAL. Measured twice: once as configured, once on a
 * fresh backlog with the cleanup's session compressing page images with lz4.
 */
export async function cleanupWal(pool: Pool, count: number): Promise<CleanupWal> {
  const once = async (compression: string | null): Promise<number> => {
    const topo = await topology();
    const outbox = await outboxSchema(pool);
    try {
      await insertBacklog(pool, outbox.schema, topo.exchange, count, 0);
      const relay = await startRelay({ OUTBOX_SCHEMA: outbox.schema, OUTBOX_LOG_LEVEL: 'warn' });
      try {
        await relay.ready();
        while ((await publishedBy([relay])) < count) await sleep(20);
      } finally {
        await relay.stop();
      }
      await pool.query(`VACUUM "${outbox.schema}".messages`);
      await checkpoint(pool);
      const cleaner = new Pool({
        connectionString: DATABASE_URL,
        max: 1,
        ...(compression ? { options: `-c wal_compression=${compression}` } : {}),
      });
      try {
        const wal = await walDuring(pool, async () => {
          const deleted = await runCleanup(cleaner, outbox.schema, 0);
          if (deleted !== count) throw new Error(`cleanup deleted ${deleted} of ${count}`);
        });
        return wal / count;
      } finally {
        await cleaner.end();
      }
    } finally {
      await outbox.drop();
      await topo.drop();
    }
  };
  const asConfigured = await once(null);
  let lz4: number | null = null;
  try {
    lz4 = await once('lz4');
  } catch (err: unknown) {
    console.warn(`  (wal_compression = lz4 not measured: ${(err as Error).message})`);
  }
  return { asConfigured, lz4 };
}

/** WAL bytes per message of the producer's own write: one 1 KiB event INSERT per transaction, 8 clients. */
export async function producerInsertWal(pool: Pool, count: number): Promise<number> {
  const topo = await topology();
  const outbox = await outboxSchema(pool);
  const clients = await Promise.all(Array.from({ length: 8 }, () => pool.connect()));
  try {
    await checkpoint(pool);
    let next = 0;
    const wal = await walDuring(pool, async () => {
      await Promise.all(
        clients.map(async (client) => {
          for (let n = next++; n < count; n = next++) {
            await client.query({
              name: `bench_wal_insert_${outbox.schema}`,
              text: `INSERT INTO "${outbox.schema}".messages (exchange, routing_key, partition_key, payload) VALUES ($1, 'bench', $2, $3)`,
              values: [topo.exchange, `key${n % 1000}`, JSON.stringify({ n, pad: PAD })],
            });
          }
        }),
      );
    });
    return wal / count;
  } finally {
    clients.forEach((c) => c.release());
    await outbox.drop();
    await topo.drop();
  }
}

export interface ScaleResult {
  readonly backlog: number;
  readonly peakRssMiB: number;
  readonly metricsScrapeMs: readonly number[];
  readonly statusMs: readonly number[];
  readonly drainPerSecond: number;
  /**
   * The background work of a relay that publishes nothing (its broker unreachable) beside
   * the whole backlog — gauge refreshes, lag probe, wake-up peeks —: CPU of the relay and
   * of its PostgreSQL backends, in % of one core.
   */
  readonly backgroundCorePercent: { readonly relay: number; readonly postgresql: number };
}

function statusOnce(schema: string): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(__dirname, '..', 'bin', 'outbox-relay.js'), 'status', '--json'], {
      env: { PATH: process.env['PATH'], OUTBOX_DATABASE_URL: DATABASE_URL, OUTBOX_SCHEMA: schema },
      stdio: 'ignore',
    });
    child.once('exit', (code) => (code === 0 ? resolve(performance.now() - started) : reject(new Error(`status exited ${code}`))));
  });
}

/**
 * A large backlog (1,000 keys): `status` under it, the background cost of an idle relay
 * beside it, then the drain: its rate, scrape times and the relay's peak RSS.
 */
export async function scale(pool: Pool, backlog: number, idleSeconds: number, env: Record<string, string> = {}): Promise<ScaleResult> {
  const topo = await topology();
  const outbox = await outboxSchema(pool);
  try {
    await insertBacklog(pool, outbox.schema, topo.exchange, backlog, 1_000);
    const statusMs: number[] = [];
    for (let i = 0; i < 3; i += 1) statusMs.push(await statusOnce(outbox.schema));

    // A relay whose broker is unreachable claims nothing; what it and PostgreSQL spend
    // meanwhile is the background work (counted from its first refresh on).
    const idle = await startRelay({
      OUTBOX_SCHEMA: outbox.schema,
      OUTBOX_LOG_LEVEL: 'error',
      OUTBOX_AMQP_URL: 'amqp://guest:guest@127.0.0.1:1',
      ...env,
    });
    let backgroundCorePercent = { relay: Number.NaN, postgresql: Number.NaN };
    try {
      await sleep(2_000);
      // The relay's own database backends (by application_name), not the whole server:
      // a checkpoint or an autovacuum of the fresh backlog would otherwise count too.
      const { rows } = await pool.query<{ pid: number }>(`SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'outbox-relay%'`);
      const backends = rows.map((r) => r.pid);
      const before = { relay: cpuSecondsOf([idle.pid]), postgresql: cpuSecondsOf(backends) };
      await sleep(idleSeconds * 1000);
      backgroundCorePercent = {
        relay: ((cpuSecondsOf([idle.pid]) - before.relay) / idleSeconds) * 100,
        postgresql: ((cpuSecondsOf(backends) - before.postgresql) / idleSeconds) * 100,
      };
    } finally {
      await idle.stop();
    }

    const relay = await startRelay({ OUTBOX_SCHEMA: outbox.schema, OUTBOX_LOG_LEVEL: 'warn', ...env });
    try {
      await relay.ready();
      const startedAt = performance.now();
      const metricsScrapeMs: number[] = [];
      let peakRssMiB = 0;
      let published = 0;
      while (published < backlog) {
        const t = performance.now();
        const metrics = await relay.metrics();
        if (metricsScrapeMs.length < 50) metricsScrapeMs.push(performance.now() - t);
        published = metrics.value('outbox_messages_published_total') ?? 0;
        peakRssMiB = Math.max(peakRssMiB, relay.peakRssMiB());
        await sleep(200);
      }
      return {
        backlog,
        peakRssMiB,
        metricsScrapeMs,
        statusMs,
        drainPerSecond: backlog / ((performance.now() - startedAt) / 1000),
        backgroundCorePercent,
      };
    } finally {
      await relay.stop();
    }
  } finally {
    await outbox.drop();
    await topo.drop();
  }
}

export type ProducerVariant =
  'domain only' | '+ outbox INSERT = default wake-up' | '+ relay publishing alongside' | '+ optional NOTIFY trigger';

/**
 * A service transaction with 8 clients: a domain-table update, alone; plus the outbox
 * INSERT — which is all the default wake-up costs a producer (the relay peeks, nothing
 * runs in the producer's transaction); plus the optional NOTIFY trigger; and, for
 * context, plus a relay publishing every message on the same machine meanwhile.
 * Returns tx/s and p50 in ms.
 */
export async function producerCost(pool: Pool, variant: ProducerVariant, seconds: number): Promise<{ txPerSecond: number; p50Ms: number }> {
  const topo = await topology();
  const outbox = await outboxSchema(pool);
  const s = `"${outbox.schema}"`;
  await pool.query(`CREATE TABLE ${s}.accounts (id int PRIMARY KEY, balance bigint NOT NULL)`);
  await pool.query(`INSERT INTO ${s}.accounts SELECT g, 0 FROM generate_series(1, 1000) g`);
  if (variant === '+ optional NOTIFY trigger') {
    await pool.query(
      `CREATE TRIGGER bench_notify AFTER INSERT ON ${s}.messages FOR EACH STATEMENT EXECUTE FUNCTION ${s}.notify_messages_inserted()`,
    );
  }
  const relay =
    variant === '+ relay publishing alongside' ? await startRelay({ OUTBOX_SCHEMA: outbox.schema, OUTBOX_LOG_LEVEL: 'warn' }) : undefined;
  try {
    await relay?.ready();
    const clients = await Promise.all(Array.from({ length: 8 }, () => pool.connect()));
    const durations: number[] = [];
    const endAt = performance.now() + seconds * 1000;
    await Promise.all(
      clients.map(async (client, c) => {
        let i = c;
        while (performance.now() < endAt) {
          const t = performance.now();
          await client.query('BEGIN');
          await client.query({
            name: `bench_domain_${outbox.schema}`,
            text: `UPDATE ${s}.accounts SET balance = balance + 1 WHERE id = $1`,
            values: [1 + ((i * 7919) % 1000)],
          });
          if (variant !== 'domain only') {
            await client.query({
              name: `bench_outbox_${outbox.schema}`,
              text: `INSERT INTO ${s}.messages (exchange, routing_key, payload) VALUES ($1, 'bench', $2)`,
              values: [topo.exchange, JSON.stringify({ n: i, pad: PAD })],
            });
          }
          await client.query('COMMIT');
          durations.push(performance.now() - t);
          i += 8;
        }
      }),
    );
    clients.forEach((c) => c.release());
    durations.sort((a, b) => a - b);
    return { txPerSecond: durations.length / seconds, p50Ms: percentile(durations, 50) };
  } finally {
    await relay?.stop();
    await outbox.drop();
    await topo.drop();
  }
}
