import type { Pool } from 'pg';
import type { TestBroker } from './test-broker';
import { uniqueName } from './unique-name';

/** A queue type RabbitMQ offers `x-overflow: reject-publish` for. */
export type FullQueueType = 'classic' | 'quorum';

/** One destination of the exchange: its routing key and the queue it leads to. */
export interface Destination {
  readonly routingKey: string;
  readonly queue: string;
  /** Message ids in the order the queue delivered them (duplicates included), once consumed. */
  readonly delivered: string[];
}

/**
 * The topology of a full-queue test, declared durable on `broker` (deleted with it): a
 * topic exchange, one queue per type limited to `maxLength` messages that refuses
 * publishers when full (`x-max-length` + `x-overflow: reject-publish`, no consumer until
 * `drain`), and another queue on the same exchange, consumed from the start.
 */
export class FullQueues {
  private constructor(
    private readonly broker: TestBroker,
    readonly exchange: string,
    readonly full: ReadonlyMap<FullQueueType, Destination>,
    readonly other: Destination,
  ) {}

  static async declare(broker: TestBroker, types: readonly FullQueueType[], maxLength: number): Promise<FullQueues> {
    const exchange = await broker.exchange(uniqueName('held_x'));
    const full = new Map<FullQueueType, Destination>();
    for (const type of types) {
      const routingKey = `held.${type}`;
      const queue = await broker.declareQueue(
        uniqueName(`held_${type}`),
        { exchange, pattern: routingKey },
        { 'x-queue-type': type, 'x-max-length': maxLength, 'x-overflow': 'reject-publish' },
      );
      full.set(type, { routingKey, queue, delivered: [] });
    }
    const other = { routingKey: 'held.other', queue: uniqueName('held_other'), delivered: [] as string[] };
    await broker.declareQueue(other.queue, { exchange, pattern: other.routingKey });
    await broker.consume(other.queue, (msg) => other.delivered.push(String(msg.properties.messageId)));
    return new FullQueues(broker, exchange, full, other);
  }

  /** Starts consuming the full queues (the consumer is back): they have room again at once. */
  async drain(): Promise<void> {
    for (const destination of this.full.values()) {
      await this.broker.consume(destination.queue, (msg) => destination.delivered.push(String(msg.properties.messageId)));
    }
  }

  get destinations(): Destination[] {
    return [...this.full.values(), this.other];
  }
}

/**
 * `count` messages to `routingKey` on `exchange`, keyed round-robin over `keys` partition
 * keys (`<prefix>0`…, starting at key `from` modulo `keys`), in one transaction.
 */
export async function insertKeyed(
  pool: Pool,
  table: string,
  options: { exchange: string; routingKey: string; count: number; keys: number; prefix: string; from?: number },
): Promise<void> {
  await pool.query(
    `INSERT INTO ${table} (exchange, routing_key, partition_key, payload)
     SELECT $1, $2, $3 || ((g + $6) % $4), jsonb_build_object('n', g) FROM generate_series(1, $5::int) AS g`,
    [options.exchange, options.routingKey, options.prefix, options.keys, options.count, options.from ?? 0],
  );
}

/** What the outbox says after a run: each message id with its key and position (id), and the counts. */
export interface OutboxFacts {
  readonly byMessageId: ReadonlyMap<string, { readonly id: bigint; readonly key: string | null; readonly routingKey: string }>;
  readonly dead: number;
  readonly pending: number;
  /** Messages with an attempt counted (none: a refusal costs nothing). */
  readonly withAttempts: number;
}

export async function outboxFacts(pool: Pool, table: string): Promise<OutboxFacts> {
  const { rows } = await pool.query<{
    id: string;
    message_id: string;
    partition_key: string | null;
    routing_key: string;
    dead: boolean;
    pending: boolean;
    attempts: number;
  }>(
    `SELECT id::text, message_id, partition_key, routing_key, dead_at IS NOT NULL AS dead,
            published_at IS NULL AND dead_at IS NULL AS pending, attempts
       FROM ${table}`,
  );
  return {
    byMessageId: new Map(rows.map((r) => [r.message_id, { id: BigInt(r.id), key: r.partition_key, routingKey: r.routing_key }])),
    dead: rows.filter((r) => r.dead).length,
    pending: rows.filter((r) => r.pending).length,
    withAttempts: rows.filter((r) => r.attempts > 0).length,
  };
}

/**
 * Where `delivered` breaks its keys' order: pairs of message ids where the first delivery
 * of a later message of a key came before the first delivery of an earlier one (empty:
 * every key's first deliveries are in insertion order). Duplicates are allowed.
 */
export function orderViolations(delivered: readonly string[], facts: OutboxFacts): string[] {
  const seen = new Set<string>();
  const lastByKey = new Map<string, { id: bigint; messageId: string }>();
  const violations: string[] = [];
  for (const messageId of delivered) {
    if (seen.has(messageId)) continue;
    seen.add(messageId);
    const fact = facts.byMessageId.get(messageId);
    if (!fact || fact.key === null) continue;
    const last = lastByKey.get(fact.key);
    if (last && last.id > fact.id)
      violations.push(`${messageId} (id ${fact.id}) after ${last.messageId} (id ${last.id}) in key ${fact.key}`);
    else lastByKey.set(fact.key, { id: fact.id, messageId });
  }
  return violations;
}

/** Message ids of `routingKey` that `delivered` misses. */
export function missing(delivered: readonly string[], facts: OutboxFacts, routingKey: string): string[] {
  const got = new Set(delivered);
  return [...facts.byMessageId].filter(([id, f]) => f.routingKey === routingKey && !got.has(id)).map(([id]) => id);
}
