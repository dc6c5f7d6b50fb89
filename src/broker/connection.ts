import { connect, type Channel, type ChannelModel, type ConfirmChannel, type Message } from 'amqplib';
import { redactUrl } from '../config/redact';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { reconnectDelayMs } from '../retry/backoff';
import { abortableDelay, unrefSleep } from '../util/delay';

/** What a returned (unroutable) message came back with. */
export interface ReturnInfo {
  readonly replyCode: number;
  readonly replyText: string;
}

/**
 * One confirm channel and what it has heard: returns (keyed by message id, as a
 * basic.return always precedes the confirm of the same message) and why it closed.
 */
export class PublishChannel {
  readonly returned = new Map<string, ReturnInfo>();
  closed = false;
  /** The server's reason when it closed the channel (e.g. 404 NOT_FOUND - no exchange 'x'). */
  closeReason: string | undefined;
  private readonly closeWaiters = new Set<() => void>();

  constructor(readonly channel: ConfirmChannel) {
    channel.on('return', (msg: Message) => {
      const id = msg.properties.messageId as unknown;
      if (typeof id === 'string') {
        const fields = msg.fields as unknown as { replyCode?: number; replyText?: string };
        this.returned.set(id, { replyCode: fields.replyCode ?? 312, replyText: fields.replyText ?? 'NO_ROUTE' });
      }
    });
    channel.on('error', (err: Error) => {
      this.closeReason = errorMessage(err);
    });
    channel.on('close', () => {
      this.closed = true;
      for (const wake of this.closeWaiters) wake();
      this.closeWaiters.clear();
    });
  }

  /** Resolves when the channel closes (used to stop waiting for 'drain'). */
  onClose(callback: () => void): () => void {
    if (this.closed) {
      callback();
      return () => undefined;
    }
    this.closeWaiters.add(callback);
    return () => this.closeWaiters.delete(callback);
  }

  /** Closes the channel, e.g. after confirms timed out; late confirms are then ignored. */
  discard(): void {
    if (this.closed) return;
    this.closed = true;
    this.channel.close().catch(() => undefined);
  }
}

/** How long `close()` waits for the broker (ms). */
const CLOSE_TIMEOUT_MS = 2_000;

export interface BrokerOptions {
  readonly urls: readonly string[];
  readonly connectionName: string;
  readonly log: Logger;
  /** Called whenever the connection goes up or down. */
  readonly onStateChange?: (connected: boolean) => void;
  /** How long a positive exchange check stays cached (ms). */
  readonly exchangeCacheMs?: number;
}

/**
 * The relay's link to RabbitMQ: one connection, one confirm channel for publishing and
 * a plain channel for passive exchange checks. Reconnects by itself with capped
 * backoff, trying the configured URLs in turn; reopens a channel the server closed.
 */
export class BrokerConnection {
  private model: ChannelModel | undefined;
  private publishChannel: PublishChannel | undefined;
  private openingChannel: Promise<PublishChannel> | undefined;
  private probeChannel: Promise<Channel> | undefined;
  /** `exchange:<name>` / `queue:<name>` → until when it is known to exist (epoch ms). */
  private readonly knownExchanges = new Map<string, number>();
  private readonly controller = new AbortController();
  private connecting: Promise<void> | undefined;
  private readonly waiters = new Set<() => void>();
  private urlIndex = 0;
  /** Set while disconnected after having been connected, to log the outage's length. */
  private downSince: number | undefined;
  private blockedSince: number | undefined;
  private lastUnblockedAt = 0;

  constructor(private readonly options: BrokerOptions) {}

  get connected(): boolean {
    return this.model !== undefined;
  }

  /** True while the broker refuses publishes (a memory or disk alarm). */
  get blocked(): boolean {
    return this.blockedSince !== undefined;
  }

  /** Whether the broker was blocked at any time since `since` (epoch ms). */
  blockedAtAnyTimeSince(since: number): boolean {
    return this.blockedSince !== undefined || this.lastUnblockedAt >= since;
  }

