/**
 * The replicas' coordination as the relay sees it (relay/leadership.ts) and the store
 * provides it (outbox/fleet-store.ts).
 */

/** The lease as a standby read it. */
export interface LeaseView {
  /** The leading replica, or null while nobody leads. */
  readonly holder: string | null;
  readonly epoch: string;
  /** By the database's clock: the holder did not renew in time. */
  readonly expired: boolean;
}

/** What one standby check found. */
export type LockAttempt =
  | {
      readonly won: true;
      /** Resolves when the lock is lost: its connection ended (or was ended by a standby that found this replica frozen). */
      readonly lost: Promise<void>;
    }
  | {
      readonly won: false;
      readonly lease: LeaseView;
      /** Live standbys (every live replica but the leader), this one included. */
      readonly standbys: number;
      /** This standby's place among them (0-based, by replica id): spreads the fleet's checks evenly. */
      readonly rank: number;
    };

/** A lead taken: its epoch, and who led before. */
export interface LeaderTerm {
  readonly epoch: string;
  /** The previous holder of the lease, if any. */
  readonly previous: string | null;
  /** Whether the previous holder's lease was still running (its process died rather than let go or froze). */
  readonly previousLive: boolean;
}

/** The head of the outbox's due messages, as the leader's heartbeat reads it every second. */
export interface OutboxHead {
  /** Seconds since the oldest due message became due; null when none is due. */
  readonly lagSeconds: number | null;
  /** The message at the head of the due order (what a stall is stuck on); null when none is due. */
  readonly dueMessageId: string | null;
}

/** What one heartbeat of the leader found. */
export interface Heartbeat {
  /** False when another replica has taken over the lease since. */
  readonly renewed: boolean;
  readonly outbox: OutboxHead;
}
