import { publishBatch, publishProperties } from '../../src/broker/publisher';
import type { PublishOutcome } from '../../src/domain/outcome';
import { waitFor } from '../kit/wait';
import { fakeChannel } from './fake-confirm-channel';
import { fakeMessage as message } from './fake-message';

const OPTIONS = { appId: 'orders-service', timeoutMs: 10_000 };
const NO_EXCHANGE_CLOSE = `Channel closed by server: 404 (NOT-FOUND) with message "NOT_FOUND - no exchange 'missing' in vhost '/'"`;
const TOO_LARGE_CLOSE =
  'Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1000"';
describe('publishBatch', () => {
  test('an empty batch publishes nothing', async () => {
    const { fake, target } = fakeChannel();
    await expect(publishBatch(target, [], OPTIONS)).resolves.toEqual([]);
    expect(fake.published).toHaveLength(0);
  });

  test('publishes the whole batch before any confirm (pipelined), with their AMQP properties; acks confirm', async () => {
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
      expect(p.options).toEqual(publishProperties(m, { appId: 'orders-service' }));
    });
    fake.ack(2);
    fake.ack(0);
    fake.ack(1);
    await expect(result).resolves.toEqual([{ kind: 'confirmed' }, { kind: 'confirmed' }, { kind: 'confirmed' }]);
    expect(fake.closeCalls).toBe(0);
  });

  test('a negative confirm refuses that message only', async () => {
    const { fake, target } = fakeChannel();
    const result = publishBatch(target, [message(), message(), message()], OPTIONS);
    fake.ack(0);
    fake.nack(1);
    fake.ack(2);
    const outcomes = await result;
    expect(outcomes[0]).toEqual({ kind: 'confirmed' });
    expect(outcomes[1]).toEqual({ kind: 'refused' });
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
      expect(settled[0]).toMatchObject({
        kind: 'failed',
        reason: 'timeout',
        error: expect.stringContaining('5000 ms') as unknown as string,
      });
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
    const batch = [
      message({ exchange: 'orders' }),
      message({ exchange: 'missing' }),
      message({ exchange: 'orders' }),
      message({ exchange: 'missing' }),
      message({ exchange: '' }),
    ];
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
