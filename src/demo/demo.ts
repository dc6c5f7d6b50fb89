import { randomBytes, randomUUID } from 'node:crypto';
import { connect } from 'amqplib';
import { startRelay } from '../app';
import type { Config } from '../config/load-config';
import { createConsumer } from '../consumer/consumer';
import { createPool } from '../db/pool';
import { INBOX_MIGRATIONS_DIR, loadMigrations, migrate } from '../db/migrator';
import { quoteIdent } from '../db/sql';
import { withPoolTransaction } from '../db/transaction';
import type { Io } from '../commands/io';
import { OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { defineMessage } from '../producer/define-message';
import { enqueue } from '../producer/enqueue';

export interface DemoOptions {
  /** How long the orders service writes (seconds). */
  readonly seconds: number;
  /** Orders per second. */
  readonly rate: number;
  /** Whether stdout is a terminal (progress redrawn in place) or a log (a line per second). */
  readonly interactive: boolean;
}

export interface DemoSummary {
  readonly written: number;
  readonly published: number;
  readonly consumedOnce: number;
  readonly duplicatesSkipped: number;
  readonly latencyP50Ms: number;
  readonly latencyP99Ms: number;
}

interface OrderCreated {
  readonly orderId: string;
  readonly customer: string;
  readonly totalCents: number;
}

function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/**
 * `outbox-relay demo`: the whole pattern on the configured services, in one process.
 * An "orders" service writes each order and its `order.created` event in one
 * transaction; the relay publishes the events; a "shipping" service consumes them
 * with the idempotent consumer, and now and then the demo delivers an event a second
 * time by hand to show it is processed once. Everything it creates (a schema, an
 * exchange, a queue) is removed at the end.
 */
export async function runDemo(config: Config, log: Logger, io: Io, options: DemoOptions): Promise<DemoSummary> {
  const id = randomBytes(3).toString('hex');
  const schema = `outbox_demo_${id}`;
  const exchange = `outbox-demo.${id}`;
  const queue = `outbox-demo.${id}.shipping`;
  const amqpUrl = config.amqpUrls[0] as string;
  const pool = createPool(config.databaseUrl, 8, log);
  const cleanups: (() => Promise<unknown>)[] = [];
  const progress = (line: string): void => {
    if (options.interactive) process.stdout.write(`\r\x1b[2K${line}`);
    else io.out(line);
  };

  try {
    // 1. The service database: outbox + inbox migrations, and the two services' tables.
    const client = await pool.connect().catch((err: unknown) => {
      throw new OutboxError('DATABASE_UNAVAILABLE', `cannot reach the database: ${(err as Error).message}`);
    });
    cleanups.push(() => pool.query(`DROP SCHEMA IF EXISTS ${quoteIdent(schema)} CASCADE`));
    try {
      await migrate(client, schema);
      await migrate(client, schema, loadMigrations(INBOX_MIGRATIONS_DIR), 'inbox_schema_migrations');
      await client.query(
        `CREATE TABLE ${quoteIdent(schema)}.orders (id uuid PRIMARY KEY, customer text NOT` +
          ` NULL, total_cents int NOT NULL, created_at timestamptz NOT NULL DEFAULT now())`,
      );
      await client.query(
        `CREATE TABLE ${quoteIdent(schema)}.shipments (order_id uuid PRIMARY KEY,` +
          ` message_id text NOT NULL, shipped_at timestamptz NOT NULL DEFAULT now())`,
      );
    } finally {
      client.release();
    }
    io.out(`demo: schema "${schema}" migrated; exchange "${exchange}" → queue "${queue}"`);

    // 2. The broker topology: an events exchange and the shipping service's queue.
    const admin = await connect(amqpUrl).catch((err: unknown) => {
      throw new OutboxError('BROKER_UNAVAILABLE', `cannot reach the broker: ${(err as Error).message}`);
    });
    const channel = await admin.createChannel();
    cleanups.push(async () => {
      await channel.deleteQueue(queue).catch(() => undefined);
      await channel.deleteExchange(exchange).catch(() => undefined);
      await admin.close().catch(() => undefined);
    });
    await channel.assertExchange(exchange, 'topic', { durable: false });
    await channel.assertQueue(queue, { durable: false });
    await channel.bindQueue(queue, exchange, 'order.*');

    // 3. The relay, in-process, on the demo schema.
    const relay = await startRelay({ ...config, schema, httpPort: 0, httpHost: '127.0.0.1' }, log, { statsIntervalMs: 250 });
    cleanups.push(() => relay.stop());
    await relay.started;

    // 4. The shipping service: an idempotent consumer.
    const committedAt = new Map<string, number>();
    const latencies: number[] = [];
    let lastDelivery: { messageId: string; payload: OrderCreated } | undefined;
    const consumer = await createConsumer<OrderCreated>({
      amqpUrl,
      queue,
      name: 'shipping',
      pool,
      schema,
      prefetch: 50,
      handler: async (msg, tx) => {
        await tx.query(`INSERT INTO ${quoteIdent(schema)}.shipments (order_id, message_id) VALUES ($1, $2)`, [
          msg.payload.orderId,
          msg.messageId,
        ]);
        const committed = committedAt.get(msg.payload.orderId);
        if (committed !== undefined) latencies.push(Date.now() - committed);
        lastDelivery = { messageId: msg.messageId, payload: msg.payload };
      },
    });
    cleanups.push(() => consumer.stop());

    // 5. The orders service: each order and its event in one transaction.
    const OrderCreatedEvent = defineMessage<OrderCreated>({ type: 'order.created', exchange, routingKey: 'order.created' });
    let written = 0;
    let duplicatesSent = 0;
    const started = Date.now();
    const placeOrder = async (): Promise<void> => {
      const order: OrderCreated = {
        orderId: randomUUID(),
        customer: `customer-${1 + (written % 97)}`,
        totalCents: 500 + ((written * 7919) % 20_000),
      };
      await withPoolTransaction(pool, async (tx) => {
        await tx.query(`INSERT INTO ${quoteIdent(schema)}.orders (id, customer, total_cents) VALUES ($1, $2, $3)`, [
          order.orderId,
          order.customer,
          order.totalCents,
        ]);
        await enqueue(tx, OrderCreatedEvent, order, { schema, partitionKey: order.orderId });
      });
      committedAt.set(order.orderId, Date.now());
      written += 1;
    };
    const published = async (): Promise<number> => (await relay.metrics.publishedTotal.get()).values[0]?.value ?? 0;
    const line = async (): Promise<string> => {
      const elapsed = (Date.now() - started) / 1000;
      const lag = (await relay.metrics.lagSeconds.get()).values[0]?.value ?? 0;
      return (
        `[${elapsed.toFixed(1).padStart(5)} s] written ${written} · published ${await published()} · consumed ${consumer.stats.handled}` +
        ` · duplicates skipped ${consumer.stats.duplicates} · lag ${lag.toFixed(3)} s` +
        ` · ${(consumer.stats.handled / Math.max(elapsed, 0.001)).toFixed(1)} events/s`
      );
    };

    let lastProgress = 0;
    const intervalMs = 1000 / options.rate;
    const endAt = started + options.seconds * 1000;
    let nextDuplicateAt = started + 2_000;
    while (Date.now() < endAt) {
      const due = Math.floor((Date.now() - started) / intervalMs) + 1;
      while (written < due && Date.now() < endAt) await placeOrder();
      // At-least-once delivery means a consumer may see a message twice: show it.
      if (Date.now() >= nextDuplicateAt && lastDelivery) {
        channel.sendToQueue(queue, Buffer.from(JSON.stringify(lastDelivery.payload)), {
          messageId: lastDelivery.messageId,
          type: 'order.created',
          contentType: 'application/json',
        });
        duplicatesSent += 1;
        nextDuplicateAt += 2_000;
      }
      if (Date.now() - lastProgress >= (options.interactive ? 200 : 1_000)) {
        progress(await line());
        lastProgress = Date.now();
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(1, Math.min(intervalMs, 20))));
    }

    // 6. Drain: every order's event consumed, every duplicate skipped.
    const drainDeadline = Date.now() + 30_000;
    while ((consumer.stats.handled < written || consumer.stats.duplicates < duplicatesSent) && Date.now() < drainDeadline) {
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    progress(await line());
    if (options.interactive) process.stdout.write('\n');

    const { rows } = await pool.query<{ once: string }>(
      `SELECT count(*) AS once FROM ${quoteIdent(schema)}.orders o JOIN ${quoteIdent(schema)}.shipments s ON s.order_id = o.id`,
    );
    latencies.sort((a, b) => a - b);
    const summary: DemoSummary = {
      written,
      published: await published(),
      // An order counts when its shipment exists and the handler ran exactly once per
      // order (shipments.order_id is unique, so a second run could not commit).
      consumedOnce:
        consumer.stats.handled === written ? Number(rows[0]?.once ?? 0) : Math.min(Number(rows[0]?.once ?? 0), consumer.stats.handled),
      duplicatesSkipped: consumer.stats.duplicates,
      latencyP50Ms: percentile(latencies, 50),
      latencyP99Ms: percentile(latencies, 99),
    };
    io.out(
      [
        '',
        'summary',
        `  orders written (order + event in one transaction)  ${summary.written}`,
        `  events published by the relay (broker-confirmed)   ${summary.published}`,
        `  orders shipped exactly once by the consumer        ${summary.consumedOnce}`,
        `  duplicate deliveries injected / skipped            ${duplicatesSent} / ${summary.duplicatesSkipped}`,
        `  commit → consumed latency p50 / p99                ${summary.latencyP50Ms} ms / ${summary.latencyP99Ms} ms`,
        summary.consumedOnce === summary.written && summary.duplicatesSkipped === duplicatesSent
          ? `  OK: every order's event was consumed exactly once`
          : `  FAILED: ${summary.written - summary.consumedOnce} order(s) not consumed exactly once`,
      ].join('\n'),
    );
    if (summary.consumedOnce !== summary.written) {
      throw new OutboxError(
        'CHECK_FAILED',
        `demo: ${summary.written - summary.consumedOnce} of ${summary.written} orders were not consumed exactly once`,
      );
    }
    return summary;
  } finally {
    for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
    await pool.end().catch(() => undefined);
    io.out(`demo: removed schema "${schema}", exchange "${exchange}" and queue "${queue}"`);
  }
}
