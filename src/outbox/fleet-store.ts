import { escapeLiteral, type Client, type Pool } from 'pg';
import { ADVISORY_LOCK_NAMESPACE, qualified } from '../db/sql';
import type { LeaderTerm, LockAttempt } from '../domain/fleet';

/** This replica, as it registers itself in `<schema>.relay_replicas`. */
export interface ReplicaIdentity {
  readonly replicaId: string;
  readonly host: string;
  readonly pid: number;
  readonly version: string;
}

/** A replica's row is live while seen within this (s): 3 missed heartbeats. */
const LIVE_SECONDS = 45;
/** The leader deletes replica rows not seen for this long (s). */
const FORGET_SECONDS = 600;

/** The `application_name` of a replica's connections; `role` tells its coordination and LISTEN connections apart. */
export function replicaApplicationName(replicaId: string, role?: 'lease' | 'listen'): string {
  return role === undefined ? `outbox-relay ${replicaId}` : `outbox-relay ${replicaId} ${role}`;
}

/**
 * The replicas' coordination through the outbox's own database (migration 0005): the
 * leader lock, the lease and the replica registry. See relay/leadership.ts for the
 * protocol; this is its SQL.
 *
 * The leader lock is a transaction-level advisory lock held in a transaction that stays
 * open, idle, on the coordination connection: it holds no snapshot and no transaction id
 * (so it holds back no vacuum), pins one server connection behind a transaction-pooling
 * PgBouncer, and is released by PostgreSQL the moment the process dies. A standby uses
 * that same single connection for its checks, its heartbeat and fencing; the leader's
 * other statements go through the pool, since its coordination connection is inside the
 * lock's transaction.
 */
export class FleetStore {
  private readonly lease: string;
  private readonly replicas: string;
  private readonly lockKey: string;
  private client: Client | undefined;
  private connecting: Promise<Client> | undefined;
  /** Set while the coordination connection holds the leader lock. */
  private held: { readonly lost: () => void } | undefined;

  constructor(
    private readonly pool: Pool,
    schema: string,
    private readonly identity: ReplicaIdentity,
    /** A new, unconnected client for the coordination connection. */
    private readonly newClient: () => Client,
  ) {
    this.lease = qualified(schema, 'relay_lease');
    this.replicas = qualified(schema, 'relay_replicas');
    this.lockKey = `${ADVISORY_LOCK_NAMESPACE}, hashtext(${escapeLiteral(`lead:${schema}`)})`;
  }

