import { connect } from 'amqplib';
import { Pool } from 'pg';
import { dropSchema, migrateSchema } from '../kit/outbox-schema';
import { endpointAnswer } from '../kit/relay-http';
import { RabbitCluster } from '../kit/rabbit-cluster';
import { testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { countFaults, runFaultSchedule, type FaultKind } from './faults';
import { checkInvariants, type Delivery } from './invariants';
import { FREEZE_LATENCY_BOUND_MS, type LatencyFigures } from './latency';
import { ChaosDatabase } from './pg-failover';
import { createAggregates, resolveUnknownCommits, startProducers } from './producers';
import { seededRandom } from './random';
import { startRelays } from './relays';
import { amqpChannels, processResources, relayDatabaseConnections, type ProcessResources } from './resources';
import { sleep } from './sleep';

/**
 * A Jepsen-style run: producers write keyed and unkeyed messages in transactions (some
 * rolled back, some long), three relays run as processes behind TCP proxies, a fault
 * schedule drawn from a seed keeps breaking things, an independent consumer records
 * every delivery; at the end every invariant is checked over everything written and
 * received.
 *
 * The parts: producers.ts (the producers), relays.ts (the relays and their proxies),
 * faults.ts (the fault schedule), invariants.ts (the checks at the end), and with
 * `--pg-failover` pg-failover.ts (the run's own primary and standby); this module runs
 * them in turn and reports.
 */
export interface ChaosOptions {
  readonly seconds: number;
  readonly seed: number;
  /** Producer transactions per second (all producers together). */
  readonly rate?: number;
  /**
   * Runs against a three-node RabbitMQ cluster of its own (test/kit/rabbit-cluster.ts)
   * with a quorum queue, instead of the machine's broker, and adds the node loss to the
   * faults (`npm run chaos -- --rabbit-cluster`; about 20 s more to start the cluster).
   */
  readonly rabbitCluster?: boolean;
  /**
   * Runs producers, relays and checks against a PostgreSQL primary and synchronous
   * standby of its own (test/chaos/pg-failover.ts), instead of the machine's database,
   * and adds the failover to the faults (`npm run chaos -- --pg-failover`).
   */
  readonly pgFailover?: boolean;
  /**
   * Adds the rolling restart to the faults (`npm run chaos -- --rolling-restarts`): every
   * relay in turn stopped with SIGTERM, started again and ready before the next one.
   */
  readonly rollingRestarts?: boolean;
  readonly log?: (line: string) => void;
}

export interface ChaosReport {
  readonly seed: number;
  readonly seconds: number;
  readonly committed: number;
  readonly rolledBack: number;
  readonly poison: number;
  readonly faults: Readonly<Record<FaultKind, number>>;
  readonly lost: number;
  readonly rolledBackDelivered: number;
  readonly orderViolations: number;
  readonly duplicates: number;
  readonly unexplainedDuplicates: number;
  readonly poisonNotDead: number;
  readonly othersDead: number;
  readonly lockedOrHalfMarked: number;
  readonly latency: LatencyFigures;
  readonly relaysNotReady: number;
  readonly resources: { readonly start: Resources; readonly end: Resources };
  /** Relay 0's RSS (MiB) once per fault, to tell growth from a one-off peak. */
  readonly rssSamples: readonly number[];
  /** With `pgFailover`: the producers' transactions a failover interrupted, and how the unknown commits turned out. */
  readonly producerInterruptions?: {
    readonly total: number;
    readonly unknownCommits: number;
    readonly unknownCommitted: number;
  };
  readonly violations: readonly string[];
}

interface Resources {
  readonly longLivedRelay: ProcessResources;
  readonly databaseConnections: number;
  readonly amqpChannels: number | undefined;
}

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const rabbit = options.rabbitCluster ? await RabbitCluster.start() : undefined;
  try {
    const database = options.pgFailover ? await ChaosDatabase.start() : undefined;
    try {
      return await runWith(options, rabbit, database);
    } finally {
      await database?.close();
    }
  } finally {
    await rabbit?.stop();
  }
}

