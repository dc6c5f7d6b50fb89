/**
 * W3C Trace Context (https://www.w3.org/TR/trace-context/) as the producer and consumer
 * libraries read and write it without loading an OpenTelemetry package: the relay uses
 * the SDK's own propagator, and test/unit/trace-context.test.ts holds this reader to it.
 * Also the attribute names of the OpenTelemetry messaging conventions that the relay and
 * the consumer share, in one place.
 */

/** The parts of a valid `traceparent`. */
export interface TraceParent {
  /** 32 lowercase hex digits, not all zero. */
  readonly traceId: string;
  /** 16 lowercase hex digits, not all zero. */
  readonly spanId: string;
  /** The trace flags octet (bit 0: sampled). */
  readonly traceFlags: number;
}

const VERSION_00 = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
/** A later version: the same first four fields, then possibly more after a dash. */
const LATER_VERSION = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;
const ZERO_TRACE_ID = '0'.repeat(32);
const ZERO_SPAN_ID = '0'.repeat(16);

/**
 * Reads a `traceparent` header value; undefined when it is not a valid one (then the
 * receiver starts a new trace, as the W3C specification says). Version `ff` and all-zero
 * ids are invalid; a version above 00 is read by its first four fields.
 */
export function parseTraceParent(value: unknown): TraceParent | undefined {
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  let traceId: string;
  let spanId: string;
  let flags: string;
  const v00 = VERSION_00.exec(text);
  if (v00) {
    [, traceId = '', spanId = '', flags = ''] = v00;
  } else {
    const later = LATER_VERSION.exec(text);
    if (!later || later[1] === '00' || later[1] === 'ff') return undefined;
    [, , traceId = '', spanId = '', flags = ''] = later;
  }
  if (traceId === ZERO_TRACE_ID || spanId === ZERO_SPAN_ID) return undefined;
  return { traceId, spanId, traceFlags: parseInt(flags, 16) };
}

/** The `traceparent` header value of a span context (version 00). */
export function formatTraceParent(context: TraceParent): string {
  return `00-${context.traceId}-${context.spanId}-${(context.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

/** The header names the trace context travels under, in the row's `headers` and in AMQP headers. */
export const TRACE_HEADERS = Object.freeze({ parent: 'traceparent', state: 'tracestate' });

/**
 * Attribute names of the OpenTelemetry semantic conventions for messaging (RabbitMQ),
 * copied here rather than imported from the conventions' unstable entry point, which may
 * rename them in a minor release.
 */
export const MESSAGING = Object.freeze({
  system: 'messaging.system',
  operationType: 'messaging.operation.type',
  operationName: 'messaging.operation.name',
  destinationName: 'messaging.destination.name',
  subscriptionName: 'messaging.destination.subscription.name',
  routingKey: 'messaging.rabbitmq.destination.routing_key',
  deliveryTag: 'messaging.rabbitmq.message.delivery_tag',
  messageId: 'messaging.message.id',
  conversationId: 'messaging.message.conversation_id',
  bodySize: 'messaging.message.body.size',
  batchCount: 'messaging.batch.message_count',
  errorType: 'error.type',
});

/** RabbitMQ's own name for the default exchange (`''`), used in span names. */
export const DEFAULT_EXCHANGE_NAME = 'amq.default';
