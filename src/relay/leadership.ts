import type { LeaderTerm, OutboxHead } from '../domain/fleet';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';
import { reconnectDelayMs } from '../util/backoff';
import { abortableDelay, Waiters } from '../util/delay';
import { deferred } from '../util/deferred';
import type { LeadershipPort, LeasePort } from './ports';

/** The leader renews its lease this often (ms): its heartbeat, which also reads the outbox's due head. */
export const LEASE_RENEW_MS = 1_000;
/**
 * A lease not renewed for this long has expired (ms): a frozen leader loses the lead after
 * about this, three missed renewals, plus one standby check. The trade-off: a leader whose
 * process stalls longer (a swapping node, a debugger) hands over, which costs nothing but
 * the handover; a shorter lease would hand over on ordinary pauses.
 */
export const LEASE_TTL_MS = 4_000;
/**
 * The leader stops claiming this long before its lease runs out by its own clock (ms),
 * measured from when it sent the renewal: it never claims on a lease a standby may
 * already consider expired.
 */
const LEASE_MARGIN_MS = 500;
/** Every standby checks the leader at least this often (ms). */
const MIN_STANDBY_PERIOD_MS = 1_000;
/** The standbys together check the leader about this often (ms), whatever their number. */
export const FLEET_CHECK_GAP_MS = 300;
/** A replica refreshes its row in relay_replicas this often (ms). */
const HEARTBEAT_MS = 15_000;
/** After ending a frozen leader's sessions, the next try for the lock comes this soon (ms). */
const AFTER_FENCE_MS = 50;

/**
 * When a standby checks the leader next (ms from `nowMs`): the standbys share out the
 * checks by rank, so that together they check every FLEET_CHECK_GAP_MS, each one every
 * `standbys` × that (never more often than MIN_STANDBY_PERIOD_MS). Phases come from the
 * wall clock, the same on every host within milliseconds.
 */
export function standbyCheckDelayMs(nowMs: number, rank: number, standbys: number): number {
  const count = Math.max(1, standbys);
  const period = Math.max(MIN_STANDBY_PERIOD_MS, count * FLEET_CHECK_GAP_MS);
  const slot = (rank % count) * (period / count);
  const delay = (((slot - nowMs) % period) + period) % period;
  return delay < Math.min(100, period / 4) ? delay + period : delay;
}

/** Told when this replica starts or stops leading, and how the database answers. */
export interface LeadershipEvents {
  onLead(term: LeaderTerm): void;
  onFollow(reason: string): void;
  onDatabase(up: boolean): void;
  /** Every heartbeat of the leader (once a second): the head of the outbox's due messages, read at `readAt` (epoch ms). */
  onHeartbeat(outbox: OutboxHead, readAt: number): void;
}

/**
 * Which replica of an outbox publishes: one leader at a time, the others standbys.
 *
 * How the lead moves, in short:
 * - The leader holds a transaction-level advisory lock in a transaction that stays open
 *   (idle, no snapshot) on one connection, and renews a lease row every second.
 * - Each standby checks, in turn with the others (together every 300 ms), whether that
 *   lock is free. It is free the moment the leader's process dies (PostgreSQL ends its
 *   sessions): the standby that finds it takes it and a new epoch of the lease.
 * - A frozen leader keeps its lock but stops renewing: once its lease has expired, the
 *   standby that sees it ends the frozen leader's sessions (`pg_terminate_backend`), which
 *   frees the lock and the rows of any claim it held, and takes the lead.
 * - A leader stops claiming as soon as its lease may have run out by its own clock, when
 *   a renewal finds a newer epoch, or when its lock's connection ends. One that wakes
 *   from a freeze has done all three. Per-key order never depends on the lease: claims
 *   are `FOR UPDATE SKIP LOCKED` and check each key's earlier messages, so two replicas
 *   that both believe they lead for a moment still never reorder a key.
 */
export class Leadership implements LeadershipPort {
  private term: (LeaderTerm & { deadline: number }) | undefined;
  private readonly changed = new Waiters();
  private readonly controller = new AbortController();
  private running: Promise<void> | undefined;
  /** Woken when the lock is lost, so the run loop reacts at once. */
  private readonly wake = new Waiters();
  private lastHeartbeat = Number.NEGATIVE_INFINITY;
  private fencedEpoch: string | undefined;
  private fenceProblem: string | undefined;
  private lastLeader: string | null | undefined;
  private stopping: Promise<void> | undefined;
  private readonly firstTurnDone = deferred();
  /** Resolves after the first check (won or not, or failed): whether this replica leads is known by then. */
  readonly firstTurn: Promise<void> = this.firstTurnDone.promise;

  constructor(
    private readonly port: LeasePort,
    private readonly replicaId: string,
    private readonly events: LeadershipEvents,
    private readonly log: Logger,
    /** Monotonic milliseconds (a freeze does not stop it). */
    private readonly monotonic: () => number = () => performance.now(),
    private readonly wallClock: () => number = Date.now,
  ) {}

  /** This replica leads and its lease is running by its own clock. */
  get leading(): boolean {
    return this.term !== undefined && this.monotonic() < this.term.deadline;
  }

  /** The current term while this replica leads. */
  get currentTerm(): LeaderTerm | undefined {
    return this.term;
  }

  waitUntilLeading(signal: AbortSignal, maxWaitMs: number): Promise<void> {
    if (this.leading) return Promise.resolve();
    return abortableDelay(maxWaitMs, signal, this.changed.subscribe);
  }

  /** Starts checking and renewing in the background (idempotent). */
  start(): void {
    this.running ??= this.run();
  }

