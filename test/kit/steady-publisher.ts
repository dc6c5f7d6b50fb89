import { connect, type ChannelModel, type ConfirmChannel } from 'amqplib';
import { trackOpen } from './open-resources';
import { testAmqpUrl } from './services';

/** One message a SteadyPublisher sends: its id and JSON body. */
export interface SteadyMessage {
  readonly messageId: string;
  readonly body: Record<string, unknown>;
}

/**
 * Publishes messages one after another, every `intervalMs`, with publisher confirms and
 * `mandatory`, on its own AMQP connection, until `stop()`: a steady flow that goes on
 * while a test injects a fault into a consumer. A message the broker returns as
 * unroutable (its queue is being deleted and declared again) is sent again until it is
 * routed; `routed` holds every message the broker confirmed into a queue.
 */
export class SteadyPublisher {
  readonly routed = new Set<string>();
  /** How many publishes came back unroutable (and were sent again). */
  returns = 0;
  private readonly returned = new Set<string>();
  private running = true;
  private loop: Promise<void> = Promise.resolve();
  /** Resolved while not paused. */
  private gate: Promise<void> = Promise.resolve();
  private open: () => void = () => undefined;
  /** The publish in flight, if any. */
  private current: Promise<unknown> = Promise.resolve();
  private sent = 0;

  private constructor(
    private readonly model: ChannelModel,
    private readonly channel: ConfirmChannel,
    private readonly untrack: () => void,
  ) {
    channel.on('return', (msg: { properties: { messageId?: unknown } }) => this.returned.add(String(msg.properties.messageId)));
  }

  /**
   * Starts publishing to `exchange` with `routingKey` (the default exchange and a queue
   * name for a queue); `make(n)` builds the n-th message (n from 1).
   */
  static async start(
    target: { exchange: string; routingKey: string },
    make: (n: number) => SteadyMessage,
    intervalMs = 10,
  ): Promise<SteadyPublisher> {
    const model = await connect(testAmqpUrl());
    const channel = await model.createConfirmChannel();
    const untrack = trackOpen(model, {
      kind: 'AMQP connection',
      detail: `SteadyPublisher to ${target.exchange || '(default)'}/${target.routingKey}`,
    });
    const publisher = new SteadyPublisher(model, channel, untrack);
    publisher.loop = publisher.run(target, make, intervalMs);
    return publisher;
  }

  /** Messages started so far (routed or not yet). */
  get count(): number {
    return this.sent;
  }

  private async publishOnce(target: { exchange: string; routingKey: string }, message: SteadyMessage): Promise<boolean> {
    await new Promise<void>((resolve, reject) => {
      this.channel.publish(
        target.exchange,
        target.routingKey,
        Buffer.from(JSON.stringify(message.body)),
        { messageId: message.messageId, contentType: 'application/json', persistent: true, mandatory: true },
        (err: unknown) => (err ? reject(err instanceof Error ? err : new Error(String(err))) : resolve()),
      );
    });
    if (this.returned.delete(message.messageId)) {
      this.returns += 1;
      return false;
    }
    this.routed.add(message.messageId);
    return true;
  }

  private async run(
    target: { exchange: string; routingKey: string },
    make: (n: number) => SteadyMessage,
    intervalMs: number,
  ): Promise<void> {
    while (this.running) {
      this.sent += 1;
      const message = make(this.sent);
      for (;;) {
        await this.gate;
        if (!this.running) break;
        const publish = this.publishOnce(target, message);
        this.current = publish.catch(() => undefined);
        if ((await publish) || !this.running) break;
        await new Promise((resolve) => setTimeout(resolve, 25));
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }

  /**
   * Holds the next publish and resolves once none is in flight (until `resume()`): for
   * the instant of a fault that would lose messages the broker already confirmed (a
   * queue deleted with messages on their way into it is confirmed to the publisher).
   */
  async pause(): Promise<void> {
    this.gate = new Promise((resolve) => {
      this.open = resolve;
    });
    await this.current;
  }

  resume(): void {
    this.open();
  }

  /** Stops publishing (a message still unroutable then is given up, not in `routed`) and closes the connection. */
  async stop(): Promise<void> {
    this.running = false;
    this.open();
    try {
      await this.loop;
    } finally {
      await this.model.close().catch(() => undefined);
      this.untrack();
    }
  }
}
