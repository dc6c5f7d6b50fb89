import { randomUUID } from 'node:crypto';
import { Pool } from 'pg';
import { freePort } from '../kit/free-port';
import { dropSchema, migrateSchema } from '../kit/outbox-schema';
import { endpointStatus } from '../kit/relay-http';
import { RelayProcess } from '../kit/relay-process';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { TestBroker } from '../kit/test-broker';
import { between, pick, seededRandom } from './random';
import { amqpChannels, processResources, relayDatabaseConnections, type ProcessResources } from './resources';

/**
 * A Jepsen-style run: producers write keyed and unkeyed messages in transactions (some
 * rolled back, some long), three relays run as processes behind TCP proxies, a fault
 * schedule drawn from a seed keeps breaking things, an independent consumer records
 * every delivery; at the end every invariant is checked over everything written and
 * received.
 */
export interface ChaosOptions {
  readonly seconds: number;
  readonly seed: number;
  /** Producer transactions per second (all producers together). */
  readonly rate?: number;
  readonly log?: (line: string) => void;
}

type FaultKind = 'kill -9' | 'SIGTERM' | 'broker cut' | 'database cut' | 'broker slow' | 'poison';

interface Fault {
  readonly kind: FaultKind;
  readonly start: number;
  end: number;
  readonly detail: string;
}

interface Written {
  readonly id: string;
  readonly key: string | null;
  /** The aggregate's version for a keyed message (its order within the key). */
  readonly version: number;
  readonly poison: boolean;
}

interface Delivery {
  readonly id: string;
  readonly at: number;
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
  readonly relaysNotReady: number;
  readonly resources: { readonly start: Resources; readonly end: Resources };
  /** Relay 0's RSS (MiB) once per fault, to tell growth from a one-off peak. */
  readonly rssSamples: readonly number[];
  readonly violations: readonly string[];
}

interface Resources {
  readonly longLivedRelay: ProcessResources;
  readonly databaseConnections: number;
  readonly amqpChannels: number | undefined;
}

