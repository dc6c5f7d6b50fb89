import { EventEmitter } from 'node:events';
import type { Channel, ConfirmChannel, Options } from 'amqplib';
import { RelayBroker, type RelayConnection } from '../../src/broker/relay-broker';
import { PublishChannel } from '../../src/broker/publish-channel';
import type { OutboxMessage } from '../../src/domain/message';
import { sendBatch } from '../../src/relay/send';
import { fakeMessage } from './fake-message';

/**
 * A confirm channel of a broker with a max message size, as RabbitMQ behaves: a message
 * over the limit closes the channel with 406 PRECONDITION_FAILED; a message routed to a
 * full queue under reject-publish (its id in `full`) is nacked; every other message is
 * confirmed.
 */
class LimitedChannel extends EventEmitter {
  readonly sent: string[] = [];
  private closed = false;

  constructor(private readonly broker: { maxBytes: number; full: Set<string> }) {
    super();
  }

  publish(_exchange: string, _key: string, content: Buffer, options: Options.Publish, callback: (err: unknown) => void): boolean {
    if (this.closed) throw new Error('Channel closed');
    this.sent.push(String(options.messageId));
    setImmediate(() => {
      if (this.closed) return callback(new Error('channel closed'));
      if (content.length > this.broker.maxBytes) {
        this.closed = true;
        this.emit(
          'error',
          new Error(
            `Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - message size ${content.length} is larger than configured max size ${this.broker.maxBytes}"`,
          ),
        );
        callback(new Error('channel closed'));
        this.emit('close');
      } else if (this.broker.full.has(String(options.messageId))) {
        callback(new Error('message nacked')); // amqplib's error for a basic.nack
      } else {
        callback(null);
      }
    });
    return true;
  }

  close(): Promise<void> {
    this.closed = true;
    this.emit('close');
    return Promise.resolve();
  }
}

class FakeConnection implements RelayConnection {
  readonly broker = { maxBytes: 1_000, full: new Set<string>() };
  readonly channels: LimitedChannel[] = [];
  private current: PublishChannel | undefined;
  private readonly listeners: (() => void)[] = [];
  connected = true;
  lastCloseReason: string | undefined = undefined;
  blocked = false;

  blockedAtAnyTimeSince(): boolean {
    return false;
  }

  waitUntilConnected(): Promise<void> {
    return Promise.resolve();
  }

  onConnected(listener: () => void): void {
    this.listeners.push(listener);
  }

  reconnect(): void {
    this.current = undefined;
    for (const listener of this.listeners) listener();
  }

  channel(): Promise<PublishChannel> {
    if (!this.current || this.current.closed) {
      const raw = new LimitedChannel(this.broker);
      this.channels.push(raw);
      this.current = new PublishChannel(raw as unknown as ConfirmChannel);
    }
    return Promise.resolve(this.current);
  }

  openChannel(): Promise<Channel> {
    const probe = Object.assign(new EventEmitter(), { checkExchange: () => Promise.resolve({}), checkQueue: () => Promise.resolve({}) });
    return Promise.resolve(probe as unknown as Channel);
  }

  sentIds(): string[] {
    return this.channels.flatMap((c) => c.sent);
  }
}

const OPTIONS = { timeoutMs: 5_000, signal: new AbortController().signal };

describe('the broker adapter and what it learns from the broker', () => {
  let connection: FakeConnection;
  let broker: RelayBroker;
  let small: OutboxMessage;
  let big: OutboxMessage;
  let after: OutboxMessage;

  beforeEach(() => {
    connection = new FakeConnection();
    broker = new RelayBroker(connection, 'test-app');
    small = fakeMessage({ content: Buffer.alloc(10) });
    big = fakeMessage({ content: Buffer.alloc(2_000) });
    after = fakeMessage({ content: Buffer.alloc(10) });
  });

  test('a message over the broker limit fails as too_large with the limit in bytes; the limit is learned', async () => {
    const outcomes = await sendBatch(broker, [small, big], OPTIONS);
    expect(outcomes[0]).toEqual({ kind: 'confirmed' });
    expect(outcomes[1]).toEqual({
      kind: 'failed',
      reason: 'too_large',
      error: "message of 2000 bytes exceeds the broker's max message size of 1000 bytes",
    });
    expect((await broker.preflight([small, big])).map((p) => p.kind)).toEqual(['send', 'apart']);
  });

  test('after the limit was learned, a large message goes out alone after the others, so it cannot close the channel under them', async () => {
    await sendBatch(broker, [big], OPTIONS);
    const outcomes = await sendBatch(broker, [big, small, after], OPTIONS);
    expect(outcomes[0]).toMatchObject({ kind: 'failed', reason: 'too_large' });
    expect(outcomes[1]).toEqual({ kind: 'confirmed' });
    expect(outcomes[2]).toEqual({ kind: 'confirmed' });
    expect(connection.sentIds().slice(-3)).toEqual([small.messageId, after.messageId, big.messageId]);
  });

  test('the operator raises the limit and retries the dead message: delivered, without a restart or reconnect', async () => {
    const first = await sendBatch(broker, [big], OPTIONS);
    expect(first[0]).toMatchObject({ kind: 'failed', reason: 'too_large' });
    connection.broker.maxBytes = 1_000_000; // e.g. rabbitmqctl eval 'application:set_env(rabbit, max_message_size, ...)'
    const retried = await sendBatch(broker, [{ ...big, attempts: 0 }, small], OPTIONS);
    expect(retried).toEqual([{ kind: 'confirmed' }, { kind: 'confirmed' }]);
  });

  test('a new connection forgets what the last one taught', async () => {
    await sendBatch(broker, [big], OPTIONS);
    expect((await broker.preflight([big]))[0]?.kind).toBe('apart');
    connection.reconnect();
    expect((await broker.preflight([big]))[0]?.kind).toBe('send');
  });

  test('a keyed message sent apart holds back the later messages of its key in the batch, not other keys', async () => {
    await sendBatch(broker, [big], OPTIONS);
    const keyedBig = { ...big, partitionKey: 'a' };
    const sameKey = fakeMessage({ partitionKey: 'a' });
    const otherKey = fakeMessage({ partitionKey: 'b' });
    connection.broker.maxBytes = 1_000_000;
    const outcomes = await sendBatch(broker, [keyedBig, sameKey, otherKey], OPTIONS);
    expect(outcomes).toEqual([{ kind: 'confirmed' }, { kind: 'kept_back' }, { kind: 'confirmed' }]);
  });

  test('a nack (a queue full under reject-publish) refuses that message only; a publish nacked whole replaces its channel', async () => {
    const nackedA = fakeMessage();
    const nackedB = fakeMessage();
    connection.broker.full.add(nackedA.messageId).add(nackedB.messageId);
    const nack = { kind: 'refused' };
    expect(await sendBatch(broker, [small, nackedA], OPTIONS)).toEqual([{ kind: 'confirmed' }, nack]);
    expect(connection.channels).toHaveLength(1);
    expect(await sendBatch(broker, [nackedA, nackedB], OPTIONS)).toEqual([nack, nack]);
    // The next publish goes out on a new channel.
    expect(await sendBatch(broker, [after], OPTIONS)).toEqual([{ kind: 'confirmed' }]);
    expect(connection.channels).toHaveLength(2);
  });
});
