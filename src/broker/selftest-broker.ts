import type { PublishIdentity } from './signer';
import { randomUUID } from 'node:crypto';
import { connect, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { redactUrl } from '../config/redact';
import type { OutboxMessage } from '../domain/message';
import type { PublishOutcome } from '../domain/outcome';
import { errorMessage, OutboxError } from '../errors';
import { TIMED_OUT, withDeadline } from '../util/deadline';
import { firstThatAnswers } from '../util/first-answer';
import { SHORT_STRING_MAX_BYTES } from './amqp-limits';
import { PublishChannel } from './publish-channel';
import { publishBatch } from './publisher';

/** How long one broker URL gets to accept the connection (ms). */
const CONNECT_TIMEOUT_MS = 5_000;
/** How long each clean-up operation (queue, exchange, connection) may take (ms). */
const CLEANUP_STEP_MS = 2_000;

/** Where the canary goes: the exchange it is published to and the queue that receives it. */
export interface SelftestTopology {
  readonly exchange: string;
  /** Declared by the self-test (auto-delete) and deleted by `dispose()`; false for `--exchange E`. */
  readonly temporaryExchange: boolean;
  /** Exclusive, auto-delete: gone with the connection at the latest. */
  readonly queue: string;
  readonly routingKey: string;
}

/**
 * The self-test's own broker connection: a temporary exclusive queue bound to an
 * exchange (the caller's, or a temporary one), a consumer recording what arrives on it,
 * and the relay's publish path (`publishBatch` on a confirm channel) for a canary no
 * relay took. `dispose()` deletes what it declared and closes the connection.
 */
export class SelftestBroker {
  private readonly deliveries: ConsumeMessage[] = [];
  private readonly arrivals = new Set<() => void>();
  private topology: SelftestTopology | undefined;
  private channel: Channel | undefined;
  private connectionClosed = false;

  private constructor(
    private readonly model: ChannelModel,
    /** The URL it connected to, credentials masked. */
    readonly url: string,
  ) {
    // Unhandled, amqplib's 'error' events would crash the process; what failed is
    // reported by the operation that was waiting for it.
    model.on('error', () => undefined);
    model.on('close', () => {
      this.connectionClosed = true;
    });
  }

  /** Connects to the first of `urls` that answers; none: BROKER_UNAVAILABLE naming each (credentials masked). */
  static async connect(urls: readonly string[], connectionName: string): Promise<SelftestBroker> {
    const failures: string[] = [];
    const first = await firstThatAnswers(
      urls,
      (url) => connect(url, { clientProperties: { connection_name: connectionName }, timeout: CONNECT_TIMEOUT_MS }),
      (url, err) => failures.push(`${redactUrl(url)}: ${errorMessage(err)}`),
    );
    if (!first) throw new OutboxError('BROKER_UNAVAILABLE', `cannot reach the broker (${failures.join('; ')})`);
    return new SelftestBroker(first.value, redactUrl(first.url));
  }

  /**
   * Declares the canary's queue, bound with a routing key of its own to `exchange`, or
   * to a temporary exchange when none is given, and consumes it. A missing `exchange`
   * throws NOT_FOUND naming it; nothing is declared then.
   */
  async declare(exchange: string | undefined): Promise<SelftestTopology> {
    const id = randomUUID();
    const name = `outbox-selftest-${id}`;
    const channel = await this.openChannel();
    if (exchange !== undefined) await this.checkExchange(exchange);
    const target = exchange ?? name;
    if (exchange === undefined) await channel.assertExchange(target, 'direct', { durable: false, autoDelete: true });
    this.topology = { exchange: target, temporaryExchange: exchange === undefined, queue: name, routingKey: `outbox-selftest.${id}` };
    await channel.assertQueue(name, { exclusive: true, autoDelete: true, durable: false });
    await channel.bindQueue(name, target, this.topology.routingKey);
    await channel.consume(
      name,
      (msg) => {
        if (!msg) return;
        this.deliveries.push(msg);
        for (const wake of this.arrivals) wake();
      },
      { noAck: true },
    );
    return this.topology;
  }

  private async openChannel(): Promise<Channel> {
    const channel = await this.model.createChannel();
    channel.on('error', () => undefined);
    channel.on('close', () => {
      if (this.channel === channel) this.channel = undefined;
    });
    this.channel = channel;
    return channel;
  }

  /** Passive declare on a channel of its own: a 404 closes that channel, not the queue's. */
  private async checkExchange(exchange: string): Promise<void> {
    if (Buffer.byteLength(exchange, 'utf8') > SHORT_STRING_MAX_BYTES) {
      throw new OutboxError('NOT_FOUND', `exchange "${exchange}" does not exist (longer than ${SHORT_STRING_MAX_BYTES} bytes)`);
    }
    const probe = await this.model.createChannel();
    probe.on('error', () => undefined);
    try {
      await probe.checkExchange(exchange);
    } catch (err: unknown) {
      if ((err as { code?: unknown }).code === 404) throw new OutboxError('NOT_FOUND', `exchange "${exchange}" does not exist`);
      throw err;
    } finally {
      await probe.close().catch(() => undefined);
    }
  }

  /**
   * The first delivery on the queue that carries the canary's routing key or message id
   * (a fanout `--exchange` also brings other traffic, which is ignored); undefined when
   * none arrived within `timeoutMs`.
   */
  async delivery(messageId: string, timeoutMs: number): Promise<ConsumeMessage | undefined> {
    const routingKey = this.topology?.routingKey;
    const find = (): ConsumeMessage | undefined =>
      this.deliveries.find((m) => m.fields.routingKey === routingKey || m.properties.messageId === messageId);
    const found = find();
    if (found || timeoutMs <= 0) return found;
    return new Promise((resolve) => {
      const done = (message: ConsumeMessage | undefined): void => {
        clearTimeout(timer);
        this.arrivals.delete(check);
        resolve(message);
      };
      const check = (): void => {
        const message = find();
        if (message) done(message);
      };
      const timer = setTimeout(() => done(undefined), timeoutMs);
      this.arrivals.add(check);
    });
  }

  /** Publishes one message as the relay does (same properties, mandatory, with confirms), on a confirm channel of its own. */
  async publish(message: OutboxMessage, identity: string | PublishIdentity, timeoutMs: number): Promise<PublishOutcome> {
    const confirm = await this.model.createConfirmChannel();
    const channel = new PublishChannel(confirm);
    try {
      const [outcome] = await publishBatch(channel, [message], {
        ...(typeof identity === 'string' ? { appId: identity } : identity),
        timeoutMs,
      });
      return outcome ?? { kind: 'unconfirmed', error: 'no outcome' };
    } finally {
      channel.discard();
    }
  }

  /**
   * Deletes the queue and the temporary exchange (never an `--exchange` given), closes
   * the connection. Best effort, each step bounded; returns what could not be done.
   */
  async dispose(): Promise<string[]> {
    const problems: string[] = [];
    const bounded = async (what: string, work: () => Promise<unknown>): Promise<void> => {
      const outcome = await withDeadline(
        work().then(
          () => undefined,
          (err: unknown) => errorMessage(err),
        ),
        CLEANUP_STEP_MS,
      ).then((result) => (result === TIMED_OUT ? `no answer within ${CLEANUP_STEP_MS} ms` : result));
      if (outcome !== undefined) problems.push(`${what}: ${outcome}`);
    };
    const topology = this.topology;
    // A lost connection took the exclusive queue with it, and with the queue's binding
    // the auto-delete exchange: nothing is left to delete then.
    if (topology && !this.connectionClosed) {
      await bounded(`delete queue "${topology.queue}"`, async () =>
        (this.channel ?? (await this.openChannel())).deleteQueue(topology.queue),
      );
      if (topology.temporaryExchange) {
        await bounded(`delete exchange "${topology.exchange}"`, async () =>
          (this.channel ?? (await this.openChannel())).deleteExchange(topology.exchange),
        );
      }
    }
    if (!this.connectionClosed) await bounded('close the broker connection', () => this.model.close());
    return problems;
  }
}
