/**
 * `npm run bench [-- --quick]`: throughput, latency, scale and producer cost of
 * outbox-relay against the local PostgreSQL and RabbitMQ, each figure against a bare
 * amqplib publisher measured in the same run. Prints progress and a final table; writes
 * bench/results/latest.json and latest.md. Numbers, not pass/fail: the exit code is 0
 * unless a scenario breaks.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { connect } from 'amqplib';
import { bare, drain, latency, producerCost, scale, type LatencyResult, type ProducerVariant, type ScaleResult } from './scenarios';
import { AMQP_URL, figure, newPool, percentile, type Figure } from './support';

const quick = process.argv.includes('--quick');
const REPS = 3;
const N = quick ? 20_000 : 100_000;
const SCALE_BACKLOG = quick ? 100_000 : 1_000_000;
const LATENCY_SECONDS = quick ? 4 : 10;
const PRODUCER_SECONDS = quick ? 2 : 5;
/** A single hot key drained by 3 relays: 20,000 messages in both modes, the backlog the ordering test drains. */
const HOT_KEY_BACKLOG = 20_000;
const HOT_KEY_RELAYS = 3;

async function repeat(label: string, run: () => Promise<number>): Promise<Figure> {
  const runs: number[] = [];
  for (let i = 0; i < REPS; i += 1) {
    runs.push(await run());
    process.stdout.write(`  ${label} #${i + 1}: ${Math.round(runs[i] as number).toLocaleString('en-US')}\n`);
  }
  return figure(runs);
}

const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');
const spread = (f: Figure): string => `${fmt(f.min)}–${fmt(f.max)}`;
const ms = (n: number): string => (n < 10 ? n.toFixed(2) : n.toFixed(1));

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

