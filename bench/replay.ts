import type { Pool } from 'pg';
import { cli } from '../test/kit/cli';
import { insertBacklog as insertMessages } from '../test/kit/outbox-rows';
import { AMQP_URL, DATABASE_URL, outboxSchema, PAD, publishedBy, sleep, startRelay, topology } from './support';

/** The replay's rate and the relay's drain rate, apart and together, in one run. */
export interface ReplayResult {
  /** `outbox-relay replay --rate unlimited` of the published history, no relay draining (msg/s). */
  readonly replayAlone: number;
  /** The relay draining a fresh backlog, no replay running (msg/s). */
  readonly drainAlone: number;
  /** The same replay while the relay drains another fresh backlog (msg/s, as the replay reports it). */
  readonly replayTogether: number;
  /** The relay's drain meanwhile (msg/s). */
  readonly drainTogether: number;
}

/**
 * `count` published 1 KiB messages (1,000 keys) are replayed while one relay process
 * drains a backlog of `count` new ones, against each alone: the replay of the same
 * history with no backlog, and a drain of the same size with no replay. The replay is
 * the CLI as an operator runs it (its own process and connection), at `--rate unlimited`.
 */
export async function replayBeside(pool: Pool, count: number): Promise<ReplayResult> {
  const topo = await topology();
  const outbox = await outboxSchema(pool);
  const table = `"${outbox.schema}".messages`;
  const insert = (routingKey: string): Promise<void> =>
    insertMessages(pool, table, { count, exchange: topo.exchange, routingKey, keys: 1_000, pad: PAD });
  const env = { OUTBOX_DATABASE_URL: DATABASE_URL, OUTBOX_AMQP_URL: AMQP_URL, OUTBOX_SCHEMA: outbox.schema };
  const replay = async (): Promise<number> => {
    const result = await cli(
      ['replay', '--since', '2000-01-01', '--routing-key', 'history', '--rate', 'unlimited', '--json'],
      env,
      600_000,
    );
    if (result.code !== 0) throw new Error(`replay failed: ${result.stderr}`);
    const report = JSON.parse(result.stdout.trim().split('\n').at(-1) as string) as { replayed: number; perSecond: number };
    if (report.replayed !== count) throw new Error(`replay published ${report.replayed} of ${count}`);
    return report.perSecond;
  };
  const relay = await startRelay({ OUTBOX_SCHEMA: outbox.schema, OUTBOX_LOG_LEVEL: 'warn' });
  try {
    await relay.ready();
    /** Inserts a backlog of `count` and times the relay's drain of it (msg/s). */
    const drain = async (routingKey: string, beside?: () => Promise<number>): Promise<{ drain: number; beside?: number }> => {
      const before = await publishedBy([relay]);
      await insert(routingKey);
      const startedAt = performance.now();
      const besideRun = beside?.();
      while ((await publishedBy([relay])) < before + count) await sleep(10);
      const drained = count / ((performance.now() - startedAt) / 1000);
      return { drain: drained, ...(besideRun ? { beside: await besideRun } : {}) };
    };
    await drain('history');
    await pool.query(`VACUUM ANALYZE ${table}`);
    await topo.broker.channel.purgeQueue(topo.queue);
    const replayAlone = await replay();
    await topo.broker.channel.purgeQueue(topo.queue);
    const alone = await drain('alone');
    await topo.broker.channel.purgeQueue(topo.queue);
    const together = await drain('together', replay);
    return { replayAlone, drainAlone: alone.drain, replayTogether: together.beside ?? Number.NaN, drainTogether: together.drain };
  } finally {
    await relay.stop();
    await outbox.drop();
    await topo.drop();
  }
}
