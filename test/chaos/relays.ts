import { freePort } from '../kit/free-port';
import { endpointStatus } from '../kit/relay-http';
import { RelayProcess } from '../kit/relay-process';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TcpProxy } from '../kit/tcp-proxy';
import { sleep } from './sleep';

export const PUBLISH_TIMEOUT_MS = 2_000;
export const SHUTDOWN_TIMEOUT_MS = 3_000;

/**
 * What the faults do to a service's side (the broker's, the database's): all of its
 * proxies at once when the service has several nodes.
 */
export interface FaultProxy {
  cut(): void;
  restore(): void;
  latencyMs: number;
  close(): Promise<void>;
}

/** One proxy per node of a cluster, cut, restored and slowed together (a network fault between the relays and the cluster). */
export class ProxyGroup implements FaultProxy {
  constructor(readonly proxies: readonly TcpProxy[]) {}

  cut(): void {
    for (const proxy of this.proxies) proxy.cut();
  }

  restore(): void {
    for (const proxy of this.proxies) proxy.restore();
  }

  get latencyMs(): number {
    return this.proxies[0]?.latencyMs ?? 0;
  }

  set latencyMs(ms: number) {
    for (const proxy of this.proxies) proxy.latencyMs = ms;
  }

  async close(): Promise<void> {
    await Promise.all(this.proxies.map((proxy) => proxy.close()));
  }
}

/** The three relays of a chaos run, as processes, and the proxies in front of the services they use. */
export interface ChaosRelays {
  /** Relay i (restarted in place: `restart(i)` puts the new process here). */
  readonly relays: RelayProcess[];
  readonly dbProxy: FaultProxy;
  readonly brokerProxy: FaultProxy;
  /** OUTBOX_APP_ID of every relay (names their AMQP connections). */
  readonly appId: string;
  /** Polls /readyz of every relay until all answer 200 or `deadlineMs` passes; the indexes of those not ready. */
  waitReady(deadlineMs: number): Promise<number[]>;
  /** Starts relay `index` again, with the same environment and port. */
  restart(index: number): Promise<void>;
}

/** A database of the run's own, already behind proxies (`--pg-failover`: test/chaos/pg-failover.ts). */
export interface RelayDatabase {
  /** OUTBOX_DATABASE_URL of every relay: through `proxy`. */
  readonly url: string;
  /** What a database cut acts on. */
  readonly proxy: FaultProxy;
}

/** The machine's PostgreSQL behind a proxy of its own: the default run. */
async function machineDatabase(): Promise<RelayDatabase> {
  const proxy = await TcpProxy.inFrontOf(testDatabaseUrl());
  return { url: proxy.url(testDatabaseUrl()), proxy };
}

/**
 * Starts the three relays behind their proxies. With `clusterUrls` (the nodes of a
 * RabbitMQ cluster) each relay gets every node, through a proxy per node, in an order
 * that starts at the second or third node (the first one, where the run's consumer
 * reads, is never killed): a node loss takes relays' connections with it. With
 * `database` the relays use it instead of the machine's PostgreSQL.
 */
export async function startRelays(
  schema: string,
  seed: number,
  clusterUrls?: readonly string[],
  database?: RelayDatabase,
): Promise<ChaosRelays> {
  // Relays reach both services only through proxies: that is where faults happen.
  const { url: databaseUrl, proxy: dbProxy } = database ?? (await machineDatabase());
  const nodeUrls = clusterUrls ?? [testAmqpUrl()];
  const proxies = await Promise.all(nodeUrls.map((url) => TcpProxy.inFrontOf(url)));
  const brokerProxy: FaultProxy = clusterUrls ? new ProxyGroup(proxies) : proxies[0]!;
  const proxied = nodeUrls.map((url, i) => proxies[i]!.url(url));
  const amqpUrl = (index: number): string => {
    if (proxied.length === 1) return proxied[0]!;
    const first = 1 + (index % (proxied.length - 1));
    return [...proxied.slice(first), ...proxied.slice(0, first)].join(',');
  };
  const appId = `chaos-${seed}`;
  const ports = await Promise.all([0, 1, 2].map(() => freePort()));
  const relayEnv = (index: number): NodeJS.ProcessEnv => ({
    OUTBOX_DATABASE_URL: databaseUrl,
    OUTBOX_AMQP_URL: amqpUrl(index),
    OUTBOX_SCHEMA: schema,
    OUTBOX_HTTP_HOST: '127.0.0.1',
    OUTBOX_HTTP_PORT: String(ports[index]),
    OUTBOX_APP_ID: appId,
    OUTBOX_BATCH_SIZE: '100',
    OUTBOX_MAX_ATTEMPTS: '3',
    OUTBOX_BACKOFF_BASE_MS: '100',
    OUTBOX_BACKOFF_MAX_MS: '500',
    OUTBOX_PUBLISH_TIMEOUT_MS: String(PUBLISH_TIMEOUT_MS),
    OUTBOX_SHUTDOWN_TIMEOUT_MS: String(SHUTDOWN_TIMEOUT_MS),
    OUTBOX_LOG_LEVEL: 'warn',
  });
  const relays: RelayProcess[] = await Promise.all([0, 1, 2].map((i) => RelayProcess.start(relayEnv(i))));
  const readyz = async (index: number): Promise<boolean> => (await endpointStatus(ports[index]!, '/readyz')) === 200;
  const waitReady = async (deadlineMs: number): Promise<number[]> => {
    const deadline = Date.now() + deadlineMs;
    for (;;) {
      const states = await Promise.all([0, 1, 2].map(readyz));
      const notReady = states.flatMap((ok, i) => (ok ? [] : [i]));
      if (notReady.length === 0 || Date.now() > deadline) return notReady;
      await sleep(100);
    }
  };
  const restart = async (index: number): Promise<void> => {
    relays[index] = await RelayProcess.start(relayEnv(index));
  };
  return { relays, dbProxy, brokerProxy, appId, waitReady, restart };
}
