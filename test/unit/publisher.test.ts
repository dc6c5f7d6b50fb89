import { EventEmitter } from 'node:events';
import type { ConfirmChannel, Options } from 'amqplib';
import { closeVerdict } from '../../src/broker/close-reason';
import { PublishChannel } from '../../src/broker/publish-channel';
import { publishBatch, publishProperties } from '../../src/broker/publisher';
import type { OutboxMessage } from '../../src/domain/message';
import type { PublishOutcome } from '../../src/domain/outcome';
import { waitFor } from '../kit/wait';

let nextId = 1;

function message(overrides: Partial<OutboxMessage> = {}): OutboxMessage {
  const id = nextId++;
  return {
    id: String(id),
    messageId: `00000000-0000-4000-8000-${String(id).padStart(12, '0')}`,
    exchange: 'orders',
    routingKey: 'order.created',
    messageType: 'order.created',
    content: Buffer.from(JSON.stringify({ n: id })),
    contentType: 'application/json',
    headers: { 'x-tenant': 'acme' },
    partitionKey: null,
    correlationId: 'corr-1',
    createdAt: new Date('2024-05-01T12:34:56.789Z'),
    availableAt: new Date('2024-05-01T12:34:56.789Z'),
    attempts: 0,
    ...overrides,
  };
}

type ConfirmCallback = (err: unknown) => void;

interface Published {
  readonly exchange: string;
  readonly routingKey: string;
  readonly content: Buffer;
  readonly options: Options.Publish;
  readonly callback: ConfirmCallback;
  settled: boolean;
}

/**
 * A confirm channel as far as publishBatch and PublishChannel use it. Like amqplib's,
 * its own 'close' listener (registered first) fails every unconfirmed callback with
 * "channel closed", after the 'error' event that carried the server's reason.
 */
class FakeConfirmChannel extends EventEmitter {
  readonly published: Published[] = [];
  /** What publish() returns (false = the socket buffer is full: wait for 'drain'). */
  writable = true;
  closeCalls = 0;
  /** Makes publish() throw for the message with this id, as amqplib does for an unencodable one. */
  refuse: string | undefined;

  constructor() {
    super();
    this.on('close', () => {
      for (const p of this.published) this.settle(p, new Error('channel closed'));
    });
  }

  publish(exchange: string, routingKey: string, content: Buffer, options: Options.Publish, callback: ConfirmCallback): boolean {
    if (options.messageId !== undefined && options.messageId === this.refuse) throw new RangeError('Frame size exceeds frame max');
    this.published.push({ exchange, routingKey, content, options, callback, settled: false });
    return this.writable;
  }

  close(): Promise<void> {
    this.closeCalls += 1;
    this.emit('close');
    return Promise.resolve();
  }

  ack(index: number): void {
    this.settle(this.at(index), null);
  }

  nack(index: number): void {
    this.settle(this.at(index), new Error('message nacked'));
  }

  /** basic.return of a published message (always before its confirm). */
  returnMessage(index: number, replyText = 'NO_ROUTE'): void {
    const p = this.at(index);
    this.emit('return', {
      content: p.content,
      fields: { replyCode: 312, replyText, exchange: p.exchange, routingKey: p.routingKey },
      properties: { messageId: p.options.messageId, headers: {} },
    });
  }

  /** The server closes the channel, with a reason (channel.close) or without (connection lost). */
  serverClose(reason?: string): void {
    if (reason !== undefined) this.emit('error', new Error(reason));
    this.emit('close');
  }

  private at(index: number): Published {
    const p = this.published[index];
    if (!p) throw new Error(`message #${index} was not published`);
    return p;
  }

  private settle(p: Published, err: Error | null): void {
    if (p.settled) return;
    p.settled = true;
    p.callback(err);
  }
}

function fakeChannel(): { fake: FakeConfirmChannel; target: PublishChannel } {
  const fake = new FakeConfirmChannel();
  return { fake, target: new PublishChannel(fake as unknown as ConfirmChannel) };
}

const OPTIONS = { appId: 'orders-service', timeoutMs: 10_000 };
const NO_EXCHANGE_CLOSE = `Channel closed by server: 404 (NOT-FOUND) with message "NOT_FOUND - no exchange 'missing' in vhost '/'"`;
const TOO_LARGE_CLOSE = 'Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1000"';

