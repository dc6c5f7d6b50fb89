import { Client, Pool, type ClientConfig, type PoolConfig } from 'pg';
import { parseDatabaseUrl, type DatabaseTarget } from '../config/database-url';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';
import { connectionProbe, failoverClientClass } from './failover-client';
import { HostPicker } from './host-picker';

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

/**
 * A pooled connection unused this long is closed (ms): a standby, which needs only its
 * coordination connection, gives back what its start used within seconds; a leader keeps
 * the connection its peeks use warm.
 */
const IDLE_CONNECTION_MS = 10_000;

/** A pool and the way to open single connections (LISTEN) to the host the pool uses. */
export interface Database {
  readonly pool: Pool;
  /** A new, unconnected client; with a multi-host URL it connects to the host the pool uses. */
  newClient(applicationName: string): Client;
}

/**
 * `databaseUrl` without an `application_name` in its query: node-postgres lets the URL's
 * win over the one it is given, and the relay's connections carry names of its own
 * (`outbox-relay <replica id>`), which the replicas use to tell one another's sessions.
 */
export function withoutApplicationName(databaseUrl: string): string {
  const question = databaseUrl.indexOf('?');
  if (question < 0) return databaseUrl;
  const kept = databaseUrl
    .slice(question + 1)
    .split('&')
    .filter((pair) => !/^application_name=/i.test(pair));
  return kept.length === 0 ? databaseUrl.slice(0, question) : `${databaseUrl.slice(0, question)}?${kept.join('&')}`;
}

/** Whether `target` needs the host picker: several hosts, or a host whose role is checked. */
function needsPicker(target: DatabaseTarget): boolean {
  return target.hosts.length > 1 || target.targetSessionAttrs !== 'any';
}

/**
 * The pool of `databaseUrl` (idle-client errors logged instead of crashing the process)
 * and its client factory. A one-host URL connects as node-postgres does; a multi-host
 * URL, or one with `target_session_attrs=read-write|primary`, connects through a
 * `HostPicker` shared by the pool and every client of `newClient`, so that all of them
 * follow a failover together (db/host-picker.ts).
 */
export function createDatabase(databaseUrl: string, max: number, log: Logger, applicationName?: string): Database {
  // With a name of its own, every connection carries it (see withoutApplicationName).
  const url = applicationName === undefined ? databaseUrl : withoutApplicationName(databaseUrl);
  const base = connectionConfig(url, applicationName);
  const target = parseDatabaseUrl(url);
  let ClientClass: new (config?: ClientConfig) => Client = Client;
  let config: ClientConfig = base;
  if (needsPicker(target)) {
    const picker = new HostPicker(target, connectionProbe(base, target.targetSessionAttrs !== 'any'), log);
    ClientClass = failoverClientClass(picker);
    // User, password, database and parameters; the host and port are the picker's.
    config = { ...base, connectionString: target.hosts[0]?.url };
  }
  const poolConfig: PoolConfig = { ...config, max, idleTimeoutMillis: IDLE_CONNECTION_MS, Client: ClientClass as new () => Client };
  const pool = new Pool(poolConfig);
  pool.on('error', (err) => log.debug({ err: errorMessage(err) }, 'idle database connection failed'));
  // A checked-out client whose connection drops while no query runs (a claim
  // transaction waiting for broker confirms) emits 'error' on itself; unhandled, that
  // would crash the process. Its next query fails instead, and the caller handles that.
  pool.on('connect', (client) => {
    client.on('error', (err) => log.debug({ err: errorMessage(err) }, 'database connection failed'));
  });
  return { pool, newClient: (applicationName) => new ClientClass({ ...config, application_name: applicationName }) };
}

/** The pool of `databaseUrl` alone (one-shot commands), as `createDatabase` builds it. */
export function createPool(databaseUrl: string, max: number, log: Logger): Pool {
  return createDatabase(databaseUrl, max, log).pool;
}
