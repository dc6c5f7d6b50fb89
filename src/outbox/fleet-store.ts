import { escapeLiteral, type Client, type Pool } from 'pg';
import { ADVISORY_LOCK_NAMESPACE, qualified } from '../db/sql';
import type { Heartbeat, LeaderTerm, LockAttempt } from '../domain/fleet';
import { deferred } from '../util/deferred';
import { dueHeadsCte, HEAD_COLUMNS } from './due-head';

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
  private readonly messages: string;
  private readonly lockKey: string;
  /** The standby check (see `tryLock`): values of code, not of input, inlined as literals. */
  private readonly checkSql: string;
  private client: Client | undefined;
  private connecting: Promise<Client> | undefined;
  /** Set while the coordination connection holds the leader lock. */
  private leaderLock: { readonly lost: () => void } | undefined;

  constructor(
    private readonly pool: Pool,
    schema: string,
    private readonly identity: ReplicaIdentity,
    /** A new, unconnected client for the coordination connection. */
    private readonly newClient: () => Client,
  ) {
    this.lease = qualified(schema, 'relay_lease');
    this.replicas = qualified(schema, 'relay_replicas');
    this.messages = qualified(schema, 'messages');
    this.lockKey = `${ADVISORY_LOCK_NAMESPACE}, hashtext(${escapeLiteral(`lead:${schema}`)})`;
    const me = escapeLiteral(identity.replicaId);
    this.checkSql = `SELECT pg_try_advisory_xact_lock(${this.lockKey}) AS free, l.holder, l.epoch::text, l.expires_at < now() AS expired,
            count(r.replica_id) FILTER (WHERE r.replica_id IS DISTINCT FROM l.holder) AS standbys,
            count(r.replica_id) FILTER (WHERE r.replica_id IS DISTINCT FROM l.holder AND r.replica_id < ${me}) AS rank
       FROM ${this.lease} AS l
       LEFT JOIN ${this.replicas} AS r ON r.seen_at > now() - interval '${LIVE_SECONDS} seconds'
      GROUP BY l.holder, l.epoch, l.expires_at`;
  }

  private async coordination(): Promise<Client> {
    if (this.client) return this.client;
    this.connecting ??= (async () => {
      const client = this.newClient();
      const gone = (): void => {
        if (this.client === client) this.client = undefined;
        const leaderLock = this.leaderLock;
        this.leaderLock = undefined;
        leaderLock?.lost();
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
   * One standby check, one statement in a transaction of its own (the simple protocol,
   * no parameters: the cheapest round trip there is): whether the leader lock is free,
   * the lease, and the standbys' count and this one's rank. Only when the lock is free,
   * a second transaction takes it and stays open, holding it (no statement timeout, no
   * idle timeout).
   */
  async tryLock(): Promise<LockAttempt> {
    const client = await this.coordination();
    const { rows } = await client.query<{
      free: boolean;
      holder: string | null;
      epoch: string;
      expired: boolean;
      standbys: string;
      rank: string;
    }>(this.checkSql);
    const row = rows[0];
    if (row === undefined) throw new Error(`${this.lease} has no row: run outbox-relay migrate`);
    const notWon: LockAttempt = {
      won: false,
      lease: { holder: row.holder, epoch: row.epoch, expired: row.expired },
      standbys: Math.max(1, Number(row.standbys)),
      rank: Number(row.rank),
    };
    if (!row.free) return notWon;
    await client.query('BEGIN; SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL statement_timeout = 0');
    try {
      const { rows: lock } = await client.query<{ won: boolean }>(`SELECT pg_try_advisory_xact_lock(${this.lockKey}) AS won`);
      if (lock[0]?.won !== true) {
        await client.query('ROLLBACK');
        return notWon; // another standby was quicker
      }
    } catch (err: unknown) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    }
    const lost = deferred();
    this.leaderLock = { lost: () => lost.resolve() };
    return { won: true, lost: lost.promise };
  }

  /** Gives up the leader lock (ends its transaction). */
  async releaseLock(): Promise<void> {
    const client = this.client;
    this.leaderLock = undefined;
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

  /**
   * The leader's heartbeat, one statement a second: extends the lease of `epoch` (not
   * renewed: another replica has taken over since) and reads the head of the outbox's due
   * messages (the lag gauge, the stall check, the wake-up of an idle relay). The simple
   * protocol with values of code inlined: the cheapest round trip there is.
   */
  async renew(epoch: string, ttlMs: number): Promise<Heartbeat> {
    if (!/^\d+$/.test(epoch)) throw new Error(`not an epoch: ${epoch}`);
    const { rows } = await this.pool.query<{ renewed: boolean; lag_seconds: number | null; head_message_id: string | null }>(
      `WITH renewed AS (
         UPDATE ${this.lease} SET expires_at = now() + interval '${Math.round(ttlMs)} milliseconds'
          WHERE holder = ${escapeLiteral(this.identity.replicaId)} AND epoch = ${epoch} RETURNING 1),
       ${dueHeadsCte(this.messages)}
       SELECT EXISTS (SELECT 1 FROM renewed) AS renewed, ${HEAD_COLUMNS}`,
    );
    const row = rows[0];
    return {
      renewed: row?.renewed === true,
      outbox: { lagSeconds: row?.lag_seconds ?? null, dueMessageId: row?.head_message_id ?? null },
    };
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
    this.leaderLock = undefined;
    if (client) await client.end().catch(() => undefined);
  }
}

/** A replica as `outbox-relay status` shows it. */
export interface ReplicaView {
  readonly replicaId: string;
  readonly host: string;
  readonly pid: number;
  readonly version: string;
  readonly role: 'leader' | 'standby';
  readonly startedAt: string;
  readonly seenAt: string;
}

/** The replicas of an outbox and who leads, as `outbox-relay status` shows them. */
export interface FleetView {
  /** The leading replica while its lease runs, else null. */
  readonly leader: string | null;
  /** When the leader took the lead (ISO 8601), null without a leader. */
  readonly leadingSince: string | null;
  readonly epoch: string;
  /** Live replicas (seen within the last 45 s), the leader first. */
  readonly replicas: readonly ReplicaView[];
}

/** Reads the lease and the live replicas (two small tables; no lock). */
export async function readFleet(db: Pool, schema: string): Promise<FleetView> {
  const lease = qualified(schema, 'relay_lease');
  const replicas = qualified(schema, 'relay_replicas');
  const { rows } = await db.query<{
    holder: string | null;
    acquired_at: Date | null;
    epoch: string;
    replica_id: string | null;
    host: string | null;
    pid: number | null;
    version: string | null;
    started_at: Date | null;
    seen_at: Date | null;
  }>(
    `SELECT CASE WHEN l.expires_at > now() THEN l.holder END AS holder, CASE WHEN l.expires_at > now() THEN l.acquired_at END AS acquired_at,
            l.epoch::text AS epoch, r.replica_id, r.host, r.pid, r.version, r.started_at, r.seen_at
       FROM ${lease} AS l
       LEFT JOIN ${replicas} AS r ON r.seen_at > now() - $1 * interval '1 second'
      ORDER BY r.replica_id = l.holder AND l.expires_at > now() DESC, r.started_at`,
    [LIVE_SECONDS],
  );
  const first = rows[0];
  const leader = first?.holder ?? null;
  return {
    leader,
    leadingSince: first?.acquired_at?.toISOString() ?? null,
    epoch: first?.epoch ?? '0',
    replicas: rows
      .filter((r) => r.replica_id !== null)
      .map((r) => ({
        replicaId: r.replica_id as string,
        host: r.host ?? '',
        pid: r.pid ?? 0,
        version: r.version ?? '',
        role: r.replica_id === leader ? ('leader' as const) : ('standby' as const),
        startedAt: (r.started_at as Date).toISOString(),
        seenAt: (r.seen_at as Date).toISOString(),
      })),
  };
}
