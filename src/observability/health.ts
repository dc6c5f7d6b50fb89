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

  /** Ready: connected to both the database and the broker, and running. */
  ready(): boolean {
    return this.running && this.database && this.broker;
  }
}
