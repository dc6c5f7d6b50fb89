/**
 * `npm run soak:held [-- --minutes N]` (default 10): queues that refuse publishers for N
 * minutes, as the issue's long test asks — not part of `npm test`. A classic and a quorum
 * queue of x-max-length 200 with x-overflow reject-publish and no consumer, a third queue
 * on the same exchange consumed all along, producers writing 20 keyed messages a second to
 * each meanwhile, a relay (a process: OUTBOX_MAX_ATTEMPTS=3, backoff 200-1,000 ms) and a
 * real Prometheus with the shipped rules scraping it. Then consumers come back. Checks:
 * nothing dead, no attempt counted, every message delivered in per-key order, the other
 * destination delivered meanwhile, the refused publishes within the probe bound,
 * OutboxDestinationHeld firing while held and cleared after, no other alert. Prints a
 * report; exits 1 on any violation.
 */
import { maxProbesWithin } from '../../src/relay/probe-schedule';
import { FullQueues, insertKeyed, missing, orderViolations, outboxFacts, type FullQueueType } from '../kit/full-queue';
import { OutboxFixture } from '../kit/outbox-fixture';
import { PrometheusServer } from '../kit/prometheus-server';
import type { RelayProcess } from '../kit/relay-process';
import { TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';

const USAGE = 'usage: npm run soak:held -- [--minutes N]   (N > 0, default 10)';
const TYPES: readonly FullQueueType[] = ['classic', 'quorum'];
const MAX_LENGTH = 200;
const KEYS = 50;
/** Messages per destination per tick, and the tick (ms): 20 a second each. */
const PER_TICK = 4;
const TICK_MS = 200;
const RELAY_ENV = {
  OUTBOX_MAX_ATTEMPTS: '3',
  OUTBOX_BACKOFF_BASE_MS: '200',
  OUTBOX_BACKOFF_MAX_MS: '1000',
  OUTBOX_LOG_LEVEL: 'info',
};
const ALERT = 'OutboxDestinationHeld';

function minutesArg(): number {
  const index = process.argv.indexOf('--minutes');
  const minutes = index >= 0 ? Number(process.argv[index + 1]) : 10;
  if (!Number.isFinite(minutes) || minutes <= 0) {
    console.error(USAGE);
    process.exit(2);
  }
  return minutes;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

/** Writes PER_TICK messages to every destination each TICK_MS until `stop()`; counts what it wrote. */
function startProducers(fx: OutboxFixture, queues: FullQueues): { written: Map<string, number>; stop: () => Promise<void> } {
  const written = new Map<string, number>();
  let stopped = false;
  let tick = 0;
  const loop = (async () => {
    while (!stopped) {
      const started = Date.now();
      for (const destination of queues.destinations) {
        await insertKeyed(fx.pool, fx.table, {
          exchange: queues.exchange,
          routingKey: destination.routingKey,
          count: PER_TICK,
          keys: KEYS,
          prefix: `${destination.routingKey}-`,
          from: tick * PER_TICK,
        });
        written.set(destination.routingKey, (written.get(destination.routingKey) ?? 0) + PER_TICK);
      }
      tick += 1;
      await sleep(Math.max(0, TICK_MS - (Date.now() - started)));
    }
  })();
  return {
    written,
    stop: async () => {
      stopped = true;
      await loop;
    },
  };
}

async function run(minutes: number): Promise<string[]> {
  const violations: string[] = [];
  const fx = await OutboxFixture.create('soak_held');
  const broker = await TestBroker.connect({ durable: true });
  let relay: RelayProcess | undefined;
  let prometheus: PrometheusServer | undefined;
  let producers: ReturnType<typeof startProducers> | undefined;
  try {
    const queues = await FullQueues.declare(broker, TYPES, MAX_LENGTH);
    const { other } = queues;
    relay = await fx.spawnRelay(RELAY_ENV);
    await relay.ready();
    const r = relay;
    prometheus = await PrometheusServer.start(r.port);
    const p = prometheus;
    const metric = async (name: string): Promise<number> => (await r.metrics()).value(name) ?? 0;
    producers = startProducers(fx, queues);

    const producingAt = Date.now();
    await waitFor('both full queues held', async () => (await metric('outbox_held_destinations')) === 2, 60_000, 50);
    const heldAt = Date.now();
    console.log(`both destinations held ${seconds(heldAt - producingAt)} after the producers started; full for ${minutes} min from now`);
    await sleep(1_000);
    const refusedAfterBurst = await metric('outbox_publishes_refused_total');
    const alertsSeen = new Map<string, number>();
    let firedAt: number | undefined;
    let otherBehind = 0;
    const end = heldAt + minutes * 60_000;
    let nextReport = Date.now() + 30_000;
    while (Date.now() < end) {
      for (const alert of await p.alerts()) {
        const name = String(alert['labels']['alertname']);
        if (alert['state'] === 'firing' && !alertsSeen.has(name)) alertsSeen.set(name, Date.now() - heldAt);
        if (name === ALERT && alert['state'] === 'firing') firedAt ??= Date.now();
      }
      if (Date.now() >= nextReport) {
        nextReport += 30_000;
        const facts = await outboxFacts(fx.pool, fx.table);
        const behind = (producers.written.get(other.routingKey) ?? 0) - new Set(other.delivered).size;
        otherBehind = Math.max(otherBehind, behind);
        console.log(
          `  ${seconds(Date.now() - heldAt)} held: pending ${facts.pending}, dead ${facts.dead}, with attempts ${facts.withAttempts}, ` +
            `refused ${await metric('outbox_publishes_refused_total')}, other destination ${behind} behind, held gauge ${await metric('outbox_held_destinations')}`,
        );
        if (facts.dead > 0 || facts.withAttempts > 0)
          violations.push(`after ${seconds(Date.now() - heldAt)}: ${facts.dead} dead, ${facts.withAttempts} with attempts`);
      }
      await sleep(2_000);
    }
    await producers.stop();
    const heldMs = Date.now() - heldAt;
    const refusedWhileHeld = await metric('outbox_publishes_refused_total');
    const probes = refusedWhileHeld - refusedAfterBurst;
    const probeBound = TYPES.length * (maxProbesWithin(heldMs) + 3);
    if (probes > probeBound) violations.push(`${probes} refused publishes after the first second, above the probe bound ${probeBound}`);
    if (firedAt === undefined) violations.push(`${ALERT} never fired in ${seconds(heldMs)} held`);

    const roomAt = Date.now();
    await queues.drain();
    const total = [...producers.written.values()].reduce((a, b) => a + b, 0);
    const facts = await waitFor(
      'every message delivered',
      async () => {
        const f = await outboxFacts(fx.pool, fx.table);
        const done = queues.destinations.every((d) => missing(d.delivered, f, d.routingKey).length === 0);
        return done && f.pending === 0 ? f : undefined;
      },
      600_000,
      200,
    );
    const drainedMs = Date.now() - roomAt;
    let clearedAt: number | undefined;
    await waitFor(
      `${ALERT} cleared`,
      async () => {
        const firing = (await p.alerts()).some((a) => a['labels']['alertname'] === ALERT);
        if (!firing) clearedAt = Date.now();
        return !firing && (await metric('outbox_held_destinations')) === 0;
      },
      120_000,
      500,
    ).catch((err: unknown) => violations.push((err as Error).message));

    const delivered = new Map(queues.destinations.map((d) => [d.routingKey, d.delivered]));
    for (const [routingKey, list] of delivered) {
      const order = orderViolations(list, facts);
      if (order.length > 0) violations.push(`${routingKey}: ${order.length} order violations, first ${order[0]}`);
    }
    if (facts.dead > 0) violations.push(`${facts.dead} dead messages`);
    if (facts.withAttempts > 0) violations.push(`${facts.withAttempts} messages with an attempt counted`);
    const others = [...alertsSeen.keys()].filter((name) => name !== ALERT);
    if (others.length > 0) violations.push(`other alerts fired: ${others.join(', ')}`);
    const duplicates = [...delivered.values()].reduce((n, list) => n + list.length - new Set(list).size, 0);
    console.log(
      [
        `held-destination soak: ${TYPES.join(' and ')} queues of x-max-length ${MAX_LENGTH} full for ${seconds(heldMs)}, ` +
          `producers at ${(PER_TICK * 1000) / TICK_MS} msg/s to each of ${queues.destinations.length} destinations (${KEYS} keys each), ${total} messages`,
        `  dead ${facts.dead}, with attempts ${facts.withAttempts}, delivered ${[...delivered].map(([k, l]) => `${k} ${new Set(l).size}`).join(', ')}, duplicates ${duplicates}`,
        `  per-key order: ${[...delivered.values()].every((l) => orderViolations(l, facts).length === 0) ? 'kept' : 'BROKEN'}; other destination at most ${otherBehind} behind while held`,
        `  refused publishes ${refusedWhileHeld} while held (${probes} after the first second, bound ${probeBound})`,
        `  ${ALERT}: ${firedAt === undefined ? 'never fired' : `firing ${seconds(firedAt - heldAt)} after the hold began`}, ` +
          `${clearedAt === undefined ? 'not cleared' : `cleared ${seconds(clearedAt - roomAt)} after the queues had room`}; other alerts: ${others.join(', ') || 'none'}`,
        `  all delivered ${seconds(drainedMs)} after the consumers came back`,
      ].join('\n'),
    );
    return violations;
  } finally {
    await producers?.stop();
    await relay?.stop();
    await prometheus?.stop();
    await broker.close();
    await fx.close();
  }
}

run(minutesArg()).then(
  (violations) => {
    for (const v of violations) console.error(`VIOLATION: ${v}`);
    process.exit(violations.length === 0 ? 0 : 1);
  },
  (err: unknown) => {
    console.error(`held-destination soak failed: ${(err as Error).message}`);
    process.exit(1);
  },
);
