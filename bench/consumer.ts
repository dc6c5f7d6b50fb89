import { connect } from 'amqplib';
import type { Pool } from 'pg';
import { createConsumer, type Consumer, type ConsumerOptions } from '../src/consumer/index';
import { INBOX_MIGRATIONS_DIR, loadMigrations, migrate } from '../src/db/migrator';
import { uniqueName } from '../test/kit/unique-name';
import { checkpoint, walPosition } from './cost';
import { AMQP_URL, newPool, publishConfirmed, topology } from './support';

/**
 * The idempotent consumer's throughput and what its inbox costs the consumer's
 * database: a backlog of 1 KiB persistent messages drained by `createConsumer` with a
 * trivial handler that writes one row, against a bare amqplib consumer that acks
 * without a database, at a given prefetch, in variants (batched or a transaction per
 * message, ordered or not). Every message carries a key of 1,000 (the relay's
 * `x-outbox-partition-key`), which only the ordered variants heed. The consumer's pool
 * has POOL_SIZE connections, as a service's would.
 *
 * The WAL position is the cluster's: anything else writing to the same PostgreSQL
 * meanwhile (another bench, a test run, autovacuum) is counted too, so run it on an
 * otherwise idle database; a figure far above ~600 B per message means it was not.
 */

/** The consumer's pg pool (a service's usual size). */
const POOL_SIZE = 10;

/** Distinct partition keys of the backlog (taken in turn). */
export const BENCH_KEYS = 1_000;

/** How the consumer under test is configured; `library` is another build's (a baseline), default this one's. */
export interface ConsumerVariant {
  readonly label: string;
  readonly options: Pick<ConsumerOptions, 'batchSize' | 'batchWaitMs' | 'ordered'>;
  /** The consumer's pool in pg's pipeline mode (a savepoint travels with the handler's first statement). */
  readonly pipeline?: boolean;
  readonly library?: { createConsumer: (options: ConsumerOptions<{ n: number }>) => Promise<Consumer> };
}

/** The variants `npm run bench` compares. */
export const CONSUMER_VARIANTS: readonly ConsumerVariant[] = [
  { label: 'batched, pool in pipeline mode', options: {}, pipeline: true },
  { label: 'batched', options: {} },
  { label: 'a transaction per message', options: { batchSize: 1 } },
  { label: 'ordered, 1,000 keys, batched, pool in pipeline mode', options: { ordered: true }, pipeline: true },
  { label: 'ordered, 1,000 keys, batched', options: { ordered: true } },
  { label: 'ordered, 1,000 keys, a transaction per message', options: { ordered: true, batchSize: 1 } },
];

export interface ConsumerThroughput {
  readonly variant: string;
  readonly prefetch: number;
  readonly count: number;
  /** Messages/s handled by createConsumer (inbox insert + one row + commit + ack). */
  readonly consumerRate: number;
  /** Messages/s acked by a bare amqplib consumer, no database (measured right after). */
  readonly bareRate: number;
  /** WAL bytes per message while the consumer drained: its inbox row and the handler's row. */
  readonly walPerMessage: number;
  /** WAL bytes per message of the same transactions without the inbox (the handler's row alone). */
  readonly walPerMessageWithoutInbox: number;
  /** What the inbox adds per message (the difference of the two). */
  readonly inboxWalPerMessage: number;
}

/** Publishes `count` 1 KiB persistent keyed messages to `exchange`, 1,000 confirms outstanding at most. */
async function fill(exchange: string, count: number): Promise<void> {
  const model = await connect(AMQP_URL);
  try {
    const channel = await model.createConfirmChannel();
    await publishConfirmed(channel, exchange, count, (n) => ({
      messageId: `${exchange}-${n}`,
      headers: { 'x-outbox-partition-key': `key-${n % BENCH_KEYS}`, 'x-outbox-position': n },
    }));
  } finally {
    await model.close();
  }
}

/** The bare ceiling: drains `count` messages from `queue`, acking each at once. */
async function bareDrain(queue: string, prefetch: number, count: number): Promise<number> {
  const model = await connect(AMQP_URL);
  try {
    const channel = await model.createChannel();
    await channel.prefetch(prefetch);
    let acked = 0;
    const started = performance.now();
    await new Promise<void>((resolve) => {
      void channel.consume(queue, (msg) => {
        if (!msg) return;
        channel.ack(msg);
        acked += 1;
        if (acked === count) resolve();
      });
    });
    return count / ((performance.now() - started) / 1000);
  } finally {
    await model.close();
  }
}

