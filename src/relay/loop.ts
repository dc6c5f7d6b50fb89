import type { BatchTracer } from '../domain/tracing';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import type { BackoffPolicy } from '../util/backoff';
import { isDatabaseAway } from '../util/outage';
import { TIMED_OUT, withDeadline } from '../util/deadline';
import { abortableDelay, Waiters } from '../util/delay';
import { runBatch, type BatchReport, type BatchSettings } from './batch';
import { BatchFault } from './faults';
import type { HeldDestinations } from './held-destinations';
import type { BrokerPort, Clock, HealthPort, LeadershipPort, QueuePort, WakePort } from './ports';
import { nextStep, type Streaks, type Turn } from './schedule';
import { Recovery } from './recovery';
import type { StageObserver } from './stage-timeline';
import { StallWatch, type DueHead } from './stall';

/** Peek interval while messages flow (ms): bounds the latency of a commit to a few ms. */
const HOT_POLL_MS = 3;
/** How long after the last message found the relay keeps peeking fast (ms). */
const HOT_WINDOW_MS = 2_000;
/** Peek interval after that, while the outbox was busy lately (ms); OUTBOX_POLL_INTERVAL_MS when shorter. */
const WARM_POLL_MS = 100;
/** How long after the last message found the relay keeps peeking every WARM_POLL_MS (ms). */
const WARM_WINDOW_MS = 15_000;
/**
 * At or above this OUTBOX_POLL_INTERVAL_MS (ms), a quiet relay does not peek at all: the
 * leader's heartbeat reads the outbox's due head every second and wakes the workers
 * when something is due (relay/leadership.ts).
 */
export const HEARTBEAT_POLL_MS = 1_000;
/** How long abandoned batches get to roll back before their connections are dropped (ms). */
const ABANDON_GRACE_MS = 2_000;
/**
 * An idle worker with nothing to peek looks up this often at most (ms), only to show it
 * is alive: a wake-up, the heartbeat finding work or the peeker leaving wakes it at once.
 */
const IDLE_WORKER_WAIT_MS = 10_000;
/** A standby's workers look up this often at most (ms): becoming the leader wakes them at once. */
const STANDBY_WAIT_MS = 5_000;

/** The settings the loop reads; a subset of `Config`. */
export interface LoopSettings extends BatchSettings {
  readonly pollIntervalMs: number;
  readonly shutdownTimeoutMs: number;
  /** Batches in flight at once per relay (the claim of the next overlaps the confirms of the last). */
  readonly concurrency: number;
  /** Due messages waiting this long without any published or failed is a stall (ms). */
  readonly stallTimeoutMs: number;
}

export interface LoopDeps {
  readonly queue: QueuePort;
  readonly broker: BrokerPort;
  readonly wake: WakePort;
  readonly backoff: BackoffPolicy;
  readonly health: HealthPort;
  /** Whether this replica leads (only the leader claims); absent: it always does (tests of the loop alone). */
  readonly leadership?: LeadershipPort;
  readonly log: Logger;
  readonly clock: Clock;
  /** The destinations this relay holds because the broker refused messages for them. */
  readonly holds: HeldDestinations;
  /** Told about every committed batch (metrics and logs). */
  readonly onBatch: (report: BatchReport) => void;
  /** The reconnect backoff after an error (ms); jittered by default. */
  readonly errorBackoffMs?: (consecutiveErrors: number) => number;
  /** Spans of each batch and message (src/tracing/); absent when tracing is off. */
  readonly tracer?: BatchTracer;
  /** Told each published message's stage times (OUTBOX_STAGE_TIMINGS); absent when off. */
  readonly stages?: StageObserver;
}

/**
 * The relay loop: `concurrency` workers, each claiming and publishing one batch at a
 * time (relay/batch.ts) and waiting as relay/schedule.ts says. Errors never escape:
 * they are logged, shown in /readyz, and backed off. Every sleep aborts on shutdown.
 */
export class RelayLoop {
  private readonly controller = new AbortController();
  /** Aborts the publish waits of in-flight batches when the shutdown timeout is up. */
  private readonly abandon = new AbortController();
  private workers: Promise<void>[] = [];
  private stopping: Promise<void> | undefined;
  /** When a claim last found messages (epoch ms): decides hot or idle peeking. */
  private lastFoundAt = 0;
  /** Woken when messages are found after a quiet spell (the peeker starts peeking fast). */
  private readonly hotStarted = new Waiters();
  /** The idle worker that peeks for work; the other idle workers sleep. */
  private peeker: number | undefined;
  /** Woken when the peeker leaves its duty (it goes to claim), so another idle worker takes it. */
  private readonly peekerLeft = new Waiters();
  private readonly stall: StallWatch;
  private readonly recovery: Recovery;
  private stalledReason: string | undefined;

  constructor(
    private readonly settings: LoopSettings,
    private readonly deps: LoopDeps,
  ) {
    this.stall = new StallWatch(settings.stallTimeoutMs, deps.clock, settings.pollIntervalMs);
    this.recovery = new Recovery(settings, deps, this.stall, (report) => this.observe(report));
  }

