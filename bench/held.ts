import type { Pool } from 'pg';
import { FullQueues, insertKeyed, type FullQueueType } from '../test/kit/full-queue';
import type { RelayProcess } from '../test/kit/relay-process';
import { TestBroker } from '../test/kit/test-broker';
import { waitFor } from '../test/kit/wait';
import { AMQP_URL, outboxSchema, sleep, startRelay } from './support';

/** One queue full under reject-publish for a while, then consumed (the scenario of test/integration/held-destination.test.ts). */
export interface HeldResult {
  readonly queueType: FullQueueType;
  /** How long the queue stayed full after its destination was held (ms). */
  readonly heldMs: number;
  /** Messages to the full queue (100 keys). */
  readonly messages: number;
  /** What the queue took before it was full. */
  readonly accepted: number;
  /** Publishes the broker refused while the destination was held. */
  readonly refusedWhileHeld: number;
  /** The publish rate to the held destination after its first second (the probes), per second. */
  readonly probesPerSecond: number;
  /** From the moment the queue has room (its consumer starts) to the first held message delivered (ms). */
  readonly firstHeldMs: number;
  /** From that moment to every message delivered (ms). */
  readonly allDeliveredMs: number;
}

/**
 * `count` keyed messages to a queue of `maxLength` with x-overflow reject-publish and no
 * consumer; the relay (a process, default settings) holds the destination; after `heldMs`
 * a consumer starts (noAck, so the queue has room at once) and the recovery is timed.
 */
export async function heldRun(
  pool: Pool,
  options: { readonly queueType: FullQueueType; readonly heldMs: number; readonly count: number; readonly maxLength: number },
): Promise<HeldResult> {
  const { schema, drop } = await outboxSchema(pool);
  const broker = await TestBroker.connect({ url: AMQP_URL, durable: true });
  let relay: RelayProcess | undefined;
  try {
    const queues = await FullQueues.declare(broker, [options.queueType], options.maxLength);
    const full = queues.full.get(options.queueType)!;
    await insertKeyed(pool, `"${schema}".messages`, {
      exchange: queues.exchange,
      routingKey: full.routingKey,
      count: options.count,
      keys: 100,
      prefix: 'k',
    });
    relay = await startRelay({ OUTBOX_SCHEMA: schema, OUTBOX_LOG_LEVEL: 'warn' });
    await relay.ready();
    const started = relay;
    const metric = async (name: string): Promise<number> => (await started.metrics()).value(name) ?? 0;
    await waitFor('the destination held', async () => (await metric('outbox_held_destinations')) === 1, 60_000, 5);
    const heldAt = Date.now();
    await sleep(Math.min(1_000, options.heldMs));
    const afterFirstSecond = await metric('outbox_publishes_refused_total');
    await sleep(Math.max(0, heldAt + options.heldMs - Date.now()));
    const refusedWhileHeld = await metric('outbox_publishes_refused_total');
    const heldMs = Date.now() - heldAt;
    const { messageCount: accepted } = await broker.channel.checkQueue(full.queue);

    const roomAt = Date.now();
    await queues.drain();
    await waitFor('a held message delivered', () => full.delivered.length > accepted, 120_000, 1);
    const firstHeldMs = Date.now() - roomAt;
    await waitFor('every message delivered', () => new Set(full.delivered).size >= options.count, 300_000, 5);
    const allDeliveredMs = Date.now() - roomAt;
    return {
      queueType: options.queueType,
      heldMs,
      messages: options.count,
      accepted,
      refusedWhileHeld,
      probesPerSecond: heldMs > 1_000 ? ((refusedWhileHeld - afterFirstSecond) * 1_000) / (heldMs - 1_000) : Number.NaN,
      firstHeldMs,
      allDeliveredMs,
    };
  } finally {
    await relay?.stop();
    await broker.close();
    await drop();
  }
}

/**
 * The baseline: the same messages to the same kind of queue, consumed all along (never
 * full); from the relay ready to every message delivered (ms).
 */
export async function unheldDrainMs(pool: Pool, options: { readonly queueType: FullQueueType; readonly count: number }): Promise<number> {
  const { schema, drop } = await outboxSchema(pool);
  const broker = await TestBroker.connect({ url: AMQP_URL, durable: true });
  let relay: RelayProcess | undefined;
  try {
    const queues = await FullQueues.declare(broker, [options.queueType], options.count * 2);
    const full = queues.full.get(options.queueType)!;
    await queues.drain();
    await insertKeyed(pool, `"${schema}".messages`, {
      exchange: queues.exchange,
      routingKey: full.routingKey,
      count: options.count,
      keys: 100,
      prefix: 'k',
    });
    relay = await startRelay({ OUTBOX_SCHEMA: schema, OUTBOX_LOG_LEVEL: 'warn' });
    await relay.ready();
    const readyAt = Date.now();
    await waitFor('every message delivered', () => new Set(full.delivered).size >= options.count, 300_000, 5);
    return Date.now() - readyAt;
  } finally {
    await relay?.stop();
    await broker.close();
    await drop();
  }
}
