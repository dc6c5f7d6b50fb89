import type { DatabaseHost, DatabaseTarget, TargetSessionAttrs } from '../config/database-url';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';
import { isDatabaseAway } from '../util/outage';

/** What a host said about itself on a fresh connection. */
export interface HostState {
  /** `pg_is_in_recovery()`: a standby (hot standby or still replaying). */
  readonly inRecovery: boolean;
  /** `transaction_read_only`: writes fail with 25006 (a standby, or `default_transaction_read_only`). */
  readonly readOnly: boolean;
}

/** Connects to `host` on a connection of its own, reads its state and closes it. */
export type HostProbe = (host: DatabaseHost) => Promise<HostState>;

/** Whether a host in `state` serves `attrs`, as libpq decides it. */
export function qualifies(attrs: TargetSessionAttrs, state: HostState): boolean {
  if (attrs === 'any') return true;
  if (attrs === 'primary') return !state.inRecovery;
  return !state.inRecovery && !state.readOnly;
}

/** Why a host that answered does not serve `attrs`, for errors and logs. */
export function describeState(state: HostState): string {
  return state.inRecovery ? 'is a standby (in recovery)' : state.readOnly ? 'is read-only' : 'is writable';
}

/** The error a connect fails with when no host serves: SQLSTATE 08001, as libpq, so callers back off and retry. */
export class NoHostError extends Error {
  override readonly name = 'NoHostError';
  readonly code = '08001';
}

/** A connection that can be dropped when its host is left. */
export interface HostConnection {
  /** Closes the socket at once: the pool drops the client, a query in flight fails as a lost connection. */
  drop(): void;
}

/**
 * Which host of a multi-host URL the connections of one pool (and its LISTEN
 * connection) go to. The choice is kept while it serves; it is forgotten when a
 * connection to it is lost or refused, and the host is left at once — every open
 * connection to it dropped — when a write fails there as read-only (25006).
 *
 * Finding a host probes every host at once, each on a connection of its own, and takes
 * the first answer that serves `target_session_attrs`: a host that does not answer (a
 * dead machine, a dropped SYN) delays nothing but its own probe. Concurrent connects
 * share one probe round. With `any` the fastest host that answers is taken (libpq takes
 * the first of the list); with `read-write` or `primary` there is one that serves.
 */
export class HostPicker {
  private chosen: DatabaseHost | undefined;
  private probing: Promise<DatabaseHost> | undefined;
  private readonly open = new Map<DatabaseHost, Set<HostConnection>>();

  constructor(
    readonly target: DatabaseTarget,
    private readonly probe: HostProbe,
    private readonly log: Logger,
  ) {}

  get attrs(): TargetSessionAttrs {
    return this.target.targetSessionAttrs;
  }

  /** The host new connections go to: the kept choice, or the result of a probe round. */
  pick(): Promise<DatabaseHost> {
    if (this.chosen) return Promise.resolve(this.chosen);
    this.probing ??= this.probeAll().finally(() => {
      this.probing = undefined;
    });
    return this.probing;
  }

  /** Forgets `host` as the choice (its connection was lost, refused, or it no longer serves). */
  forget(host: DatabaseHost): void {
    if (this.chosen !== host) return;
    this.chosen = undefined;
    this.log.info({ host: host.label }, 'database host lost: looking for the writable host');
  }

  /** Leaves `host` at once: forgets it and drops every connection open to it. */
  leave(host: DatabaseHost, reason: string): void {
    const connections = [...(this.open.get(host) ?? [])];
    if (this.chosen === host) this.chosen = undefined;
    this.log.warn({ host: host.label, reason, connections: connections.length }, 'leaving database host');
    for (const connection of connections) connection.drop();
  }

  /** Records a connection to `host`; the returned function records it closed. */
  track(host: DatabaseHost, connection: HostConnection): () => void {
    const set = this.open.get(host) ?? new Set();
    this.open.set(host, set);
    set.add(connection);
    return () => void set.delete(connection);
  }

  private probeAll(): Promise<DatabaseHost> {
    const { hosts } = this.target;
    const reasons: string[] = hosts.map(() => 'did not answer');
    const errors: unknown[] = [];
    return new Promise((resolve, reject) => {
      let pending = hosts.length;
      let settled = false;
      const done = (): void => {
        pending -= 1;
        if (pending > 0 || settled) return;
        // Every host failed to connect for a reason that waiting will not cure (a wrong
        // password, an unknown database): that error, as a one-host URL would give it.
        const fatal = errors.length === hosts.length && !errors.some(isDatabaseAway);
        if (fatal) return reject(errors[0]);
        const detail = hosts.map((host, i) => `${host.label} ${reasons[i] ?? ''}`).join('; ');
        reject(new NoHostError(`no database host serves target_session_attrs=${this.attrs}: ${detail}`));
      };
      for (const [index, host] of hosts.entries()) {
        this.probe(host).then(
          (state) => {
            if (!settled && qualifies(this.attrs, state)) {
              settled = true;
              this.chosen = host;
              this.log.info({ host: host.label, targetSessionAttrs: this.attrs }, 'database host chosen');
              resolve(host);
            }
            reasons[index] = describeState(state);
            done();
          },
          (err: unknown) => {
            errors.push(err);
            reasons[index] = `cannot be reached (${errorMessage(err)})`;
            done();
          },
        );
      }
    });
  }
}
