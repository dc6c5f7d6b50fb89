/**
 * `npm run bench [-- --quick] [-- --only replay|failover|tracing|memory [--baseline <rev>]]`: throughput, latency, scale and producer cost of
 * outbox-relay against the local PostgreSQL and RabbitMQ, each figure against a bare
 * amqplib publisher measured in the same run. Prints progress and a final table; writes
 * bench/results/latest.json and latest.md. Numbers, not pass/fail: the exit code is 0
 * unless a scenario breaks.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { connect } from 'amqplib';
import {
  bare,
  drain,
  latency,
  producerCost,
  producerInsertWal,
  cleanupWal,
  scale,
  type DrainResult,
  type LatencyResult,
  type ProducerVariant,
  type ScaleResult,
} from './scenarios';
import { consumerThroughput } from './consumer';
import { failoverRun } from './failover';
import { memoryRun, type MemoryRun } from './memory';
import { replayBeside, type ReplayResult } from './replay';
import { tracingRuns, type TracingArm, type TracingRun } from './tracing';
import { AMQP_URL, figure, newPool, percentile, type Figure } from './support';

const quick = process.argv.includes('--quick');
/** `--only replay`: that scenario alone (results in bench/results/replay.json). */
const only = process.argv.includes('--only') ? process.argv[process.argv.indexOf('--only') + 1] : undefined;
const REPS = quick ? 1 : 3;
const N = quick ? 10_000 : 100_000;
/** A single hot key: 20,000 messages, the backlog the ordering test drains. */
const HOT_KEY_BACKLOG = quick ? 5_000 : 20_000;
const SCALE_BACKLOG = quick ? 50_000 : 1_000_000;
const IDLE_SECONDS = quick ? 5 : 30;
const LATENCY_SECONDS = quick ? 3 : 10;
const PRODUCER_SECONDS = quick ? 2 : 5;
const WAL_INSERTS = quick ? 5_000 : 20_000;
const REPLICAS = [1, 3] as const;
const CONSUMER_COUNT = quick ? 2_000 : 5_000;
/** The backlog a failover run drains (1 KiB messages; the primary is stopped after a quarter). */
const FAILOVER_COUNT = quick ? 10_000 : 20_000;
/** Published messages replayed while a relay drains as many new ones. */
const REPLAY_COUNT = quick ? 5_000 : 20_000;
/** `--only tracing --baseline <rev>`: also drain with the relay built from `<rev>` (a commit without tracing code). */
const baselineRev = process.argv.includes('--baseline') ? process.argv[process.argv.indexOf('--baseline') + 1] : undefined;

/**
 * Builds `rev` in a git worktree of its own (this checkout's node_modules linked in) and
 * returns its CLI; `remove()` deletes the worktree.
 */
function buildBaseline(rev: string): { bin: string; remove: () => void } {
  const root = join(__dirname, '..');
  const dir = mkdtempSync(join(tmpdir(), 'outbox-baseline-'));
  const git = (...args: string[]): void => void execFileSync('git', args, { cwd: root, stdio: 'ignore' });
  git('worktree', 'add', '--detach', dir, rev);
  const remove = (): void => {
    git('worktree', 'remove', '--force', dir);
  };
  try {
    symlinkSync(join(root, 'node_modules'), join(dir, 'node_modules'));
    execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], {
      cwd: dir,
      stdio: 'inherit',
    });
  } catch (err) {
    remove();
    throw err;
  }
  return { bin: join(dir, 'bin', 'outbox-relay.js'), remove };
}

/** Messages per drain of `--only tracing`. */
const TRACING_COUNT = 50_000;