const KEYS = 40;
const PUBLISH_TIMEOUT_MS = 2_000;
const SHUTDOWN_TIMEOUT_MS = 3_000;

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export async function runChaos(options: ChaosOptions): Promise<ChaosReport> {
  const log = options.log ?? ((line: string) => process.stdout.write(`${line}\n`));
  // Two streams from one seed: the fault schedule does not depend on how many
  // transactions the producers managed meanwhile.
  const random = seededRandom(options.seed);
  const producerRandom = seededRandom(options.seed ^ 0x5bd1e995);
  const schema = `chaos_${options.seed.toString(16)}_${Date.now().toString(36)}`;
  const exchange = `chaos.${schema}`;
  const queue = `chaos.${schema}.all`;
  const admin = new Pool({ connectionString: testDatabaseUrl(), max: 12 });
  const violations: string[] = [];
  log(`chaos: seed ${options.seed}, ${options.seconds} s, schema ${schema}`);

  await migrateSchema(admin, schema);
  await admin.query(`CREATE TABLE "${schema}".aggregates (id text PRIMARY KEY, version int NOT NULL)`);
  await admin.query(`INSERT INTO "${schema}".aggregates SELECT 'agg-' || g, 0 FROM generate_series(1, ${KEYS}) g`);

  // The independent consumer: every delivery, in arrival order.
  const broker = await TestBroker.connect({ durable: true });
  await broker.exchange(exchange);
  await broker.declareQueue(queue, { exchange, pattern: '#' });
  const deliveries: Delivery[] = [];
  await broker.consume(queue, (msg) => deliveries.push({ id: String(msg.properties.messageId), at: Date.now() }));

  // Relays reach both services only through proxies: that is where faults happen.
  const dbProxy = await TcpProxy.inFrontOf(testDatabaseUrl());
  const brokerProxy = await TcpProxy.inFrontOf(testAmqpUrl());
  const appId = `chaos-${options.seed}`;
  const ports = await Promise.all([0, 1, 2].map(() => freePort()));
  const relayEnv = (index: number): NodeJS.ProcessEnv => ({
    OUTBOX_DATABASE_URL: dbProxy.url(testDatabaseUrl()),
    OUTBOX_AMQP_URL: brokerProxy.url(testAmqpUrl()),
    OUTBOX_SCHEMA: schema,
    OUTBOX_HTTP_HOST: '127.0.0.1',
    OUTBOX_HTTP_PORT: String(ports[index]),
    OUTBOX_APP_ID: appId,
    OUTBOX_BATCH_SIZE: '100',
    OUTBOX_MAX_ATTEMPTS: '3',
    OUTBOX_BACKOFF_BASE_MS: '100',
    OUTBOX_BACKOFF_MAX_MS: '500',
    OUTBOX_PUBLISH_TIMEOUT_MS: String(PUBLISH_TIMEOUT_MS),
    OUTBOX_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    OUTBOX_LOG_LEVEL: 'warn',
  });
  const relays: RelayProcess[] = await Promise.all([0, 1, 2].map((i) => RelayProcess.start(relayEnv(i))));
  const readyz = async (index: number): Promise<boolean> => (await endpointStatus(ports[index]!, '/readyz')) === 200;
  const waitReady = async (deadlineMs: number): Promise<number[]> => {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      const states = await Promise.all([0, 1, 2].map(readyz));
      const notReady = states.flatMap((ok, i) => (ok ? [] : [i]));
      if (notReady.length === 0 || Date.now() > deadline) return notReady;
      await sleep(100);
    }
  };
  if ((await waitReady(30_000)).length > 0) throw new Error('relays did not become ready');

  const relay0Pid = relays[0]!.pid;
  const resources = async (): Promise<Resources> => ({
    longLivedRelay: relays[0]!.pid === relay0Pid && relays[0]!.running ? processResources(relay0Pid) : { rssMiB: -1, openFds: -1 },
    databaseConnections: await relayDatabaseConnections(admin),
    amqpChannels: await amqpChannels(appId),
  });

  // Producers.
  const written: Written[] = [];
  const rolledBack: string[] = [];
  let producing = true;
  const rate = options.rate ?? 120;
  const producers = 4;
  const producerLoop = async (index: number): Promise<void> => {
    const pg = await admin.connect();
    const intervalMs = (1000 * producers) / rate;
    try {
      while (producing) {
        const started = Date.now();
        const id = randomUUID();
        const keyed = producerRandom() < 0.7;
        const rollback = producerRandom() < 0.1;
        const long = producerRandom() < 0.05;
        await pg.query('BEGIN');
        let key: string | null = null;
        let version = 0;
        if (keyed) {
          key = `agg-${1 + Math.floor(producerRandom() * KEYS)}`;
          const { rows } = await pg.query<{ version: number }>(
            `UPDATE "${schema}".aggregates SET version = version + 1 WHERE id = $1 RETURNING version`,
            [key],
          );
          version = rows[0]!.version;
        }
        await pg.query(
          `INSERT INTO "${schema}".messages (message_id, exchange, routing_key, partition_key, payload) VALUES ($1, $2, 'chaos', $3, $4)`,
          [id, exchange, key, JSON.stringify({ key, version, producer: index })],
        );
        if (long) await sleep(between(producerRandom, 200, 1_000));
        if (rollback) {
          await pg.query('ROLLBACK');
          rolledBack.push(id);
        } else {
          await pg.query('COMMIT');
          written.push({ id, key, version, poison: false });
        }
        await sleep(Math.max(0, intervalMs - (Date.now() - started)));
      }
    } finally {
      pg.release();
    }
  };
  const producing$ = Promise.all(Array.from({ length: producers }, (_, i) => producerLoop(i)));
  // Resource figures once every relay has published (channels open lazily).
  await sleep(3_000);
  const startResources = await resources();

  // The fault schedule.
  const faults: Fault[] = [];
  const rssSamples: number[] = [];
  const restart = async (index: number): Promise<void> => {
    relays[index] = await RelayProcess.start(relayEnv(index));
  };
  const endAt = Date.now() + options.seconds * 1000;
  while (Date.now() < endAt) {
    await sleep(between(random, 1_500, 4_000));
    if (Date.now() >= endAt) break;
    const kind = pick<FaultKind>(random, ['kill -9', 'SIGTERM', 'broker cut', 'database cut', 'broker slow', 'poison']);
    const fault: Fault = { kind, start: Date.now(), end: Date.now(), detail: '' };
    faults.push(fault);
    if (kind === 'kill -9' || kind === 'SIGTERM') {
      const index = 1 + Math.floor(random() * 2); // relay 0 lives through the run (resource figures)
      const relay = relays[index]!;
      relay.kill(kind === 'kill -9' ? 'SIGKILL' : 'SIGTERM');
      const exit = await relay.exited;
      fault.end = Date.now();
      (fault as { detail: string }).detail = `relay ${index}: exit ${exit.code ?? exit.signal}`;
      if (kind === 'SIGTERM') {
        if (exit.code !== 0)
          violations.push(`SIGTERM: relay ${index} exited ${exit.code ?? exit.signal}, not 0: ${relay.stderr.slice(-3).join(' | ')}`);
        if (fault.end - fault.start > SHUTDOWN_TIMEOUT_MS + 3_000)
          violations.push(`SIGTERM: relay ${index} took ${fault.end - fault.start} ms to stop`);
      }
      await sleep(between(random, 300, 1_500));
      await restart(index);
    } else if (kind === 'broker cut' || kind === 'database cut') {
      const proxy = kind === 'broker cut' ? brokerProxy : dbProxy;
      proxy.cut();
      await sleep(between(random, 500, 3_000));
      proxy.restore();
    } else if (kind === 'broker slow') {
      brokerProxy.latencyMs = Math.round(between(random, 50, 400));
      (fault as { detail: string }).detail = `${brokerProxy.latencyMs} ms`;
      await sleep(between(random, 2_000, 5_000));
      brokerProxy.latencyMs = 0;
    } else {
      const id = randomUUID();
      await admin.query(`INSERT INTO "${schema}".messages (message_id, exchange, routing_key, payload) VALUES ($1, $2, 'poison', '{}')`, [
        id,
        `${exchange}.missing`,
      ]);
      written.push({ id, key: null, version: 0, poison: true });
    }
    fault.end = Math.max(fault.end, Date.now());
    if (relays[0]!.pid === relay0Pid && relays[0]!.running) rssSamples.push(processResources(relay0Pid).rssMiB);
    // Only the schedule stops relays: one that exited by itself crashed.
    for (const [index, relay] of relays.entries()) {
      if (relay.crashed) {
        violations.push(
          `relay ${index} crashed (exit ${relay.child.exitCode ?? relay.child.signalCode}): ${[...relay.stderr, ...relay.stdout].slice(-3).join(' | ')}`,
        );
        await restart(index);
      }
    }
    log(`  ${new Date(fault.start).toISOString().slice(11, 23)} ${kind}${fault.detail ? ` (${fault.detail})` : ''}`);
  }
  producing = false;
  await producing$;
  log(`chaos: faults over; ${written.length} committed, ${rolledBack.length} rolled back; waiting for the relays to catch up`);

  // Quiet: everything committed must arrive.
  const good = written.filter((w) => !w.poison);
  const deadline = Date.now() + 90_000;
  for (;;) {
    const received = new Set(deliveries.map((d) => d.id));
    if (good.every((w) => received.has(w.id)) || Date.now() > deadline) break;
    await sleep(200);
  }
  const notReady = await waitReady(30_000);
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
  const firstAt = new Map<string, number>();
  const copies = new Map<string, number>();
  for (const d of deliveries) {
    if (!firstAt.has(d.id)) firstAt.set(d.id, d.at);
    copies.set(d.id, (copies.get(d.id) ?? 0) + 1);
  }
  const lost = good.filter((w) => !firstAt.has(w.id));
  const rolledBackDelivered = rolledBack.filter((id) => firstAt.has(id));
  let orderViolations = 0;
  const byKey = new Map<string, Written[]>();
  for (const w of good) if (w.key) byKey.set(w.key, [...(byKey.get(w.key) ?? []), w]);
  for (const [key, messages] of byKey) {
    const arrived = messages.filter((m) => firstAt.has(m.id)).sort((a, b) => (firstAt.get(a.id) as number) - (firstAt.get(b.id) as number));
    for (let i = 1; i < arrived.length; i += 1) {
      if ((arrived[i] as Written).version < (arrived[i - 1] as Written).version) {
        orderViolations += 1;
        if (orderViolations <= 5)
          violations.push(
            `order: key ${key} version ${(arrived[i] as Written).version} first arrived after ${(arrived[i - 1] as Written).version}`,
          );
      }
    }
  }
  let duplicates = 0;
  let unexplained = 0;
  for (const [id, n] of copies) {
    if (n < 2) continue;
    duplicates += n - 1;
    const at = firstAt.get(id) as number;
    const explained = faults.some((f) => f.kind !== 'poison' && at >= f.start - 2_000 && at <= f.end + PUBLISH_TIMEOUT_MS + 3_000);
    if (!explained) {
      unexplained += n - 1;
      if (unexplained <= 5) violations.push(`duplicate of ${id} (first at ${new Date(at).toISOString()}) is explained by no fault`);
    }
  }
  const state = await admin.query<{ poison_not_dead: string; others_dead: string; half: string; unpublished: string }>(
    `SELECT count(*) FILTER (WHERE message_id = ANY($1::uuid[]) AND dead_at IS NULL) AS poison_not_dead,
            count(*) FILTER (WHERE NOT (message_id = ANY($1::uuid[])) AND dead_at IS NOT NULL) AS others_dead,
            count(*) FILTER (WHERE published_at IS NOT NULL AND dead_at IS NOT NULL) AS half,
            count(*) FILTER (WHERE NOT (message_id = ANY($1::uuid[])) AND published_at IS NULL) AS unpublished
       FROM "${schema}".messages`,
    [poisonIds],
  );
  const locked = await admin.query<{ n: string }>(
    `SELECT (SELECT count(*) FROM "${schema}".messages) - (SELECT count(*) FROM (SELECT 1 FROM "${schema}".messages FOR UPDATE SKIP LOCKED) AS free) AS n`,
  );
  const s = state.rows[0]!;
  const lockedOrHalfMarked = Number(locked.rows[0]?.n) + Number(s.half) + Number(s.unpublished);

  if (lost.length > 0)
    violations.push(
      `${lost.length} committed message(s) never delivered, e.g. ${lost
        .slice(0, 3)
        .map((w) => w.id)
        .join(', ')}`,
    );
  if (rolledBackDelivered.length > 0) violations.push(`${rolledBackDelivered.length} rolled-back message(s) delivered`);
  if (Number(s.poison_not_dead) > 0) violations.push(`${s.poison_not_dead} poison message(s) not dead`);
  if (Number(s.others_dead) > 0) violations.push(`${s.others_dead} good message(s) dead`);
  if (lockedOrHalfMarked > 0) violations.push(`${lockedOrHalfMarked} row(s) locked, half-marked or unpublished at the end`);
  if (notReady.length > 0) violations.push(`relay(s) ${notReady.join(', ')} not ready at the end`);

  const counts = Object.fromEntries(
    (['kill -9', 'SIGTERM', 'broker cut', 'database cut', 'broker slow', 'poison'] as const).map((k) => [
      k,
      faults.filter((f) => f.kind === k).length,
    ]),
  ) as Record<FaultKind, number>;
  const report: ChaosReport = {
    seed: options.seed,
    seconds: options.seconds,
    committed: good.length,
    rolledBack: rolledBack.length,
    poison: poisonIds.length,
    faults: counts,
    lost: lost.length,
    rolledBackDelivered: rolledBackDelivered.length,
    orderViolations,
    duplicates,
    unexplainedDuplicates: unexplained,
    poisonNotDead: Number(s.poison_not_dead),
    othersDead: Number(s.others_dead),
    lockedOrHalfMarked,
    relaysNotReady: notReady.length,
    resources: { start: startResources, end: endResources },
    rssSamples,
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
    `resources at start: ${res(r.resources.start)}`,
    `resources at end:   ${res(r.resources.end)}`,
    `relay 0 RSS over the run (MiB, per fault): ${summarise(r.rssSamples)}`,
    r.violations.length === 0 ? 'OK: every invariant holds' : `VIOLATIONS (seed ${r.seed}):\n  ${r.violations.join('\n  ')}`,
  ].join('\n');
}