async function main(): Promise<void> {
  const started = Date.now();
  const pool = newPool(12);
  const env = await machine();
  console.log(`outbox-relay bench${quick ? ' (quick)' : ''}: ${Object.values(env).join(' · ')}`);

  console.log(`\nbare amqplib publisher, ${fmt(N)} persistent 1 KiB messages, 1,000 confirms outstanding`);
  const ceiling = await repeat('msg/s', () => bare(N));

  console.log(`\ndrain of a ${fmt(N)}-message backlog, one relay`);
  const unkeyed = await repeat('unkeyed msg/s', () => drain(pool, N, 0, 1));
  const keyed = await repeat('1,000 keys msg/s', () => drain(pool, N, 1_000, 1));
  const hotKey = await repeat('1 key msg/s', () => drain(pool, quick ? N / 2 : N / 5, 1, 1));

  console.log(`\na single hot key: drain of a ${fmt(HOT_KEY_BACKLOG)}-message backlog by ${HOT_KEY_RELAYS} relays`);
  const hotKeyRelays = await repeat(`1 key, ${HOT_KEY_RELAYS} relays msg/s`, () => drain(pool, HOT_KEY_BACKLOG, 1, HOT_KEY_RELAYS));

  console.log(`\nreplicas: drain of ${fmt(N)} messages`);
  const replicas: Record<string, Figure> = {};
  for (const n of [1, 2, 4]) replicas[n] = await repeat(`${n} relay(s) msg/s`, () => drain(pool, N, 0, n));

  console.log(`\nlatency: 500 producer transactions/s for ${LATENCY_SECONDS} s, commit → consumer`);
  const latencies: LatencyResult[] = [];
  for (let i = 0; i < REPS; i += 1) {
    const r = await latency(pool, 500, LATENCY_SECONDS);
    latencies.push(r);
    console.log(`  #${i + 1}: p50 ${ms(r.p50)} ms, p99 ${ms(r.p99)} ms, max ${ms(r.max)} ms (${r.count} events)`);
  }
  const lat = {
    p50: figure(latencies.map((l) => l.p50)),
    p99: figure(latencies.map((l) => l.p99)),
    max: figure(latencies.map((l) => l.max)),
  };

  console.log(`\nproducer cost: 8 clients, ${PRODUCER_SECONDS} s each`);
  const producer: Partial<Record<ProducerVariant, { tx: Figure; p50: Figure }>> = {};
  for (const variant of [
    'domain only',
    '+ outbox INSERT = default wake-up',
    '+ relay publishing alongside',
    '+ optional NOTIFY trigger',
  ] as const) {
    const runs = [];
    for (let i = 0; i < REPS; i += 1) runs.push(await producerCost(pool, variant, PRODUCER_SECONDS));
    producer[variant] = { tx: figure(runs.map((r) => r.txPerSecond)), p50: figure(runs.map((r) => r.p50Ms)) };
    console.log(
      `  ${variant}: ${fmt(producer[variant].tx.median)} tx/s (${spread(producer[variant].tx)}), p50 ${ms(producer[variant].p50.median)} ms`,
    );
  }

  console.log(`\nscale: a ${fmt(SCALE_BACKLOG)}-message backlog`);
  const big: ScaleResult = await scale(pool, SCALE_BACKLOG);
  const scrape = [...big.metricsScrapeMs].sort((a, b) => a - b);
  const status = [...big.statusMs].sort((a, b) => a - b);
  console.log(
    `  peak RSS ${big.peakRssMiB.toFixed(0)} MiB; /metrics p50 ${ms(percentile(scrape, 50))} ms, max ${ms(scrape[scrape.length - 1] ?? 0)} ms; status ${status.map(ms).join(' / ')} ms`,
  );
  await pool.end();

  const domainTx = producer['domain only']?.tx.median ?? Number.NaN;
  const rows: [string, string, string, string][] = [
    ['bare amqplib publisher (ceiling)', `${fmt(ceiling.median)} msg/s`, spread(ceiling), '1.00'],
    ['drain, unkeyed', `${fmt(unkeyed.median)} msg/s`, spread(unkeyed), (unkeyed.median / ceiling.median).toFixed(2)],
    ['drain, 1,000 partition keys', `${fmt(keyed.median)} msg/s`, spread(keyed), (keyed.median / ceiling.median).toFixed(2)],
    ['drain, a single key', `${fmt(hotKey.median)} msg/s`, spread(hotKey), (hotKey.median / ceiling.median).toFixed(2)],
    [
      `drain, a single key, ${HOT_KEY_RELAYS} relays (${fmt(HOT_KEY_BACKLOG)})`,
      `${fmt(hotKeyRelays.median)} msg/s`,
      spread(hotKeyRelays),
      (hotKeyRelays.median / ceiling.median).toFixed(2),
    ],
    ...[1, 2, 4].map((n): [string, string, string, string] => [
      `drain, ${n} relay${n > 1 ? 's' : ''}`,
      `${fmt(replicas[n]!.median)} msg/s`,
      spread(replicas[n]!),
      (replicas[n]!.median / ceiling.median).toFixed(2),
    ]),
    ['latency p50 at 500 events/s', `${ms(lat.p50.median)} ms`, `${ms(lat.p50.min)}–${ms(lat.p50.max)}`, ''],
    ['latency p99 at 500 events/s', `${ms(lat.p99.median)} ms`, `${ms(lat.p99.min)}–${ms(lat.p99.max)}`, ''],
    ['latency max at 500 events/s', `${ms(lat.max.median)} ms`, `${ms(lat.max.min)}–${ms(lat.max.max)}`, ''],
    ...Object.entries(producer).map(([variant, r]): [string, string, string, string] => [
      `producer tx, ${variant} (p50 ${ms(r.p50.median)} ms)`,
      `${fmt(r.tx.median)} tx/s`,
      spread(r.tx),
      (r.tx.median / domainTx).toFixed(2),
    ]),
    [`peak RSS draining ${fmt(SCALE_BACKLOG)}`, `${big.peakRssMiB.toFixed(0)} MiB`, '', ''],
    [
      `/metrics scrape under ${fmt(SCALE_BACKLOG)} pending`,
      `${ms(percentile(scrape, 50))} ms`,
      `max ${ms(scrape[scrape.length - 1] ?? 0)}`,
      '',
    ],
    [
      `status under ${fmt(SCALE_BACKLOG)} pending`,
      `${ms(percentile(status, 50))} ms`,
      `${ms(status[0] ?? 0)}–${ms(status[status.length - 1] ?? 0)}`,
      '',
    ],
  ];
  const table = [
    '| figure | median | spread (min–max of 3) | ratio |',
    '|---|---|---|---|',
    ...rows.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
  const machineLine = Object.entries(env)
    .map(([k, v]) => `${k}: ${v}`)
    .join(' · ');
  const markdown = `Measured ${new Date().toISOString().slice(0, 10)}${quick ? ' (--quick)' : ''} on ${machineLine}. Ratios: drain rows against the bare publisher, producer rows against "domain only".\n\n${table}\n`;
  console.log(`\n${markdown}\nbench took ${Math.round((Date.now() - started) / 1000)} s`);
  const dir = join(__dirname, 'results');
  mkdirSync(dir, { recursive: true });
  const results = {
    date: new Date().toISOString(),
    quick,
    machine: env,
    ceiling,
    unkeyed,
    keyed,
    hotKey,
    hotKeyRelays,
    replicas,
    latency: lat,
    producer,
    scale: big,
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