/** Runs `run` REPS times, printing each result. */
async function repeat<T>(label: string, run: () => Promise<T>, show: (result: T) => string): Promise<T[]> {
  const results: T[] = [];
  for (let i = 0; i < REPS; i += 1) {
    const result = await run();
    results.push(result);
    process.stdout.write(`  ${label} #${i + 1}: ${show(result)}\n`);
  }
  return results;
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const spread = (f: Figure, unit: (n: number) => string = fmt): string => (REPS > 1 ? `${unit(f.min)}–${unit(f.max)}` : '');
const ms = (n: number): string => (n < 10 ? n.toFixed(2) : n.toFixed(1));
const ratio = (a: number, b: number): string => (a / b).toFixed(2);

async function machine(): Promise<Record<string, string>> {
  const pool = newPool(1);
  const pg = (await pool.query<{ v: string }>("SELECT current_setting('server_version') AS v")).rows[0]?.v ?? '?';
  await pool.end();
  const model = await connect(AMQP_URL);
  const rabbit = String((model.connection.serverProperties as { version?: string }).version ?? '?');
  await model.close();
  let kernel = '?';
  try {
    kernel = execFileSync('uname', ['-sr']).toString().trim();
  } catch {
    /* not fatal */
  }
  return {
    cpu: `${cpus().length} × ${cpus()[0]?.model ?? '?'}`,
    memory: `${Math.round(totalmem() / 2 ** 30)} GiB`,
    os: kernel,
    node: process.version,
    postgresql: pg,
    rabbitmq: rabbit,
  };
}

type Row = readonly [figure: string, median: string, spread: string, ratio: string];

/** `outbox-relay replay --rate unlimited` beside a relay's drain, and each alone. */
async function replayRows(pool: ReturnType<typeof newPool>): Promise<{ rows: Row[]; runs: ReplayResult[] }> {
  console.log(
    `\nreplay of ${fmt(REPLAY_COUNT)} published messages (--rate unlimited) while a relay drains ${fmt(REPLAY_COUNT)} new ones, and each alone`,
  );
  const runs = await repeat(
    'replay',
    () => replayBeside(pool, REPLAY_COUNT),
    (r) =>
      `replay ${fmt(r.replayAlone)} msg/s alone, ${fmt(r.replayTogether)} beside the drain; drain ${fmt(r.drainAlone)} msg/s alone, ${fmt(r.drainTogether)} beside the replay`,
  );
  const f = (pick: (r: ReplayResult) => number): Figure => figure(runs.map(pick));
  const replayAlone = f((r) => r.replayAlone);
  const replayTogether = f((r) => r.replayTogether);
  const drainAlone = f((r) => r.drainAlone);
  const drainTogether = f((r) => r.drainTogether);
  return {
    runs,
    rows: [
      [
        `replay of ${fmt(REPLAY_COUNT)}, --rate unlimited, no relay draining`,
        `${fmt(replayAlone.median)} msg/s`,
        spread(replayAlone),
        '1.00',
      ],
      [
        '… the same replay while a relay drains a new backlog',
        `${fmt(replayTogether.median)} msg/s`,
        spread(replayTogether),
        ratio(replayTogether.median, replayAlone.median),
      ],
      [`relay drain of ${fmt(REPLAY_COUNT)} (1,000 keys), no replay`, `${fmt(drainAlone.median)} msg/s`, spread(drainAlone), '1.00'],
      [
        '… the same drain while the replay runs',
        `${fmt(drainTogether.median)} msg/s`,
        spread(drainTogether),
        ratio(drainTogether.median, drainAlone.median),
      ],
    ],
  };
}

/** `--only tracing`: drains with tracing off and on, alternated (results in bench/results/tracing.json). */
async function tracingBench(pool: ReturnType<typeof newPool>, started: number, env: Record<string, string>): Promise<void> {
  const count = quick ? 10_000 : TRACING_COUNT;
  console.log(
    `\ntracing: ${fmt(count)} messages drained by one relay, tracing off and on (OTLP/HTTP JSON to a local receiver), alternated`,
  );
  const before = baselineRev === undefined ? undefined : buildBaseline(baselineRev);
  let runs: TracingRun[];
  try {
    runs = await tracingRuns(pool, count, REPS + 1, before?.bin);
  } finally {
    before?.remove();
  }
  await pool.end();
  for (const r of runs) {
    console.log(
      `  ${r.tracing.padEnd(3)} ${fmt(r.rate)} msg/s, relay ${r.cpu.relay.toFixed(1)} µs/msg, machine ${r.cpu.machine.toFixed(1)} µs/msg, ${fmt(r.spans)} spans`,
    );
  }
  const of = (tracing: TracingArm): { rate: Figure; relay: Figure; machine: Figure } => {
    const chosen = runs.filter((r) => r.tracing === tracing);
    return {
      rate: figure(chosen.map((r) => r.rate)),
      relay: figure(chosen.map((r) => r.cpu.relay)),
      machine: figure(chosen.map((r) => r.cpu.machine)),
    };
  };
  const off = of('off');
  const on = of('on');
  if (before) {
    const b = of('before');
    console.log(
      `\nbefore (${baselineRev}, no tracing code): median ${fmt(b.rate.median)} msg/s (${spread(b.rate)}), relay ${b.relay.median.toFixed(1)} µs/msg (${b.relay.min.toFixed(1)}–${b.relay.max.toFixed(1)})` +
        `; tracing off against it: rate ${ratio(off.rate.median, b.rate.median)}, relay CPU ${ratio(off.relay.median, b.relay.median)}`,
    );
  }
  console.log(
    `\noff: median ${fmt(off.rate.median)} msg/s (${spread(off.rate)}), relay ${off.relay.median.toFixed(1)} µs/msg (${off.relay.min.toFixed(1)}–${off.relay.max.toFixed(1)})` +
      `\non:  median ${fmt(on.rate.median)} msg/s (${spread(on.rate)}), relay ${on.relay.median.toFixed(1)} µs/msg (${on.relay.min.toFixed(1)}–${on.relay.max.toFixed(1)})` +
      `\ntracing on costs the relay ${(on.relay.median - off.relay.median).toFixed(1)} µs of CPU per message, the machine ${(on.machine.median - off.machine.median).toFixed(1)} µs`,
  );
  console.log(`bench took ${Math.round((Date.now() - started) / 1000)} s`);
  const dir = join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'tracing.json'), `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, runs }, null, 2)}\n`);
}

