/**
 * `npm run bench [-- --quick] [-- --only latency|fleet|replay|failover|held|tracing|signing|consumer|memory [--baseline <rev>]]`: throughput, latency, scale and producer cost of
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
  producerCost,
  producerInsertWal,
  cleanupWal,
  scale,
  type DrainResult,
  type ProducerVariant,
  type ScaleResult,
} from './scenarios';
import { CONSUMER_PREFETCHES, CONSUMER_VARIANTS, consumerThroughput, type ConsumerThroughput, type ConsumerVariant } from './consumer';
import { failoverRun } from './failover';
import { burstyLatency, type BurstyResult } from './bursty';
import { idleCost, takeover, type IdleCost } from './fleet';
import { STAGES } from '../src/relay/stage-timeline';
import { heldRun, unheldDrainMs, type HeldResult } from './held';
import { memoryRun, type MemoryRun } from './memory';
import { replayBeside, type ReplayResult } from './replay';
import { tracingRuns, type TracingArm, type TracingRun } from './tracing';
import { signingParts, signingRuns, type SigningArm } from './signing';
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
const REPLICAS = [1, 3, 12] as const;
/** The drains every replica count runs: no key, 1,000 keys, one hot key. */
const DRAIN_KINDS = [
  { name: 'unkeyed', count: N, keys: 0 },
  { name: '1,000 keys', count: N, keys: 1_000 },
  { name: 'a single key', count: HOT_KEY_BACKLOG, keys: 1 },
] as const;
/** How long the idle cost of 1 and of 12 replicas is measured, once they settled (s). */
const FLEET_IDLE_SECONDS = quick ? 20 : 60;
/** The backlog the takeover runs drain while the leader is killed or frozen. */
const TAKEOVER_COUNT = quick ? 20_000 : 40_000;
const CONSUMER_COUNT = quick ? 2_000 : 5_000;
/** The backlog a failover run drains (1 KiB messages; the primary is stopped after a quarter). */
const FAILOVER_COUNT = quick ? 10_000 : 20_000;
/** Published messages replayed while a relay drains as many new ones. */
const REPLAY_COUNT = quick ? 5_000 : 20_000;
/** Messages to a queue that is full for a while (a held destination), and how long it stays full. */
const HELD_COUNT = quick ? 2_000 : 5_000;
const HELD_CASES: readonly { queueType: 'classic' | 'quorum'; heldMs: number }[] = quick
  ? [
      { queueType: 'classic', heldMs: 2_000 },
      { queueType: 'quorum', heldMs: 10_000 },
    ]
  : [
      { queueType: 'classic', heldMs: 2_000 },
      { queueType: 'classic', heldMs: 20_000 },
      { queueType: 'quorum', heldMs: 20_000 },
    ];
/**
 * `--only tracing --baseline <rev>`: also drain with the relay built from `<rev>` (a commit without tracing code);
 * `--only consumer --baseline <rev>`: also drain with the consumer library built from `<rev>` (before batches).
 */
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

/**
 * A queue full under x-overflow reject-publish (x-max-length 200) for a while: how fast its
 * held messages flow once it has room, and how often the relay publishes to it meanwhile.
 */