describe('publishProperties (SPEC §3.2)', () => {
  test('maps every column to its AMQP property', () => {
    const m = message({
      messageId: '2b1e8f6c-3a43-4a5e-9b1c-5f0d7e6a9c11',
      messageType: 'order.shipped',
      contentType: 'application/x-protobuf',
      correlationId: 'corr-42',
      headers: { traceparent: '00-abc-01', 'x-n': 3 },
      createdAt: new Date('2024-05-01T12:34:56.789Z'),
    });
    expect(publishProperties(m, 'orders-service')).toEqual({
      persistent: true,
      mandatory: true,
      messageId: '2b1e8f6c-3a43-4a5e-9b1c-5f0d7e6a9c11',
      type: 'order.shipped',
      contentType: 'application/x-protobuf',
      correlationId: 'corr-42',
      timestamp: 1_714_566_896, // seconds, not milliseconds
      appId: 'orders-service',
      headers: { traceparent: '00-abc-01', 'x-n': 3 },
    });
  });

  test('null type and correlation id become undefined (absent), not null', () => {
    const props = publishProperties(message({ messageType: null, correlationId: null }), 'a');
    expect(props.type).toBeUndefined();
    expect(props.correlationId).toBeUndefined();
    expect(props).not.toHaveProperty('type', null);
    expect(props).not.toHaveProperty('correlationId', null);
  });

  test('the timestamp is the creation time in whole seconds', () => {
    expect(publishProperties(message({ createdAt: new Date(999) }), 'a').timestamp).toBe(0);
    expect(publishProperties(message({ createdAt: new Date(1_000) }), 'a').timestamp).toBe(1);
    expect(publishProperties(message({ createdAt: new Date('2030-01-01T00:00:00.999Z') }), 'a').timestamp).toBe(1_893_456_000);
  });
});

describe('closeVerdict', () => {
  test('no close reason: no verdict', () => {
    expect(closeVerdict(undefined, message())).toBeUndefined();
    expect(closeVerdict('', message())).toBeUndefined();
  });

  test('404 no exchange fails only the messages of that exchange', () => {
    expect(closeVerdict(NO_EXCHANGE_CLOSE, message({ exchange: 'missing' }))).toEqual({
      reason: 'unknown_exchange',
      error: expect.stringContaining('"missing"') as unknown as string,
    });
    expect(closeVerdict(NO_EXCHANGE_CLOSE, message({ exchange: 'orders' }))).toBeUndefined();
    expect(closeVerdict(NO_EXCHANGE_CLOSE, message({ exchange: '' }))).toBeUndefined();
    expect(closeVerdict(NO_EXCHANGE_CLOSE, message({ exchange: 'missing_too' }))).toBeUndefined();
    expect(closeVerdict(NO_EXCHANGE_CLOSE, message({ exchange: 'miss' }))).toBeUndefined();
  });

  test('404 for an exchange with dots and dashes in its name', () => {
    const reason = `Channel closed by server: 404 (NOT-FOUND) with message "NOT_FOUND - no exchange 'billing.events-v2' in vhost 'prod'"`;
    expect(closeVerdict(reason, message({ exchange: 'billing.events-v2' }))?.reason).toBe('unknown_exchange');
    expect(closeVerdict(reason, message({ exchange: 'billing' }))).toBeUndefined();
  });

  test('404 for exchange names RabbitMQ prints verbatim (it does not escape quotes)', () => {
    // Reasons exactly as RabbitMQ 3.x/4.x sends them (recorded from the local broker).
    const reasonFor = (name: string): string => `Channel closed by server: 404 (NOT-FOUND) with message "NOT_FOUND - no exchange '${name}' in vhost '/'"`;
    for (const name of ['ü-ex', 'a b', "it's", "o'neil.events"]) {
      expect(closeVerdict(reasonFor(name), message({ exchange: name }))?.reason).toBe('unknown_exchange');
    }
    // A different exchange whose name is a prefix of the missing one must not be failed.
    expect(closeVerdict(reasonFor("it's"), message({ exchange: 'it' }))).toBeUndefined();
  });

  test('406 message too large fails only messages larger than the limit', () => {
    const large = message({ content: Buffer.alloc(2000) });
    const verdict = closeVerdict(TOO_LARGE_CLOSE, large);
    expect(verdict?.reason).toBe('too_large');
    expect(verdict?.error).toMatch(/2000 bytes/);
    expect(verdict?.error).toMatch(/1000 bytes/);
    expect(closeVerdict(TOO_LARGE_CLOSE, message({ content: Buffer.alloc(1000) }))).toBeUndefined();
    expect(closeVerdict(TOO_LARGE_CLOSE, message({ content: Buffer.alloc(10) }))).toBeUndefined();
    expect(closeVerdict(TOO_LARGE_CLOSE, message({ content: Buffer.alloc(1001) }))?.reason).toBe('too_large');
  });

  test('any other reason gives no verdict', () => {
    for (const reason of [
      `Connection closed: 320 (CONNECTION-FORCED) with message "CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'"`,
      'Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - unknown delivery tag 7"',
      `Channel closed by server: 404 (NOT-FOUND) with message "NOT_FOUND - no queue 'missing' in vhost '/'"`,
      'channel closed',
    ]) {
      expect(closeVerdict(reason, message({ exchange: 'missing', content: Buffer.alloc(5000) }))).toBeUndefined();
    }
  });
});

