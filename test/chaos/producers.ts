import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
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
}

/** The producers of a chaos run: what they committed and rolled back so far; `stop()` ends them. */
export interface Producers {
  readonly written: Written[];
  readonly rolledBack: string[];
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
 */
export function startProducers(admin: Pool, schema: string, exchange: string, producerRandom: () => number, rate: number): Producers {
  const written: Written[] = [];
  const rolledBack: string[] = [];
  let producing = true;
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
  return {
    written,
    rolledBack,
    stop: async () => {
      producing = false;
      await producing$;
    },
  };
}
