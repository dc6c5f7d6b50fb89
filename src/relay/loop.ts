import type { BatchTracer } from '../domain/tracing';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import type { BackoffPolicy } from '../retry/backoff';
import { isTransientDatabaseError } from '../retry/classify';
import { abortableDelay, unrefSleep, Waiters } from '../util/delay';
import { runBatch, type BatchReport, type BatchSettings } from './batch';
import { BatchFault } from './faults';
import type { BrokerPort, Clock, HealthPort, QueuePort, WakePort } from './ports';
import { nextStep, type Streaks, type Turn } from './schedule';
import { Recovery } from './recovery';
import { StallWatch, type DueHead } from './stall';

/** Peek interval while messages flow (ms): bounds the latency of a commit to a few ms. */
const HOT_POLL_MS = 3;
/** How long after the last message found the relay keeps peeking fast (ms). */
const HOT_WINDOW_MS = 2_000;
/** How often the oldest due message is read for the stall check (ms). */
const STALL_CHECK_MS = 1_000;
/** How long abandoned batches get to roll back before their connections are dropped (ms). */
const ABANDON_GRACE_MS = 2_000;

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
  readonly log: Logger;
  readonly clock: Clock;
  /** Told about every committed batch (metrics and logs). */
  readonly onBatch: (report: BatchReport) => void;
  /** The reconnect backoff after an error (ms); jittered by default. */
  readonly errorBackoffMs?: (consecutiveErrors: number) => number;
  /** Spans of each batch and message (src/tracing/); absent when tracing is off. */
  readonly tracer?: BatchTracer;
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
  /** Woken when messages are found after a quiet spell (worker 0 starts peeking fast). */
  private readonly hotStarted = new Waiters();
  private readonly stall: StallWatch;
  private readonly recovery: Recovery;
  private stalledReason: string | undefined;
  private stallTimer: NodeJS.Timeout | undefined;

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
    this.stallTimer = setInterval(() => void this.checkStall(), STALL_CHECK_MS);
    this.stallTimer.unref();
    for (let worker = 0; worker < this.settings.concurrency; worker += 1) this.workers.push(this.work(worker));
  }

  private async work(worker: number): Promise<void> {
    const { broker, wake, health } = this.deps;
    const signal = this.controller.signal;
    let streaks: Streaks = { consecutiveErrors: 0, consecutiveHeld: 0 };
    while (!signal.aborted) {
      health.beat();
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

  private async batchTurn(worker: number, consecutiveErrors: number): Promise<Turn> {
    const { health, log } = this.deps;
    try {
      const report = await runBatch(this.deps, this.settings, this.abandon.signal, this.recovery.claimLimit);
      if (!health.databaseUp) log.info('database reachable again');
      health.setDatabaseUp(true);
      this.recovery.succeeded();
      this.track(report);
      this.observe(report);
      return { kind: 'batch', claimed: report.claimed, held: report.held, noProgress: report.noProgress, settled: report.settled };
    } catch (err: unknown) {
      if (err instanceof BatchFault) return await this.recovery.onFault(err);
      if (err instanceof OutboxError && err.code === 'BROKER_UNAVAILABLE') {
        log.debug({ worker }, 'broker unavailable; waiting');
      } else if (isTransientDatabaseError(err)) {
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
      // Worker 0 may have gone to its long idle sleep just before another worker found this.
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
    return { kind: 'broker_blocked' };
  }

  /** Reads the oldest due message for the stall check (every second while running). */
  private async checkStall(): Promise<void> {
    const { queue, health, broker } = this.deps;
    let head: DueHead | undefined;
    try {
      head = await queue.oldestDue();
    } catch {
      head = undefined; // the database's state is the batches' to report
    }
    this.stall.observe(head, health.databaseUp && broker.connected);
    this.reportStall();
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
   * The wake-up (measured by `npm run bench`; see the README's Performance section):
   * while messages have been flowing in the last HOT_WINDOW_MS, worker 0 peeks every
   * HOT_POLL_MS with one cheap indexed query, so a commit is published within a few
   * milliseconds without any cost to the producer's transaction; when the outbox has
   * been quiet it peeks every OUTBOX_POLL_INTERVAL_MS. A NOTIFY on '<schema>.messages'
   * (the optional trigger, or the producer's own) wakes every worker at once. The other
   * workers sleep until worker 0 finds a full batch.
   */
  private async waitForWork(worker: number, signal: AbortSignal, seen: number): Promise<void> {
    const { wake, queue, health, clock } = this.deps;
    while (!signal.aborted) {
      health.beat();
      const hot = worker === 0 && clock.now() - this.lastFoundAt < HOT_WINDOW_MS;
      if (hot || worker !== 0) await wake.wait(hot ? HOT_POLL_MS : this.settings.pollIntervalMs, signal, seen);
      else await this.idleWait(signal, seen);
      if (wake.generation !== seen || signal.aborted || worker !== 0) return;
      try {
        if (await queue.peek()) return;
      } catch {
        return; // the claim reports the database's state
      }
    }
  }

  /** Worker 0's idle sleep: a poll interval, cut short by a wake-up or by messages found by another worker. */
  private async idleWait(signal: AbortSignal, seen: number): Promise<void> {
    const hotNow = new AbortController();
    const unsubscribe = this.hotStarted.subscribe(() => hotNow.abort());
    try {
      await this.deps.wake.wait(this.settings.pollIntervalMs, AbortSignal.any([signal, hotNow.signal]), seen);
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
      clearInterval(this.stallTimer);
      const all = Promise.all(this.workers);
      const finishedInTime = await Promise.race([all.then(() => true), unrefSleep(this.settings.shutdownTimeoutMs).then(() => false)]);
      if (!finishedInTime) {
        this.deps.log.warn({ timeoutMs: this.settings.shutdownTimeoutMs }, 'shutdown timeout: abandoning the in-flight batch');
        this.abandon.abort();
        const rolledBack = await Promise.race([all.then(() => true), unrefSleep(ABANDON_GRACE_MS).then(() => false)]);
        // The database does not answer: drop the connections, PostgreSQL rolls back.
        if (!rolledBack) this.deps.queue.abandonClaims();
      }
      this.deps.health.setRunning(false);
    })();
    return this.stopping;
  }
}
