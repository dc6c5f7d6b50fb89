import { connect, type Channel, type ChannelModel } from 'amqplib';
import { redactUrl } from '../config/redact';
import { errorMessage, OutboxError } from '../errors';
import type { Logger } from '../observability/logger';
import { keepTrying } from '../retry/reconnect';
import { settlesWithin } from '../util/deadline';
import { abortableDelay, Waiters } from '../util/delay';
import { PublishChannel } from './publish-channel';

/** How long `close()` waits for the broker (ms). */
const CLOSE_TIMEOUT_MS = 2_000;

export interface BrokerOptions {
  readonly urls: readonly string[];
  readonly connectionName: string;
  readonly log: Logger;
  /** Called whenever the connection goes up or down. */
  readonly onStateChange?: (connected: boolean) => void;
}

/**
 * The relay's link to RabbitMQ: one connection, one confirm channel for publishing,
 * channels on demand for topology checks. Reconnects by itself with capped backoff,
 * trying the configured URLs in turn; reopens a channel the server closed. Knows
 * whether the broker blocks publishers (a resource alarm).
 */
export class BrokerConnection {
  private model: ChannelModel | undefined;
  private publishChannel: PublishChannel | undefined;
  private openingChannel: Promise<PublishChannel> | undefined;
  private readonly controller = new AbortController();
  private connecting: Promise<void> | undefined;
  private readonly connectedWaiters = new Waiters();
  private urlIndex = 0;
  /** Set while disconnected after having been connected, to log the outage's length. */
  private downSince: number | undefined;
  private blockedSince: number | undefined;
  private lastUnblockedAt = 0;
  private readonly connectListeners: (() => void)[] = [];
  private closeReason: string | undefined;

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

  /** The server's reason for closing the last connection (e.g. 501 FRAME_ERROR), undefined after a plain network loss. */
  get lastCloseReason(): string | undefined {
    return this.closeReason;
  }

  /** Calls `listener` on every new connection (what was learned on the last one is stale). */
  onConnected(listener: () => void): void {
    this.connectListeners.push(listener);
  }

  /** Starts connecting in the background (idempotent). */
  start(): void {
    this.connecting ??= this.connectLoop().finally(() => {
      this.connecting = undefined;
    });
  }

  /** Resolves once connected, after `maxWaitMs`, or when `signal` aborts. */
  waitUntilConnected(signal: AbortSignal, maxWaitMs: number): Promise<void> {
    if (this.connected) return Promise.resolve();
    return abortableDelay(maxWaitMs, signal, this.connectedWaiters.subscribe);
  }

  private async connectLoop(): Promise<void> {
    const { urls, log } = this.options;
    const signal = this.controller.signal;
    await keepTrying(
      async () => {
        const url = urls[this.urlIndex % urls.length] as string;
        try {
          const model = await connect(url, { clientProperties: { connection_name: this.options.connectionName }, timeout: 10_000 });
          if (signal.aborted) await model.close().catch(() => undefined);
          else this.attach(model, url);
        } catch (err: unknown) {
          this.urlIndex += 1;
          throw new OutboxError('BROKER_UNAVAILABLE', `${redactUrl(url)}: ${errorMessage(err)}`, { cause: err });
        }
      },
      {
        signal,
        onRetry: ({ err, failures, retryInMs, loud }) =>
          log[loud ? 'warn' : 'debug']({ err: errorMessage(err), retryInMs, failures }, 'cannot connect to the broker'),
      },
    );
  }

  private attach(model: ChannelModel, url: string): void {
    const { log } = this.options;
    this.model = model;
    this.closeReason = undefined;
    const outageMs = this.downSince === undefined ? undefined : Date.now() - this.downSince;
    this.downSince = undefined;
    log.info({ broker: redactUrl(url), outageMs }, 'connected to the broker');
    model.on('error', (err: Error) => {
      // amqplib emits the server's connection.close reason here, just before 'close'.
      if (this.model === model) this.closeReason = errorMessage(err);
      log.warn({ err: errorMessage(err) }, 'broker connection error');
    });
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
      this.downSince = Date.now();
      if (this.blockedSince !== undefined) this.lastUnblockedAt = Date.now();
      this.blockedSince = undefined;
      this.options.onStateChange?.(false);
      if (!this.controller.signal.aborted) {
        log.warn('lost the broker connection; reconnecting');
        this.start();
      }
    });
    for (const listener of this.connectListeners) listener();
    this.options.onStateChange?.(true);
    this.connectedWaiters.wakeAll();
  }

  private currentModel(): ChannelModel {
    const model = this.model;
    if (!model) throw new OutboxError('BROKER_UNAVAILABLE', 'not connected to the broker');
    return model;
  }

  /** The confirm channel to publish on, opened on demand. Throws when not connected. */
  async channel(): Promise<PublishChannel> {
    const current = this.publishChannel;
    if (current && !current.closed) return current;
    const model = this.currentModel();
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

  /** A plain channel on the current connection (for topology checks). Throws when not connected. */
  openChannel(): Promise<Channel> {
    return this.currentModel().createChannel();
  }

  /** Closes channels and the connection; stops reconnecting. Idempotent. */
  async close(): Promise<void> {
    this.controller.abort();
    this.connectedWaiters.wakeAll();
    const model = this.model;
    this.model = undefined;
    // Neither a broker that does not answer close-ok nor a connection attempt stuck in
    // its handshake (a login the broker is slow to refuse) may hold up a shutdown: a
    // connection that completes later is closed by connectLoop.
    const bounded = (work: Promise<unknown>): Promise<boolean> => settlesWithin(work, CLOSE_TIMEOUT_MS);
    if (model) await bounded(model.close());
    if (this.connecting) await bounded(this.connecting);
  }
}