  /** Starts the workers. */
  start(): void {
    if (this.workers.length > 0 || this.stopping) return;
    this.deps.health.setRunning(true);
    for (let worker = 0; worker < this.settings.concurrency; worker += 1) this.workers.push(this.work(worker));
  }

  private async work(worker: number): Promise<void> {
    const { broker, wake, health } = this.deps;
    const signal = this.controller.signal;
    let streaks: Streaks = { consecutiveErrors: 0, consecutiveKeptBack: 0 };
    while (!signal.aborted) {
      health.beat();
      if (!this.leading) {
        // A standby: no claims, no peeks. Becoming the leader wakes it at once.
        await this.deps.leadership?.waitUntilLeading(signal, STANDBY_WAIT_MS);
        continue;
      }
      if (!broker.connected) {
        // Wake now and then while waiting: the loop is not stuck, /healthz stays 200.
        await broker.waitUntilConnected(signal, this.settings.pollIntervalMs);
        continue;
      }
      const seen = wake.generation;
      let turn: Turn;
      if (broker.blocked) turn = await this.blockedTurn();
      else if (this.recovery.writesFailing) turn = await this.recovery.probeTurn();
      else turn = await this.batchTurn(worker, streaks.consecutiveErrors);
      this.reportStall();
      const next = nextStep(turn, streaks, this.settings, this.deps.errorBackoffMs);
      streaks = next;
      if (next.wakeOthers) wake.trigger();
      if (next.idle) await this.waitForWork(worker, signal, seen);
      else if (next.sleep) await abortableDelay(next.delayMs, signal);
      else await wake.wait(next.delayMs, signal, seen);
    }
  }

  /** Whether this replica may claim now. */
  private get leading(): boolean {
    return this.deps.leadership?.leading ?? true;
  }

  private async batchTurn(worker: number, consecutiveErrors: number): Promise<Turn> {
    const { health, log } = this.deps;
    try {
      const report = await runBatch(this.deps, this.settings, this.abandon.signal, this.recovery.claimLimit);
      if (!health.databaseUp) log.info('database reachable again');
      health.setDatabaseUp(true);
      this.recovery.succeeded();
      this.track(report);
      this.observe(report);
      return {
        kind: 'batch',
        claimed: report.claimed,
        full: report.full,
        keptBack: report.keptBack,
        noProgress: report.noProgress,
        settled: report.settled,
      };
    } catch (err: unknown) {
      if (err instanceof BatchFault) return this.recovery.onFault(err);
      if (err instanceof OutboxError && err.code === 'BROKER_UNAVAILABLE') {
        log.debug({ worker }, 'broker unavailable; waiting');
      } else if (isDatabaseAway(err)) {
        if (health.databaseUp || consecutiveErrors === 0) log.warn({ err: errorMessage(err) }, 'database unavailable; retrying');
        health.setDatabaseUp(false);
      } else {
        log.error({ err: errorMessage(err) }, 'batch failed');
      }
      return { kind: 'error' };
    }
  }

  /** What a committed batch says about progress. */
  private track(report: BatchReport): void {
    if (report.claimed > 0) {
      const now = this.deps.clock.now();
      const wasHot = now - this.lastFoundAt < HOT_WINDOW_MS;
      this.lastFoundAt = now;
      // The peeker may have gone to its long idle sleep just before another worker found this.
      if (!wasHot) this.hotStarted.wakeAll();
    }
    if (report.claimed === 0) return;
    if (report.settled > 0) this.stall.progressed();
    else {
      this.stall.sawDue(
        report.noProgress
          ? 'the broker confirmed nothing (connection lost mid-batch)'
          : 'due messages wait for an earlier message of their key',
      );
    }
  }

  private observe(report: BatchReport): void {
    try {
      this.deps.onBatch(report);
    } catch (err: unknown) {
      this.deps.log.error({ err: errorMessage(err) }, 'cannot record the metrics of a committed batch');
    }
  }

  /** The broker blocks publishers: claim nothing, but know whether due messages wait. */
  private async blockedTurn(): Promise<Turn> {
    try {
      if (await this.deps.queue.peek()) this.stall.sawDue('the broker blocks publishers (a memory or disk alarm)');
    } catch {
      // The next batch reports the database's state.
    }
    return { kind: 'wait' };
  }

  /**
   * The head of the due messages, as the leader's heartbeat reads it every second
   * (undefined: nothing is due): feeds the stall check, and wakes idle workers when
   * something is due (a quiet relay does not peek by itself, see `peekUntilWork`) or when
   * a held destination's probe or release is. On a standby it clears any stall: the
   * leader watches the outbox.
   */
  observeDueHead(head: DueHead | undefined): void {
    const { health, broker, wake, holds, clock } = this.deps;
    if (!this.leading) {
      this.stall.observe(undefined, false);
      this.reportStall();
      return;
    }
    // A held destination's probe or release is due: run a batch even if no row is due yet.
    if (holds.tick(clock.now())) wake.trigger();
    this.stall.observe(head, health.databaseUp && broker.connected);
    this.reportStall();
    if (head !== undefined && this.peeker !== undefined) wake.trigger();
  }