describe('publishBatch', () => {
  test('an empty batch publishes nothing', async () => {
    const { fake, target } = fakeChannel();
    await expect(publishBatch(target, [], OPTIONS)).resolves.toEqual([]);
    expect(fake.published).toHaveLength(0);
  });

  test('publishes the whole batch before any confirm (pipelined), with the §3.2 properties; acks confirm', async () => {
    const { fake, target } = fakeChannel();
    const batch = [message(), message({ exchange: '', routingKey: 'ship-queue' }), message({ messageType: null })];
    const result = publishBatch(target, batch, OPTIONS);
    // Every message is on the wire before the first confirm arrives.
    expect(fake.published).toHaveLength(3);
    fake.published.forEach((p, i) => {
      const m = batch[i]!;
      expect(p.exchange).toBe(m.exchange);
      expect(p.routingKey).toBe(m.routingKey);
      expect(p.content.equals(m.content)).toBe(true);
      expect(p.options).toEqual(publishProperties(m, 'orders-service'));
    });
    fake.ack(2);
    fake.ack(0);
    fake.ack(1);
    await expect(result).resolves.toEqual([{ kind: 'confirmed' }, { kind: 'confirmed' }, { kind: 'confirmed' }]);
    expect(fake.closeCalls).toBe(0);
  });

  test('a negative confirm fails that message only', async () => {
    const { fake, target } = fakeChannel();
    const result = publishBatch(target, [message(), message(), message()], OPTIONS);
    fake.ack(0);
    fake.nack(1);
    fake.ack(2);
    const outcomes = await result;
    expect(outcomes[0]).toEqual({ kind: 'confirmed' });
    expect(outcomes[1]).toMatchObject({ kind: 'failed', reason: 'nack' });
    expect(outcomes[2]).toEqual({ kind: 'confirmed' });
  });

  test('a message returned before its ack is returned, with the reply text; the others are confirmed', async () => {
    const { fake, target } = fakeChannel();
    const result = publishBatch(target, [message(), message({ exchange: '', routingKey: 'no-such-queue' }), message()], OPTIONS);
    fake.returnMessage(1, 'NO_ROUTE');
    fake.ack(0);
    fake.ack(1);
    fake.ack(2);
    await expect(result).resolves.toEqual([{ kind: 'confirmed' }, { kind: 'returned', replyText: 'NO_ROUTE' }, { kind: 'confirmed' }]);
    expect(target.returned.size).toBe(0);
  });

  test('confirms that do not come within timeoutMs fail with timeout, and the channel is discarded', async () => {
    jest.useFakeTimers();
    try {
      const { fake, target } = fakeChannel();
      let outcomes: PublishOutcome[] | undefined;
      const result = publishBatch(target, [message(), message(), message()], { ...OPTIONS, timeoutMs: 5_000 }).then((o) => {
        outcomes = o;
        return o;
      });
      fake.ack(1);
      jest.advanceTimersByTime(4_999);
      await Promise.resolve();
      await Promise.resolve();
      expect(outcomes).toBeUndefined();
      expect(fake.closeCalls).toBe(0);
      jest.advanceTimersByTime(1);
      const settled = await result;
      expect(settled[0]).toMatchObject({ kind: 'failed', reason: 'timeout', error: expect.stringContaining('5000 ms') as unknown as string });
      expect(settled[1]).toEqual({ kind: 'confirmed' });
      expect(settled[2]).toMatchObject({ kind: 'failed', reason: 'timeout' });
      expect(fake.closeCalls).toBe(1);
      expect(target.closed).toBe(true);
    } finally {
      jest.useRealTimers();
    }
  });

  test('the channel closed by the server mid-batch (404 no exchange): that exchange fails, the rest is unconfirmed', async () => {
    const { fake, target } = fakeChannel();
    const batch = [message({ exchange: 'orders' }), message({ exchange: 'missing' }), message({ exchange: 'orders' }), message({ exchange: 'missing' }), message({ exchange: '' })];
    const result = publishBatch(target, batch, OPTIONS);
    fake.ack(0);
    fake.serverClose(NO_EXCHANGE_CLOSE);
    const outcomes = await result;
    expect(outcomes[0]).toEqual({ kind: 'confirmed' });
    expect(outcomes[1]).toMatchObject({ kind: 'failed', reason: 'unknown_exchange' });
    expect(outcomes[2]).toMatchObject({ kind: 'unconfirmed' });
    expect(outcomes[3]).toMatchObject({ kind: 'failed', reason: 'unknown_exchange' });
    expect(outcomes[4]).toMatchObject({ kind: 'unconfirmed' });
    expect((outcomes[2] as { error: string }).error).toContain('no exchange');
  });

  test('the channel closed by the server for a too-large message fails only the messages over the limit', async () => {
    const { fake, target } = fakeChannel();
    const result = publishBatch(target, [message({ content: Buffer.alloc(10) }), message({ content: Buffer.alloc(2_000) })], OPTIONS);
    fake.serverClose(TOO_LARGE_CLOSE);
    const outcomes = await result;
    expect(outcomes[0]).toMatchObject({ kind: 'unconfirmed' });
    expect(outcomes[1]).toMatchObject({ kind: 'failed', reason: 'too_large' });
  });

  test('a connection lost mid-batch leaves every unconfirmed message without a verdict (no attempt burnt)', async () => {
    const { fake, target } = fakeChannel();
    const result = publishBatch(target, [message(), message(), message()], OPTIONS);
    fake.ack(0);
    fake.serverClose();
    const outcomes = await result;
    expect(outcomes[0]).toEqual({ kind: 'confirmed' });
    expect(outcomes[1]).toMatchObject({ kind: 'unconfirmed' });
    expect(outcomes[2]).toMatchObject({ kind: 'unconfirmed' });
  });

  test('a channel already closed publishes nothing and leaves the batch unconfirmed', async () => {
    const { fake, target } = fakeChannel();
    fake.serverClose();
    const outcomes = await publishBatch(target, [message(), message()], OPTIONS);
    expect(fake.published).toHaveLength(0);
    expect(outcomes.map((o) => o.kind)).toEqual(['unconfirmed', 'unconfirmed']);
  });

  test('honours back-pressure: waits for drain before writing more', async () => {
    const { fake, target } = fakeChannel();
    fake.writable = false;
    const result = publishBatch(target, [message(), message(), message()], OPTIONS);
    expect(fake.published).toHaveLength(1);
    fake.writable = true;
    fake.emit('drain');
    await waitFor('the rest of the batch written', () => fake.published.length === 3, 2_000);
    fake.ack(0);
    fake.ack(1);
    fake.ack(2);
    expect((await result).map((o) => o.kind)).toEqual(['confirmed', 'confirmed', 'confirmed']);
  });

  test('a channel closing while waiting for drain stops the batch; nothing more is written', async () => {
    const { fake, target } = fakeChannel();
    fake.writable = false;
    const result = publishBatch(target, [message(), message(), message()], OPTIONS);
    expect(fake.published).toHaveLength(1);
    fake.serverClose();
    const outcomes = await result;
    expect(fake.published).toHaveLength(1);
    expect(outcomes.map((o) => o.kind)).toEqual(['unconfirmed', 'unconfirmed', 'unconfirmed']);
  });

  test('a message amqplib cannot encode fails alone; the others are published', async () => {
    const { fake, target } = fakeChannel();
    const batch = [message(), message(), message()];
    fake.refuse = batch[1]!.messageId;
    const result = publishBatch(target, batch, OPTIONS);
    expect(fake.published).toHaveLength(2);
    fake.ack(0);
    fake.ack(1);
    const outcomes = await result;
    expect(outcomes[0]).toEqual({ kind: 'confirmed' });
    expect(outcomes[1]).toMatchObject({ kind: 'failed', reason: 'invalid_message' });
    expect(outcomes[2]).toEqual({ kind: 'confirmed' });
  });

  test('an abort (shutdown) leaves the waiting messages unconfirmed', async () => {
    const { fake, target } = fakeChannel();
    const controller = new AbortController();
    const result = publishBatch(target, [message(), message()], { ...OPTIONS, signal: controller.signal });
    fake.ack(0);
    controller.abort();
    const outcomes = await result;
    expect(outcomes[0]).toEqual({ kind: 'confirmed' });
    expect(outcomes[1]).toMatchObject({ kind: 'unconfirmed', error: 'shutting down' });
    // A late confirm changes nothing.
    fake.ack(1);
    expect(outcomes[1]).toMatchObject({ kind: 'unconfirmed' });
  });
});
