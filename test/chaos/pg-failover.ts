import type { Pool } from 'pg';
import { createPool } from '../../src/db/pool';
import { createLogger } from '../../src/observability/logger';
import { PgCluster, type PgNode } from '../kit/pg-cluster';
import { TcpProxy } from '../kit/tcp-proxy';
import { ProxyGroup, type FaultProxy } from './relays';

/** One of the two places a node of the run's database stands in, at addresses that never change. */
interface Slot {
  readonly name: 'A' | 'B';
  node: PgNode;
  /** The relays' way in: a database cut drops it. */
  readonly relayProxy: TcpProxy;
  /** The producers' and the checks' way in: no fault touches it but the failover. */
  readonly clientProxy: TcpProxy;
}

/** The multi-host URL, primary first, of two proxies. */
function multiHostUrl(proxies: readonly TcpProxy[]): string {
  const hosts = proxies.map((p) => `127.0.0.1:${p.port}`).join(',');
  return `postgres://postgres@${hosts}/postgres?target_session_attrs=read-write`;
}

/**
 * The database of a `--pg-failover` chaos run: a PostgreSQL primary and a streaming
 * standby of its own (test/kit/pg-cluster.ts) with SYNCHRONOUS replication, so that a
 * failover loses no acknowledged commit (with asynchronous replication the database
 * itself would lose producers' rows, which the relay could never deliver).
 *
 * Each node stands in a slot, A or B, reached through proxies of fixed ports whose
 * target moves when the slot gets a new node: the relays' URL
 * (`127.0.0.1:PA,127.0.0.1:PB?target_session_attrs=read-write`) and the producers' stay
 * valid across every failover, and the relays find the writable host by themselves.
 * The relays and the producers go through proxies of their own, so that a database cut
 * (a relays' fault) leaves the producers alone, as in the default run.
 */
export class ChaosDatabase {
  /** The slot of the primary. */
  private primary = 0;
  /** The relays' OUTBOX_DATABASE_URL. */
  readonly relayUrl: string;
  /** What a database cut acts on: both of the relays' proxies. */
  readonly relayProxy: FaultProxy;
  private readonly clientUrl: string;
  private closed = false;

  private constructor(
    private readonly cluster: PgCluster,
    private readonly slots: readonly [Slot, Slot],
  ) {
    this.relayUrl = multiHostUrl(slots.map((s) => s.relayProxy));
    this.relayProxy = new ProxyGroup(slots.map((s) => s.relayProxy));
    this.clientUrl = multiHostUrl(slots.map((s) => s.clientProxy));
  }

  /** Starts the primary and its synchronous standby, and the proxies of both slots. */
  static async start(): Promise<ChaosDatabase> {
    const { cluster, primary, standby } = await PgCluster.primaryAndStandby();
    try {
      await cluster.makeSynchronous(primary);
      const slot = async (name: 'A' | 'B', node: PgNode): Promise<Slot> => ({
        name,
        node,
        relayProxy: await TcpProxy.start('127.0.0.1', node.port),
        clientProxy: await TcpProxy.start('127.0.0.1', node.port),
      });
      return new ChaosDatabase(cluster, [await slot('A', primary), await slot('B', standby)]);
    } catch (err) {
      await cluster.close();
      throw err;
    }
  }

  /** Where the cluster's folder is, for the run's first line. */
  get root(): string {
    return this.cluster.root;
  }

  /**
   * A pool through the producers' proxies that follows the primary by itself (the
   * relay's own multi-host pool, src/db/pool.ts); the caller ends it.
   */
  clientPool(max: number): Pool {
    const pool = createPool(this.clientUrl, max, createLogger({ level: 'silent', secrets: [] }));
    pool.on('error', () => undefined);
    return pool;
  }

  /**
   * One failover: the primary killed (`pg_ctl stop -m immediate`), the standby
   * promoted, then two nodes again so that the next failover can happen: the old
   * primary's directory discarded, a new standby made from the new primary into the old
   * primary's slot, replication synchronous again, and everything the new primary
   * committed meanwhile (asynchronously, with no standby) flushed on the new standby.
   * Returns what happened, with times from the kill.
   */
  async failover(): Promise<string> {
    const old = this.slots[this.primary] as Slot;
    const next = this.slots[1 - this.primary] as Slot;
    const killedAt = Date.now();
    await this.cluster.kill(old.node);
    await this.cluster.promote(next.node);
    const promotedMs = Date.now() - killedAt;
    this.primary = 1 - this.primary;
    await this.cluster.discard(old.node);
    const standby = await this.cluster.addStandby(next.node);
    old.node = standby;
    old.relayProxy.retarget('127.0.0.1', standby.port);
    old.clientProxy.retarget('127.0.0.1', standby.port);
    await this.cluster.makeSynchronous(next.node);
    await this.cluster.standbysFlushed(next.node);
    return `primary in slot ${old.name} killed, slot ${next.name} promoted after ${promotedMs} ms, a new synchronous standby in slot ${old.name} after ${Date.now() - killedAt} ms`;
  }

  /** Closes the proxies and stops the servers (removing their folder). Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    try {
      await Promise.all(this.slots.flatMap((s) => [s.relayProxy.close(), s.clientProxy.close()]));
    } finally {
      await this.cluster.close();
    }
  }
}
