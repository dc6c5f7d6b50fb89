import { EventEmitter } from 'node:events';
import type { Channel } from 'amqplib';
import { RelayBroker, type RelayConnection } from '../../src/broker/relay-broker';
import type { PublishChannel } from '../../src/broker/publish-channel';
import { fakeMessage as message } from './fake-message';

/**
 * A connection whose topology channel records every name it is asked about: names in
 * `missing` are 404, names in `refused` make the check throw as RabbitMQ's 403 does,
 * and names longer than 255 bytes make it throw as amqplib does.
 */
class TopologyConnection implements RelayConnection {
  readonly checked: string[] = [];
  readonly missing = new Set<string>();
  readonly refused = new Set<string>();
  connected = true;
  lastCloseReason: string | undefined = undefined;
  blocked = false;

  blockedAtAnyTimeSince(): boolean {
    return false;
  }

  waitUntilConnected(): Promise<void> {
    return Promise.resolve();
  }

  onConnected(): void {}

  channel(): Promise<PublishChannel> {
    return Promise.reject(new Error('not used by preflight'));
  }

  openChannel(): Promise<Channel> {
    if (!this.connected) return Promise.reject(new Error('Connection closed'));
    const check = (kind: string) => (name: string) => {
      this.checked.push(`${kind}:${name}`);
      if (Buffer.byteLength(name) > 255) throw new TypeError(`Field '${kind}' is the wrong type; must be a string (up to 255 chars)`);
      if (this.refused.has(name)) {
        return Promise.reject(
          Object.assign(
            new Error(`Channel closed by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - access to ${kind} '${name}' refused"`),
            { code: 403 },
          ),
        );
      }
      if (this.missing.has(name)) return Promise.reject(Object.assign(new Error(`NOT_FOUND - no ${kind} '${name}'`), { code: 404 }));
      return Promise.resolve({});
    };
    return Promise.resolve(
      Object.assign(new EventEmitter(), { checkExchange: check('exchange'), checkQueue: check('queue') }) as unknown as Channel,
    );
  }
}

describe('preflight: what the broker adapter knows before sending', () => {
  test('a value over an AMQP byte limit fails as invalid_message, and its names never reach the topology checks', async () => {
    const connection = new TopologyConnection();
    const broker = new RelayBroker(connection, 'app');
    const longExchange = message({ exchange: 'e'.repeat(256) });
    const longCommand = message({ exchange: '', routingKey: '€'.repeat(100) });
    const badHeader = message({ exchange: 'bad-header-exchange', headers: { n: 2n ** 64n } });
    const good = message({ exchange: 'orders' });
    const command = message({ exchange: '', routingKey: 'shipping' });
    const result = await broker.preflight([longExchange, longCommand, badHeader, good, command]);
    expect(result).toEqual([
      { kind: 'fail', reason: 'invalid_message', error: 'exchange is 256 bytes; AMQP allows at most 255 bytes' },
      { kind: 'fail', reason: 'invalid_message', error: 'routing_key is 300 bytes; AMQP allows at most 255 bytes' },
      {
        kind: 'fail',
        reason: 'invalid_message',
        error: expect.stringMatching(/^header "n" is the integer 18446744073709551616, beyond/) as unknown as string,
      },
      { kind: 'send' },
      { kind: 'send' },
    ]);
    expect(connection.checked).toEqual(['exchange:orders', 'queue:shipping']);
  });

  test('a topology check that throws fails only the messages of that name; the others are checked and sent', async () => {
    const connection = new TopologyConnection();
    connection.refused.add('secret');
    connection.refused.add('private-queue');
    connection.missing.add('gone');
    const broker = new RelayBroker(connection, 'app');
    const result = await broker.preflight([
      message({ exchange: 'secret' }),
      message({ exchange: 'orders' }),
      message({ exchange: 'secret' }),
      message({ exchange: 'gone' }),
      message({ exchange: '', routingKey: 'private-queue' }),
      message({ exchange: '', routingKey: 'shipping' }),
    ]);
    expect(result).toEqual([
      {
        kind: 'fail',
        reason: 'unknown_exchange',
        error: expect.stringMatching(/^cannot check exchange "secret": .*ACCESS_REFUSED/) as unknown as string,
      },
      { kind: 'send' },
      { kind: 'fail', reason: 'unknown_exchange', error: expect.stringMatching(/^cannot check exchange "secret"/) as unknown as string },
      { kind: 'fail', reason: 'unknown_exchange', error: 'exchange "gone" does not exist' },
      {
        kind: 'fail',
        reason: 'unroutable',
        error: expect.stringMatching(/^cannot check queue "private-queue" for this command: .*ACCESS_REFUSED/) as unknown as string,
      },
      { kind: 'send' },
    ]);
  });

  test('while the connection is gone a failing check throws: the batch waits and no message is failed', async () => {
    const connection = new TopologyConnection();
    connection.connected = false;
    const broker = new RelayBroker(connection, 'app');
    await expect(broker.preflight([message({ exchange: 'orders' })])).rejects.toThrow('Connection closed');
  });
});
