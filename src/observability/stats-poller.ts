import type { OutboxStats } from '../domain/message';
import { errorMessage } from '../errors';
import type { Logger } from './logger';
import type { RelayMetrics } from './metrics';

/** How often the lag is probed when a lag reader is given (ms): the lag gauge follows the table within this. */
export const LAG_REFRESH_MS = 1_000;

/**
 * The share of the time the counts may keep a database connection (and so one core of
 * the database) busy. After a count that took d ms the next one starts no sooner than
 * d × (1 / share − 1) later: a count that takes 0.65 s (1,000,000 pending rows whose pages must be read) is
 * repeated every 25 s at the earliest. Half the 5 % a background task may cost, leaving
 * room for the lag probe and for counts that take longer than the last one.
 */
export const COUNTS_TIME_SHARE = 0.025;

/** The two refreshes: the lag probe and the counts (pending, dead, expired, blocked keys). */
export type GaugePart = 'lag' | 'counts';

/**
 * Refreshes the table gauges in the background, so a scrape reads numbers from memory
 * and costs nothing however large the backlog. Two cadences:
 *
 * - the lag, from `readLag` (one index probe), every min(`intervalMs`, 1 s): the lag
 *   gauge follows the table within a second. Between two counts it also corrects the
 *   due gauge with what it proves: 0 when nothing is due, at least 1 when something is
 *   (a drained outbox reads due 0 and lag 0 within a second);
 * - the counts, from `readStats`, every `intervalMs`, but never more than
 *   COUNTS_TIME_SHARE of the time: the counts read every pending row's index entry, so
 *   under a large backlog they are refreshed less often (and
 *   `outbox_gauge_last_refresh_timestamp_seconds` says when they last were).
 *
 * Without `readLag`, the lag is refreshed with the counts. A failed refresh keeps the
 * last values, counts `outbox_gauge_refresh_failures_total{part}` and is logged at warn
 * once per streak of failures (and at info when that part refreshes again).
 */
export class StatsPoller {
  private timer: NodeJS.Timeout | undefined;
  private readonly inFlight: Partial<Record<GaugePart, Promise<void>>> = {};
  /** Failures in a row, per part (0: the last refresh worked). */
  private readonly failures: Record<GaugePart, number> = { lag: 0, counts: 0 };
  /** The counts do not start again before this (clock ms). */
  private countsNotBefore = 0;
  /** What the due gauge shows, and when the reading behind it started (clock ms). */
  private due = { value: 0, readAt: Number.NEGATIVE_INFINITY };
  /** The lag comes from `observeLag` (the leader's heartbeat): the counts leave the lag gauge alone. */
  private lagFromOutside = false;

  constructor(
    /** Reads the counts (and the lag, used only without `readLag`); may take long on a large backlog. */
    private readonly readStats: () => Promise<OutboxStats>,
    private readonly metrics: RelayMetrics,
    private readonly log: Logger,
    /** Period of the counts (ms), stretched while they are expensive; of the lag too when it is shorter than 1 s. */
    private readonly intervalMs: number,
    /** Reads the lag alone: seconds since the oldest due message became due, null when none is due. */
    private readonly readLag?: () => Promise<number | null>,
    /** Milliseconds since the epoch (tests pass their own). */
    private readonly clock: () => number = Date.now,
  ) {}

  /** Period of the timer: the lag's when it has a reader of its own, the counts' otherwise. */
  private get tickMs(): number {
    return this.readLag ? Math.min(this.intervalMs, LAG_REFRESH_MS) : this.intervalMs;
  }

  start(): void {
    if (this.timer) return;
    this.startDue();
    this.timer = setInterval(() => this.startDue(), this.tickMs);
    this.timer.unref();
  }

  /** Starts what is due and not running: the lag probe each tick, the counts when their time has come. */
  private startDue(): void {
    this.startLag();
    if (this.clock() >= this.countsNotBefore) this.startCounts();
  }