  private async run(): Promise<void> {
    const signal = this.controller.signal;
    let failures = 0;
    while (!signal.aborted) {
      let delayMs: number;
      try {
        await this.beat();
        delayMs = this.term ? await this.renew() : await this.check();
        // A standby's checks are its only statements: one that succeeds says the database
        // answers, also after the loop saw it fail (a leader's last batch, cut off when it
        // woke from a freeze and found its sessions ended) and stopped claiming.
        if (failures > 0 || !this.term) this.events.onDatabase(true);
        failures = 0;
      } catch (err: unknown) {
        if (signal.aborted) break;
        failures += 1;
        if (failures === 1) this.log.warn({ err: errorMessage(err) }, 'database unavailable; retrying');
        this.events.onDatabase(false);
        if (this.term && this.monotonic() >= this.term.deadline) await this.stepDown('its lease ran out while the database did not answer');
        delayMs = Math.min(reconnectDelayMs(failures), LEASE_RENEW_MS);
      }
      this.firstTurnDone.resolve();
      await abortableDelay(delayMs, signal, this.wake.subscribe);
    }
  }

  private async beat(): Promise<void> {
    if (this.wallClock() - this.lastHeartbeat < HEARTBEAT_MS) return;
    await this.port.heartbeat(this.term !== undefined);
    this.lastHeartbeat = this.wallClock();
  }

  /** The leader's turn: renew, or step down when another replica has taken over. */
  private async renew(): Promise<number> {
    // The heartbeat: the lease, and the outbox's due head for the gauges, the stall check
    // and the wake-up of an idle relay, in one statement a second.
    const term = this.term;
    if (!term) return 0;
    const sentAt = this.monotonic();
    const readAt = this.wallClock();
    const heartbeat = await this.port.renew(term.epoch, LEASE_TTL_MS);
    if (this.term !== term) return LEASE_RENEW_MS;
    if (!heartbeat.renewed) {
      await this.stepDown('another replica took over the lease');
      return LEASE_RENEW_MS;
    }
    term.deadline = sentAt + LEASE_TTL_MS - LEASE_MARGIN_MS;
    this.events.onHeartbeat(heartbeat.outbox, readAt);
    return LEASE_RENEW_MS;
  }

  /** A standby's turn: take the lock if it is free, end a frozen leader's sessions, or wait for the next check. */
  private async check(): Promise<number> {
    const attempt = await this.port.tryLock();
    if (attempt.won) {
      const sentAt = this.monotonic();
      let term: LeaderTerm;
      try {
        term = await this.port.claim(LEASE_TTL_MS);
      } catch (err: unknown) {
        await this.port.releaseLock();
        throw err;
      }
      this.lead(term, sentAt, attempt.lost);
      return LEASE_RENEW_MS;
    }
    const { lease } = attempt;
    if (lease.holder !== this.lastLeader) {
      this.lastLeader = lease.holder;
      this.log.info(
        { leader: lease.holder, epoch: lease.epoch },
        lease.holder ? 'standby: another replica leads' : 'standby: no replica leads',
      );
    }
    if (lease.expired && lease.holder !== null && lease.holder !== this.replicaId) return this.fence(lease.holder, lease.epoch);
    return standbyCheckDelayMs(this.wallClock(), attempt.rank, attempt.standbys);
  }

  /** Ends the sessions of a leader whose lease expired while it kept its lock (a frozen process). */
  private async fence(holder: string, epoch: string): Promise<number> {
    try {
      const ended = await this.port.fence(holder);
      if (this.fencedEpoch !== epoch) {
        this.fencedEpoch = epoch;
        this.log.warn(
          { leader: holder, epoch, sessionsEnded: ended },
          'the leader stopped renewing its lease (frozen?): ended its database sessions to take over',
        );
      }
      this.fenceProblem = undefined;
      return AFTER_FENCE_MS;
    } catch (err: unknown) {
      const problem = errorMessage(err);
      if (problem !== this.fenceProblem) {
        this.fenceProblem = problem;
        this.log.warn(
          { leader: holder, err: problem },
          'cannot end the sessions of a leader whose lease expired: the replicas must share one database role (or hold pg_signal_backend)',
        );
      }
      return LEASE_RENEW_MS;
    }
  }

  private lead(term: LeaderTerm, sentAt: number, lost: Promise<void>): void {
    const current = { ...term, deadline: sentAt + LEASE_TTL_MS - LEASE_MARGIN_MS };
    this.term = current;
    this.lastLeader = this.replicaId;
    void lost.then(() => this.lockLost(current));
    this.log.info({ epoch: term.epoch, previous: term.previous ?? undefined }, 'leading: this replica publishes for the outbox');
    this.events.onLead(term);
    this.changed.wakeAll();
  }

  private async lockLost(term: LeaderTerm): Promise<void> {
    if (this.term !== term) return;
    await this.stepDown("its leader lock's database connection ended");
    this.wake.wakeAll();
  }

  private async stepDown(reason: string): Promise<void> {
    if (!this.term) return;
    this.term = undefined;
    this.log.warn({ reason }, 'no longer leading: standing by');
    await this.port.releaseLock();
    this.events.onFollow(reason);
    this.changed.wakeAll();
  }

  /**
   * Stops: a leader ends its lease and lets go of its lock, so a standby takes over at
   * its next check instead of after the lease; the replica's row is removed. Call it
   * after the loop has finished its batches. Idempotent.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort();
      this.wake.wakeAll();
      this.firstTurnDone.resolve();
      await this.running;
      const term = this.term;
      this.term = undefined;
      if (term) {
        await this.port.release(term.epoch).catch(() => undefined);
        await this.port.releaseLock();
        this.events.onFollow('stopping');
      }
      await this.port.unregister().catch(() => undefined);
      await this.port.close();
      this.changed.wakeAll();
    })();
    return this.stopping;
  }
}
