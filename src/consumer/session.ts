import { connect, type Channel, type ChannelModel, type ConfirmChannel, type ConsumeMessage, type Message, type Options } from 'amqplib';
import { errorMessage } from '../errors';
import { settlesWithin } from '../util/deadline';
import { deferred } from '../util/deferred';
import { UnsettledTags } from './acks';
import { HEADER } from './inbox';
import type { ConsumerSettings } from './settings';
import { declareTopology, retryQueueArguments } from './topology';
import { maskUrls, withHeartbeat } from './urls';

/** How long closing a connection or cancelling a consumer may take (ms). */
const CLOSE_TIMEOUT_MS = 2_000;

/**
 * How long acks may wait for an older delivery to be done, to go out with its ack as one
 * frame (ms): about a batch's time; longer only keeps finished messages in the window.
 */
const ACK_DELAY_MS = 10;

/** What a session tells the consumer. */
export interface SessionHooks {
  /** A delivery (never null: a cancel goes to `onCancel`). */
  onMessage(session: Session, msg: ConsumeMessage): void;
  /** The broker cancelled the consumer (the queue was deleted, a node lost). */
  onCancel(session: Session): void;
}

/** An error as a one-line text without credentials. */
export function describeError(err: unknown): string {
  return maskUrls(errorMessage(err));
}

/**
 * One AMQP connection of a consumer: a channel that consumes (with the prefetch) and a
 * confirm channel for retries and dead letters. It ends, for good, when the connection
 * or either channel closes: the consumer then opens a new session. A cancel by the
 * broker does not end it: the consumer consumes again on the same channel, so the
 * deliveries in flight can still be acknowledged.
 */
export class Session {
  /** Aborted when the session ends or the consumer stops: what every wait of the session listens to. */
  private readonly controller = new AbortController();
  private readonly onStop = (): void => this.controller.abort();
  private consumerTag: string | undefined;
  private retryQueueDeclared = false;
  private readonly returned = new Set<string>();
  private readonly unsettled = new UnsettledTags();
  private ackTimer: NodeJS.Timeout | undefined;
  private endReason: string | undefined;
  private closing: Promise<unknown> = Promise.resolve();
  private readonly endedWith = deferred<string>();

  private constructor(
    private readonly settings: ConsumerSettings<unknown>,
    private readonly model: ChannelModel,
    readonly channel: Channel,
    private readonly confirm: ConfirmChannel,
    readonly url: string,
    private readonly stopSignal: AbortSignal,
  ) {
    stopSignal.addEventListener('abort', this.onStop, { once: true });
    let lastError: string | undefined;
    model.on('error', (err: Error) => {
      lastError = describeError(err);
    });
    model.on('close', (err?: Error) => this.end(err ? describeError(err) : (lastError ?? 'connection closed')));
    // A closing connection closes its channels first: a channel closed without an error
    // of its own waits a turn, to report the connection's reason instead.
    for (const [which, ch] of [
      ['channel', channel],
      ['confirm channel', confirm],
    ] as const) {
      let channelError: string | undefined;
      ch.on('error', (err: Error) => {
        channelError = describeError(err);
      });
      ch.on('close', () => {
        if (channelError !== undefined) this.end(`${which} closed: ${channelError}`);
        else setImmediate(() => this.end(lastError ?? `${which} closed`));
      });
    }
    confirm.on('return', (msg: Message) => this.returned.add(returnKey(msg.properties.messageId, msg.properties.headers)));
  }

  /**
   * Connects to `url`, declares the topology (or checks that the queue exists), and
   * consumes. Closes what it opened when any step fails.
   */
  static async open(settings: ConsumerSettings<unknown>, url: string, hooks: SessionHooks, stopSignal: AbortSignal): Promise<Session> {
    const model = await connect(withHeartbeat(url, settings.heartbeatSeconds), {
      clientProperties: { connection_name: `${settings.name} (outbox-relay consumer)` },
      timeout: settings.connectTimeoutMs,
    });
    // Errors before the session listens (and after it ended) must not crash the process.
    model.on('error', () => undefined);
    try {
      const channel = await model.createChannel();
      channel.on('error', () => undefined);
      const confirm = await model.createConfirmChannel();
      confirm.on('error', () => undefined);
      const session = new Session(settings, model, channel, confirm, url, stopSignal);
      await channel.prefetch(settings.prefetch);
      await session.prepareQueue();
      await session.consume(hooks);
      return session;
    } catch (err: unknown) {
      await bounded(model.close());
      throw err;
    }
  }

  /** Resolves with the reason when the session ends. */
  get ended(): Promise<string> {
    return this.endedWith.promise;
  }

  /** Aborted when the session ends or the consumer stops. */
  get signal(): AbortSignal {
    return this.controller.signal;
  }

  get isOpen(): boolean {
    return this.endReason === undefined;
  }

  private end(reason: string): void {
    if (this.endReason !== undefined) return;
    this.endReason = reason;
    clearTimeout(this.ackTimer);
    this.stopSignal.removeEventListener('abort', this.onStop);
    this.controller.abort();
    this.endedWith.resolve(reason);
    // One channel closing ends the session: close the rest.
    this.closing = bounded(this.model.close());
  }

  /** Declares the topology, or checks that the queue exists (404 closes the channel). */
  async prepareQueue(): Promise<void> {
    const { topology, queue, retryQueue, deadLetterExchange } = this.settings;
    if (topology) {
      await declareTopology(this.channel, queue, topology, retryQueue, deadLetterExchange as string);
      this.retryQueueDeclared = true;
    } else {
      await this.channel.checkQueue(queue);
    }
  }