/**
 * `--only memory`: one relay drains messages of 100 KB, 400 KB and 1 MB with the default
 * OUTBOX_BATCH_BYTES, and the first two also with the claim bounded by count alone (a
 * budget of 1 GiB, as before the budget existed); peak RSS of the relay (results in
 * bench/results/memory.json). 1 MB messages by count alone would take gigabytes.
 */
async function memoryBench(pool: ReturnType<typeof newPool>, started: number, env: Record<string, string>): Promise<void> {
  const scale = quick ? 3 : 1;
  const cases: readonly { payloadBytes: number; count: number; batchBytes?: string }[] = [
    { payloadBytes: 100_000, count: 1_500 / scale },
    { payloadBytes: 400_000, count: 400 / scale },
    { payloadBytes: 1_000_000, count: 200 / scale },
    { payloadBytes: 100_000, count: 1_500 / scale, batchBytes: '1GiB' },
    { payloadBytes: 400_000, count: 400 / scale, batchBytes: '1GiB' },
  ];
  console.log('\nmemory: one relay drains large JSON messages; peak RSS (VmHWM) of the relay process');
  const runs: MemoryRun[] = [];
  for (const c of cases) {
    const run = await memoryRun(pool, c.payloadBytes, Math.round(c.count), c.batchBytes ? { OUTBOX_BATCH_BYTES: c.batchBytes } : {});
    runs.push(run);
    console.log(
      `  ${fmt(c.payloadBytes / 1000)} KB × ${fmt(run.count)}, OUTBOX_BATCH_BYTES ${run.batchBytes}: peak RSS ${run.peakRssMiB.toFixed(0)} MiB, ` +
        `idle ${run.idleRssMiB.toFixed(0)} MiB, ${fmt(run.rate)} msg/s (${run.mibPerSecond.toFixed(0)} MiB/s)`,
    );
  }
  await pool.end();
  console.log(`bench took ${Math.round((Date.now() - started) / 1000)} s`);
  const dir = join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'memory.json'), `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, runs }, null, 2)}\n`);
}

