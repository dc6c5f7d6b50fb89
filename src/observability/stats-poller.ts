import type { OutboxStats } from '../domain/message';
import { errorMessage } from '../errors';
import type { Logger } from './logger';
import type { RelayMetrics } from './metrics';

/**
 * Refreshes the table gauges (lag, pending, dead) in the background, so a scrape reads
 * numbers from memory and costs nothing however large the backlog: the counts come
 * from partial indexes and run at most once per `intervalMs`, not once per scrape.
 */
export class StatsPoller {
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;

  constructor(
    /** Reads the counts (from the outbox table's partial indexes). */
    private readonly readStats: () => Promise<OutboxStats>,
    private readonly metrics: RelayMetrics,
    private readonly log: Logger,
    private readonly intervalMs: number,
  ) {}

  start(): void {
    if (this.timer) return;
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.intervalMs);
    this.timer.unref();
  }

  /** One refresh; concurrent calls share it. */
  refresh(): Promise<void> {
    this.inFlight ??= (async () => {
      try {
        const stats = await this.readStats();
        this.metrics.lagSeconds.set(stats.lagSeconds);
        this.metrics.pendingMessages.set({ state: 'due' }, stats.due);
        this.metrics.pendingMessages.set({ state: 'delayed' }, stats.delayed);
        this.metrics.deadMessages.set(stats.dead);
        this.metrics.blockedKeys.set(stats.blockedKeys);
      } catch (err: unknown) {
        // The relay loop reports database outages; the gauges keep their last value.
        this.log.debug({ err: errorMessage(err) }, 'cannot refresh outbox gauges');
      } finally {
        this.inFlight = undefined;
      }
    })();
    return this.inFlight;
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.inFlight;
  }
}
