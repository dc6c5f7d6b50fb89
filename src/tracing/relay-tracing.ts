import { ExportResultCode, type ExportResult } from '@opentelemetry/core';
import { OTLPTraceExporter as JsonTraceExporter } from '@opentelemetry/exporter-trace-otlp-http';
import { OTLPTraceExporter as ProtobufTraceExporter } from '@opentelemetry/exporter-trace-otlp-proto';
import { defaultResource, resourceFromAttributes } from '@opentelemetry/resources';
import {
  AlwaysOffSampler,
  AlwaysOnSampler,
  BasicTracerProvider,
  BatchSpanProcessor,
  ParentBasedSampler,
  TraceIdRatioBasedSampler,
  type ReadableSpan,
  type Sampler,
  type SpanExporter,
} from '@opentelemetry/sdk-trace-base';
import { ATTR_SERVICE_NAME, ATTR_SERVICE_VERSION } from '@opentelemetry/semantic-conventions';
import type { TracingSettings } from '../config/tracing';
import type { BatchTracer } from '../domain/tracing';
import { errorMessage } from '../errors';
import type { Logger } from '../observability/logger';
import { OtelBatchTracer } from './batch-spans';

/**
 * The relay's tracing, built only when an OTLP endpoint is set: app.ts `require`s this
 * module then, so a relay without tracing never loads OpenTelemetry at all.
 */
export interface RelayTracing {
  /** What the loop's batches report to. */
  readonly tracer: BatchTracer;
  /** Exports the spans still buffered, then closes the exporter (the caller bounds the wait). */
  shutdown(): Promise<void>;
}

/**
 * A tracer provider of its own, never registered globally: a service that embeds the relay
 * (or a test) keeps its own global OpenTelemetry setup untouched. Spans are batched
 * (BatchSpanProcessor, with the `OTEL_BSP_*` settings as validated by config/) and sent
 * over OTLP/HTTP.
 */
export function startRelayTracing(settings: TracingSettings, schema: string, log: Logger): RelayTracing {
  const version = packageVersion();
  const exporter = new LoggingExporter(createExporter(settings), log);
  const provider = new BasicTracerProvider({
    resource: defaultResource().merge(
      resourceFromAttributes({
        ...settings.resourceAttributes,
        [ATTR_SERVICE_NAME]: settings.serviceName,
        [ATTR_SERVICE_VERSION]: version,
      }),
    ),
    sampler: sampler(settings),
    // Every option given: the processor then reads no OTEL_BSP_* variable of its own.
    spanProcessors: [new BatchSpanProcessor(exporter, { ...settings.batch })],
  });
  // The endpoint is shown without its query (a token may sit there); the headers never.
  const endpoint = new URL(settings.tracesUrl);
  log.info(
    {
      endpoint: `${endpoint.protocol}//${endpoint.host}${endpoint.pathname}`,
      protocol: settings.protocol,
      sampler: settings.sampler,
      serviceName: settings.serviceName,
    },
    'tracing on: exporting spans over OTLP/HTTP',
  );
  return {
    tracer: new OtelBatchTracer(provider.getTracer('outbox-relay', version), schema),
    shutdown: () => provider.shutdown(),
  };
}

function createExporter(settings: TracingSettings): SpanExporter {
  const config = { url: settings.tracesUrl, headers: { ...settings.headers } };
  return settings.protocol === 'http/json' ? new JsonTraceExporter(config) : new ProtobufTraceExporter(config);
}

/** The sampler OTEL_TRACES_SAMPLER names (the parent-based ones follow the row's sampled flag). */
function sampler(settings: TracingSettings): Sampler {
  const ratio = (): Sampler => new TraceIdRatioBasedSampler(settings.samplerRatio);
  switch (settings.sampler) {
    case 'always_on':
      return new AlwaysOnSampler();
    case 'always_off':
      return new AlwaysOffSampler();
    case 'traceidratio':
      return ratio();
    case 'parentbased_always_on':
      return new ParentBasedSampler({ root: new AlwaysOnSampler() });
    case 'parentbased_always_off':
      return new ParentBasedSampler({ root: new AlwaysOffSampler() });
    case 'parentbased_traceidratio':
      return new ParentBasedSampler({ root: ratio() });
  }
}

/** Failures per log line after the first: an unreachable collector is said, not shouted. */
const FAILURES_PER_LOG_LINE = 100;

/**
 * The OTLP exporter, with its failures in the relay's log (the SDK's own diagnostics are
 * silent): the first failure, every hundredth after it, and the recovery. Spans that
 * cannot be sent are dropped; publishing never waits for them.
 */
class LoggingExporter implements SpanExporter {
  private failures = 0;

  constructor(
    private readonly inner: SpanExporter,
    private readonly log: Logger,
  ) {}

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.inner.export(spans, (result) => {
      if (result.code === ExportResultCode.SUCCESS) {
        if (this.failures > 0) this.log.info({ failedExports: this.failures }, 'span export works again');
        this.failures = 0;
      } else {
        this.failures += 1;
        if (this.failures % FAILURES_PER_LOG_LINE === 1) {
          this.log.warn(
            { spans: spans.length, failedExports: this.failures, err: result.error ? errorMessage(result.error) : 'unknown' },
            'cannot export spans; they are dropped',
          );
        }
      }
      done(result);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}

function packageVersion(): string {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return (require('../../package.json') as { version: string }).version;
}
