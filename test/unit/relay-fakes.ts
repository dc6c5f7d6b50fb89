import type { FailedAttempt, HoldOrder, KeyRow, KeyWindow, OutboxMessage, ParkOrder, ReleaseOrder } from '../../src/domain/message';
import { HOLD_SPREAD_MS } from '../../src/domain/held-note';
import type { Preflight, PublishOutcome } from '../../src/domain/outcome';
import type { BrokerPort, ClaimPort, HealthPort, QueuePort, WakePort } from '../../src/relay/ports';
import { abortableDelay, Waiters } from '../../src/util/delay';

/** Fakes of the loop's ports, for fast unit tests of the loop and the batch. */

interface Row {
  message: OutboxMessage;
  published: boolean;
  dead: boolean;
  expired: boolean;
  attempts: number;
  dueAt: number;
  locked: boolean;
  errors: string[];
  /** The held-destination note of a row that waits for one (its last_error). */
  note: string | undefined;
}

/** The first of `rows` whatever its size, and the next ones while their bytes (`claimBytes`) add up to at most `maxBytes`, as the claim takes them. */
function withinBytes(rows: readonly Row[], maxBytes: number): Row[] {
  const taken: Row[] = [];
  let total = 0;
  for (const row of rows) {
    total += row.message.claimBytes ?? row.message.content.length;
    if (taken.length > 0 && total > maxBytes) break;
    taken.push(row);
  }
  return taken;
}

/** An outbox table in memory with claim transactions (locks released at commit or rollback). */
export class FakeQueue implements QueuePort {
  readonly rows: Row[] = [];
  /** The messages each claim transaction locked, in the order it locked them. */
  readonly batches: OutboxMessage[][] = [];
  claims = 0;
  abandoned = 0;
  /** Makes every claim throw this (a database outage) while set. */
  failWith: Error | undefined;
  /** Makes marking published throw this (e.g. a missing privilege) while set. */
  failWritesWith: Error | undefined;

  add(...messages: OutboxMessage[]): void {
    for (const message of messages)
      this.rows.push({
        message,
        published: false,
        dead: false,
        expired: false,
        attempts: 0,
        dueAt: 0,
        locked: false,
        errors: [],
        note: undefined,
      });
  }

  pending(): Row[] {
    return this.rows.filter((r) => !r.published && !r.dead && !r.expired);
  }

  /** Rows made due by `release` (each release's count). */
  readonly releases: number[] = [];

  published(): string[] {
    return this.rows.filter((r) => r.published).map((r) => r.message.id);
  }

  oldestDue(): Promise<{ id: string; messageId: string } | undefined> {
    const head = this.pending().find((r) => r.dueAt <= Date.now());
    return Promise.resolve(head && { id: head.message.id, messageId: head.message.messageId });
  }

  peek(): Promise<boolean> {
    return Promise.resolve(this.pending().some((r) => r.dueAt <= Date.now() && !r.locked));
  }

  async withClaim<T>(work: (claim: ClaimPort) => Promise<T>): Promise<T> {
    this.claims += 1;
    if (this.failWith) throw this.failWith;
    const locked: Row[] = [];
    const writes: (() => void)[] = [];
    const byId = (id: string): Row => this.rows.find((r) => r.message.id === id) as Row;
    const claim: ClaimPort = {
      claim: (limit, maxBytes) => {
        const due = withinBytes(
          this.pending()
            .filter((r) => !r.locked && r.dueAt <= Date.now())
            .slice(0, limit),
          maxBytes,
        );
        for (const r of due) r.locked = true;
        locked.push(...due);
        return Promise.resolve(due.map((r) => ({ ...r.message, attempts: r.attempts })));
      },
      claimIds: (ids: readonly string[], maxBytes) => {
        const due = withinBytes(
          this.pending()
            .filter((r) => ids.includes(r.message.id) && !r.locked && r.dueAt <= Date.now())
            .sort((a, b) => Number(a.message.id) - Number(b.message.id)),
          maxBytes,
        );
        for (const r of due) r.locked = true;
        locked.push(...due);
        return Promise.resolve(due.map((r) => ({ ...r.message, attempts: r.attempts })));
      },
      keyRows: (keys: readonly KeyWindow[]) =>
        Promise.resolve(
          keys.flatMap((k): KeyRow[] =>
            this.rows
              .filter(
                (r) => r.message.partitionKey === k.key && !r.published && !r.dead && !r.expired && Number(r.message.id) <= Number(k.maxId),
              )
              .map((r) => ({ key: k.key, id: r.message.id, waiting: r.dueAt > Date.now(), due: new Date(r.dueAt), dead: r.dead })),
          ),
        ),
      markPublished: (ids: readonly string[]) => {
        if (this.failWritesWith) return Promise.reject(this.failWritesWith);
        writes.push(() => ids.forEach((id) => (byId(id).published = true)));
        return Promise.resolve();
      },
      markExpired: (ids: readonly string[]) => {
        writes.push(() => ids.forEach((id) => (byId(id).expired = true)));
        return Promise.resolve();
      },
      markFailed: (failures: readonly FailedAttempt[]) => {
        writes.push(() =>
          failures.forEach((f) => {
            const row = byId(f.id);
            row.attempts += 1;
            row.errors.push(f.error);
            row.dead = f.dead;
            row.dueAt = Date.now() + f.retryInMs;
          }),
        );
        return Promise.resolve();
      },
      park: (orders: readonly ParkOrder[]) => {
        writes.push(() =>
          orders.forEach((o) => {
            const row = byId(o.id);
            row.dueAt = 'forever' in o.until ? Infinity : 'at' in o.until ? o.until.at.getTime() : Date.now() + o.until.inMs;
          }),
        );
        return Promise.resolve();
      },
      hold: (orders: readonly HoldOrder[]) => {
        writes.push(() =>
          orders.forEach((o) => {
            const row = byId(o.id);
            const spreadMs =
              o.spreadFromId === undefined ? 0 : Math.min(Math.max(Number(o.id) - Number(o.spreadFromId), 0) / 1_000, HOLD_SPREAD_MS);
            row.dueAt = Math.min(o.at.getTime() + spreadMs, row.message.expiresAt ?? Infinity);
            row.note = o.note;
          }),
        );
        return Promise.resolve();
      },
      release: (order: ReleaseOrder) => {
        const now = Date.now();
        const rows = this.pending()
          .filter((r) => !r.locked && r.note === order.note && r.dueAt > now && r.dueAt <= order.upTo.getTime())
          .sort((a, b) => a.dueAt - b.dueAt)
          .slice(0, order.limit);
        // Within the claim transaction: the claim that follows sees them.
        for (const r of rows) r.dueAt = now;
        this.releases.push(rows.length);
        return Promise.resolve(rows.length);
      },
    };
    try {
      const result = await work(claim);
      for (const write of writes) write();
      return result;
    } finally {
      if (locked.length > 0) this.batches.push(locked.map((r) => r.message));
      for (const r of locked) r.locked = false;
    }
  }