async function runWith(
  options: ChaosOptions,
  rabbit: RabbitCluster | undefined,
  database: ChaosDatabase | undefined,
): Promise<ChaosReport> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  // Two streams from one seed: the fault schedule does not depend on how many
  // transactions the producers managed meanwhile.
  const random = seededRandom(options.seed);
  const producerRandom = seededRandom(options.seed ^ 0x5bd1e995);
  const schema = `chaos_${options.seed.toString(16)}_${Date.now().toString(36)}`;
  const exchange = `chaos.${schema}`;
  const queue = `chaos.${schema}.all`;
  // With a database of its own, the producers and the checks follow its primary too.
  const admin = database ? database.clientPool(12) : new Pool({ connectionString: testDatabaseUrl(), max: 12 });
  const violations: string[] = [];
  log(
    `chaos: seed ${options.seed}, ${options.seconds} s, schema ${schema}${rabbit ? `, RabbitMQ cluster ${rabbit.dir}` : ''}${database ? `, PostgreSQL primary and synchronous standby ${database.root}` : ''}`,
  );

  await migrateSchema(admin, schema);
  await createAggregates(admin, schema);

  // The independent consumer: every delivery, in arrival order. On a cluster it reads from
  // the first node, which the schedule never kills; the quorum queue is declared through
  // the second, so its leader is on a node that can be lost.
  const broker = await TestBroker.connect({ durable: true, ...(rabbit ? { url: rabbit.urls[0] } : {}) });
  await broker.exchange(exchange);
  if (rabbit) {
    const model = await connect(rabbit.urls[1]!);
    try {
      await (await model.createChannel()).assertQueue(queue, { durable: true, arguments: { 'x-queue-type': 'quorum' } });
    } finally {
      await model.close();
    }
  }
  await broker.declareQueue(queue, { exchange, pattern: '#' }, rabbit ? { 'x-queue-type': 'quorum' } : undefined);
  const deliveries: Delivery[] = [];
  await broker.consume(queue, (msg) => deliveries.push({ id: String(msg.properties.messageId), at: Date.now() }));

  const cluster = await startRelays(
    schema,
    options.seed,
    rabbit?.urls,
    database ? { url: database.relayUrl, proxy: database.relayProxy } : undefined,
  );
  const { relays, dbProxy, brokerProxy, appId, waitReady } = cluster;
  if ((await waitReady(30_000)).length > 0) throw new Error('relays did not become ready');

  const relay0Pid = relays[0]!.pid;
  const resources = async (): Promise<Resources> => ({
    longLivedRelay: relays[0]!.pid === relay0Pid && relays[0]!.running ? processResources(relay0Pid) : { rssMiB: -1, openFds: -1 },
    databaseConnections: await relayDatabaseConnections(admin, schema),
    // rabbitmqctl of the machine's broker: not the cluster's.
    amqpChannels: rabbit ? undefined : await amqpChannels(appId),
  });

  // Producers.
  const producers = startProducers(admin, schema, exchange, producerRandom, options.rate ?? 120, database !== undefined);
  const { written, rolledBack } = producers;
  // Resource figures once every relay has published (channels open lazily).
  await sleep(3_000);
  const startResources = await resources();

  // The fault schedule.
  const { faults, rssSamples } = await runFaultSchedule(random, options.seconds, {
    cluster,
    relay0Pid,
    admin,
    schema,
    exchange,
    written,
    violations,
    log,
    rabbit,
    database,
    rollingRestarts: options.rollingRestarts ?? false,
  });
  await producers.stop();
  const unknownCommitted = await resolveUnknownCommits(admin, schema, producers);
  log(`chaos: faults over; ${written.length} committed, ${rolledBack.length} rolled back; waiting for the relays to catch up`);

  // Quiet: everything committed must arrive.
  const good = written.filter((w) => !w.poison);
  const deadline = Date.now() + 90_000;
  for (;;) {
    const received = new Set(deliveries.map((d) => d.id));
    if (good.every((w) => received.has(w.id)) || Date.now() > deadline) break;
    await sleep(200);
  }
  const notReady = await Promise.all(
    (await waitReady(30_000)).map(async (i) => `${i} (/readyz: ${await endpointAnswer(relays[i]!.port, '/readyz')})`),
  );
  // Poison messages die within their three attempts.
  const poisonIds = written.filter((w) => w.poison).map((w) => w.id);
  const poisonDeadline = Date.now() + 20_000;
  while (Date.now() < poisonDeadline) {
    const { rows } = await admin.query<{ n: string }>(
      `SELECT count(*) AS n FROM "${schema}".messages WHERE message_id = ANY($1::uuid[]) AND dead_at IS NULL`,
      [poisonIds],
    );
    if (Number(rows[0]?.n) === 0) break;
    await sleep(200);
  }
  await sleep(500); // duplicates in flight arrive too
  const endResources = await resources();

  await Promise.all(relays.map((relay) => relay.stop()));

  // Invariants.
  const counts = await checkInvariants(admin, schema, { good, rolledBack, poisonIds, deliveries, faults, notReady }, violations);

  const report: ChaosReport = {
    seed: options.seed,
    seconds: options.seconds,
    committed: good.length,
    rolledBack: rolledBack.length,
    poison: poisonIds.length,
    faults: countFaults(faults),
    ...counts,
    relaysNotReady: notReady.length,
    resources: { start: startResources, end: endResources },
    rssSamples,
    ...(database
      ? {
          producerInterruptions: {
            total: producers.interrupted(),
            unknownCommits: producers.unknown.length,
            unknownCommitted,
          },
        }
      : {}),
    violations,
  };

  await broker.close();
  await dbProxy.close();
  await brokerProxy.close();
  await dropSchema(admin, schema);
  await admin.end();
  return report;
}