async function heldRows(pool: ReturnType<typeof newPool>): Promise<{ rows: Row[]; runs: HeldResult[]; baselineMs: number[] }> {
  console.log(`
held destination: ${fmt(HELD_COUNT)} messages (100 keys) to a queue of x-max-length 200 with reject-publish and no consumer, then a consumer`);
  const rows: Row[] = [];
  const all: HeldResult[] = [];
  const baselines = await repeat(
    'the same to a classic queue never full (baseline)',
    () => unheldDrainMs(pool, { queueType: 'classic', count: HELD_COUNT }),
    (ms) => `relay ready → all ${fmt(HELD_COUNT)} delivered ${fmt(ms)} ms`,
  );
  const baseline = figure(baselines);
  rows.push([
    `held destination baseline: a queue never full, relay ready → all ${fmt(HELD_COUNT)} delivered`,
    `${fmt(baseline.median)} ms`,
    spread(baseline),
    '1.00',
  ]);
  for (const { queueType, heldMs } of HELD_CASES) {
    const label = `${queueType} queue full ${heldMs / 1000} s`;
    const runs = await repeat(
      label,
      () => heldRun(pool, { queueType, heldMs, count: HELD_COUNT, maxLength: 200 }),
      (r) =>
        `${fmt(r.refusedWhileHeld)} refused while held (${r.probesPerSecond.toFixed(2)}/s after the first second); room → first held message ${fmt(r.firstHeldMs)} ms, → all ${fmt(r.allDeliveredMs)} ms`,
    );
    all.push(...runs);
    const first = figure(runs.map((r) => r.firstHeldMs));
    const whole = figure(runs.map((r) => r.allDeliveredMs));
    const probes = figure(runs.map((r) => r.probesPerSecond));
    rows.push([`held destination (${label}): room → first held message delivered`, `${fmt(first.median)} ms`, spread(first), '']);
    const afterFirst = figure(runs.map((r) => r.allDeliveredMs - r.firstHeldMs));
    rows.push([`held destination (${label}): room → all ${fmt(HELD_COUNT)} delivered`, `${fmt(whole.median)} ms`, spread(whole), '']);
    rows.push([
      `held destination (${label}): first held message → all delivered, vs the baseline`,
      `${fmt(afterFirst.median)} ms`,
      spread(afterFirst),
      ratio(afterFirst.median, baseline.median),
    ]);
    rows.push([
      `held destination (${label}): publishes to it while held, after the first second`,
      `${probes.median.toFixed(2)}/s`,
      spread(probes, (n) => n.toFixed(2)),
      '',
    ]);
  }
  return { rows, runs: all, baselineMs: baselines };
}

/**
 * The idempotent consumer against a bare amqplib consumer, at each prefetch, in each
 * variant (and the consumer built from `baseline`, when given): rounds alternate the
 * variants, so a load that comes and goes on a shared machine spreads over all of them.
 */
async function consumerRows(baseline?: { rev: string; dir: string }): Promise<{ rows: Row[]; runs: ConsumerThroughput[] }> {
  const variants: ConsumerVariant[] = [...CONSUMER_VARIANTS];
  if (baseline) {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const library = require(join(baseline.dir, 'dist', 'consumer', 'index.js')) as ConsumerVariant['library'];
    variants.push({ label: `before (${baseline.rev})`, options: {}, library });
  }
  console.log(
    `
the idempotent consumer: ${fmt(CONSUMER_COUNT)} 1 KiB messages of 1,000 keys (1,000 at prefetch 1), a handler writing one row, pool of 10, against a bare amqplib consumer`,
  );
  // At prefetch 1 every batch is one message and each costs a commit's flush: the
  // variants that differ there, and fewer messages (one run took 90 s at load 10).
  const variantsAt = (prefetch: number): ConsumerVariant[] =>
    prefetch === 1 ? variants.filter((v) => v.pipeline !== true && v.options.batchSize === undefined) : variants;
  const countAt = (prefetch: number): number => (prefetch === 1 ? Math.min(CONSUMER_COUNT, 1_000) : CONSUMER_COUNT);
  const runs: ConsumerThroughput[] = [];
  for (let round = 0; round < REPS; round += 1) {
    for (const prefetch of CONSUMER_PREFETCHES) {
      for (const variant of variantsAt(prefetch)) {
        const r = await consumerThroughput(prefetch, countAt(prefetch), variant, variant === variants[0] && prefetch === 100);
        runs.push(r);
        const wal = Number.isNaN(r.inboxWalPerMessage) ? '' : ` (inbox ${fmt(r.inboxWalPerMessage)})`;
        process.stdout.write(
          `  #${round + 1} prefetch ${prefetch}, ${r.variant}: ${fmt(r.consumerRate)} msg/s, bare ${fmt(r.bareRate)} msg/s, ${ratio(r.consumerRate, r.bareRate)} ×, ${fmt(r.walPerMessage)} B WAL/msg${wal}\n`,
        );
      }
    }
  }
  const rows: Row[] = [];
  for (const prefetch of CONSUMER_PREFETCHES) {
    for (const variant of variantsAt(prefetch)) {
      const chosen = runs.filter((r) => r.prefetch === prefetch && r.variant === variant.label);
      const consumer = figure(chosen.map((r) => r.consumerRate));
      const share = figure(chosen.map((r) => r.consumerRate / r.bareRate));
      const bareConsumer = figure(chosen.map((r) => r.bareRate));
      rows.push([
        `idempotent consumer, prefetch ${prefetch}, ${variant.label} (bare amqplib consumer: ${fmt(bareConsumer.median)} msg/s)`,
        `${fmt(consumer.median)} msg/s`,
        spread(consumer),
        share.median.toFixed(2),
      ]);
    }
  }
  const walRuns = runs.filter((r) => !Number.isNaN(r.inboxWalPerMessage));
  const inbox = figure(walRuns.map((r) => r.inboxWalPerMessage));
  const whole = figure(walRuns.map((r) => r.walPerMessage));
  rows.push([
    `WAL per message in the consumer's database, batched, prefetch 100 (of it the inbox: ${fmt(inbox.median)} B)`,
    `${fmt(whole.median)} B`,
    spread(whole),
    '',
  ]);
  return { rows, runs };
}