  /** Whether the queue exists now, asked on a channel of its own (a 404 closes the channel it is asked on). */
  async queueExists(): Promise<boolean> {
    const probe = await this.model.createChannel();
    probe.on('error', () => undefined);
    try {
      await probe.checkQueue(this.settings.queue);
      return true;
    } catch (err: unknown) {
      if ((err as { code?: unknown }).code === 404) return false;
      throw err;
    } finally {
      await bounded(probe.close());
    }
  }

  /** Starts consuming the queue (again, after a cancel). */
  async consume(hooks: SessionHooks): Promise<void> {
    const { consumerTag } = await this.channel.consume(this.settings.queue, (msg) => {
      if (msg === null) {
        this.consumerTag = undefined;
        hooks.onCancel(this);
      } else {
        this.unsettled.add(msg.fields.deliveryTag);
        hooks.onMessage(this, msg);
      }
    });
    this.consumerTag = consumerTag;
  }

  /** Stops the deliveries (the ones in flight stay, to be settled). */
  async cancel(): Promise<void> {
    const tag = this.consumerTag;
    this.consumerTag = undefined;
    if (tag !== undefined && this.isOpen) await bounded(this.channel.cancel(tag));
  }

  /** Acknowledges; false when the channel is gone (the broker redelivers the message). */
  ack(msg: ConsumeMessage): boolean {
    if (!this.isOpen) return false;
    try {
      this.channel.ack(msg);
      this.unsettled.settle(msg.fields.deliveryTag);
      return true;
    } catch {
      return false;
    }
  }

  /**
   * Acknowledges several: one `basic.ack` with `multiple` for every run of deliveries
   * done from the oldest unsettled one; acks that must wait for an older delivery go out
   * with it, or one by one after ACK_DELAY_MS.
   */
  ackAll(msgs: readonly ConsumeMessage[]): boolean {
    if (!this.isOpen || msgs.length === 0) return this.isOpen;
    if (msgs.length === 1 && !this.unsettled.owing) return this.ack(msgs[0] as ConsumeMessage);
    try {
      const upTo = this.unsettled.ackAll(msgs.map((msg) => msg.fields.deliveryTag));
      if (upTo !== undefined) this.channel.ack({ fields: { deliveryTag: upTo } } as Message, true);
      if (this.unsettled.owing && this.ackTimer === undefined) {
        this.ackTimer = setTimeout(() => this.payOwedAcks(), ACK_DELAY_MS);
        this.ackTimer.unref();
      }
      return true;
    } catch {
      return false;
    }
  }

  /** Sends the acks still owed, one by one. */
  private payOwedAcks(): void {
    clearTimeout(this.ackTimer);
    this.ackTimer = undefined;
    const owed = this.unsettled.takeOwed();
    if (!this.isOpen) return;
    try {
      for (const deliveryTag of owed) this.channel.ack({ fields: { deliveryTag } } as Message);
    } catch {
      // The channel closed meanwhile: the broker redelivers them, and the inbox skips them.
    }
  }

  /** Rejects: with `requeue` back to the queue, without to the queue's dead-letter exchange. */
  nack(msg: ConsumeMessage, requeue: boolean): boolean {
    if (!this.isOpen) return false;
    try {
      this.channel.nack(msg, false, requeue);
      this.unsettled.settle(msg.fields.deliveryTag);
      return true;
    } catch {
      return false;
    }
  }

  /** Declares the retry queue once per connection when the consumer does not declare a topology. */
  async ensureRetryQueue(): Promise<void> {
    if (this.retryQueueDeclared) return;
    const { retryQueue, queue } = this.settings;
    await this.confirm.assertQueue(retryQueue, { durable: true, arguments: retryQueueArguments(queue, 'classic') });
    this.retryQueueDeclared = true;
  }

  /**
   * Publishes with `mandatory` and waits for the broker's confirm; rejects when the
   * broker refuses it, returns it unroutable, or the session ends first.
   */
  async publishConfirmed(exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void> {
    if (!this.isOpen) throw new Error(`connection lost: ${this.endReason ?? ''}`);
    const key = returnKey(options.messageId, options.headers);
    await new Promise<void>((resolve, reject) => {
      this.confirm.publish(exchange, routingKey, content, { ...options, mandatory: true }, (err: unknown) => {
        if (err) reject(err instanceof Error ? err : new Error(`the broker refused the message (${describeError(err)})`));
        else resolve();
      });
    });
    // The broker sends basic.return before the confirm of the same message.
    if (this.returned.delete(key))
      throw new Error(`unroutable: nothing is bound to ${exchange === '' ? `queue ${routingKey}` : `exchange ${exchange}`}`);
  }

  /** Closes the connection (bounded in time), after the acks still owed; idempotent. */
  async close(): Promise<void> {
    if (this.unsettled.owing) {
      this.payOwedAcks();
      // amqplib writes a channel's frames on the next turn: let them out before the connection's close.
      await new Promise((resolve) => setImmediate(resolve));
    }
    this.end('closed by the consumer');
    await this.closing;
  }
}

function returnKey(messageId: unknown, headers: unknown): string {
  const attempts = (headers as Record<string, unknown> | undefined)?.[HEADER.attempts];
  return `${String(messageId)}\u0000${String(attempts)}`;
}

/** Waits for `work`, at most CLOSE_TIMEOUT_MS, never rejecting. */
export function bounded(work: Promise<unknown>): Promise<unknown> {
  return settlesWithin(work, CLOSE_TIMEOUT_MS);
}
