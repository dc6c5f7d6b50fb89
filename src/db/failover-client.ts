import { Client, type ClientConfig } from 'pg';
import type { DatabaseHost } from '../config/database-url';
import { isDatabaseConnectionGone } from '../util/outage';
import { describeState, NoHostError, qualifies, type HostPicker, type HostState } from './host-picker';

/** SQLSTATE read_only_sql_transaction: a write reached a host that cannot write. */
const READ_ONLY_SQLSTATE = '25006';

const STATE_QUERY = "SELECT pg_is_in_recovery() AS in_recovery, current_setting('transaction_read_only') = 'on' AS read_only";

/** The state of the host `client` is connected to. */
export async function readHostState(client: Client): Promise<HostState> {
  const { rows } = await client.query<{ in_recovery: boolean; read_only: boolean }>(STATE_QUERY);
  return { inRecovery: rows[0]?.in_recovery === true, readOnly: rows[0]?.read_only === true };
}

/** A probe on a connection of its own (`config` with the host's single-host URL). */
export function connectionProbe(config: ClientConfig, needsState: boolean): (host: DatabaseHost) => Promise<HostState> {
  return async (host) => {
    const client = new Client({ ...config, connectionString: host.url, application_name: 'outbox-relay-probe' });
    client.on('error', () => undefined);
    try {
      await client.connect();
      return needsState ? await readHostState(client) : { inRecovery: false, readOnly: false };
    } finally {
      await client.end().catch(() => undefined);
    }
  };
}

type ConnectCallback = (err: Error | null, client?: Client) => void;
type AnyQuery = (...args: unknown[]) => unknown;

/**
 * A node-postgres `Client` class whose connections go where `picker` says: `connect()`
 * asks for the host, connects there and checks the host's state on that connection
 * (libpq's check: a host that changed since the probe is forgotten and the connect
 * fails with 08001, so the caller retries). A query failing as read-only leaves the
 * host with every connection to it; a lost connection forgets it. Used as a pg Pool's
 * `Client`, so a pool re-targets by itself: the connections it opens after a failover
 * go to the new primary, each with its own prepared statements.
 */
export function failoverClientClass(picker: HostPicker): new (config?: ClientConfig) => Client {
  return class FailoverClient extends Client {
    private connectedHost: DatabaseHost | undefined;

    constructor(config?: ClientConfig) {
      super(config);
      const query = this.query.bind(this) as AnyQuery;
      const wrapped: AnyQuery = (...args) => {
        const last = args.length - 1;
        const callback = args[last];
        if (typeof callback === 'function') {
          args[last] = (err: unknown, result: unknown): void => {
            if (err) this.noticeFailure(err);
            (callback as (err: unknown, result: unknown) => void)(err, result);
          };
          return query(...args);
        }
        const result = query(...args);
        if (result instanceof Promise) {
          return result.catch((err: unknown) => {
            this.noticeFailure(err);
            throw err;
          });
        }
        return result;
      };
      this.query = wrapped as Client['query'];
    }

    override connect(): Promise<Client>;
    override connect(callback: ((err: Error) => void) | ((err: null, c: Client) => void)): void;
    override connect(callback?: ((err: Error) => void) | ((err: null, c: Client) => void)): Promise<Client> | undefined {
      const connecting = this.connectToPickedHost().then(() => this as Client);
      if (callback === undefined) return connecting;
      const done = callback as ConnectCallback;
      connecting.then(
        (client) => done(null, client),
        (err: unknown) => done(err instanceof Error ? err : new Error(String(err))),
      );
      return undefined;
    }

    private async connectToPickedHost(): Promise<void> {
      const host = await picker.pick();
      this.host = host.host;
      this.port = host.port;
      try {
        await super.connect();
      } catch (err: unknown) {
        picker.forget(host);
        throw err;
      }
      if (picker.attrs !== 'any') {
        const state = await readHostState(this);
        if (!qualifies(picker.attrs, state)) {
          picker.forget(host);
          await this.end().catch(() => undefined);
          throw new NoHostError(`database host ${host.label} ${describeState(state)} (target_session_attrs=${picker.attrs})`);
        }
      }
      this.connectedHost = host;
      const untrack = picker.track(host, { drop: () => this.dropConnection() });
      this.once('end', untrack);
      this.on('error', (err) => this.noticeFailure(err));
    }

    private noticeFailure(err: unknown): void {
      const host = this.connectedHost;
      if (host === undefined) return;
      const code = (err as { code?: unknown } | null)?.code;
      if (code === READ_ONLY_SQLSTATE) picker.leave(host, 'a write failed: the host is read-only (25006)');
      else if (isDatabaseConnectionGone(err)) picker.forget(host);
    }

    private dropConnection(): void {
      (this.connection as unknown as { stream?: { destroy(): void } }).stream?.destroy();
    }
  };
}
