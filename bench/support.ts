import type { ConfirmChannel, Options } from 'amqplib';
import { Pool } from 'pg';
import { insertBacklog as insertMessages } from '../test/kit/outbox-rows';
import { dropSchema, migrateSchema } from '../test/kit/outbox-schema';
import { RelayProcess } from '../test/kit/relay-process';
import { TestBroker } from '../test/kit/test-broker';
import { uniqueName } from '../test/kit/unique-name';

/** Where the benchmark runs: the local services unless overridden. */
export const DATABASE_URL = process.env['OUTBOX_BENCH_DATABASE_URL'] ?? 'postgres://postgres@127.0.0.1:5432/test';
export const AMQP_URL = process.env['OUTBOX_BENCH_AMQP_URL'] ?? 'amqp://guest:guest@127.0.0.1:5672';

/** The 1 KiB JSON payload every scenario publishes (as the bare publisher's body, too). */
export const PAD = 'x'.repeat(1024 - 40);

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Median, min and max of repeated measurements. */
export interface Figure {
  readonly median: number;
  readonly min: number;
  readonly max: number;
  readonly runs: readonly number[];
}

export function figure(runs: readonly number[]): Figure {
  const sorted = [...runs].sort((a, b) => a - b);
  return {
    median: sorted[Math.floor(sorted.length / 2)] as number,
    min: sorted[0] as number,
    max: sorted[sorted.length - 1] as number,
    runs,
  };
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** A fresh, migrated outbox schema; `drop()` removes it. */
export async function outboxSchema(pool: Pool): Promise<{ schema: string; drop(): Promise<void> }> {
  const schema = uniqueName('bench');
  await migrateSchema(pool, schema);
  return { schema, drop: () => dropSchema(pool, schema) };
}

/** Inserts `count` 1 KiB JSON messages to `exchange` (`keys` partition keys, 0 = none), then VACUUM ANALYZE. */
export async function insertBacklog(pool: Pool, schema: string, exchange: string, count: number, keys: number): Promise<void> {
  await insertMessages(pool, `"${schema}".messages`, { count, exchange, routingKey: 'bench', keys, pad: PAD });
  await pool.query(`VACUUM ANALYZE "${schema}".messages`);
}

/** A durable topic exchange with one durable queue bound to everything; `drop()` deletes both. */
export async function topology(): Promise<{ exchange: string; queue: string; broker: TestBroker; drop(): Promise<void> }> {
  const broker = await TestBroker.connect({ url: AMQP_URL, durable: true });
  const exchange = await broker.exchange(uniqueName('bench'));
  const queue = await broker.declareQueue(uniqueName('bench_q'), { exchange, pattern: '#' });
  return { exchange, queue, broker, drop: () => broker.close() };
}

/**
 * `outbox-relay run` as a separate process, as in production, on the bench services;
 * an exit nobody asked for is reported with the relay's last output.
 */
export async function startRelay(env: Record<string, string>, bin?: string): Promise<RelayProcess> {
  const relay = await RelayProcess.start(
    {
      OUTBOX_DATABASE_URL: DATABASE_URL,
      OUTBOX_AMQP_URL: AMQP_URL,
      OUTBOX_HTTP_HOST: '127.0.0.1',
      ...env,
    },
    ['run'],
    bin,
  );
  void relay.exited.then(() => {
    if (relay.crashed) console.error(`relay exited unexpectedly: ${relay.lastOutput(20)}`);
  });
  return relay;
}

/** Messages published by `relays` together, from their /metrics. */
export async function publishedBy(relays: readonly RelayProcess[]): Promise<number> {
  const counts = await Promise.all(relays.map(async (r) => (await r.metrics()).value('outbox_messages_published_total') ?? Number.NaN));
  return counts.reduce((a, b) => a + b, 0);
}

export function newPool(max = 10, options: { pipeline?: boolean } = {}): Pool {
  return new Pool({ connectionString: DATABASE_URL, max, ...options });
}

/**
 * Publishes `count` persistent 1 KiB JSON messages (`{"n": 1…count, "pad": …}`, a fresh
 * body each, as a relay has one per row) to `exchange` with routing key `bench`, at most
 * 1,000 unconfirmed at a time; resolves when the broker confirmed them all.
 */
export function publishConfirmed(
  channel: ConfirmChannel,
  exchange: string,
  count: number,
  properties: (n: number) => Options.Publish,
): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let sent = 0;
    let confirmed = 0;
    let inFlight = 0;
    const pump = (): void => {
      while (sent < count && inFlight < 1_000) {
        sent += 1;
        inFlight += 1;
        const body = Buffer.from(JSON.stringify({ n: sent, pad: PAD }));
        channel.publish(
          exchange,
          'bench',
          body,
          { persistent: true, contentType: 'application/json', ...properties(sent) },
          (err: unknown) => {
            if (err) return reject(err as Error);
            inFlight -= 1;
            confirmed += 1;
            if (confirmed === count) resolve();
            else pump();
          },
        );
      }
    };
    pump();
  });
}
