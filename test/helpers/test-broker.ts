import { connect, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { testAmqpUrl } from './services';

/**
 * The test's own AMQP client: declares this test's exchanges and queues, records what
 * arrives, deletes everything it declared on close.
 */
export class TestBroker {
  private readonly exchanges: string[] = [];
  private readonly queues: string[] = [];
  readonly received = new Map<string, ConsumeMessage[]>();

  private constructor(
    private readonly model: ChannelModel,
    readonly channel: Channel,
  ) {}

  static async connect(): Promise<TestBroker> {
    const model = await connect(testAmqpUrl());
    const channel = await model.createChannel();
    return new TestBroker(model, channel);
  }

  async exchange(name: string, type: 'topic' | 'fanout' | 'direct' = 'topic'): Promise<string> {
    await this.channel.assertExchange(name, type, { durable: false, autoDelete: false });
    this.exchanges.push(name);
    return name;
  }

  /** Declares a queue (bound to `exchange` with `pattern`, if given), without consuming it. */
  async declareQueue(name: string, binding?: { exchange: string; pattern: string }, args?: Record<string, unknown>): Promise<string> {
    await this.channel.assertQueue(name, { durable: false, autoDelete: false, ...(args ? { arguments: args } : {}) });
    this.queues.push(name);
    if (binding) await this.channel.bindQueue(name, binding.exchange, binding.pattern);
    return name;
  }

  /** Declares a queue (bound to `exchange` with `pattern`, if given) and records its deliveries. */
  async queue(name: string, binding?: { exchange: string; pattern: string }): Promise<ConsumeMessage[]> {
    await this.declareQueue(name, binding);
    const messages: ConsumeMessage[] = [];
    this.received.set(name, messages);
    await this.channel.consume(
      name,
      (msg) => {
        if (msg) messages.push(msg);
      },
      { noAck: true },
    );
    return messages;
  }

  async close(): Promise<void> {
    const ch = await this.model.createChannel();
    for (const q of this.queues) await ch.deleteQueue(q).catch(() => undefined);
    for (const e of this.exchanges) await ch.deleteExchange(e).catch(() => undefined);
    await this.model.close().catch(() => undefined);
  }
}

/** The JSON bodies of `messages`. */
export function bodies(messages: readonly ConsumeMessage[]): unknown[] {
  return messages.map((m) => JSON.parse(m.content.toString('utf8')) as unknown);
}