async function main(): Promise<void> {
  const started = Date.now();
  const pool = newPool(24);
  const env = await machine();
  console.log(`outbox-relay bench${quick ? ' (quick)' : ''}: ${Object.values(env).join(' · ')}`);
  const rows: Row[] = [];
  if (only === 'failover') {
    await pool.end();
    console.log(`\nfailover: ${fmt(FAILOVER_COUNT)} messages, the primary stopped (immediate) mid-drain, the standby promoted`);
    const runs = await repeat(
      'failover',
      () => failoverRun(FAILOVER_COUNT),
      (r) =>
        `promote → first publish ${fmt(r.promoteToFirstPublishMs)} ms (kill → ${fmt(r.killToFirstPublishMs)} ms); ${fmt(r.deliveredAtKill)} delivered at the kill, ${fmt(r.lostMarks)} marks lost, ${fmt(r.duplicates)} duplicates`,
    );
    const follow = figure(runs.map((r) => r.promoteToFirstPublishMs));
    console.log(`\npromotion to first publish on the new primary: median ${fmt(follow.median)} ms, ${spread(follow)} ms`);
    console.log(`bench took ${Math.round((Date.now() - started) / 1000)} s`);
    const dir = join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'failover.json'),
      `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, runs }, null, 2)}\n`,
    );
    return;
  }
  if (only === 'tracing') {
    await tracingBench(pool, started, env);
    return;
  }
  if (only === 'memory') {
    await memoryBench(pool, started, env);
    return;
  }
  if (only === 'replay') {
    const replay = await replayRows(pool);
    await pool.end();
    const table = ['| figure | median | spread | ratio |', '|---|---|---|---|', ...replay.rows.map((r) => `| ${r.join(' | ')} |`)].join(
      '\n',
    );
    console.log(`\n${table}\n\nbench took ${Math.round((Date.now() - started) / 1000)} s`);
    const dir = join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'replay.json'),
      `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, runs: replay.runs, rows: replay.rows }, null, 2)}\n`,
    );
    return;
  }

  console.log(`\nbare amqplib publisher, ${fmt(N)} persistent 1 KiB messages, 1,000 confirms outstanding`);
  const bareRuns = await repeat(
    'bare',
    () => bare(N),
    (r) => `${fmt(r.rate)} msg/s, ${fmt(r.cpu.machine)} µs CPU/msg`,
  );
  const ceiling = figure(bareRuns.map((r) => r.rate));
  const bareCpu = figure(bareRuns.map((r) => r.cpu.machine));
  rows.push(['bare amqplib publisher (ceiling)', `${fmt(ceiling.median)} msg/s`, spread(ceiling), '1.00']);

  console.log(`\nthe producer's own write: ${fmt(WAL_INSERTS)} 1 KiB events, one INSERT per transaction`);
  const insertWal = figure(
    await repeat(
      'INSERT',
      () => producerInsertWal(pool, WAL_INSERTS),
      (b) => `${fmt(b)} B WAL/msg`,
    ),
  );

  const drains: Record<string, DrainResult[]> = {};
  const drainKinds = [
    { name: 'unkeyed', count: N, keys: 0 },
    { name: '1,000 keys', count: N, keys: 1_000 },
    { name: 'a single key', count: HOT_KEY_BACKLOG, keys: 1 },
  ];
  for (const kind of drainKinds) {
    for (const relays of REPLICAS) {
      const label = `${kind.name}, ${relays} relay${relays > 1 ? 's' : ''}`;
      console.log(`\ndrain of a ${fmt(kind.count)}-message backlog: ${label}`);
      drains[label] = await repeat(
        label,
        () => drain(pool, kind.count, kind.keys, relays),
        (r) =>
          `${fmt(r.rate)} msg/s, ${fmt(r.walPerMessage)} B WAL/msg, ${fmt(r.cpu.machine)} µs CPU/msg, lag 0 after ${fmt(r.lagClearedMs)} ms`,
      );
    }
  }
  console.log(`\ndrain of ${fmt(N)} with OUTBOX_RETENTION=0 (deleted at publish)`);
  const deleting = await repeat(
    'retention 0',
    () => drain(pool, N, 0, 1, { OUTBOX_RETENTION: '0' }),
    (r) => `${fmt(r.rate)} msg/s, ${fmt(r.walPerMessage)} B WAL/msg`,
  );

  console.log(`\nthe retention cleanup of ${fmt(WAL_INSERTS)} published messages, after a vacuum and a checkpoint`);
  const cleanups = await repeat(
    'cleanup',
    () => cleanupWal(pool, WAL_INSERTS),
    (c) => `${fmt(c.asConfigured)} B WAL/msg, with lz4 page images ${c.lz4 === null ? '-' : fmt(c.lz4)} B`,
  );
  const cleanupAsIs = figure(cleanups.map((c) => c.asConfigured));
  const cleanupLz4 = cleanups.every((c) => c.lz4 !== null) ? figure(cleanups.map((c) => c.lz4 as number)) : undefined;

  const one = drains['unkeyed, 1 relay'] ?? [];
  const walDefault = figure(one.map((r) => r.walPerMessage));
  const walDeleting = figure(deleting.map((r) => r.walPerMessage));
  rows.push(['WAL per message: the producer’s INSERT', `${fmt(insertWal.median)} B`, spread(insertWal), '1.00']);
  rows.push([
    'WAL per message: relay, history kept (default)',
    `${fmt(walDefault.median)} B`,
    spread(walDefault),
    ratio(walDefault.median, insertWal.median),
  ]);
  rows.push([
    'WAL per message: relay, OUTBOX_RETENTION=0',
    `${fmt(walDeleting.median)} B`,
    spread(walDeleting),
    ratio(walDeleting.median, insertWal.median),
  ]);
  rows.push([
    'WAL per message: the retention cleanup days later (page images)',
    `${fmt(cleanupAsIs.median)} B`,
    spread(cleanupAsIs),
    ratio(cleanupAsIs.median, insertWal.median),
  ]);
  if (cleanupLz4) {
    rows.push([
      '… the same with wal_compression = lz4',
      `${fmt(cleanupLz4.median)} B`,
      spread(cleanupLz4),
      ratio(cleanupLz4.median, insertWal.median),
    ]);
  }
  const cpuMachine = figure(one.map((r) => r.cpu.machine));
  const cpuOf = (part: 'relay' | 'postgresql' | 'rabbitmq'): Figure => figure(one.map((r) => r.cpu[part]));
  const bareOf = (part: 'bench' | 'rabbitmq'): Figure => figure(bareRuns.map((r) => r.cpu[part]));
  rows.push(['CPU per message, whole machine: bare publisher', `${fmt(bareCpu.median)} µs`, spread(bareCpu), '1.00']);
  rows.push([
    'CPU per message, whole machine: relay drain',
    `${fmt(cpuMachine.median)} µs`,
    spread(cpuMachine),
    ratio(cpuMachine.median, bareCpu.median),
  ]);
  rows.push([
    '… of it the publisher process: bare / relay',
    `${fmt(bareOf('bench').median)} / ${fmt(cpuOf('relay').median)} µs`,
    '',
    ratio(cpuOf('relay').median, bareOf('bench').median),
  ]);
  rows.push([
    '… RabbitMQ: bare / relay',
    `${fmt(bareOf('rabbitmq').median)} / ${fmt(cpuOf('rabbitmq').median)} µs`,
    '',
    ratio(cpuOf('rabbitmq').median, bareOf('rabbitmq').median),
  ]);
  rows.push(['… PostgreSQL: relay', `${fmt(cpuOf('postgresql').median)} µs`, spread(cpuOf('postgresql')), '']);
  for (const [label, results] of Object.entries(drains)) {
    const rate = figure(results.map((r) => r.rate));
    rows.push([`drain, ${label}`, `${fmt(rate.median)} msg/s`, spread(rate), ratio(rate.median, ceiling.median)]);
  }
  const lagCleared = figure(one.map((r) => r.lagClearedMs));
  rows.push(['outbox_lag_seconds reads 0 after the last publish', `${fmt(lagCleared.median)} ms`, spread(lagCleared), '']);

  for (const rate of [500, 5_000]) {
    console.log(
      `\nlatency: ${fmt(rate)} producer transactions/s (domain row + event, 1,000 keys) for ${LATENCY_SECONDS} s, commit → consumer`,
    );
    const runs: LatencyResult[] = await repeat(
      `${fmt(rate)}/s`,
      () => latency(pool, rate, LATENCY_SECONDS),
      (r) => `p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, max ${ms(r.max)} ms (${r.count} events, ${fmt(r.achievedRate)} tx/s reached)`,
    );
    const reached = figure(runs.map((r) => r.achievedRate));
    for (const p of ['p50', 'p99', 'max'] as const) {
      const f = figure(runs.map((r) => r[p]));
      rows.push([`latency ${p} at ${fmt(rate)} events/s (${fmt(reached.median)} reached)`, `${ms(f.median)} ms`, spread(f, ms), '']);
    }
  }

  console.log(`\nproducer cost: 8 clients, ${PRODUCER_SECONDS} s each`);
  const producer: Partial<Record<ProducerVariant, { tx: Figure; p50: Figure }>> = {};
  for (const variant of [
    'domain only',
    '+ outbox INSERT = default wake-up',
    '+ relay publishing alongside',
    '+ optional NOTIFY trigger',
  ] as const) {
    const runs = await repeat(
      variant,
      () => producerCost(pool, variant, PRODUCER_SECONDS),
      (r) => `${fmt(r.txPerSecond)} tx/s`,
    );
    producer[variant] = { tx: figure(runs.map((r) => r.txPerSecond)), p50: figure(runs.map((r) => r.p50Ms)) };
  }
  const domainTx = producer['domain only']?.tx.median ?? Number.NaN;
  for (const [variant, r] of Object.entries(producer)) {
    rows.push([
      `producer tx, ${variant} (p50 ${ms(r.p50.median)} ms)`,
      `${fmt(r.tx.median)} tx/s`,
      spread(r.tx),
      ratio(r.tx.median, domainTx),
    ]);
  }

  console.log(
    `\nthe idempotent consumer: ${fmt(CONSUMER_COUNT)} 1 KiB messages, a handler writing one row, against a bare amqplib consumer`,
  );
  for (const prefetch of [1, 100, 500]) {
    const runs = await repeat(
      `prefetch ${prefetch}`,
      () => consumerThroughput(prefetch, CONSUMER_COUNT),
      (r) =>
        `${fmt(r.consumerRate)} msg/s, bare ${fmt(r.bareRate)} msg/s, ${fmt(r.walPerMessage)} B WAL/msg (inbox ${fmt(r.inboxWalPerMessage)})`,
    );
    const consumer = figure(runs.map((r) => r.consumerRate));
    const bareConsumer = figure(runs.map((r) => r.bareRate));
    rows.push([
      `idempotent consumer, prefetch ${prefetch} (bare amqplib consumer: ${fmt(bareConsumer.median)} msg/s)`,
      `${fmt(consumer.median)} msg/s`,
      spread(consumer),
      ratio(consumer.median, bareConsumer.median),
    ]);
    if (prefetch === 100) {
      const inbox = figure(runs.map((r) => r.inboxWalPerMessage));
      const whole = figure(runs.map((r) => r.walPerMessage));
      rows.push([
        `WAL per message in the consumer's database (of it the inbox: ${fmt(inbox.median)} B)`,
        `${fmt(whole.median)} B`,
        spread(whole),
        '',
      ]);
    }
  }

  rows.push(...(await replayRows(pool)).rows);

  console.log(`\nscale: a ${fmt(SCALE_BACKLOG)}-message backlog, 1,000 keys`);
  const big: ScaleResult = await scale(pool, SCALE_BACKLOG, IDLE_SECONDS);
  const scrape = [...big.metricsScrapeMs].sort((a, b) => a - b);
  const status = [...big.statusMs].sort((a, b) => a - b);
  console.log(
    `  drain ${fmt(big.drainPerSecond)} msg/s; peak RSS ${big.peakRssMiB.toFixed(0)} MiB; /metrics p50 ${ms(percentile(scrape, 50))} ms; status ${status.map(ms).join(' / ')} ms; ` +
      `idle relay beside it: relay ${big.backgroundCorePercent.relay.toFixed(2)} %, PostgreSQL ${big.backgroundCorePercent.postgresql.toFixed(2)} % of a core`,
  );
  const keyed = figure((drains['1,000 keys, 1 relay'] ?? []).map((r) => r.rate));
  rows.push([
    `drain of ${fmt(SCALE_BACKLOG)} (1,000 keys), vs the ${fmt(N)} drain`,
    `${fmt(big.drainPerSecond)} msg/s`,
    '',
    ratio(big.drainPerSecond, keyed.median),
  ]);
  rows.push([`peak RSS draining ${fmt(SCALE_BACKLOG)}`, `${big.peakRssMiB.toFixed(0)} MiB`, '', '']);
  rows.push([
    `/metrics scrape under ${fmt(SCALE_BACKLOG)} pending`,
    `${ms(percentile(scrape, 50))} ms`,
    `max ${ms(scrape[scrape.length - 1] ?? 0)}`,
    '',
  ]);
  rows.push([
    `status under ${fmt(SCALE_BACKLOG)} pending`,
    `${ms(percentile(status, 50))} ms`,
    `${ms(status[0] ?? 0)}–${ms(status[status.length - 1] ?? 0)}`,
    '',
  ]);
  rows.push([
    `background work beside ${fmt(SCALE_BACKLOG)} pending (gauges, lag, peeks)`,
    `${(big.backgroundCorePercent.relay + big.backgroundCorePercent.postgresql).toFixed(2)} % of a core`,
    `relay ${big.backgroundCorePercent.relay.toFixed(2)} + PostgreSQL ${big.backgroundCorePercent.postgresql.toFixed(2)}`,
    '',
  ]);
  await pool.end();

  const table = [
    `| figure | median | spread (min–max of ${REPS}) | ratio |`,
    '|---|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
  const machineLine = Object.entries(env)
    .map(([k, v]) => `${k}: ${v}`)
    .join(' · ');
  const markdown =
    `Measured ${new Date().toISOString().slice(0, 10)}${quick ? ' (--quick: one run each, smaller backlogs)' : ''} on ${machineLine}. ` +
    'Ratios: drains against the bare publisher, the consumer against a bare amqplib consumer, WAL against the producer’s INSERT, CPU against the bare publisher, producer rows against "domain only", the large drain against the 1,000-key drain.\n\n' +
    `${table}\n`;
  console.log(`\n${markdown}\nbench took ${Math.round((Date.now() - started) / 1000)} s`);
  const dir = join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const results = {
    date: new Date().toISOString(),
    quick,
    machine: env,
    bare: bareRuns,
    insertWal,
    cleanups,
    drains,
    deleting,
    producer,
    scale: big,
    rows,
  };
  writeFileSync(join(dir, quick ? 'quick.json' : 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  writeFileSync(join(dir, quick ? 'quick.md' : 'latest.md'), markdown);
}

let finished = false;
process.on('exit', (code) => {
  if (!finished && code === 0) {
    console.error('bench failed: it stopped before finishing (a scenario waited on nothing)');
    process.exitCode = 1;
  }
});

main().then(
  () => {
    finished = true;
  },
  (err: unknown) => {
    console.error(`bench failed: ${(err as Error).message}`);
    process.exit(1);
  },
);
