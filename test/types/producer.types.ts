/**
 * Compile-time contract of the producer: a payload that does not match its
 * definition's type does not compile. Every `@ts-expect-error` below must be needed —
 * an unused one is itself a compile error — so this file compiles only while wrong
 * payloads are rejected. Compiled by `npm run lint` and by test/unit/producer-types.test.ts.
 */
import type { PoolClient } from 'pg';
import type { Transaction } from 'kysely';
import { defineMessage, enqueue, enqueueMany, message } from '../../src/index';

declare const client: PoolClient;
declare const trx: Transaction<Record<string, never>>;

const OrderCreated = defineMessage<{ orderId: string; total: number }>({ type: 'order.created', exchange: 'orders' });
const ShipOrder = defineMessage<{ orderId: string }>({ type: 'ship.order', exchange: '', routingKey: 'shipping' });

export async function rightPayloads(): Promise<string[]> {
  const a = await enqueue(client, OrderCreated, { orderId: 'o-1', total: 1990 });
  const b = await enqueue(trx, ShipOrder, { orderId: 'o-1' }, { partitionKey: 'o-1', correlationId: 'c' });
  const many = await enqueueMany(client, [message(OrderCreated, { orderId: 'o-2', total: 5 }), message(ShipOrder, { orderId: 'o-2' })]);
  return [a, b, ...many];
}

export async function wrongPayloads(): Promise<void> {
  // @ts-expect-error total must be a number
  await enqueue(client, OrderCreated, { orderId: 'o-1', total: '1990' });
  // @ts-expect-error total is missing
  await enqueue(client, OrderCreated, { orderId: 'o-1' });
  // @ts-expect-error unknown property
  await enqueue(trx, ShipOrder, { orderId: 'o-1', priority: 1 });
  // @ts-expect-error a ShipOrder payload is not an OrderCreated payload
  await enqueue(client, OrderCreated, { orderId: 'o-1' } as { orderId: string });
  // @ts-expect-error wrong payload inside enqueueMany
  await enqueueMany(client, [message(OrderCreated, { orderId: 2, total: 5 })]);
  // @ts-expect-error partitionKey must be a string
  await enqueue(client, ShipOrder, { orderId: 'o-1' }, { partitionKey: 42 });
}
