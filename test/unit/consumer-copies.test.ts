import type { ConsumeMessage } from 'amqplib';
import { copyProperties } from '../../src/consumer/delivery';
import { failedAttempts, inboxMessage } from '../../src/consumer/inbox';
import { isBrokerSetupRefusal } from '../../src/util/outage';

function delivery(headers: Record<string, unknown>, extra: Record<string, unknown> = {}): ConsumeMessage {
  return {
    content: Buffer.from('{"orderId":"o-1"}'),
    fields: { deliveryTag: 1, redelivered: false, exchange: '', routingKey: 'orders', consumerTag: 'c' },
    properties: {
      messageId: 'm-1',
      type: 'order.created',
      contentType: 'application/json',
      deliveryMode: 2,
      userId: 'relay',
      headers,
      ...extra,
    },
  } as unknown as ConsumeMessage;
}

test('a retried copy keeps the properties and headers, drops the broker bookkeeping and the user id, and records the attempt', () => {
  const msg = delivery({
    tenant: 't-1',
    'x-death': [{ count: 1, queue: 'orders.retry' }],
    'x-first-death-queue': 'orders.retry',
    'x-outbox-consumer-attempts': 1,
    'x-outbox-consumer-exchange': 'events',
    'x-outbox-consumer-routing-key': 'order.created',
  });
  const copy = copyProperties(msg, 2, new Error('carrier API down\n  at handler (x.ts:1)'));
  expect(copy).toEqual({
    messageId: 'm-1',
    type: 'order.created',
    contentType: 'application/json',
    persistent: true,
    headers: {
      tenant: 't-1',
      'x-outbox-consumer-attempts': 2,
      'x-outbox-consumer-error': 'carrier API down at handler (x.ts:1)',
      'x-outbox-consumer-exchange': 'events',
      'x-outbox-consumer-routing-key': 'order.created',
    },
  });
});

test('the handler sees the original exchange and routing key of a copy, and its attempt number', () => {
  const msg = delivery({
    'x-outbox-consumer-attempts': 2,
    'x-outbox-consumer-exchange': 'events',
    'x-outbox-consumer-routing-key': 'order.created',
  });
  expect(failedAttempts(msg)).toBe(2);
  const seen = inboxMessage<{ orderId: string }>(msg, 'm-1', failedAttempts(msg));
  expect(seen).toMatchObject({ exchange: 'events', routingKey: 'order.created', attempt: 3, payload: { orderId: 'o-1' } });
  expect(failedAttempts(delivery({}))).toBe(0);
  expect(failedAttempts(delivery({ 'x-outbox-consumer-attempts': 'junk' }))).toBe(0);
});

test('refusals that waiting does not mend, told apart from outages', () => {
  expect(isBrokerSetupRefusal(Object.assign(new Error('Operation failed: QueueDeclare; 404 (NOT-FOUND)'), { code: 404 }))).toBe(true);
  expect(isBrokerSetupRefusal(new Error('Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED"'))).toBe(true);
  expect(isBrokerSetupRefusal(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5672'), { code: 'ECONNREFUSED' }))).toBe(false);
  expect(isBrokerSetupRefusal(new Error('Connection closed: 320 (CONNECTION-FORCED) with message "broker shutting down"'))).toBe(false);
});
