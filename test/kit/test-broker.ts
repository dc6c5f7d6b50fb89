import { connect, type Channel, type ChannelModel, type ConsumeMessage } from 'amqplib';
import { trackOpen } from './open-resources';
import { testAmqpUrl } from './services';
import { uniqueName } from './unique-name';

export interface TestBrokerOptions {
  /** Default: the test broker (OUTBOX_TEST_AMQP_URL). */
  readonly url?: string;
  /** Durable exchanges and queues (bench, chaos: persistent messages are written to disk). Default false. */
  readonly durable?: boolean;
}

/**
 * The topology a test, the chaos suite or the benchmark declares for itself, on its own
 * AMQP connection: exchanges and queues, consumers that record what arrives; `close()`
 * deletes everything it declared and closes the connection.
 */
export class TestBroker {
  private readonly exchanges: string[] = [];
  private readonly queues: string[] = [];
  readonly received = new Map<string, ConsumeMessage[]>();
  private connection: { model: ChannelModel; channel: Channel; untrack: () => void } | undefined;
  private readonly url: string;
  private readonly durable: boolean;

  private constructor(options: TestBrokerOptions) {
    this.url = options.url ?? testAmqpUrl();
    this.durable = options.durable ?? false;
  }

  static async connect(options: TestBrokerOptions = {}): Promise<TestBroker> {
    const broker = new TestBroker(options);
    await broker.open();
    return broker;
  }

  /** The broker of a whole test file, with its hooks: connected before all tests, closed after all. */
  static forFile(options: TestBrokerOptions = {}): TestBroker {
    const broker = new TestBroker(options);
    beforeAll(() => broker.open());
    afterAll(() => broker.close());
    return broker;
  }

  private async open(): Promise<void> {
    const model = await connect(this.url);
    const channel = await model.createChannel();
    const host = new URL(this.url.split(',')[0]!).host;
    this.connection = { model, channel, untrack: trackOpen(this, { kind: 'AMQP connection', detail: `TestBroker to ${host}` }) };
  }

  /** The channel that declares and consumes; for what the methods here do not cover. */
  get channel(): Channel {
    if (!this.connection) throw new Error('TestBroker is not connected (TestBroker.forFile connects in beforeAll)');
    return this.connection.channel;
  }

  async exchange(name: string, type: 'topic' | 'fanout' | 'direct' = 'topic'): Promise<string> {
    await this.channel.assertExchange(name, type, { durable: this.durable, autoDelete: false });
    this.exchanges.push(name);
    return name;
  }

  /** Declares a queue (bound to `exchange` with `pattern`, if given), without consuming it. */
  async declareQueue(name: string, binding?: { exchange: string; pattern: string }, args?: Record<string, unknown>): Promise<string> {
    await this.channel.assertQueue(name, { durable: this.durable, autoDelete: false, ...(args ? { arguments: args } : {}) });
    this.queues.push(name);
    if (binding) await this.channel.bindQueue(name, binding.exchange, binding.pattern);
    return name;
  }

  /** Consumes `queue` (no acks), handing every delivery to `onMessage`. */
  async consume(queue: string, onMessage: (msg: ConsumeMessage) => void): Promise<void> {
    await this.channel.consume(
      queue,
      (msg) => {
        if (msg) onMessage(msg);
      },
      { noAck: true },
    );
  }

  /** Declares a queue (bound to `exchange` with `pattern`, if given) and records its deliveries. */
  async queue(name: string, binding?: { exchange: string; pattern: string }): Promise<ConsumeMessage[]> {
    await this.declareQueue(name, binding);
    const messages: ConsumeMessage[] = [];
    this.received.set(name, messages);
    await this.consume(name, (msg) => messages.push(msg));
    return messages;
  }

  /**
   * A topic exchange `<prefix>_<hex>` and a queue `<prefix>q_<hex>` bound to it with `#`:
   * everything published to the exchange is recorded in `received`.
   */
  async exchangeWithQueue(prefix: string): Promise<{ exchange: string; queue: string; received: ConsumeMessage[] }> {
    const exchange = await this.exchange(uniqueName(prefix));
    const queue = uniqueName(`${prefix}q`);
    const received = await this.queue(queue, { exchange, pattern: '#' });
    return { exchange, queue, received };
  }

  async close(): Promise<void> {
    const connection = this.connection;
    if (!connection) return;
    this.connection = undefined;
    try {
      const ch = await connection.model.createChannel();
      for (const q of this.queues) await ch.deleteQueue(q).catch(() => undefined);
      for (const e of this.exchanges) await ch.deleteExchange(e).catch(() => undefined);
    } finally {
      await connection.model.close().catch(() => undefined);
      connection.untrack();
    }
  }
}

/** The JSON bodies of `messages`. */
export function bodies(messages: readonly ConsumeMessage[]): unknown[] {
  return messages.map((m) => JSON.parse(m.content.toString('utf8')) as unknown);
}
