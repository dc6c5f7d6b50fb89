import type { Channel } from 'amqplib';
import { SHORT_STRING_MAX_BYTES } from './amqp-limits';

export type TargetKind = 'exchange' | 'queue';

/** Why a target cannot be used: it does not exist, or checking it failed (the error). */
export type TargetProblem = { readonly kind: 'missing' } | { readonly kind: 'error'; readonly error: unknown };

/**
 * Whether exchanges and queues exist, by passive declare on a channel of its own: a
 * missing target closes that channel (reopened on the next check), never the publish
 * channel. Shared by the relay and `outbox-relay check`.
 */
export class TopologyProbe {
  private channel: Promise<Channel> | undefined;
  /** The last check queued: checks run one after another. */
  private serial: Promise<void> = Promise.resolve();

  constructor(private readonly openChannel: () => Promise<Channel>) {}

  /**
   * Whether `kind` `name` exists. Checks run one at a time (a 404 closes the channel,
   * which must not fail a check of another name in flight on it), and a check whose
   * channel closed under it without a reply for this name is tried once more.
   */
  exists(kind: TargetKind, name: string): Promise<boolean> {
    const run = this.serial.then(() => this.check(kind, name, true));
    this.serial = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  private async check(kind: TargetKind, name: string, retry: boolean): Promise<boolean> {
    if (kind === 'exchange' && name === '') return true; // the default exchange
    // No exchange or queue has a longer name; amqplib would throw on it.
    if (Buffer.byteLength(name, 'utf8') > SHORT_STRING_MAX_BYTES) return false;
    this.channel ??= this.openChannel().then((channel) => {
      channel.on('error', () => undefined);
      channel.on('close', () => {
        this.channel = undefined;
      });
      return channel;
    });
    const channel = await this.channel;
    try {
      if (kind === 'exchange') await channel.checkExchange(name);
      else await channel.checkQueue(name);
      return true;
    } catch (err: unknown) {
      this.channel = undefined;
      const code = (err as { code?: unknown }).code;
      if (code === 404) return false;
      // 405 RESOURCE_LOCKED: an exclusive queue of another connection — it exists.
      if (code === 405) return true;
      // No reply code: the channel went away, not an answer about this name.
      if (typeof code !== 'number' && retry) return this.check(kind, name, false);
      throw err;
    }
  }

  /** Which of `names` do not exist. */
  async missing(kind: TargetKind, names: Iterable<string>): Promise<Set<string>> {
    const missing = new Set<string>();
    for (const name of new Set(names)) if (!(await this.exists(kind, name))) missing.add(name);
    return missing;
  }

  /** Forgets the channel (the connection it lived on is gone). */
  reset(): void {
    this.channel = undefined;
  }
}

/**
 * The topology probe of the relay: positive answers are cached for `ttlMs`, so a batch
 * costs no round trip for targets seen recently; `forget()` drops the cache (after the
 * broker said one is missing, or on reconnect).
 */
export class CachedTopology {
  /** `exchange:<name>` / `queue:<name>` → until when it is known to exist (epoch ms). */
  private readonly known = new Map<string, number>();

  constructor(
    private readonly probe: TopologyProbe,
    private readonly ttlMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /**
   * The names among `names` that cannot be used, each with its problem. A check that
   * throws (access refused, a channel error) is that name's problem only: the other
   * names are still checked.
   */
  async problems(kind: TargetKind, names: Iterable<string>): Promise<Map<string, TargetProblem>> {
    const problems = new Map<string, TargetProblem>();
    const now = this.now();
    for (const name of new Set(names)) {
      const key = `${kind}:${name}`;
      if ((this.known.get(key) ?? 0) > now) continue;
      try {
        if (await this.probe.exists(kind, name)) this.known.set(key, now + this.ttlMs);
        else problems.set(name, { kind: 'missing' });
      } catch (error: unknown) {
        problems.set(name, { kind: 'error', error });
      }
    }
    return problems;
  }

  forget(): void {
    this.known.clear();
    this.probe.reset();
  }
}