/** `--only consumer [--baseline <rev>]`: the consumer's figures alone (results in bench/results/consumer.json). */
async function consumerBench(pool: ReturnType<typeof newPool>, started: number, env: Record<string, string>): Promise<void> {
  await pool.end();
  const before = baselineRev === undefined ? undefined : buildBaseline(baselineRev);
  let result: { rows: Row[]; runs: ConsumerThroughput[] };
  try {
    result = await consumerRows(before && baselineRev ? { rev: baselineRev, dir: join(before.bin, '..', '..') } : undefined);
  } finally {
    before?.remove();
  }
  const load = (await import('node:os'))
    .loadavg()
    .map((n) => n.toFixed(1))
    .join(' ');
  const table = [
    `| figure | median | spread (min–max of ${REPS}) | × bare (median of the runs' ratios) |`,
    '|---|---|---|---|',
    ...result.rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
  console.log(`\n${table}\n\nload average at the end: ${load}\nbench took ${Math.round((Date.now() - started) / 1000)} s`);
  const dir = join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'consumer.json'),
    `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, load, runs: result.runs, rows: result.rows }, null, 2)}\n`,
  );
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

/** Messages per drain of `--only signing`. */
const SIGNING_COUNT = 50_000;

/**
 * `--only signing`: the drain rate and the relay's CPU per message without and with a
 * signing key (same backlog, alternated), then the parts of signing and the consumer's
 * verification timed one by one in this process.
 */