  private async coordination(): Promise<Client> {
    if (this.client) return this.client;
    this.connecting ??= (async () => {
      const client = this.newClient();
      const gone = (): void => {
        if (this.client === client) this.client = undefined;
        const held = this.held;
        this.held = undefined;
        held?.lost();
      };
      client.on('error', gone);
      client.on('end', gone);
      try {
        await client.connect();
      } catch (err: unknown) {
        client.removeAllListeners();
        await client.end().catch(() => undefined);
        throw err;
      }
      this.client = client;
      return client;
    })().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  /**
   * One standby check: tries the leader lock in a new transaction on the coordination
   * connection. Won: the transaction stays open and holds the lock (no statement timeout,
   * no idle timeout). Not won: rolled back, with the lease and the standbys' count read
   * in the same statement. One transaction either way.
   */
  async tryLock(): Promise<LockAttempt> {
    const client = await this.coordination();
    await client.query('BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL statement_timeout = 0');
    try {
      const { rows } = await client.query<{
        won: boolean;
        holder: string | null;
        epoch: string;
        expired: boolean;
        standbys: string;
        rank: string;
      }>(
        `SELECT pg_try_advisory_xact_lock(${this.lockKey}) AS won, l.holder, l.epoch::text, l.expires_at < now() AS expired,
                count(r.replica_id) FILTER (WHERE r.replica_id IS DISTINCT FROM l.holder) AS standbys,
                count(r.replica_id) FILTER (WHERE r.replica_id IS DISTINCT FROM l.holder AND r.replica_id < $1) AS rank
           FROM ${this.lease} AS l
           LEFT JOIN ${this.replicas} AS r ON r.seen_at > now() - $2 * interval '1 second'
          GROUP BY l.holder, l.epoch, l.expires_at`,
        [this.identity.replicaId, LIVE_SECONDS],
      );
      const row = rows[0];
      if (row === undefined) throw new Error(`${this.lease} has no row: run outbox-relay migrate`);
      if (row.won) {
        let lost: () => void = () => undefined;
        const lostPromise = new Promise<void>((resolve) => {
          lost = resolve;
        });
        this.held = { lost };
        return { won: true, lost: lostPromise };
      }
      await client.query('ROLLBACK');
      return {
        won: false,
        lease: { holder: row.holder, epoch: row.epoch, expired: row.expired },
        standbys: Math.max(1, Number(row.standbys)),
        rank: Number(row.rank),
      };
    } catch (err: unknown) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
  }

  /** Gives up the leader lock (ends its transaction). */
  async releaseLock(): Promise<void> {
    const client = this.client;
    this.held = undefined;
    if (client) await client.query('ROLLBACK').catch(() => undefined);
  }

  /** Records this replica, holder of the lock, as the leader: a new epoch. Returns it with the previous holder. */
  async claim(ttlMs: number): Promise<LeaderTerm> {
    const { rows } = await this.pool.query<{ epoch: string; previous: string | null; previous_live: boolean }>(
      `UPDATE ${this.lease} AS l
          SET holder = $1, epoch = l.epoch + 1, acquired_at = now(), expires_at = now() + $2 * interval '1 millisecond'
         FROM (SELECT holder AS previous, expires_at > now() AS previous_live FROM ${this.lease}) AS p
       RETURNING l.epoch::text AS epoch, p.previous, p.previous_live`,
      [this.identity.replicaId, ttlMs],
    );
    const row = rows[0];
    if (row === undefined) throw new Error(`${this.lease} has no row: run outbox-relay migrate`);
    return { epoch: row.epoch, previous: row.previous, previousLive: row.previous_live };
  }

  /** Extends the lease of `epoch`; false when another replica has taken over since. */
  async renew(epoch: string, ttlMs: number): Promise<boolean> {
    const { rowCount } = await this.pool.query(
      `UPDATE ${this.lease} SET expires_at = now() + $3 * interval '1 millisecond' WHERE holder = $1 AND epoch = $2::bigint`,
      [this.identity.replicaId, epoch, ttlMs],
    );
    return rowCount === 1;
  }

  /** Ends the lease of `epoch` (a graceful stop): a standby takes over at its next check. */
  async release(epoch: string): Promise<void> {
    await this.pool.query(`UPDATE ${this.lease} SET holder = NULL, expires_at = '-infinity' WHERE holder = $1 AND epoch = $2::bigint`, [
      this.identity.replicaId,
      epoch,
    ]);
  }

  /**
   * Ends the database sessions of `holder` that are inside a transaction: its leader
   * lock and any claim it holds rows in. For a leader whose lease expired without it
   * letting go (a frozen process): its claimed rows are free at once instead of when its
   * connections time out. Needs the same role as the holder (or pg_signal_backend).
   * Returns how many sessions were ended.
   */
  async fence(holder: string): Promise<number> {
    const client = await this.coordination();
    const { rows } = await client.query<{ ended: string }>(
      `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) AS ended
         FROM pg_stat_activity
        WHERE datname = current_database() AND pid <> pg_backend_pid()
          AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
          AND (application_name = $1 OR application_name LIKE $2)`,
      [replicaApplicationName(holder), `${replicaApplicationName(holder)} %`],
    );
    return Number(rows[0]?.ended ?? 0);
  }

  /**
   * Registers this replica or refreshes its row; the leader also forgets replicas not
   * seen for ten minutes. A standby uses its coordination connection, the leader the pool.
   */
  async heartbeat(leading: boolean): Promise<void> {
    const { replicaId, host, pid, version } = this.identity;
    const upsert = `INSERT INTO ${this.replicas} (replica_id, host, pid, version) VALUES ($1, $2, $3, $4)
      ON CONFLICT (replica_id) DO UPDATE SET seen_at = now()`;
    if (!leading) {
      await (await this.coordination()).query(upsert, [replicaId, host, pid, version]);
      return;
    }
    await this.pool.query(upsert, [replicaId, host, pid, version]);
    await this.pool.query(`DELETE FROM ${this.replicas} WHERE seen_at < now() - $1 * interval '1 second'`, [FORGET_SECONDS]);
  }

  /** Removes this replica's row (a graceful stop). */
  async unregister(): Promise<void> {
    await this.pool.query(`DELETE FROM ${this.replicas} WHERE replica_id = $1`, [this.identity.replicaId]);
  }

  /** Closes the coordination connection (which also ends the lock's transaction). */
  async close(): Promise<void> {
    const client = this.client;
    this.client = undefined;
    this.held = undefined;
    if (client) await client.end().catch(() => undefined);
  }
}
