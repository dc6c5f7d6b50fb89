import type { Circus } from '@jest/types';
import { TestEnvironment } from 'jest-environment-node';
import { activeHandleObjects, countActiveHandles, describeNewSockets, handlesAbove, type HandleCounts } from './active-handles';
import { openResourcesOf } from './open-resources';
import { testAmqpUrl, testDatabaseUrl } from './services';

/** How long a test file's resources may take to finish closing after its last hook. */
const GRACE_MS = 2_000;
const POLL_MS = 20;

/**
 * The Jest environment of every test file: a file that leaves a relay, a pool, a
 * connection, a socket, a child process or a timer behind fails.
 *
 * Before the file loads, it counts the process's active handles. When the file's last
 * `afterAll` has run, it waits up to GRACE_MS for the count to come back down and for
 * the kit's own registry (open-resources.ts: relay processes, in-process relays, pools,
 * AMQP connections, proxies the kit opened) to empty, polling; whatever is still open
 * then is named in a failure of the file. It checks after the hooks, which is why it
 * is an environment and not a setup file: a setup file's `afterAll` runs before the
 * test file's own.
 */
export default class LeakCheckEnvironment extends TestEnvironment {
  private baseline: HandleCounts = new Map();
  private baselineHandles: ReadonlySet<object> = new Set();

  /** Timers the file's code started (through this context's setTimeout/setInterval) and has not cleared or seen fire. */
  private readonly liveTimers = new Set<NodeJS.Timeout>();

  override async setup(): Promise<void> {
    await super.setup();
    this.baseline = countActiveHandles();
    this.baselineHandles = new Set(activeHandleObjects());
    this.trackTimers();
  }

  /**
   * Counting the process's timers against the baseline misses a leaked timer when a
   * timer of Jest's own that was running at setup has ended meanwhile (the counts then
   * cancel out). So the file's own timers are also followed one by one: the context's
   * setTimeout and setInterval record what they start, clearTimeout and clearInterval
   * (and a timeout firing) forget it.
   */
  private trackTimers(): void {
    const global = this.global as unknown as typeof globalThis;
    const live = this.liveTimers;
    const { setTimeout: startTimeout, setInterval: startInterval, clearTimeout: stopTimeout, clearInterval: stopInterval } = global;
    const tracked = <T extends typeof setTimeout | typeof setInterval>(start: T, once: boolean): T =>
      Object.assign((callback: (...args: unknown[]) => void, ms?: number, ...args: unknown[]) => {
        const timer: NodeJS.Timeout = (start as (cb: (...a: unknown[]) => void, ms?: number, ...rest: unknown[]) => NodeJS.Timeout)(
          (...fired: unknown[]) => {
            if (once) live.delete(timer);
            callback(...fired);
          },
          ms,
          ...args,
        );
        live.add(timer);
        return timer;
      }, start);
    const forget = (stop: (timer?: NodeJS.Timeout | string | number) => void) => (timer?: NodeJS.Timeout | string | number) => {
      if (timer !== undefined && typeof timer === 'object') live.delete(timer);
      stop(timer);
    };
    global.setTimeout = tracked(startTimeout, true);
    global.setInterval = tracked(startInterval, false);
    global.clearTimeout = forget(stopTimeout as (timer?: NodeJS.Timeout | string | number) => void);
    global.clearInterval = forget(stopInterval as (timer?: NodeJS.Timeout | string | number) => void);
  }

  /** The file's timers still keeping the process alive. */
  private liveTimerCount(): number {
    let n = 0;
    for (const timer of this.liveTimers) {
      if ((timer as unknown as { _destroyed?: boolean })._destroyed === true) this.liveTimers.delete(timer);
      else if (timer.hasRef()) n += 1;
    }
    return n;
  }

  async handleTestEvent(event: Circus.Event, state: Circus.State): Promise<void> {
    if (event.name !== 'run_finish') return;
    const leaks = await this.leaksAfterGrace();
    if (leaks.length === 0) return;
    const error = new Error(
      `this test file left resources open (still open ${GRACE_MS} ms after its last afterAll):\n  ${leaks.join('\n  ')}\n` +
        'Stop or close them in afterEach/afterAll (fx.close(), fx.stopRelays(), pool.end(), broker.close(), proxy.close(), clearTimeout).',
    );
    // The message says it all; a stack would only point into this environment.
    error.stack = `${error.name}: ${error.message}`;
    state.unhandledErrors.push(error);
  }

  private leaks(): string[] {
    const kit = openResourcesOf(this.global).map((r) => `${r.kind}: ${r.detail}`);
    const counts = new Map(countActiveHandles());
    // At least the file's own live timers, whatever the process-wide count says.
    const timers = Math.max((counts.get('Timeout') ?? 0) - (this.baseline.get('Timeout') ?? 0), this.liveTimerCount());
    counts.set('Timeout', (this.baseline.get('Timeout') ?? 0) + timers);
    const handles = handlesAbove(this.baseline, counts);
    if (handles.length === 0) return kit;
    const sockets = describeNewSockets(this.baselineHandles, activeHandleObjects(), knownServices());
    return [...kit, `active handles: ${handles.join(', ')}`, ...sockets.map((s) => `TCP socket ${s}`)];
  }

  private async leaksAfterGrace(): Promise<string[]> {
    const deadline = Date.now() + GRACE_MS;
    for (;;) {
      const leaks = this.leaks();
      if (leaks.length === 0 || Date.now() >= deadline) return leaks;
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }
}

/** The ports of the test services, to name the sockets connected to them. */
function knownServices(): ReadonlyMap<number, string> {
  const services = new Map<number, string>();
  const add = (url: string, fallback: number, name: string): void => {
    const port = Number(new URL(url).port || fallback);
    services.set(port, name);
  };
  add(testDatabaseUrl(), 5432, 'PostgreSQL');
  for (const url of testAmqpUrl().split(',')) add(url, 5672, 'RabbitMQ');
  return services;
}
