/** What the scheduler needs of a delivery. */
export interface Schedulable {
  /** Delivery order: deliveries wait, and run, in this order. */
  readonly seq: number;
  /** Its partition key under `ordered`; undefined: free. */
  readonly key: string | undefined;
  /** Not before this instant (epoch ms): a retry in place waits for it. */
  notBefore: number;
  /** Run in a batch of its own (a shared step of its last batch failed, the culprit not known). */
  alone: boolean;
  /** When it arrived (epoch ms): how long it has waited for a batch. */
  readonly arrivedAt: number;
}

export interface SchedulerOptions {
  readonly batchSize: number;
  readonly batchWaitMs: number;
  /** Batches at once (each holds a pool connection). */
  readonly concurrency: number;
  readonly ordered: boolean;
  /** Whether no more deliveries can arrive before one settles (the prefetch window is full). */
  windowFull(): boolean;
  /** Whether a delivery can still be settled (its channel is open); one that cannot is dropped. */
  isLive(item: Schedulable): boolean;
  /** Milliseconds since some epoch (Date.now). */
  now(): number;
}

/**
 * Which deliveries run together, and when. Deliveries wait in delivery order; a batch
 * takes its share of them (at most `batchSize`; see `form`) as soon as a connection is
 * free (at most `concurrency` batches run at once), so batches grow with the load by themselves:
 * an idle consumer runs each delivery at once, a busy one collects what arrived while
 * its connections were busy. `batchWaitMs` lets a batch that is not full wait for more,
 * only while another batch runs and more deliveries can still arrive.
 *
 * Under `ordered`, a key is owned by the batch running one of its messages: the key's
 * later messages wait until that batch is over, and join a batch only behind every
 * earlier message of their key (a delivery that waits — a retry in place, or one that
 * must run alone — holds its key's later messages back, and only those). Messages
 * without a key are never held.
 */
export class BatchScheduler<T extends Schedulable> {
  private pending: T[] = [];
  private readonly busyKeys = new Set<string>();
  private running = 0;
  private pausedUntil = 0;
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private soon = false;
  private stopped = false;

  constructor(
    private readonly options: SchedulerOptions,
    private readonly run: (batch: T[]) => Promise<void>,
    private readonly drop: (item: T) => void,
  ) {}

  /** Deliveries waiting (not in a running batch). */
  get waiting(): number {
    return this.pending.length;
  }

  /** Batches running now. */
  get active(): number {
    return this.running;
  }

  /** A delivery to run (again: in its place in delivery order). */
  add(item: T): void {
    if (this.stopped) {
      this.drop(item);
      return;
    }
    let index = this.pending.length;
    while (index > 0 && (this.pending[index - 1] as T).seq > item.seq) index -= 1;
    this.pending.splice(index, 0, item);
    this.scheduleSoon();
  }

  /** No batch starts for `ms` (the database is away); the deliveries keep their places. */
  pause(ms: number): void {
    this.pausedUntil = Math.max(this.pausedUntil, this.options.now() + ms);
    this.wakeAt(this.pausedUntil);
  }

  /** Stops starting batches; returns the deliveries waiting (to be returned to the queue). */
  stop(): T[] {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    return this.pending.splice(0);
  }

  /** Removes the deliveries that can no longer be settled (their channel closed). */
  prune(): void {
    const dead = this.pending.filter((item) => !this.options.isLive(item));
    if (dead.length === 0) return;
    this.pending = this.pending.filter((item) => this.options.isLive(item));
    for (const item of dead) this.drop(item);
  }

  /** Forms batches in the next turn, once every delivery of the current one has arrived. */
  private scheduleSoon(): void {
    if (this.soon) return;
    this.soon = true;
    setImmediate(() => {
      this.soon = false;
      this.schedule();
    });
  }

  private wakeAt(at: number): void {
    if (this.stopped || at >= this.timerAt) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(
      () => {
        this.timer = undefined;
        this.timerAt = Number.POSITIVE_INFINITY;
        this.schedule();
      },
      Math.max(0, at - this.options.now()),
    );
    this.timer.unref();
  }

  private schedule(): void {
    const { concurrency, batchSize, batchWaitMs } = this.options;
    this.prune();
    while (!this.stopped && this.running < concurrency) {
      const now = this.options.now();
      if (now < this.pausedUntil) return this.wakeAt(this.pausedUntil);
      const { batch, nextAt } = this.form(now);
      if (batch.length === 0) {
        if (nextAt !== undefined) this.wakeAt(nextAt);
        return;
      }
      if (batch.length < batchSize && batchWaitMs > 0 && this.running > 0 && !this.options.windowFull()) {
        const oldest = Math.min(...batch.map((item) => item.arrivedAt));
        if (now < oldest + batchWaitMs) return this.wakeAt(Math.min(oldest + batchWaitMs, nextAt ?? Number.POSITIVE_INFINITY));
      }
      this.start(batch);
    }
  }

  /**
   * The next batch (not yet taken), and when a waiting delivery becomes due. A batch
   * takes its share of what can run now: what the free connections could take, divided
   * among them (at most `batchSize`). The handlers of a batch run one after another, so
   * a batch that took everything would leave the other connections idle — with slow
   * handlers, or under `ordered` when one batch would hold every key.
   */
  private form(now: number): { batch: T[]; nextAt: number | undefined } {
    const { batchSize, ordered, concurrency } = this.options;
    const free = Math.max(1, concurrency - this.running);
    const eligible: T[] = [];
    const taken = new Set<string>();
    let nextAt: number | undefined;
    for (const item of this.pending) {
      if (eligible.length >= batchSize * free) break;
      const key = ordered ? item.key : undefined;
      if (key !== undefined && (taken.has(key) || this.busyKeys.has(key))) continue;
      const due = item.notBefore <= now;
      if (!due) nextAt = Math.min(nextAt ?? item.notBefore, item.notBefore);
      const fits = due && (!item.alone || eligible.length === 0);
      if (!fits) {
        if (key !== undefined) taken.add(key);
        continue;
      }
      eligible.push(item);
      if (item.alone) break;
    }
    return { batch: eligible.slice(0, Math.min(batchSize, Math.ceil(eligible.length / free))), nextAt };
  }

  private start(batch: T[]): void {
    const taken = new Set(batch);
    this.pending = this.pending.filter((item) => !taken.has(item));
    const keys = this.options.ordered ? [...new Set(batch.map((item) => item.key).filter((key) => key !== undefined))] : [];
    for (const key of keys) this.busyKeys.add(key);
    this.running += 1;
    // `run` settles every delivery itself and never rejects.
    void this.run(batch).finally(() => {
      this.running -= 1;
      for (const key of keys) this.busyKeys.delete(key);
      this.schedule();
    });
  }
}