async function signingBench(pool: ReturnType<typeof newPool>, started: number, env: Record<string, string>): Promise<void> {
  const count = quick ? 10_000 : SIGNING_COUNT;
  console.log(`\nsigning: ${fmt(count)} 1 KiB messages drained by one relay, unsigned and signed (Ed25519), alternated`);
  const runs = await signingRuns(pool, count, REPS + 1);
  await pool.end();
  for (const r of runs) {
    console.log(
      `  ${r.signing.padEnd(3)} ${fmt(r.rate)} msg/s, relay ${r.cpu.relay.toFixed(1)} µs/msg, machine ${r.cpu.machine.toFixed(1)} µs/msg`,
    );
  }
  const of = (signing: SigningArm): { rate: Figure; relay: Figure } => {
    const chosen = runs.filter((r) => r.signing === signing);
    return { rate: figure(chosen.map((r) => r.rate)), relay: figure(chosen.map((r) => r.cpu.relay)) };
  };
  const off = of('off');
  const on = of('on');
  const parts = signingParts(quick ? 5_000 : 20_000);
  console.log(
    `\nunsigned: median ${fmt(off.rate.median)} msg/s (${spread(off.rate)}), relay ${off.relay.median.toFixed(1)} µs/msg (${off.relay.min.toFixed(1)}–${off.relay.max.toFixed(1)})` +
      `\nsigned:   median ${fmt(on.rate.median)} msg/s (${spread(on.rate)}), relay ${on.relay.median.toFixed(1)} µs/msg (${on.relay.min.toFixed(1)}–${on.relay.max.toFixed(1)})` +
      `\nsigning costs ${((1 - on.rate.median / off.rate.median) * 100).toFixed(1)} % of the drain rate and ${(on.relay.median - off.relay.median).toFixed(1)} µs of relay CPU per message` +
      `\nparts (CPU µs per message, this process): properties unsigned ${parts.propertiesUnsigned.toFixed(1)}, canonical form ${parts.canonicalForm.toFixed(1)},` +
      ` Ed25519 sign ${parts.ed25519Sign.toFixed(1)}, properties signed ${parts.propertiesSigned.toFixed(1)}; consumer verify ${parts.consumerVerify.toFixed(1)}`,
  );
  console.log(`bench took ${Math.round((Date.now() - started) / 1000)} s`);
  const dir = join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, 'signing.json'),
    `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, runs, parts }, null, 2)}\n`,
  );
}

/**
 * Commit-side latency on bursty traffic (bench/bursty.ts): random arrivals at 500 and
 * 2,000 events/s, drained by 1 and by 3 replicas, with where the time went (the leader's
 * OUTBOX_STAGE_TIMINGS histogram, bucket bounds).
 */
async function latencyRows(pool: ReturnType<typeof newPool>): Promise<{ rows: Row[]; runs: BurstyResult[] }> {
  const rows: Row[] = [];
  const all: BurstyResult[] = [];
  for (const rate of [500, 2_000]) {
    for (const replicas of [1, 3]) {
      console.log(
        `\nlatency: ${fmt(rate)} transactions/s arriving at random (4 clients, a domain row and its event, 1,000 keys, ~200-byte events), ` +
          `${replicas} relay${replicas > 1 ? 's' : ''}, ${LATENCY_SECONDS} s; stamped at the INSERT, taken at the consumer`,
      );
      const runs = await repeat(
        `${fmt(rate)}/s, ${replicas} relay${replicas > 1 ? 's' : ''}`,
        () => burstyLatency(pool, rate, LATENCY_SECONDS, replicas),
        (r) =>
          `p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, max ${ms(r.max)} ms (${fmt(r.count)} events, ${fmt(r.achievedRate)} tx/s reached); stages p50/p99 ≤ ` +
          STAGES.map((stage) => `${stage} ${ms(r.stages[stage].p50)}/${ms(r.stages[stage].p99)}`).join(', ') +
          ' ms',
      );
      all.push(...runs);
      const reached = figure(runs.map((r) => r.achievedRate));
      const label = `${fmt(rate)} events/s at random (${fmt(reached.median)} reached), ${replicas} relay${replicas > 1 ? 's' : ''}`;
      for (const p of ['p50', 'p99', 'max'] as const) {
        const f = figure(runs.map((r) => r[p]));
        rows.push([`latency ${p}, ${label}`, `${ms(f.median)} ms`, spread(f, ms), '']);
      }
      for (const stage of STAGES) {
        const p99 = figure(runs.map((r) => r.stages[stage].p99));
        rows.push([`… stage ${stage} p99 (histogram bucket), ${label}`, `≤ ${ms(p99.median)} ms`, spread(p99, ms), '']);
      }
    }
  }
  return { rows, runs: all };
}

