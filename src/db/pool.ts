import { Pool, type ClientConfig, type PoolConfig } from 'pg';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';

/** Connection settings shared by the relay's pool and its LISTEN connection. */
export function connectionConfig(databaseUrl: string, applicationName = 'outbox-relay'): ClientConfig {
  return {
    connectionString: databaseUrl,
    application_name: applicationName,
    connectionTimeoutMillis: 10_000,
    keepAlive: true,
    // Client-side bound on any query, so a database that stops answering (a network
    // partition without a reset) fails the batch instead of hanging the loop.
    query_timeout: 60_000,
  };
}

/** A pool whose idle-client errors are logged instead of crashing the process. */
export function createPool(databaseUrl: string, max: number, log: Logger): Pool {
  const config: PoolConfig = { ...connectionConfig(databaseUrl), max, idleTimeoutMillis: 30_000 };
  const pool = new Pool(config);
  pool.on('error', (err) => log.debug({ err: errorMessage(err) }, 'idle database connection failed'));
  // A checked-out client whose connection drops while no query runs (a claim
  // transaction waiting for broker confirms) emits 'error' on itself; unhandled, that
  // would crash the process. Its next query fails instead, and the caller handles that.
  pool.on('connect', (client) => {
    client.on('error', (err) => log.debug({ err: errorMessage(err) }, 'database connection failed'));
  });
  return pool;
}
