import type { Heartbeat, LeaderTerm, LockAttempt } from '../../src/domain/fleet';
import { createLogger } from '../../src/observability/logger';
import { FLEET_CHECK_GAP_MS, Leadership, LEASE_TTL_MS, standbyCheckDelayMs } from '../../src/relay/leadership';
import type { LeasePort } from '../../src/relay/ports';
import { LogCapture } from '../kit/log-capture';

/** A lease in memory, shared by the fake replicas of a test: the lock, the row, the sessions. */
class SharedLease {
  lockHolder: string | undefined;
  holder: string | null = null;
  epoch = 0;
  expiresAt = Number.NEGATIVE_INFINITY;
  readonly lost = new Map<string, () => void>();
  fenced: string[] = [];
  constructor(readonly now: () => number) {}

  /** The process of `replica` died: PostgreSQL ends its sessions, its lock is free. */
  kill(replica: string): void {
    if (this.lockHolder === replica) this.lockHolder = undefined;
    this.lost.get(replica)?.();
  }
}

class FakeLeasePort implements LeasePort {
  renewals = 0;
  /** While set, renewals never answer (a database that hangs). */
  hangRenewals = false;
  /** The process is gone: nothing it asks is ever answered. */
  dead = false;
  unregistered = false;
  constructor(
    private readonly shared: SharedLease,
    private readonly id: string,
  ) {}

  tryLock(): Promise<LockAttempt> {
    if (this.dead) return new Promise(() => undefined);
    const s = this.shared;
    if (s.lockHolder === undefined) {
      s.lockHolder = this.id;
      const lost = new Promise<void>((resolve) => s.lost.set(this.id, resolve));
      return Promise.resolve({ won: true, lost });
    }
    return Promise.resolve({
      won: false,
      lease: { holder: s.holder, epoch: String(s.epoch), expired: s.expiresAt < s.now() },
      standbys: 2,
      rank: 0,
    });
  }
  releaseLock(): Promise<void> {
    if (this.dead) return new Promise(() => undefined);
    if (this.shared.lockHolder === this.id) this.shared.lockHolder = undefined;
    return Promise.resolve();
  }
  claim(ttlMs: number): Promise<LeaderTerm> {
    const s = this.shared;
    const previous = s.holder;
    const previousLive = s.expiresAt > s.now();
    s.holder = this.id;
    s.epoch += 1;
    s.expiresAt = s.now() + ttlMs;
    return Promise.resolve({ epoch: String(s.epoch), previous, previousLive });
  }
  renew(epoch: string, ttlMs: number): Promise<Heartbeat> {
    this.renewals += 1;
    if (this.hangRenewals || this.dead) return new Promise(() => undefined);
    const s = this.shared;
    const outbox = { lagSeconds: null, dueMessageId: null };
    if (s.holder !== this.id || String(s.epoch) !== epoch) return Promise.resolve({ renewed: false, outbox });
    s.expiresAt = s.now() + ttlMs;
    return Promise.resolve({ renewed: true, outbox });
  }
  release(epoch: string): Promise<void> {
    const s = this.shared;
    if (s.holder === this.id && String(s.epoch) === epoch) {
      s.holder = null;
      s.expiresAt = Number.NEGATIVE_INFINITY;
    }
    return Promise.resolve();
  }
  fence(holder: string): Promise<number> {
    this.shared.fenced.push(holder);
    this.shared.kill(holder);
    return Promise.resolve(1);
  }
  heartbeat(): Promise<void> {
    return Promise.resolve();
  }
  unregister(): Promise<void> {
    this.unregistered = true;
    return Promise.resolve();
  }
  close(): Promise<void> {
    return Promise.resolve();
  }
}

