import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  trace,
  type Attributes,
  type Span,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
} from '@opentelemetry/api';
import { W3CTraceContextPropagator } from '@opentelemetry/core';
import type { HeaderTable, OutboxMessage } from '../domain/message';
import type { BatchTrace, BatchTracer, TracedOutcome } from '../domain/tracing';
import { errorMessage } from '../errors';
import { DEFAULT_EXCHANGE_NAME, MESSAGING, TRACE_HEADERS } from '../util/trace-context';

/** Reads the row's headers: only string values are trace context. */
const headerGetter: TextMapGetter<HeaderTable> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => {
    const value = Object.hasOwn(carrier, key) ? carrier[key] : undefined;
    return typeof value === 'string' ? value : undefined;
  },
};

const headerSetter: TextMapSetter<Record<string, string>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

/**
 * The relay's spans, as docs/tracing.md describes them:
 * - `outbox batch`: one per batch that claimed rows, INTERNAL, a root: from the claim to
 *   the commit (or the rollback), with the database's attributes;
 * - `publish <exchange>`: one per message sent, PRODUCER, a child of the row's
 *   `traceparent`/`tracestate` when they are valid (a root otherwise), linked to its
 *   batch's span; from the claim to the broker's confirm; status ERROR with the reason
 *   when the attempt failed. Its context replaces `traceparent`/`tracestate` in the AMQP
 *   headers, so the consumer's span is its child.
 *
 * A message claimed but never sent (held behind an earlier message of its key) gets no
 * span: its span is not ended, so it is never exported.
 */
export class OtelBatchTracer implements BatchTracer {
  private readonly propagator = new W3CTraceContextPropagator();

  constructor(
    private readonly tracer: Tracer,
    private readonly schema: string,
  ) {}

  start(claimedAtMs: number, claimed: number, messages: readonly OutboxMessage[]): BatchTrace {
    const batch = this.tracer.startSpan(
      'outbox batch',
      {
        kind: SpanKind.INTERNAL,
        startTime: claimedAtMs,
        root: true,
        attributes: {
          'db.system.name': 'postgresql',
          'db.system': 'postgresql',
          'db.namespace': this.schema,
          'outbox.batch.claimed': claimed,
          [MESSAGING.batchCount]: messages.length,
        },
      },
      ROOT_CONTEXT,
    );
    const links = [{ context: batch.spanContext() }];
    const spans: Span[] = [];
    const sent = messages.map((message) => {
      const parent = this.propagator.extract(ROOT_CONTEXT, message.headers, headerGetter);
      const span = this.tracer.startSpan(
        `publish ${message.exchange === '' ? DEFAULT_EXCHANGE_NAME : message.exchange}`,
        { kind: SpanKind.PRODUCER, startTime: claimedAtMs, links, attributes: messageAttributes(message) },
        parent,
      );
      spans.push(span);
      const context: Record<string, string> = {};
      this.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), context, headerSetter);
      return withTraceContext(message, context);
    });
    return new OtelBatchTrace(batch, spans, sent);
  }
}

/** The message with the relay span's context as its trace headers; its other headers as they were. */
function withTraceContext(message: OutboxMessage, context: Readonly<Record<string, string>>): OutboxMessage {
  const headers: Record<string, HeaderTable[string]> = {};
  for (const key of Object.keys(message.headers)) {
    if (key !== TRACE_HEADERS.parent && key !== TRACE_HEADERS.state) headers[key] = message.headers[key] as HeaderTable[string];
  }
  return { ...message, headers: { ...headers, ...context } };
}

function messageAttributes(message: OutboxMessage): Attributes {
  const attributes: Attributes = {
    [MESSAGING.system]: 'rabbitmq',
    [MESSAGING.operationType]: 'send',
    [MESSAGING.operationName]: 'publish',
    [MESSAGING.destinationName]: message.exchange,
    [MESSAGING.messageId]: message.messageId,
    [MESSAGING.bodySize]: message.content.length,
    'outbox.message.attempt': message.attempts + 1,
  };
  if (message.routingKey !== '') attributes[MESSAGING.routingKey] = message.routingKey;
  if (message.correlationId !== null) attributes[MESSAGING.conversationId] = message.correlationId;
  if (message.messageType !== null) attributes['outbox.message.type'] = message.messageType;
  if (message.partitionKey !== null) attributes['outbox.partition_key'] = message.partitionKey;
  return attributes;
}

/** The spans of one batch; message spans end at their confirm, the batch span at the commit. */
class OtelBatchTrace implements BatchTrace {
  /** When each sent message's outcome came in (epoch ms), by message id. */
  private readonly settledAt = new Map<string, number>();
  private readonly ended = new Set<number>();
  readonly settled = (message: OutboxMessage): void => {
    this.settledAt.set(message.id, Date.now());
  };

  constructor(
    private readonly batch: Span,
    private readonly spans: readonly Span[],
    readonly messages: readonly OutboxMessage[],
  ) {}

  decided(outcomes: readonly TracedOutcome[]): void {
    let published = 0;
    let failed = 0;
    outcomes.forEach((outcome, index) => {
      const span = this.spans[index];
      const message = this.messages[index];
      if (span === undefined || message === undefined) return;
      const settledAt = this.settledAt.get(message.id);
      if ((outcome.verdict === 'held' || outcome.verdict === 'parked') && settledAt === undefined) return;
      span.setAttribute('outbox.verdict', outcome.verdict);
      if (outcome.returned) span.setAttribute('outbox.returned', true);
      if (outcome.error !== undefined) {
        failed += 1;
        span.setAttribute(MESSAGING.errorType, outcome.error.reason);
        span.setStatus({ code: SpanStatusCode.ERROR, message: `${outcome.error.reason}: ${outcome.error.message}` });
      } else if (outcome.verdict === 'published') {
        published += 1;
      }
      span.end(settledAt ?? Date.now());
      this.ended.add(index);
    });
    this.batch.setAttributes({ 'outbox.batch.published': published, 'outbox.batch.failed': failed });
  }

  end(error?: unknown): void {
    if (error !== undefined) {
      const reason = `the batch was rolled back: ${errorMessage(error)}`;
      // Spans of messages the broker may have taken end in error; those never sent get none.
      this.spans.forEach((span, index) => {
        const message = this.messages[index];
        const settledAt = message === undefined ? undefined : this.settledAt.get(message.id);
        if (this.ended.has(index) || settledAt === undefined) return;
        span.setStatus({ code: SpanStatusCode.ERROR, message: reason });
        span.end(settledAt);
      });
      this.batch.setStatus({ code: SpanStatusCode.ERROR, message: reason });
    }
    this.batch.end(Date.now());
  }
}
