import type { Pool } from 'pg';
import type { Config } from '../config/load-config';
import { createPool } from '../db/pool';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { isDatabaseAway } from '../util/outage';

/**
 * Runs a one-shot command with a small pool, ending it afterwards. An unreachable
 * database becomes a one-line `DATABASE_UNAVAILABLE` error.
 */
export async function withDatabase<T>(config: Config, log: Logger, work: (pool: Pool) => Promise<T>): Promise<T> {
  const pool = createPool(config.databaseUrl, 2, log);
  try {
    return await work(pool);
  } catch (err: unknown) {
    if (isDatabaseAway(err)) {
      throw new OutboxError('DATABASE_UNAVAILABLE', `cannot reach the database: ${errorMessage(err)}`, { cause: err });
    }
    throw err;
  } finally {
    await pool.end().catch(() => undefined);
  }
}
