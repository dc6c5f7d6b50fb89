import type { FailedAttempt, HoldOrder, KeyRow, KeyWindow, OutboxMessage, ParkOrder, ReleaseOrder } from '../domain/message';
import type { Heartbeat, LeaderTerm, LockAttempt } from '../domain/fleet';
import type { Preflight, PublishOutcome } from '../domain/outcome';

/**
 * The narrow views of the outside world that the loop and the batch work against.
 * The composition root (app.ts) passes the real adapters (outbox/message-queue.ts,
 * broker/relay-broker.ts, outbox/wakeup.ts); unit tests pass fakes.
 */

/** What one claim transaction can do with the rows it locked. */
export interface ClaimPort {
  /** Locks and returns up to `limit` due messages of at most `maxBytes` together (`claimBytes`; the first whatever its size). */
  claim(limit: number, maxBytes: number): Promise<OutboxMessage[]>;
  /**
   * Locks and returns those of `ids` that are due and not locked elsewhere (the blockers of
   * held rows), oldest first, at most `maxBytes` together (the first whatever its size).
   */
  claimIds(ids: readonly string[], maxBytes: number): Promise<OutboxMessage[]>;
  keyRows(keys: readonly KeyWindow[], deadHoldsKey: boolean): Promise<KeyRow[]>;
  markPublished(ids: readonly string[], deleteNow: boolean): Promise<void>;
  markFailed(failures: readonly FailedAttempt[]): Promise<void>;
  /** Marks messages expired (never sent; no longer pending). */
  markExpired(ids: readonly string[]): Promise<void>;
  park(orders: readonly ParkOrder[]): Promise<void>;
  /** Parks messages that wait for a held destination, with its note as their last_error (no attempt counted). */
  hold(orders: readonly HoldOrder[]): Promise<void>;
  /** Makes rows parked for a held destination due now (`order` says which, and how many at most); returns how many. */
  release(order: ReleaseOrder): Promise<number>;
}

/** The queue of messages in the outbox table. */
export interface QueuePort {
  /** Whether any message is due (cheap; no lock). */
  peek(): Promise<boolean>;
  /** Runs `work` in one claim transaction: committed when it resolves, rolled back when it throws. */
  withClaim<T>(work: (claim: ClaimPort) => Promise<T>): Promise<T>;
  /** Drops open claims whose database does not answer (shutdown). */
  abandonClaims(): void;
  /** Tries the statements a batch writes with, changing nothing; throws what they would throw. */
  probeWrites(deleteNow: boolean): Promise<void>;
}

/** The broker, as far as publishing goes. */
export interface BrokerPort {
  readonly connected: boolean;
  /** True while the broker refuses publishes (a resource alarm). */
  readonly blocked: boolean;
  /** Whether the broker was blocked at any time since `epochMs`. */
  blockedAtAnyTimeSince(epochMs: number): boolean;
  /** Resolves once connected, after `maxWaitMs`, or when `signal` aborts. */
  waitUntilConnected(signal: AbortSignal, maxWaitMs: number): Promise<void>;
  /** What is known against each message before it is sent (missing targets, learned limits). */
  preflight(messages: readonly OutboxMessage[]): Promise<Preflight[]>;
  /**
   * Publishes pipelined with confirms; one outcome per message, never throws for a message's
   * sake. `onSettled` is told of each message as its confirm (or its failure) comes in.
   */
  publish(messages: readonly OutboxMessage[], options: PublishBatchOptions): Promise<PublishOutcome[]>;
}

/** How a batch is published. */
export interface PublishBatchOptions {
  readonly timeoutMs: number;
  readonly signal: AbortSignal;
  /** Called once per message as its outcome is known (tracing ends the message's span there). */
  readonly onSettled?: (message: OutboxMessage) => void;
  /** Called once per message right after its publish was written (handed to the socket). */
  readonly onWritten?: (message: OutboxMessage) => void;
}

/** Wakes sleeping workers when new messages may be due (a NOTIFY, another worker's backlog). */
export interface WakePort {
  /** Increases on every wake-up; a worker compares it to skip a sleep. */
  readonly generation: number;
  trigger(): void;
  /** Sleeps up to `ms`; returns early on a wake-up, on abort, or at once when one came since `seenGeneration`. */
  wait(ms: number, signal: AbortSignal, seenGeneration: number): Promise<void>;
}

/** Time, for the loop's decisions. */
export interface Clock {
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** What the loop reports to /healthz and /readyz. */
export interface HealthPort {
  readonly databaseUp: boolean;
  /** The loop is alive (called on every turn). */
  beat(): void;
  setRunning(running: boolean): void;
  setDatabaseUp(up: boolean): void;
  /** Reports (a reason) or clears (undefined) why the relay is not ready while its dependencies are up. */
  setProblem(kind: 'stalled' | 'writes', reason: string | undefined): void;
}

/** The replicas' coordination in the database (outbox/fleet-store.ts); see relay/leadership.ts. */
export interface LeasePort {
  /** Tries the leader lock; when won it stays held until `releaseLock` or until its connection is lost. */
  tryLock(): Promise<LockAttempt>;
  releaseLock(): Promise<void>;
  /** Records this replica, holder of the lock, as the leader (a new epoch). */
  claim(ttlMs: number): Promise<LeaderTerm>;
  /** The leader's heartbeat: extends the lease of `epoch` (not renewed: another replica took over) and reads the outbox's due head. */
  renew(epoch: string, ttlMs: number): Promise<Heartbeat>;
  /** Ends the lease of `epoch` (graceful stop). */
  release(epoch: string): Promise<void>;
  /** Ends the sessions of a leader whose lease expired (it froze); returns how many. */
  fence(holder: string): Promise<number>;
  /** Registers this replica or refreshes its row. */
  heartbeat(leading: boolean): Promise<void>;
  unregister(): Promise<void>;
  close(): Promise<void>;
}

/** Whether this replica may claim now (it leads and its lease is running), as the loop asks it. */
export interface LeadershipPort {
  readonly leading: boolean;
  /** Resolves once this replica leads, after `maxWaitMs`, or when `signal` aborts. */
  waitUntilLeading(signal: AbortSignal, maxWaitMs: number): Promise<void>;
}
