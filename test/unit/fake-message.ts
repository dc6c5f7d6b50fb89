import type { OutboxMessage } from '../../src/domain/message';

/** The unit tests' message factory: a claimed message with every column set; override what a test is about. */
let nextId = 1;

export function fakeMessage(overrides: Partial<OutboxMessage> = {}): OutboxMessage {
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
    createdAt: new Date(),
    availableAt: new Date(),
    attempts: 0,
    ...overrides,
  };
}