  abandonClaims(): void {
    this.abandoned += 1;
  }

  /** Makes the write probe throw this while set. */
  probeFailsWith: Error | undefined;
  probes = 0;

  probeWrites(): Promise<void> {
    this.probes += 1;
    return this.probeFailsWith ? Promise.reject(this.probeFailsWith) : Promise.resolve();
  }
}

/** A broker that answers each publish with `decide` (confirm by default), after `confirmDelayMs`. */
export class FakeBroker implements BrokerPort {
  connected = true;
  blocked = false;
  blockedSince: number | undefined;
  readonly sent: OutboxMessage[] = [];
  confirmDelayMs = 0;
  decide: (message: OutboxMessage) => PublishOutcome = () => ({ kind: 'confirmed' });
  preflightOf: (message: OutboxMessage) => Preflight = () => ({ kind: 'send' });
  private readonly connectedWaiters = new Waiters();

  setConnected(connected: boolean): void {
    this.connected = connected;
    if (connected) this.connectedWaiters.wakeAll();
  }

  blockedAtAnyTimeSince(epochMs: number): boolean {
    return this.blocked || (this.blockedSince !== undefined && this.blockedSince >= epochMs);
  }

  waitUntilConnected(signal: AbortSignal, maxWaitMs: number): Promise<void> {
    return this.connected ? Promise.resolve() : abortableDelay(maxWaitMs, signal, this.connectedWaiters.subscribe);
  }

  preflight(messages: readonly OutboxMessage[]): Promise<Preflight[]> {
    return Promise.resolve(messages.map((m) => this.preflightOf(m)));
  }

  /** Makes publishing a batch that contains this message throw (as a client library that cannot encode it may). */
  throwFor: string | undefined;

  async publish(messages: readonly OutboxMessage[], options: { timeoutMs: number; signal: AbortSignal }): Promise<PublishOutcome[]> {
    if (messages.some((m) => m.messageId === this.throwFor))
      throw new TypeError("Field 'exchange' is the wrong type; must be a string (up to 255 chars)");
    this.sent.push(...messages);
    if (this.confirmDelayMs > 0) await abortableDelay(this.confirmDelayMs, options.signal);
    if (options.signal.aborted) return messages.map(() => ({ kind: 'unconfirmed', error: 'shutting down' }));
    return messages.map((m) => this.decide(m));
  }
}

/** A wake source without a database: generation bumps on trigger. */
export class FakeWake implements WakePort {
  generation = 0;
  private readonly waiters = new Waiters();

  trigger(): void {
    this.generation += 1;
    this.waiters.wakeAll();
  }

  wait(ms: number, signal: AbortSignal, seenGeneration: number): Promise<void> {
    if (this.generation !== seenGeneration) return Promise.resolve();
    return abortableDelay(ms, signal, this.waiters.subscribe);
  }
}

export class FakeHealth implements HealthPort {
  databaseUp = false;
  running = false;
  beats = 0;

  beat(): void {
    this.beats += 1;
  }

  setRunning(running: boolean): void {
    this.running = running;
  }

  setDatabaseUp(up: boolean): void {
    this.databaseUp = up;
  }

  readonly problems = new Map<string, string>();

  setProblem(kind: 'stalled' | 'writes', reason: string | undefined): void {
    if (reason === undefined) this.problems.delete(kind);
    else this.problems.set(kind, reason);
  }
}