/** The handler's transactions without the inbox, `POOL_SIZE` at once: the baseline WAL. */
async function withoutInbox(pool: Pool, table: string, count: number): Promise<number> {
  await checkpoint(pool);
  const before = await walPosition(pool);
  let next = 0;
  await Promise.all(
    Array.from({ length: POOL_SIZE }, async () => {
      const client = await pool.connect();
      try {
        for (let n = next++; n < count; n = next++) {
          await client.query('BEGIN');
          await client.query(`INSERT INTO ${table} (message_id, n) VALUES ($1, $2)`, [`baseline-${n}`, n]);
          await client.query('COMMIT');
        }
      } finally {
        client.release();
      }
    }),
  );
  return Number((await walPosition(pool)) - before) / count;
}

/**
 * Drains a backlog of `count` messages with `createConsumer` at `prefetch`, then the same
 * backlog with a bare amqplib consumer; measures the WAL the consumer's database wrote.
 */
export async function consumerThroughput(
  prefetch: number,
  count: number,
  variant: ConsumerVariant = CONSUMER_VARIANTS[0] as ConsumerVariant,
  /** Also the WAL of the handler's transactions without the inbox (NaN otherwise: it takes as long again). */
  baselineWal = true,
): Promise<ConsumerThroughput> {
  const pool = newPool(POOL_SIZE, { pipeline: variant.pipeline === true });
  const schema = uniqueName('bench_consumer');
  const table = `"${schema}".handled`;
  const topo = await topology();
  try {
    await pool.query(`CREATE SCHEMA "${schema}"`);
    const client = await pool.connect();
    try {
      await migrate(client, schema, loadMigrations(INBOX_MIGRATIONS_DIR), 'inbox_schema_migrations');
    } finally {
      client.release();
    }
    await pool.query(`CREATE TABLE ${table} (message_id text PRIMARY KEY, n int NOT NULL)`);

    await fill(topo.exchange, count);
    await checkpoint(pool);
    const walBefore = await walPosition(pool);
    let started = 0;
    const consumer = await (variant.library?.createConsumer ?? createConsumer<{ n: number }>)({
      amqpUrl: AMQP_URL,
      queue: topo.queue,
      name: 'bench',
      pool,
      schema,
      prefetch,
      ...variant.options,
      handler: async (msg, tx) => {
        started ||= performance.now();
        await tx.query(`INSERT INTO ${table} (message_id, n) VALUES ($1, $2)`, [msg.messageId, msg.payload.n]);
      },
    });
    // stats.handled counts a message once its transaction committed, just before its ack.
    await new Promise<void>((resolve) => {
      const timer = setInterval(() => {
        if (consumer.stats.handled < count) return;
        clearInterval(timer);
        resolve();
      }, 2);
    });
    const consumerRate = count / ((performance.now() - started) / 1000);
    await consumer.stop();
    const walPerMessage = Number((await walPosition(pool)) - walBefore) / count;
    const walPerMessageWithoutInbox = baselineWal ? await withoutInbox(pool, table, count) : Number.NaN;

    await fill(topo.exchange, count);
    const bareRate = await bareDrain(topo.queue, prefetch, count);
    return {
      variant: variant.label,
      prefetch,
      count,
      consumerRate,
      bareRate,
      walPerMessage,
      walPerMessageWithoutInbox,
      inboxWalPerMessage: walPerMessage - walPerMessageWithoutInbox,
    };
  } finally {
    await pool.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => undefined);
    await pool.end();
    await topo.drop();
  }
}

/** The prefetches the bench compares. */
export const CONSUMER_PREFETCHES = [1, 100, 500] as const;

if (require.main === module) {
  const count = Number(process.argv[2] ?? 5_000);
  void (async () => {
    console.log(`idempotent consumer: ${count} messages of 1 KiB, ${BENCH_KEYS} keys, handler writes one row, pool of ${POOL_SIZE}`);
    for (const prefetch of CONSUMER_PREFETCHES) {
      for (const variant of CONSUMER_VARIANTS) {
        const r = await consumerThroughput(prefetch, count, variant);
        console.log(
          `  prefetch ${String(r.prefetch).padStart(3)}, ${r.variant}: consumer ${r.consumerRate.toFixed(0).padStart(6)} msg/s · bare amqplib ${r.bareRate
            .toFixed(0)
            .padStart(
              6,
            )} msg/s (${(r.consumerRate / r.bareRate).toFixed(2)} ×) · WAL ${r.walPerMessage.toFixed(0)} B/msg (the inbox ${r.inboxWalPerMessage.toFixed(0)})`,
        );
      }
    }
  })().catch((err: unknown) => {
    console.error(err);
    process.exitCode = 1;
  });
}