  /** Starts connecting in the background (idempotent). */
  start(): void {
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = undefined;
    });
  }

  /** Resolves once connected, after `maxWaitMs`, or when `signal` aborts. */
  waitUntilConnected(signal: AbortSignal, maxWaitMs: number): Promise<void> {
    if (this.connected || signal.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.waiters.delete(done);
        signal.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, maxWaitMs);
      this.waiters.add(done);
      signal.addEventListener('abort', done, { once: true });
    });
  }

  private async connectLoop(): Promise<void> {
    const { urls, log } = this.options;
    let failures = 0;
    while (!this.controller.signal.aborted && !this.model) {
      const url = urls[this.urlIndex % urls.length] as string;
      try {
        const model = await connect(url, {
          clientProperties: { connection_name: this.options.connectionName },
          timeout: 10_000,
        });
        if (this.controller.signal.aborted) {
          await model.close().catch(() => undefined);
          return;
        }
        this.attach(model, url);
        return;
      } catch (err: unknown) {
        failures += 1;
        const delayMs = reconnectDelayMs(failures);
        const level = failures === 1 || failures % 10 === 0 ? 'warn' : 'debug';
        log[level]({ broker: redactUrl(url), err: errorMessage(err), retryInMs: delayMs, failures }, 'cannot connect to the broker');
        this.urlIndex += 1;
        await abortableDelay(delayMs, this.controller.signal);
      }
    }
  }

  private attach(model: ChannelModel, url: string): void {
    const { log } = this.options;
    this.model = model;
    const outageMs = this.downSince === undefined ? undefined : Date.now() - this.downSince;
    this.downSince = undefined;
    log.info({ broker: redactUrl(url), outageMs }, 'connected to the broker');
    model.on('error', (err: Error) => log.warn({ err: errorMessage(err) }, 'broker connection error'));
    model.on('blocked', (reason: string) => {
      this.blockedSince = Date.now();
      log.warn({ reason }, 'broker blocked publishing (resource alarm): holding messages until it unblocks');
    });
    model.on('unblocked', () => {
      this.blockedSince = undefined;
      this.lastUnblockedAt = Date.now();
      log.info('broker unblocked publishing');
    });
    model.on('close', () => {
      if (this.model !== model) return;
      this.model = undefined;
      this.publishChannel = undefined;
      this.openingChannel = undefined;
      this.probeChannel = undefined;
      this.downSince = Date.now();
      if (this.blockedSince !== undefined) this.lastUnblockedAt = Date.now();
      this.blockedSince = undefined;
      this.options.onStateChange?.(false);
      if (!this.controller.signal.aborted) {
        log.warn('lost the broker connection; reconnecting');
        this.start();
      }
    });
    this.options.onStateChange?.(true);
    for (const wake of [...this.waiters]) wake();
  }

  /** The confirm channel to publish on, opened on demand. Throws when not connected. */
  async channel(): Promise<PublishChannel> {
    const current = this.publishChannel;
    if (current && !current.closed) return current;
    const model = this.model;
    if (!model) throw new OutboxError('BROKER_UNAVAILABLE', 'not connected to the broker');
    this.openingChannel ??= (async () => {
      try {
        const channel = await model.createConfirmChannel();
        const wrapped = new PublishChannel(channel);
        channel.on('close', () => {
          if (this.publishChannel === wrapped) this.publishChannel = undefined;
          if (wrapped.closeReason) this.options.log.warn({ reason: wrapped.closeReason }, 'broker closed the publish channel; reopening');
        });
        this.publishChannel = wrapped;
        return wrapped;
      } finally {
        this.openingChannel = undefined;
      }
    })();
    return this.openingChannel;
  }

  /** Forgets cached exchange and queue checks, e.g. after the broker said one is missing. */
  forgetTargets(): void {
    this.knownExchanges.clear();
  }

  /**
   * Which of `names` do not exist, by passive declare on a separate channel (a missing
   * exchange closes that channel, never the publish channel). Positive answers are
   * cached; the default exchange always exists.
   */
  missingExchanges(names: Iterable<string>): Promise<Set<string>> {
    return this.missing('exchange', [...names].filter((name) => name !== ''));
  }

  /**
   * Which of the queues named by commands (default exchange) do not exist, checked the
   * same way: a command to a missing queue then fails before it is sent, instead of
   * being returned after the later messages of its key went out.
   */
  missingQueues(names: Iterable<string>): Promise<Set<string>> {
    return this.missing('queue', [...names]);
  }

  private async missing(kind: 'exchange' | 'queue', names: readonly string[]): Promise<Set<string>> {
    const missing = new Set<string>();
    const now = Date.now();
    const ttl = this.options.exchangeCacheMs ?? 30_000;
    for (const name of new Set(names)) {
      const cacheKey = `${kind}:${name}`;
      if ((this.knownExchanges.get(cacheKey) ?? 0) > now) continue;
      if (await this.exists(kind, name)) this.knownExchanges.set(cacheKey, now + ttl);
      else missing.add(name);
    }
    return missing;
  }

  private async exists(kind: 'exchange' | 'queue', name: string): Promise<boolean> {
    const model = this.model;
    if (!model) throw new OutboxError('BROKER_UNAVAILABLE', 'not connected to the broker');
    this.probeChannel ??= model.createChannel().then((channel) => {
      channel.on('error', () => undefined);
      channel.on('close', () => {
        if (this.model === model) this.probeChannel = undefined;
      });
      return channel;
    });
    const channel = await this.probeChannel;
    try {
      if (kind === 'exchange') await channel.checkExchange(name);
      else await channel.checkQueue(name);
      return true;
    } catch (err: unknown) {
      this.probeChannel = undefined;
      const code = (err as { code?: unknown }).code;
      if (code === 404) return false;
      // 405 RESOURCE_LOCKED: an exclusive queue of another connection — it exists.
      if (code === 405) return true;
      throw err;
    }
  }

  /** Closes channels and the connection; stops reconnecting. Idempotent. */
  async close(): Promise<void> {
    this.controller.abort();
    for (const wake of [...this.waiters]) wake();
    const model = this.model;
    this.model = undefined;
    // Neither a broker that does not answer close-ok nor a connection attempt stuck in
    // its handshake (a login the broker is slow to refuse) may hold up a shutdown: a
    // connection that completes later is closed by connectLoop.
    const bounded = (work: Promise<unknown>): Promise<unknown> => Promise.race([work.catch(() => undefined), unrefSleep(CLOSE_TIMEOUT_MS)]);
    if (model) await bounded(model.close());
    if (this.connecting) await bounded(this.connecting);
  }
}
