import type { Config } from './load-config';
import type { SamplerName } from './otel-schemas';

/** What the relay's tracing is built from (src/tracing/), read from the `OTEL_*` settings. */
export interface TracingSettings {
  /** Where spans are sent (OTLP/HTTP). */
  readonly tracesUrl: string;
  readonly protocol: 'http/protobuf' | 'http/json';
  /** Sent with every export; secret (API keys). */
  readonly headers: Readonly<Record<string, string>>;
  readonly serviceName: string;
  readonly resourceAttributes: Readonly<Record<string, string>>;
  readonly sampler: SamplerName;
  readonly samplerRatio: number;
  /** The batch span processor's settings (`OTEL_BSP_*`), validated. */
  readonly batch: {
    readonly scheduledDelayMillis: number;
    readonly exportTimeoutMillis: number;
    readonly maxQueueSize: number;
    readonly maxExportBatchSize: number;
  };
}

/**
 * The tracing settings, or undefined when tracing is off: no endpoint is set, or
 * OTEL_SDK_DISABLED=true. The traces endpoint is used as it is; the base endpoint gets
 * `v1/traces` appended, as the OpenTelemetry specification says.
 */
export function tracingSettings(config: Config): TracingSettings | undefined {
  if (config.sdkDisabled) return undefined;
  const tracesUrl = config.otlpTracesEndpoint ?? (config.otlpEndpoint === undefined ? undefined : signalUrl(config.otlpEndpoint));
  if (tracesUrl === undefined) return undefined;
  return Object.freeze({
    tracesUrl,
    protocol: config.otlpProtocol,
    headers: config.otlpHeaders,
    serviceName: config.serviceName,
    resourceAttributes: config.resourceAttributes,
    sampler: config.tracesSampler,
    samplerRatio: config.tracesSamplerArg,
    batch: Object.freeze({
      scheduledDelayMillis: config.bspScheduleDelayMs,
      exportTimeoutMillis: config.bspExportTimeoutMs,
      maxQueueSize: config.bspMaxQueueSize,
      maxExportBatchSize: config.bspMaxExportBatchSize,
    }),
  });
}

/** `http://collector:4318` → `http://collector:4318/v1/traces` (a base path is kept). */
function signalUrl(base: string): string {
  return `${base.endsWith('/') ? base : `${base}/`}v1/traces`;
}
