import { loadOtelApi, otelRegistered } from '../util/otel-api';
import { formatTraceParent, TRACE_HEADERS } from '../util/trace-context';

/** The trace context headers a row gets: `traceparent`, and `tracestate` when there is one. */
export type TraceHeaders = Readonly<Record<string, string>>;

/**
 * The active span's context as row headers, when the service uses OpenTelemetry and a
 * valid span is active; undefined otherwise. Costs nothing for a service without
 * OpenTelemetry: until something is registered with the API, the API is not even loaded.
 * The sampled flag is kept, so the relay and the consumer follow the service's sampling.
 */
export function activeTraceHeaders(): TraceHeaders | undefined {
  if (!otelRegistered()) return undefined;
  const api = loadOtelApi();
  if (api === undefined) return undefined;
  const span = api.trace.getSpanContext(api.context.active());
  if (span === undefined || !api.isSpanContextValid(span)) return undefined;
  const traceparent = formatTraceParent(span);
  const tracestate = span.traceState?.serialize();
  return tracestate ? { [TRACE_HEADERS.parent]: traceparent, [TRACE_HEADERS.state]: tracestate } : { [TRACE_HEADERS.parent]: traceparent };
}
