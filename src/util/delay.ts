/** Waits `ms` without keeping the process alive for it (deadlines, grace periods). */
export function unrefSleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Subscribes a wake-up callback; returns the unsubscribe. */
export type Subscribe = (wake: () => void) => () => void;

/**
 * Waits `ms`, or less when `signal` aborts or `subscribe`'s source wakes the waiter;
 * never rejects, and leaves no timer or listener behind.
 */
export function abortableDelay(ms: number, signal: AbortSignal, subscribe?: Subscribe): Promise<void> {
  if (signal.aborted || ms <= 0) return Promise.resolve();
  return new Promise((resolve) => {
    let unsubscribe: () => void = () => undefined;
    const done = (): void => {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      unsubscribe();
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    if (subscribe) unsubscribe = subscribe(done);
  });
}

/** A set of waiters woken together (a notification, a connection coming up). */
export class Waiters {
  private readonly wakes = new Set<() => void>();

  readonly subscribe: Subscribe = (wake) => {
    this.wakes.add(wake);
    return () => this.wakes.delete(wake);
  };

  wakeAll(): void {
    for (const wake of [...this.wakes]) wake();
  }
}