  /** One refresh of both parts now (sharing any already running); resolves when both are done. */
  async refresh(): Promise<void> {
    this.startLag();
    this.startCounts();
    await Promise.all([this.inFlight.lag, this.inFlight.counts]);
  }

  private startLag(): void {
    const readLag = this.readLag;
    if (readLag) this.inFlight.lag ??= this.run('lag', () => this.refreshLag(readLag));
  }

  private startCounts(): void {
    this.inFlight.counts ??= this.run('counts', () => this.refreshCounts());
  }

  private async refreshLag(readLag: () => Promise<number | null>): Promise<void> {
    const started = this.clock();
    this.showLag(await readLag(), started);
  }

  private showLag(lag: number | null, readAt: number): void {
    this.metrics.lagSeconds.set(lag ?? 0);
    // What the probe proves of the due count, until the next count: none, or at least one.
    if (this.due.readAt <= readAt) this.showDue(lag === null ? 0 : Math.max(this.due.value, 1), readAt);
  }

  /**
   * The lag as read elsewhere (the leader's heartbeat reads it every second with its
   * lease): shown as this poller's own lag probe would show it. From the first call on,
   * the counts never set the lag gauge.
   */
  observeLag(lag: number | null, readAt: number): void {
    this.lagFromOutside = true;
    this.showLag(lag, readAt);
    this.metrics.gaugeLastRefreshSeconds.set({ part: 'lag' }, this.clock() / 1000);
  }

  private async refreshCounts(): Promise<void> {
    const started = this.clock();
    try {
      const stats = await this.readStats();
      if (!this.readLag && !this.lagFromOutside) this.metrics.lagSeconds.set(stats.lagSeconds);
      // A probe that started since knows better whether anything is due at all.
      const probedSince = this.due.readAt >= started;
      this.showDue(probedSince ? (this.due.value === 0 ? 0 : Math.max(stats.due, 1)) : stats.due, Math.max(started, this.due.readAt));
      this.metrics.pendingMessages.set({ state: 'delayed' }, stats.delayed);
      this.metrics.deadMessages.set(stats.dead);
      this.metrics.expiredMessages.set(stats.expired);
      this.metrics.blockedKeys.set(stats.blockedKeys);
    } finally {
      const ended = this.clock();
      const spent = ended - started;
      this.countsNotBefore = Math.max(started + this.intervalMs, ended + spent * (1 / COUNTS_TIME_SHARE - 1));
    }
  }

  private showDue(value: number, readAt: number): void {
    this.due = { value, readAt };
    this.metrics.pendingMessages.set({ state: 'due' }, value);
  }

  /** Runs one part's refresh: records success or failure, never throws. */
  private async run(part: GaugePart, refresh: () => Promise<void>): Promise<void> {
    try {
      await refresh();
      if (this.failures[part] > 0) this.log.info({ part, failures: this.failures[part] }, 'outbox gauges refreshed again');
      this.failures[part] = 0;
      const at = this.clock() / 1000;
      this.metrics.gaugeLastRefreshSeconds.set({ part }, at);
      // Without a lag reader (and no lag from outside) the lag is refreshed with the counts.
      if (part === 'counts' && !this.readLag && !this.lagFromOutside) this.metrics.gaugeLastRefreshSeconds.set({ part: 'lag' }, at);
    } catch (err: unknown) {
      this.failures[part] += 1;
      this.metrics.gaugeRefreshFailuresTotal.inc({ part });
      // Once per streak: a database outage would otherwise log every second.
      if (this.failures[part] === 1) {
        this.log.warn({ part, err: errorMessage(err) }, 'cannot refresh outbox gauges; they keep their last values');
      } else {
        this.log.debug({ part, err: errorMessage(err), failures: this.failures[part] }, 'cannot refresh outbox gauges');
      }
    } finally {
      delete this.inFlight[part];
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await Promise.all([this.inFlight.lag, this.inFlight.counts]);
  }
}
