import { randomUUID } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import { isDatabaseAway } from '../../src/util/outage';
import { between } from './random';
import { sleep } from './sleep';

/** The aggregates (`agg-1` … `agg-40`) whose versions keyed messages carry. */
const KEYS = 40;

/** A message a producer committed (or the fault schedule inserted as poison). */
export interface Written {
  readonly id: string;
  readonly key: string | null;
  /** The aggregate's version for a keyed message (its order within the key). */
  readonly version: number;
  readonly poison: boolean;
  /** When its COMMIT returned (ms since the epoch; for a commit of unknown outcome, when it was sent). */
  readonly committedAt: number;
}

/** The producers of a chaos run: what they committed and rolled back so far; `stop()` ends them. */
export interface Producers {
  readonly written: Written[];
  /** Rolled back by the producer, or by the server when the connection died before COMMIT. */
  readonly rolledBack: string[];
  /**
   * Transactions whose connection died during COMMIT (with `survivesConnectionLoss`):
   * committed or not, nobody told the producer. `resolveUnknownCommits` decides each at
   * the end, from the rows the database holds.
   */
  readonly unknown: Written[];
  /** Transactions a lost connection interrupted (before or during COMMIT). */
  readonly interrupted: () => number;
  stop(): Promise<void>;
}

/** Creates `<schema>.aggregates`, every aggregate at version 0. */
export async function createAggregates(admin: Pool, schema: string): Promise<void> {
  await admin.query(`CREATE TABLE "${schema}".aggregates (id text PRIMARY KEY, version int NOT NULL)`);
  await admin.query(`INSERT INTO "${schema}".aggregates SELECT 'agg-' || g, 0 FROM generate_series(1, ${KEYS}) g`);
}

/**
 * Four producers writing `rate` transactions per second together: keyed messages bump
 * their aggregate's version in the same transaction, some transactions roll back, some
 * stay open long.
 *
 * With `survivesConnectionLoss` (a database that fails over) a producer whose
 * connection is lost takes a new one and goes on with a new transaction (a new message
 * id; a keyed one reads its version again): a transaction interrupted before COMMIT was
 * rolled back by the server; one interrupted during COMMIT has an unknown outcome.
 * Without it any error ends the run, as the machine's database is never faulted.
 */
export function startProducers(
  admin: Pool,
  schema: string,
  exchange: string,
  producerRandom: () => number,
  rate: number,
  survivesConnectionLoss = false,
): Producers {
  const written: Written[] = [];
  const rolledBack: string[] = [];
  const unknown: Written[] = [];
  let interrupted = 0;
  let producing = true;
  const producers = 4;
  const intervalMs = (1000 * producers) / rate;

  /** One transaction on `pg`; `state.phase` tells how far it got when it throws. */
  const transaction = async (pg: PoolClient, index: number, state: { phase: 'open' | 'commit'; message?: Written }): Promise<void> => {
    const started = Date.now();
    const id = randomUUID();
    const keyed = producerRandom() < 0.7;
    const rollback = producerRandom() < 0.1;
    const long = producerRandom() < 0.05;
    state.phase = 'open';
    state.message = { id, key: null, version: 0, poison: false, committedAt: 0 };
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
    state.message = { id, key, version, poison: false, committedAt: 0 };
    await pg.query(
      `INSERT INTO "${schema}".messages (message_id, exchange, routing_key, partition_key, payload) VALUES ($1, $2, 'chaos', $3, $4)`,
      [id, exchange, key, JSON.stringify({ key, version, producer: index })],
    );
    if (long) await sleep(between(producerRandom, 200, 1_000));
    if (rollback) {
      await pg.query('ROLLBACK');
      rolledBack.push(id);
    } else {
      state.phase = 'commit';
      state.message = { ...state.message, committedAt: Date.now() };
      await pg.query('COMMIT');
      written.push({ ...state.message, committedAt: Date.now() });
    }
    await sleep(Math.max(0, intervalMs - (Date.now() - started)));
  };

  const producerLoop = async (index: number): Promise<void> => {
    while (producing) {
      let pg: PoolClient;
      try {
        pg = await admin.connect();
      } catch (err) {
        if (!survivesConnectionLoss || !isDatabaseAway(err)) throw err;
        await sleep(100);
        continue;
      }
      const state: { phase: 'open' | 'commit'; message?: Written } = { phase: 'open' };
      try {
        while (producing) await transaction(pg, index, state);
        pg.release();
      } catch (err) {
        pg.release(true);
        if (!survivesConnectionLoss || !isDatabaseAway(err)) throw err;
        interrupted += 1;
        if (state.message && state.phase === 'commit') unknown.push(state.message);
        else if (state.message) rolledBack.push(state.message.id);
        await sleep(100);
      }
    }
  };
  const producing$ = Promise.all(Array.from({ length: producers }, (_, i) => producerLoop(i)));
  return {
    written,
    rolledBack,
    unknown,
    interrupted: () => interrupted,
    stop: async () => {
      producing = false;
      await producing$;
    },
  };
}

/**
 * Decides the commits of unknown outcome by what the database holds once the producers
 * stopped: a row that is there was committed (it joins `written`, and must be delivered
 * in order); one that is not was not (it joins `rolledBack`, and must never be
 * delivered). With synchronous replication a failover keeps every commit the standby
 * flushed, so the new primary is the authority. Returns how many were committed.
 */
export async function resolveUnknownCommits(admin: Pool, schema: string, producers: Producers): Promise<number> {
  const { unknown, written, rolledBack } = producers;
  if (unknown.length === 0) return 0;
  const { rows } = await admin.query<{ id: string }>(
    `SELECT message_id::text AS id FROM "${schema}".messages WHERE message_id = ANY($1::uuid[])`,
    [unknown.map((w) => w.id)],
  );
  const committed = new Set(rows.map((r) => r.id));
  for (const w of unknown) {
    if (committed.has(w.id)) written.push(w);
    else rolledBack.push(w.id);
  }
  return committed.size;
}
