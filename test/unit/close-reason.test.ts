import { closeVerdict } from '../../src/broker/close-reason';
import { publishProperties } from '../../src/broker/publisher';
import { fakeMessage as message } from './fake-message';

const NO_EXCHANGE_CLOSE = `Channel closed by server: 404 (NOT-FOUND) with message "NOT_FOUND - no exchange 'missing' in vhost '/'"`;
const TOO_LARGE_CLOSE =
  'Channel closed by server: 406 (PRECONDITION-FAILED) with message "PRECONDITION_FAILED - message size 2000 is larger than configured max size 1000"';
describe('publishProperties: the AMQP properties of a message', () => {
  test('maps every column to its AMQP property', () => {
    const m = message({
      messageId: '2b1e8f6c-3a43-4a5e-9b1c-5f0d7e6a9c11',
      messageType: 'order.shipped',
      contentType: 'application/x-protobuf',
      correlationId: 'corr-42',
      headers: { traceparent: '00-abc-01', 'x-n': 3n, 'x-ratio': 0.5 },
      createdAt: new Date('2024-05-01T12:34:56.789Z'),
    });
    expect(publishProperties(m, { appId: 'orders-service' })).toEqual({
      persistent: true,
      mandatory: true,
      messageId: '2b1e8f6c-3a43-4a5e-9b1c-5f0d7e6a9c11',
      type: 'order.shipped',
      contentType: 'application/x-protobuf',
      correlationId: 'corr-42',
      timestamp: 1_714_566_896, // seconds, not milliseconds
      appId: 'orders-service',
      // Integers as AMQP 64-bit integers, other numbers as doubles: nothing left to amqplib's guess.
      headers: {
        traceparent: '00-abc-01',
        'x-n': { '!': 'int64', value: 3n },
        'x-ratio': { '!': 'double', value: 0.5 },
        // The row's place in the outbox's order (its id), which every message carries.
        'x-outbox-position': { '!': 'int64', value: BigInt(m.id) },
      },
    });
  });

  test('null type and correlation id become undefined (absent), not null', () => {
    const props = publishProperties(message({ messageType: null, correlationId: null }), { appId: 'a' });
    expect(props.type).toBeUndefined();
    expect(props.correlationId).toBeUndefined();
    expect(props).not.toHaveProperty('type', null);
    expect(props).not.toHaveProperty('correlationId', null);
  });

  test('the timestamp is the creation time in whole seconds', () => {
    expect(publishProperties(message({ createdAt: new Date(999) }), { appId: 'a' }).timestamp).toBe(0);
    expect(publishProperties(message({ createdAt: new Date(1_000) }), { appId: 'a' }).timestamp).toBe(1);
    expect(publishProperties(message({ createdAt: new Date('2030-01-01T00:00:00.999Z') }), { appId: 'a' }).timestamp).toBe(1_893_456_000);
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
    const reasonFor = (name: string): string =>
      `Channel closed by server: 404 (NOT-FOUND) with message "NOT_FOUND - no exchange '${name}' in vhost '/'"`;
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
