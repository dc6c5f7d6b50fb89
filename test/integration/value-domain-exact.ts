import type { ConsumeMessage } from 'amqplib';
import type { WireDelivery, WireValue } from '../kit/amqp-wire';

// The exact-headers wire checks of value-domain.test.ts: a published row against what arrived.

/** The application id the relay of value-domain.test.ts publishes with. */
export const APP_ID = 'релé-€-应用';

export interface StoredRow {
  id: string;
  message_id: string;
  partition_key: string | null;
  exchange: string;
  routing_key: string;
  message_type: string | null;
  content_type: string;
  correlation_id: string | null;
  content: Buffer;
  created_at: Date;
  attempts: number;
  last_error: string | null;
  published_at: Date | null;
  dead_at: Date | null;
}

/**
 * The delivery on the wire carries exactly the row's values, plus the relay's key and
 * position headers; amqplib reads the same (its numbers are doubles).
 */
export function expectExactly(
  wire: WireDelivery | undefined,
  viaAmqplib: ConsumeMessage | undefined,
  row: StoredRow,
  rowHeaders: Record<string, WireValue>,
): void {
  const headers: Record<string, WireValue> = {
    ...rowHeaders,
    ...(row.partition_key === null ? {} : { 'x-outbox-partition-key': row.partition_key }),
    'x-outbox-position': BigInt(row.id),
  };
  expect(wire).toBeDefined();
  expect(viaAmqplib).toBeDefined();
  expect({
    exchange: wire!.exchange,
    routingKey: wire!.routingKey,
    type: wire!.type,
    contentType: wire!.contentType,
    correlationId: wire!.correlationId,
    appId: wire!.appId,
    deliveryMode: wire!.deliveryMode,
    timestamp: wire!.timestamp,
    headers: wire!.headers,
  }).toEqual({
    exchange: row.exchange,
    routingKey: row.routing_key,
    type: row.message_type ?? undefined,
    contentType: row.content_type,
    correlationId: row.correlation_id ?? undefined,
    appId: APP_ID,
    deliveryMode: 2,
    timestamp: BigInt(Math.floor(row.created_at.getTime() / 1000)),
    headers,
  });
  expect(wire!.body.equals(row.content)).toBe(true);
  expect(viaAmqplib!.content.equals(row.content)).toBe(true);
  expect(viaAmqplib!.fields.exchange).toBe(row.exchange);
  expect(viaAmqplib!.fields.routingKey).toBe(row.routing_key);
  // amqplib decodes a 64-bit integer into a JavaScript number: exact up to 2^53.
  expect(viaAmqplib!.properties.headers).toEqual(asAmqplibReadsIt(headers));
}

function asAmqplibReadsIt(value: WireValue): unknown {
  if (typeof value === 'bigint') return Number(value);
  if (Array.isArray(value)) return value.map(asAmqplibReadsIt);
  if (value !== null && typeof value === 'object')
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, asAmqplibReadsIt(v as WireValue)]));
  return value;
}
