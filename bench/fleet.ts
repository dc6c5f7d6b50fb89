/**
 * What a fleet of replicas costs and how fast the lead moves: the idle cost of 1 and of 12
 * replicas against a database of their own (connections, transactions, PostgreSQL's and
 * the relays' CPU), and the time from a kill -9 or a freeze (SIGSTOP) of the leader to the
 * first message another replica publishes.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Client } from 'pg';
import type { RelayProcess } from '../test/kit/relay-process';
import { uniqueName } from '../test/kit/unique-name';
import { cpuBetween, cpuSecondsOf, sampleCpu } from './cost';
import { AMQP_URL, DATABASE_URL, insertBacklog, outboxSchema, publishedBy, sleep, startRelay, topology, newPool } from './support';

const BIN = join(__dirname, '..', 'bin', 'outbox-relay.js');

/** The idle cost of `replicas` relays, measured over `seconds` once they settled. */
export interface IdleCost {
  readonly replicas: number;
  /** Database sessions the relays hold. */
  readonly connections: number;
  /** Transactions per second in their database (commits and rollbacks). */
  readonly txPerSecond: number;
  /** PostgreSQL's CPU (all its processes), % of one core. */
  readonly postgresCpu: number;
  /** The leader's CPU, % of one core. */
  readonly leaderCpu: number;
  /** The standbys' CPU, % of one core each (their mean; 0 without standbys). */
  readonly standbyCpu: number;
}

/** A URL of `database` on the bench's server. */
function databaseUrl(database: string): string {
  const url = new URL(DATABASE_URL);
  url.pathname = `/${database}`;
  return url.toString();
}

/**
 * Starts `replicas` relays on an outbox in a database of its own (so that its transaction
 * counter counts theirs alone), lets them settle for `settleSeconds`, then measures for
 * `seconds`: sessions, transactions, CPU. Nothing is inserted: the relays are idle.
 */
export async function idleCost(replicas: number, seconds: number, settleSeconds = 20): Promise<IdleCost> {
  const database = uniqueName('bench_idle').toLowerCase();
  const admin = new Client({ connectionString: DATABASE_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE "${database}"`);
  const url = databaseUrl(database);
  const relays: RelayProcess[] = [];
  try {
    execFileSync(process.execPath, [BIN, 'migrate'], { env: { PATH: process.env['PATH'], OUTBOX_DATABASE_URL: url }, stdio: 'ignore' });
    for (let i = 0; i < replicas; i += 1) {
      relays.push(await startRelay({ OUTBOX_DATABASE_URL: url, OUTBOX_AMQP_URL: AMQP_URL, OUTBOX_LOG_LEVEL: 'warn' }));
    }
    await Promise.all(relays.map((r) => r.ready()));
    await sleep(settleSeconds * 1_000);
    const transactions = async (): Promise<number> =>
      Number(
        (
          await admin.query<{ n: string }>(`SELECT (xact_commit + xact_rollback)::text AS n FROM pg_stat_database WHERE datname = $1`, [
            database,
          ])
        ).rows[0]?.n,
      );
    const pids = relays.map((r) => r.pid);
    const cpuBefore = sampleCpu(pids);
    const each = pids.map((pid) => cpuSecondsOf([pid]));
    const txBefore = await transactions();
    await sleep(seconds * 1_000);
    const txAfter = await transactions();
    const cpu = cpuBetween(cpuBefore, sampleCpu(pids));
    const perRelay = pids.map((pid, i) => ((cpuSecondsOf([pid]) - (each[i] as number)) / seconds) * 100);
    const { rows } = await admin.query<{ n: string; leader: number | null }>(
      `SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'outbox-relay %')::text AS n`,
      [database],
    );
    const leaderPid = await leaderOf(url);
    const leaderIndex = pids.indexOf(leaderPid ?? -1);
    const standbys = perRelay.filter((_, i) => i !== leaderIndex);
    return {
      replicas,
      connections: Number(rows[0]?.n),
      // The two probes of the counter are transactions of their own, in another database.
      txPerSecond: (txAfter - txBefore) / seconds,
      postgresCpu: (cpu.postgresql / seconds) * 100,
      leaderCpu: leaderIndex < 0 ? Number.NaN : (perRelay[leaderIndex] as number),
      standbyCpu: standbys.length === 0 ? 0 : standbys.reduce((a, b) => a + b, 0) / standbys.length,
    };
  } finally {
    await Promise.all(relays.map((r) => r.stop()));
    await admin.query(`DROP DATABASE IF EXISTS "${database}" WITH (FORCE)`);
    await admin.end();
  }
}

/** The pid of the replica that leads the outbox of `url` (schema `outbox`), if any. */
async function leaderOf(url: string, schema = 'outbox'): Promise<number | undefined> {
  const client = new Client({ connectionString: url });
  await client.connect();
  try {
    const { rows } = await client.query<{ pid: number }>(
      `SELECT r.pid FROM "${schema}".relay_lease l JOIN "${schema}".relay_replicas r ON r.replica_id = l.holder WHERE l.expires_at > now()`,
    );
    return rows[0]?.pid;
  } finally {
    await client.end();
  }
}

/** From the signal to the leader until another replica published its first message. */
export interface Takeover {
  readonly fault: 'kill -9' | 'freeze';
  readonly ms: number;
}

/**
 * Three relays drain a backlog of 1,000 keys; once the leader publishes, it is killed
 * with -9 (or frozen with SIGSTOP, woken 2 s after the takeover); the time until a standby
 * has published a message.
 */
export async function takeover(fault: 'kill -9' | 'freeze', count: number): Promise<Takeover> {
  const pool = newPool(4);
  const topo = await topology();
  const outbox = await outboxSchema(pool);
  const relays: RelayProcess[] = [];
  try {
    await insertBacklog(pool, outbox.schema, topo.exchange, count, 1_000);
    for (let i = 0; i < 3; i += 1) relays.push(await startRelay({ OUTBOX_SCHEMA: outbox.schema, OUTBOX_LOG_LEVEL: 'warn' }));
    await Promise.all(relays.map((r) => r.ready()));
    let leader: RelayProcess | undefined;
    while (leader === undefined) {
      const pid = await leaderOf(DATABASE_URL, outbox.schema);
      leader = relays.find((r) => r.pid === pid);
      if (leader === undefined) await sleep(20);
    }
    while ((await publishedBy([leader])) < count / 10) await sleep(5);
    const others = relays.filter((r) => r !== leader);
    const signalledAt = performance.now();
    if (fault === 'kill -9') leader.kill('SIGKILL');
    else leader.freeze();
    while ((await publishedBy(others)) === 0) await sleep(5);
    const ms = performance.now() - signalledAt;
    if (fault === 'freeze') {
      await sleep(2_000);
      leader.thaw();
    }
    return { fault, ms };
  } finally {
    await Promise.all(relays.map((r) => r.stop()));
    await outbox.drop();
    await topo.drop();
    await pool.end();
  }
}
