import type { RelayMetrics } from './metrics';

/**
 * What /healthz and /readyz report. The relay's workers beat on every loop iteration;
 * the loop is "stuck" when no beat came within `stuckAfterMs` (longer than the longest
 * legitimate batch: publish timeout plus poll interval plus database time).
 */
export class RelayHealth {
  private database = false;
  private broker = false;
  private lastBeat = Date.now();
  private running = false;
  private leader = false;
  /** Why the relay is not ready although its dependencies are up (stalled, its writes fail), by kind. */
  private readonly problems = new Map<'stalled' | 'writes', string>();

  constructor(
    private readonly metrics: RelayMetrics,
    private readonly stuckAfterMs: number,
  ) {}

  beat(): void {
    this.lastBeat = Date.now();
  }

  setRunning(running: boolean): void {
    this.running = running;
    this.beat();
  }

  setDatabaseUp(up: boolean): void {
    this.database = up;
    this.metrics.up.set({ dependency: 'database' }, up ? 1 : 0);
  }

  setBrokerUp(up: boolean): void {
    this.broker = up;
    this.metrics.up.set({ dependency: 'broker' }, up ? 1 : 0);
  }

  /** Whether this replica leads (claims and publishes) or stands by. */
  setLeading(leading: boolean): void {
    this.leader = leading;
    this.metrics.leader.set(leading ? 1 : 0);
    this.metrics.showOutboxGauges(leading);
  }

  get leading(): boolean {
    return this.leader;
  }

  get databaseUp(): boolean {
    return this.database;
  }

  get brokerUp(): boolean {
    return this.broker;
  }

  /** Alive: the process answers and its loop is not stuck. */
  alive(): boolean {
    return !this.running || Date.now() - this.lastBeat < this.stuckAfterMs;
  }

  /**
   * Reports (a reason) or clears (undefined) a problem that makes the relay not ready
   * while its dependencies are up: `stalled` (nothing published or failed while due
   * messages wait) or `writes` (its own writes to the outbox table fail).
   */
  setProblem(kind: 'stalled' | 'writes', reason: string | undefined): void {
    if (reason === undefined) this.problems.delete(kind);
    else this.problems.set(kind, reason);
    if (kind === 'stalled') this.metrics.stalled.set(reason === undefined ? 0 : 1);
  }

  /** The current problems, one line each (empty when none). */
  problemLines(): string[] {
    return [...this.problems].map(([kind, reason]) => `${kind}: ${reason}`);
  }

  /** Ready: connected to both the database and the broker, running, and no problem reported. */
  ready(): boolean {
    return this.running && this.database && this.broker && this.problems.size === 0;
  }
}