/** Every backlog kind (DRAIN_KINDS) drained by each count of REPLICAS relays, REPS times, by label ("1,000 keys, 3 relays"), in that order. */
async function drainEveryKind(pool: ReturnType<typeof newPool>, show: (r: DrainResult) => string): Promise<Record<string, DrainResult[]>> {
  const drains: Record<string, DrainResult[]> = {};
  for (const kind of DRAIN_KINDS) {
    for (const relays of REPLICAS) {
      const label = `${kind.name}, ${relays} relay${relays > 1 ? 's' : ''}`;
      console.log(`\ndrain of a ${fmt(kind.count)}-message backlog: ${label}`);
      drains[label] = await repeat(label, () => drain(pool, kind.count, kind.keys, relays), show);
    }
  }
  return drains;
}

/** Each drain of 3 and 12 replicas against the same drain by one, from `drains` (labels "<kind>, <n> relay(s)"). */
function replicaRatioRows(drains: Readonly<Record<string, DrainResult[]>>, kinds: readonly string[]): Row[] {
  const rows: Row[] = [];
  for (const kind of kinds) {
    const one = figure((drains[`${kind}, 1 relay`] ?? []).map((r) => r.rate));
    for (const n of REPLICAS.filter((r) => r > 1)) {
      const many = figure((drains[`${kind}, ${n} relays`] ?? []).map((r) => r.rate));
      rows.push([`drain, ${kind}: ${n} replicas vs 1`, `${fmt(many.median)} msg/s`, spread(many), ratio(many.median, one.median)]);
    }
  }
  return rows;
}

