/**
 * A shared/exclusive gate: any number of shared holders at once, or one exclusive holder
 * alone. Waiting exclusive holders go before new shared ones, so they are not starved.
 */
export class SharedExclusive {
  private shared = 0;
  private exclusive = false;
  private readonly waiting: { exclusive: boolean; start: () => void }[] = [];

  async run<T>(exclusive: boolean, work: () => Promise<T>): Promise<T> {
    await this.acquire(exclusive);
    try {
      return await work();
    } finally {
      if (exclusive) this.exclusive = false;
      else this.shared -= 1;
      this.next();
    }
  }

  private acquire(exclusive: boolean): Promise<void> {
    if (this.canStart(exclusive) && this.waiting.length === 0) {
      this.take(exclusive);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.waiting.push({ exclusive, start: resolve }));
  }

  private canStart(exclusive: boolean): boolean {
    return exclusive ? !this.exclusive && this.shared === 0 : !this.exclusive;
  }

  private take(exclusive: boolean): void {
    if (exclusive) this.exclusive = true;
    else this.shared += 1;
  }

  private next(): void {
    while (this.waiting.length > 0) {
      const head = this.waiting[0] as { exclusive: boolean; start: () => void };
      if (!this.canStart(head.exclusive)) return;
      this.waiting.shift();
      this.take(head.exclusive);
      head.start();
      if (head.exclusive) return;
    }
  }
}