/** First, quartiles, max and last of a series, e.g. "90 → 98 / 104 / 109, max 115, last 111". */
function summarise(samples: readonly number[]): string {
  if (samples.length === 0) return 'none';
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] as number;
  return `${samples[0]} → ${at(0.25)} / ${at(0.5)} / ${at(0.75)}, max ${Math.max(...samples)}, last ${samples[samples.length - 1]}`;
}

/** The report as lines for a terminal or a closing note. */
export function formatReport(r: ChaosReport): string {
  const res = (x: Resources): string =>
    `relay 0 RSS ${x.longLivedRelay.rssMiB} MiB, fds ${x.longLivedRelay.openFds}; relay DB connections ${x.databaseConnections}; AMQP channels ${x.amqpChannels ?? 'n/a'}`;
  return [
    `seed ${r.seed}, ${r.seconds} s: ${r.committed} committed, ${r.rolledBack} rolled back, ${r.poison} poison`,
    `faults: ${Object.entries(r.faults)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ')}`,
    `lost ${r.lost} · rolled back delivered ${r.rolledBackDelivered} · per-key order violations ${r.orderViolations}`,
    `duplicates ${r.duplicates} (unexplained ${r.unexplainedDuplicates}) · poison not dead ${r.poisonNotDead} · good dead ${r.othersDead}`,
    `locked/half-marked/unpublished rows ${r.lockedOrHalfMarked} · relays not ready ${r.relaysNotReady}`,
    `commit → consumer: max ${r.latency.maxMs} ms (committed ${new Date(r.latency.maxCommittedAt).toISOString().slice(11, 23)}), p99 ${r.latency.p99Ms} ms; committed during a freeze: ${r.latency.duringFreezes}, max ${r.latency.duringFreezesMaxMs} ms (${r.latency.judged} held to ${FREEZE_LATENCY_BOUND_MS / 1000} s: max ${r.latency.judgedMaxMs} ms)`,
    `resources at start: ${res(r.resources.start)}`,
    `resources at end:   ${res(r.resources.end)}`,
    `relay 0 RSS over the run (MiB, per fault): ${summarise(r.rssSamples)}`,
    ...(r.producerInterruptions
      ? [
          `producer transactions a failover interrupted ${r.producerInterruptions.total}: ${r.producerInterruptions.total - r.producerInterruptions.unknownCommits} before COMMIT (rolled back), ${r.producerInterruptions.unknownCommits} during COMMIT (${r.producerInterruptions.unknownCommitted} found committed)`,
        ]
      : []),
    r.violations.length === 0 ? 'OK: every invariant holds' : `VIOLATIONS (seed ${r.seed}):\n  ${r.violations.join('\n  ')}`,
  ].join('\n');
}
