import { Pool } from 'pg';
import { insertBacklog } from '../test/kit/outbox-rows';
import { migrateSchema } from '../test/kit/outbox-schema';
import { PgCluster, type PgNode } from '../test/kit/pg-cluster';
import { RelayProcess } from '../test/kit/relay-process';
import { TestBroker } from '../test/kit/test-broker';
import { uniqueName } from '../test/kit/unique-name';
import { waitFor } from '../test/kit/wait';
import { AMQP_URL, PAD } from './support';

/** One failover under a draining relay (the scenario of test/integration/failover.test.ts). */
export interface FailoverResult {
  readonly messages: number;
  readonly deliveredAtKill: number;
  /** From the promote request (`pg_ctl promote`) to the first publish from the new primary (ms). */
  readonly promoteToFirstPublishMs: number;
  /** From the kill of the primary (`pg_ctl stop -m immediate`) to that publish (ms). */
  readonly killToFirstPublishMs: number;
  /** Marks the old primary had committed that the standby never received. */
  readonly lostMarks: number;
  /** Messages delivered more than once. */
  readonly duplicates: number;
}

async function marks(node: PgNode): Promise<Map<string, string | null>> {
  const rows = await node.query<{ id: string; at: string | null }>(
    'SELECT message_id::text AS id, published_at::text AS at FROM outbox.messages',
  );
  return new Map(rows.map((r) => [r.id, r.at]));
}

/**
 * A primary and a streaming standby of its own, `count` 1 KiB messages, a relay with both
 * hosts in its URL (target_session_attrs=read-write); the primary stopped (immediate)
 * after a quarter is delivered, the standby promoted at once; measured until every
 * message is delivered.
 */
export async function failoverRun(count: number): Promise<FailoverResult> {
  const { cluster, primary, standby } = await PgCluster.primaryAndStandby();
  let relay: RelayProcess | undefined;
  const broker = await TestBroker.connect({ url: AMQP_URL });
  try {
    const pool = new Pool({ connectionString: primary.url(), max: 2 });
    try {
      await migrateSchema(pool, 'outbox');
      const exchange = await broker.exchange(uniqueName('bench_failover'));
      const queue = await broker.declareQueue(uniqueName('bench_failoverq'), { exchange, pattern: '#' });
      const arrivals = new Map<string, number[]>();
      await broker.consume(queue, (msg) => {
        const id = String(msg.properties.messageId);
        arrivals.set(id, [...(arrivals.get(id) ?? []), Date.now()]);
      });
      await insertBacklog(pool, 'outbox.messages', { count, exchange, routingKey: 'bench.failover', pad: PAD });
      await pool.end();
      await waitFor('the standby replaying the backlog', () => cluster.caughtUp(primary), 60_000, 50);

      relay = await RelayProcess.start({
        OUTBOX_DATABASE_URL: `postgres://postgres@127.0.0.1:${primary.port},127.0.0.1:${standby.port}/postgres?target_session_attrs=read-write`,
        OUTBOX_AMQP_URL: AMQP_URL,
        OUTBOX_HTTP_HOST: '127.0.0.1',
        OUTBOX_LOG_LEVEL: 'warn',
      });
      await relay.ready();
      await waitFor('a quarter delivered', () => arrivals.size >= count / 4, 120_000, 5);
      const killedAt = Date.now();
      const deliveredAtKill = arrivals.size;
      await cluster.kill(primary);
      const promotedAt = Date.now();
      await cluster.promote(standby);
      await waitFor('every message delivered', () => arrivals.size >= count, 120_000, 20);
      await waitFor(
        'every message marked on the new primary',
        async () =>
          (await standby.query<{ n: string }>('SELECT count(*) AS n FROM outbox.messages WHERE published_at IS NULL'))[0]?.n === '0',
        60_000,
        100,
      );
      await relay.stop();

      const oldPrimary = await cluster.restartElsewhere(primary);
      const before = await marks(oldPrimary);
      const after = await marks(standby);
      const lostMarks = [...before].filter(([id, at]) => at !== null && after.get(id) !== at).length;
      // Of each message the new primary marked itself, the last delivery is its publish from there.
      const fromNewPrimary = [...after].filter(([id, at]) => at !== null && before.get(id) !== at).map(([id]) => id);
      const firstPublish = Math.min(...fromNewPrimary.map((id) => Math.max(...(arrivals.get(id) ?? [Infinity]))));
      return {
        messages: count,
        deliveredAtKill,
        promoteToFirstPublishMs: firstPublish - promotedAt,
        killToFirstPublishMs: firstPublish - killedAt,
        lostMarks,
        duplicates: [...arrivals.values()].filter((times) => times.length > 1).length,
      };
    } finally {
      await pool.end().catch(() => undefined);
    }
  } finally {
    await relay?.ensureStopped();
    await broker.close();
    await cluster.close();
  }
}