/** The idle cost of 1 and 12 replicas and the takeover times (`--only fleet`, and the full bench). */
async function fleetRows(): Promise<{ rows: Row[]; idle: IdleCost[]; takeovers: Record<string, number[]> }> {
  const idle: IdleCost[] = [];
  for (const replicas of [1, 12]) {
    console.log(`
idle: ${replicas} replica${replicas > 1 ? 's' : ''} of one outbox, nothing to publish, measured for ${FLEET_IDLE_SECONDS} s`);
    const cost = await idleCost(replicas, FLEET_IDLE_SECONDS);
    idle.push(cost);
    console.log(
      `  ${cost.connections} connections, ${cost.txPerSecond.toFixed(1)} transactions/s, PostgreSQL ${cost.postgresCpu.toFixed(2)} % of a core, ` +
        `leader ${cost.leaderCpu.toFixed(2)} %, standbys ${cost.standbyCpu.toFixed(2)} % each`,
    );
  }
  const [one, twelve] = idle as [IdleCost, IdleCost];
  const rows: Row[] = [
    ['idle, 1 relay: database connections', fmt(one.connections), '', '1.00'],
    ['idle, 12 relays: database connections', fmt(twelve.connections), '', ratio(twelve.connections, one.connections)],
    ['idle, 1 relay: transactions/s', one.txPerSecond.toFixed(1), '', '1.00'],
    ['idle, 12 relays: transactions/s', twelve.txPerSecond.toFixed(1), '', ratio(twelve.txPerSecond, one.txPerSecond)],
    ['idle, 1 relay: PostgreSQL CPU', `${one.postgresCpu.toFixed(2)} %`, '', '1.00'],
    ['idle, 12 relays: PostgreSQL CPU', `${twelve.postgresCpu.toFixed(2)} %`, '', ratio(twelve.postgresCpu, one.postgresCpu)],
    ['idle relay process CPU (a lone relay, the leader)', `${one.leaderCpu.toFixed(2)} %`, '', ''],
    ['idle standby process CPU (12 relays, each)', `${twelve.standbyCpu.toFixed(2)} %`, '', ''],
  ];
  const takeovers: Record<string, number[]> = {};
  for (const fault of ['kill -9', 'freeze'] as const) {
    console.log(`
takeover: 3 relays drain ${fmt(TAKEOVER_COUNT)} messages (1,000 keys); the leader gets ${fault}`);
    const runs = await repeat(
      fault,
      () => takeover(fault, TAKEOVER_COUNT),
      (t) => `another replica published ${fmt(t.ms)} ms later`,
    );
    const f = figure(runs.map((t) => t.ms));
    takeovers[fault] = [...f.runs];
    rows.push([`takeover after ${fault} of the leader (to the first publish by another)`, `${fmt(f.median)} ms`, spread(f), '']);
  }
  return { rows, idle, takeovers };
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
  if (only === 'latency') {
    const latencyResult = await latencyRows(pool);
    await pool.end();
    const table = [
      '| figure | median | spread | ratio |',
      '|---|---|---|---|',
      ...latencyResult.rows.map((r) => `| ${r.join(' | ')} |`),
    ].join('\n');
    console.log(`\n${table}\n\nbench took ${Math.round((Date.now() - started) / 1000)} s`);
    const dir = join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'latency.json'),
      `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, runs: latencyResult.runs }, null, 2)}\n`,
    );
    return;
  }
  if (only === 'fleet') {
    console.log(`\nbare amqplib publisher, ${fmt(N)} persistent 1 KiB messages, 1,000 confirms outstanding`);
    const bareRuns = await repeat(
      'bare',
      () => bare(N),
      (r) => `${fmt(r.rate)} msg/s`,
    );
    const ceiling = figure(bareRuns.map((r) => r.rate));
    rows.push(['bare amqplib publisher (ceiling)', `${fmt(ceiling.median)} msg/s`, spread(ceiling), '1.00']);
    const drains = await drainEveryKind(pool, (r) => `${fmt(r.rate)} msg/s`);
    for (const [label, runs] of Object.entries(drains)) {
      const rate = figure(runs.map((r) => r.rate));
      rows.push([`drain, ${label}`, `${fmt(rate.median)} msg/s`, spread(rate), ratio(rate.median, ceiling.median)]);
    }
    rows.push(
      ...replicaRatioRows(
        drains,
        DRAIN_KINDS.map((k) => k.name),
      ),
    );
    await pool.end();
    const fleet = await fleetRows();
    rows.push(...fleet.rows);
    const table = ['| figure | median | spread | ratio |', '|---|---|---|---|', ...rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
    console.log(`\n${table}\n\nbench took ${Math.round((Date.now() - started) / 1000)} s`);
    const dir = join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'fleet.json'),
      `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, rows, idle: fleet.idle, takeovers: fleet.takeovers }, null, 2)}\n`,
    );
    return;
  }
  if (only === 'tracing') {
    await tracingBench(pool, started, env);
    return;
  }
  if (only === 'signing') {
    await signingBench(pool, started, env);
    return;
  }
  if (only === 'held') {
    const held = await heldRows(pool);
    await pool.end();
    const table = ['| figure | median | spread | ratio |', '|---|---|---|---|', ...held.rows.map((r) => `| ${r.join(' | ')} |`)].join('\n');
    console.log(`\n${table}\n\nbench took ${Math.round((Date.now() - started) / 1000)} s`);
    const dir = join(__dirname, 'results');
    mkdirSync(dir, { recursive: true });
    writeFileSync(
      join(dir, 'held.json'),
      `${JSON.stringify({ date: new Date().toISOString(), quick, machine: env, baselineMs: held.baselineMs, runs: held.runs, rows: held.rows }, null, 2)}\n`,
    );
    return;
  }
  if (only === 'consumer') {
    await consumerBench(pool, started, env);
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

  const drains = await drainEveryKind(
    pool,
    (r) =>
      `${fmt(r.rate)} msg/s, ${fmt(r.walPerMessage)} B WAL/msg, ${fmt(r.cpu.machine)} µs CPU/msg, lag 0 after ${fmt(r.lagClearedMs)} ms`,
  );
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
  rows.push(
    ...replicaRatioRows(
      drains,
      DRAIN_KINDS.map((k) => k.name),
    ),
  );
  const lagCleared = figure(one.map((r) => r.lagClearedMs));
  rows.push(['outbox_lag_seconds reads 0 after the last publish', `${fmt(lagCleared.median)} ms`, spread(lagCleared), '']);

  rows.push(...(await latencyRows(pool)).rows);

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

  rows.push(...(await consumerRows()).rows);

  rows.push(...(await replayRows(pool)).rows);
  rows.push(...(await fleetRows()).rows);
  rows.push(...(await heldRows(pool)).rows);

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