describe('leadership: one replica leads, the others stand by', () => {
  beforeEach(() => jest.useFakeTimers());
  afterEach(() => jest.useRealTimers());

  function replica(shared: SharedLease, id: string) {
    const port = new FakeLeasePort(shared, id);
    const logs = new LogCapture();
    const events: string[] = [];
    let heartbeats = 0;
    const leadership = new Leadership(
      port,
      id,
      {
        onLead: (term) => events.push(`lead ${term.epoch}`),
        onFollow: (reason) => events.push(`follow: ${reason}`),
        onDatabase: () => undefined,
        onHeartbeat: () => {
          heartbeats += 1;
        },
      },
      createLogger({ level: 'debug', secrets: [], destination: logs.stream }),
    );
    return { port, leadership, events, logs, heartbeats: () => heartbeats };
  }

  test('the first replica to find the lock free leads; the others stand by; the leader keeps renewing', async () => {
    const shared = new SharedLease(() => Date.now());
    const a = replica(shared, 'a');
    const b = replica(shared, 'b');
    a.leadership.start();
    await jest.advanceTimersByTimeAsync(10);
    b.leadership.start();
    await jest.advanceTimersByTimeAsync(10_000);
    expect(a.leadership.leading).toBe(true);
    expect(b.leadership.leading).toBe(false);
    expect(a.events).toEqual(['lead 1']);
    expect(b.events).toEqual([]);
    expect(a.port.renewals).toBeGreaterThanOrEqual(9);
    expect(a.heartbeats()).toBe(a.port.renewals);
    expect(b.heartbeats()).toBe(0);
    await Promise.all([a.leadership.stop(), b.leadership.stop()]);
  });

  test("the leader's process dies: a standby leads at its next check, well under a second later", async () => {
    const shared = new SharedLease(() => Date.now());
    const a = replica(shared, 'a');
    const b = replica(shared, 'b');
    a.leadership.start();
    await jest.advanceTimersByTimeAsync(10);
    b.leadership.start();
    await jest.advanceTimersByTimeAsync(3_000);
    a.port.dead = true;
    shared.kill('a');
    await jest.advanceTimersByTimeAsync(1_000);
    expect(b.leadership.leading).toBe(true);
    expect(b.events).toEqual(['lead 2']);
    expect(shared.fenced).toEqual([]);
    await b.leadership.stop();
  });

  test('a leader whose lock connection ends while it lives stops claiming at once and competes again like a standby', async () => {
    const shared = new SharedLease(() => Date.now());
    const a = replica(shared, 'a');
    a.leadership.start();
    await jest.advanceTimersByTimeAsync(10);
    shared.kill('a');
    await jest.advanceTimersByTimeAsync(1_000);
    expect(a.leadership.leading).toBe(true);
    expect(a.events).toEqual(['lead 1', "follow: its leader lock's database connection ended", 'lead 2']);
    await a.leadership.stop();
  });

  test('a frozen leader (no renewals, lock kept): after its lease expires a standby ends its sessions and leads; the leader stopped claiming before', async () => {
    const shared = new SharedLease(() => Date.now());
    const a = replica(shared, 'a');
    const b = replica(shared, 'b');
    a.leadership.start();
    await jest.advanceTimersByTimeAsync(10);
    b.leadership.start();
    await jest.advanceTimersByTimeAsync(2_000);
    a.port.hangRenewals = true; // a frozen process renews nothing; its lock stays held
    await jest.advanceTimersByTimeAsync(LEASE_TTL_MS - 400);
    // By its own clock its lease may be over: it claims nothing any more.
    expect(a.leadership.leading).toBe(false);
    expect(b.leadership.leading).toBe(false);
    await jest.advanceTimersByTimeAsync(2_000);
    expect(shared.fenced).toEqual(['a']);
    expect(b.leadership.leading).toBe(true);
    expect(a.events).toEqual(['lead 1', "follow: its leader lock's database connection ended"]);
    expect(b.logs.has('the leader stopped renewing its lease (frozen?): ended its database sessions to take over')).toBe(true);
    await b.leadership.stop();
  });

  test('a renewal that finds a newer epoch steps down at once', async () => {
    const shared = new SharedLease(() => Date.now());
    const a = replica(shared, 'a');
    a.leadership.start();
    await jest.advanceTimersByTimeAsync(10);
    expect(a.leadership.leading).toBe(true);
    shared.epoch += 1; // another replica took over meanwhile
    shared.holder = 'z';
    await jest.advanceTimersByTimeAsync(1_100);
    expect(a.leadership.leading).toBe(false);
    expect(a.events).toEqual(['lead 1', 'follow: another replica took over the lease']);
    await a.leadership.stop();
  });

  test('stop() ends the lease and lets go of the lock, so a standby takes over at its next check', async () => {
    const shared = new SharedLease(() => Date.now());
    const a = replica(shared, 'a');
    const b = replica(shared, 'b');
    a.leadership.start();
    await jest.advanceTimersByTimeAsync(10);
    b.leadership.start();
    await jest.advanceTimersByTimeAsync(2_000);
    await a.leadership.stop();
    expect(a.port.unregistered).toBe(true);
    expect(shared.holder).toBeNull();
    await jest.advanceTimersByTimeAsync(1_000);
    expect(b.leadership.leading).toBe(true);
    expect(b.events).toEqual(['lead 2']);
    expect(shared.fenced).toEqual([]);
    await b.leadership.stop();
  });
});

describe('standbyCheckDelayMs: the standbys share out their checks', () => {
  test.each([1, 2, 3, 11, 29])(
    '%i standbys: together every 300 ms (1 s / standbys when fewer than 4), each no more often than once a second',
    (standbys) => {
      const period = Math.max(1_000, standbys * FLEET_CHECK_GAP_MS);
      const checks: number[] = [];
      for (let rank = 0; rank < standbys; rank += 1) {
        let now = 123_456 + rank * 7;
        for (let i = 0; i < 6; i += 1) {
          const delay = standbyCheckDelayMs(now, rank, standbys);
          expect(delay).toBeGreaterThanOrEqual(Math.min(100, period / 4));
          expect(delay).toBeLessThanOrEqual(period * 1.25 + 1);
          now += delay;
          checks.push(now);
        }
      }
      const window = checks.filter((t) => t > 130_000 && t < 130_000 + 3 * period).sort((x, y) => x - y);
      const gaps = window.slice(1).map((t, i) => t - (window[i] as number));
      expect(Math.max(...gaps)).toBeLessThanOrEqual(Math.max(FLEET_CHECK_GAP_MS, period / standbys) + 1);
    },
  );
});