  /** Shows a stall (or its end) in /readyz, the gauge and one log line. */
  private reportStall(): void {
    const reason = this.stall.stalledReason();
    if (reason === this.stalledReason || (reason !== undefined && this.stalledReason !== undefined)) {
      if (reason !== undefined) this.deps.health.setProblem('stalled', reason);
      return;
    }
    this.stalledReason = reason;
    this.deps.health.setProblem('stalled', reason);
    if (reason !== undefined) this.deps.log.error({ reason }, 'relay stalled');
    else this.deps.log.info('relay making progress again');
  }

  /**
   * The wake-up (measured by `npm run bench`; see docs/performance.md).
   * One idle worker at a time, the peeker, looks for work: while messages have been
   * flowing in the last HOT_WINDOW_MS it peeks every HOT_POLL_MS with one cheap indexed
   * query, so a commit is published within a few milliseconds without any cost to the
   * producer's transaction; when the outbox has been quiet it peeks every
   * OUTBOX_POLL_INTERVAL_MS. The other idle workers touch no database: they sleep until
   * the peeker finds work and, after a full batch, wakes them, until a NOTIFY on
   * '<schema>.messages' (the optional trigger, or the producer's own) wakes every worker,
   * or until the peeker goes to claim and one of them takes its place.
   */
  private async waitForWork(worker: number, signal: AbortSignal, seen: number): Promise<void> {
    const { wake, health } = this.deps;
    while (!signal.aborted) {
      health.beat();
      if (this.peeker === undefined) {
        this.peeker = worker;
        try {
          await this.peekUntilWork(signal, seen);
        } finally {
          this.peeker = undefined;
          this.peekerLeft.wakeAll();
        }
        return;
      }
      await this.sleepUnless(this.peekerLeft, IDLE_WORKER_WAIT_MS, signal, seen);
      if (wake.generation !== seen || !this.leading) return;
    }
  }

  /**
   * The peeker's duty: returns when work may be there (found, a wake-up) or when this
   * replica stops leading. Hot (messages found in the last HOT_WINDOW_MS): a peek every
   * HOT_POLL_MS. Warm (in the last WARM_WINDOW_MS): every WARM_POLL_MS. Quiet: every
   * OUTBOX_POLL_INTERVAL_MS, or, from HEARTBEAT_POLL_MS on, no peek at all: the leader's
   * heartbeat looks once a second (each wake-up of an idle process costs CPU).
   */
  private async peekUntilWork(signal: AbortSignal, seen: number): Promise<void> {
    const { wake, queue, health, clock } = this.deps;
    const { pollIntervalMs } = this.settings;
    while (!signal.aborted) {
      health.beat();
      const quietMs = clock.now() - this.lastFoundAt;
      if (quietMs < HOT_WINDOW_MS) await wake.wait(HOT_POLL_MS, signal, seen);
      else if (quietMs < WARM_WINDOW_MS) await this.sleepUnless(this.hotStarted, Math.min(WARM_POLL_MS, pollIntervalMs), signal, seen);
      else if (pollIntervalMs < HEARTBEAT_POLL_MS) await this.sleepUnless(this.hotStarted, pollIntervalMs, signal, seen);
      else {
        await this.sleepUnless(this.hotStarted, IDLE_WORKER_WAIT_MS, signal, seen);
        if (wake.generation !== seen || this.deps.clock.now() - this.lastFoundAt < WARM_WINDOW_MS) return;
        continue;
      }
      if (wake.generation !== seen || signal.aborted || !this.leading) return;
      try {
        if (await queue.peek()) return;
      } catch {
        return; // the claim reports the database's state
      }
    }
  }

  /** Sleeps up to `ms`, cut short by a wake-up, by `also`, or by the signal. */
  private async sleepUnless(also: Waiters, ms: number, signal: AbortSignal, seen: number): Promise<void> {
    const woken = new AbortController();
    const unsubscribe = also.subscribe(() => woken.abort());
    try {
      await this.deps.wake.wait(ms, AbortSignal.any([signal, woken.signal]), seen);
    } finally {
      unsubscribe();
    }
  }

  /**
   * Stops claiming, lets in-flight batches finish within the shutdown timeout, then
   * abandons them (unconfirmed messages stay pending; their locks are released).
   * Idempotent: every caller gets the same promise.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.controller.abort();
      const all = Promise.all(this.workers);
      const finishedInTime = (await withDeadline(all, this.settings.shutdownTimeoutMs)) !== TIMED_OUT;
      if (!finishedInTime) {
        this.deps.log.warn({ timeoutMs: this.settings.shutdownTimeoutMs }, 'shutdown timeout: abandoning the in-flight batch');
        this.abandon.abort();
        const rolledBack = (await withDeadline(all, ABANDON_GRACE_MS)) !== TIMED_OUT;
        // The database does not answer: drop the connections, PostgreSQL rolls back.
        if (!rolledBack) this.deps.queue.abandonClaims();
      }
      this.deps.health.setRunning(false);
    })();
    return this.stopping;
  }
}
