import type { Span, Tracer } from '@opentelemetry/api';
import type { ConsumeMessage } from 'amqplib';
import { loadOtelApi, type OtelApiModule } from '../util/otel-api';
import { MESSAGING, parseTraceParent, TRACE_HEADERS } from '../util/trace-context';
import { headerText } from './inbox';
import type { ConsumerTracingOption } from './options';

/** What one attempt is, for its span. */
export interface TracedDelivery {
  readonly messageId: string;
  readonly exchange: string;
  readonly routingKey: string;
  readonly attempt: number;
}

/** How an attempt ended: processed, a duplicate skipped, or not run in its batch (it runs again later). */
export type AttemptOutcome = 'handled' | 'duplicate' | 'skipped';

/** The span of one attempt. */
export interface AttemptSpan {
  /** Runs `work` (the handler) with the span active. */
  run<T>(work: () => Promise<T>): Promise<T>;
  /** Ends it with its outcome. */
  end(outcome: AttemptOutcome): void;
  /** Ends it as an error: ERROR status, the exception, `error.type`. */
  fail(err: unknown): void;
}

/**
 * The consumer's spans: one CONSUMER span `process <queue>` per attempt, a child of the
 * delivery's `traceparent`/`tracestate` (the relay's publish span) or a root without a
 * valid one. The inbox insert, the handler and the commit run inside it (with batches: the
 * spans of a batch's messages start together, before its inbox insert, and end after its
 * commit), and the handler runs with it active (its own spans, and instrumented pg
 * queries, become its children when the service registered a context manager). A
 * duplicate gets the attribute `outbox.inbox.duplicate` and an event; a throw sets status
 * ERROR.
 */
export class DeliveryTracing {
  private constructor(
    private readonly api: OtelApiModule,
    private readonly tracer: Tracer,
    private readonly queue: string,
    private readonly consumerName: string,
  ) {}

  /**
   * The tracing the option asks for, undefined for none; throws (a sentence naming the
   * option) when it asks for tracing and `@opentelemetry/api` is not installed.
   */
  static fromOption(option: ConsumerTracingOption | undefined, queue: string, consumerName: string): DeliveryTracing | undefined {
    if (option === undefined || option === false) return undefined;
    const api = loadOtelApi();
    if (api === undefined) throw new Error('tracing needs @opentelemetry/api installed (npm install @opentelemetry/api)');
    const provider = option === true ? api.trace.getTracerProvider() : option;
    return new DeliveryTracing(api, provider.getTracer('outbox-relay/consumer') as Tracer, queue, consumerName);
  }

  /**
   * The span of one attempt, started now: `run` runs the handler with it active; `end`
   * or `fail` ends it once the attempt's outcome is known (after its batch's commit).
   */
  start(msg: ConsumeMessage, delivery: TracedDelivery): AttemptSpan {
    const { api } = this;
    const parent = this.parentContext(msg);
    const span = this.tracer.startSpan(
      `process ${this.queue}`,
      { kind: api.SpanKind.CONSUMER, attributes: this.attributes(msg, delivery) },
      parent,
    );
    const active = api.trace.setSpan(parent, span);
    return {
      run: (work) => api.context.with(active, work),
      end: (outcome) => {
        if (outcome === 'duplicate') {
          span.setAttribute('outbox.inbox.duplicate', true);
          span.addEvent('duplicate skipped', { [MESSAGING.messageId]: delivery.messageId });
        } else if (outcome === 'skipped') {
          span.setAttribute('outbox.consumer.skipped', 'not run in its batch: it runs again');
        }
        span.end();
      },
      fail: (err) => {
        this.failed(span, err);
        span.end();
      },
    };
  }

  private parentContext(msg: ConsumeMessage): ReturnType<OtelApiModule['context']['active']> {
    const { api } = this;
    const parent = parseTraceParent(headerText(msg, TRACE_HEADERS.parent));
    if (parent === undefined) return api.ROOT_CONTEXT;
    const state = headerText(msg, TRACE_HEADERS.state);
    return api.trace.setSpanContext(api.ROOT_CONTEXT, {
      ...parent,
      isRemote: true,
      ...(state === undefined ? {} : { traceState: api.createTraceState(state) }),
    });
  }

  private attributes(msg: ConsumeMessage, delivery: TracedDelivery): Record<string, string | number> {
    const attributes: Record<string, string | number> = {
      [MESSAGING.system]: 'rabbitmq',
      [MESSAGING.operationType]: 'process',
      [MESSAGING.operationName]: 'process',
      [MESSAGING.destinationName]: delivery.exchange,
      [MESSAGING.subscriptionName]: this.queue,
      [MESSAGING.messageId]: delivery.messageId,
      [MESSAGING.bodySize]: msg.content.length,
      [MESSAGING.deliveryTag]: msg.fields.deliveryTag,
      'outbox.consumer.name': this.consumerName,
      'outbox.consumer.attempt': delivery.attempt,
    };
    if (delivery.routingKey !== '') attributes[MESSAGING.routingKey] = delivery.routingKey;
    const correlationId = msg.properties.correlationId as unknown;
    if (typeof correlationId === 'string') attributes[MESSAGING.conversationId] = correlationId;
    return attributes;
  }

  private failed(span: Span, err: unknown): void {
    const error = err instanceof Error ? err : new Error(String(err));
    span.recordException(error);
    span.setAttribute(MESSAGING.errorType, error.name === 'InboxUnavailable' ? 'inbox_unavailable' : error.name);
    span.setStatus({ code: this.api.SpanStatusCode.ERROR, message: error.message });
  }
}
