import { z } from 'zod';

/**
 * Parsers of the standard OpenTelemetry variables the relay reads (the `OTEL_*` rows of
 * SETTINGS), with the meanings the OpenTelemetry specification gives them
 * (https://opentelemetry.io/docs/specs/otel/configuration/sdk-environment-variables/),
 * limited to what an OTLP/HTTP trace exporter needs.
 */

/** An OTLP/HTTP endpoint: `http://` or `https://`, or unset (`''` → undefined). */
export const otlpEndpoint: z.ZodType<string | undefined, string> = z.string().transform((text, ctx) => {
  const value = text.trim();
  if (value === '') return undefined;
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'is not a valid URL (expected http://host:4318 or https://…)' });
    return z.NEVER;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.addIssue({ code: 'custom', message: 'must start with http:// or https:// (OTLP over HTTP; gRPC is not supported)' });
    return z.NEVER;
  }
  return value;
});

/**
 * A W3C-baggage-like list `key1=value1,key2=value2` (values percent-encoded), as
 * OTEL_EXPORTER_OTLP_HEADERS and OTEL_RESOURCE_ATTRIBUTES take it. The messages name the
 * position of a bad entry, never its text: the headers carry API keys.
 */
export const keyValueList: z.ZodType<Readonly<Record<string, string>>, string> = z.string().transform((text, ctx) => {
  const entries: Record<string, string> = {};
  const parts = text.split(',').filter((part) => part.trim() !== '');
  for (const [index, part] of parts.entries()) {
    const equals = part.indexOf('=');
    const key = equals < 0 ? '' : part.slice(0, equals).trim();
    if (key === '') {
      ctx.addIssue({ code: 'custom', message: `entry #${index + 1} is not key=value` });
      continue;
    }
    try {
      entries[decodeURIComponent(key)] = decodeURIComponent(part.slice(equals + 1).trim());
    } catch {
      ctx.addIssue({ code: 'custom', message: `entry #${index + 1} has a bad percent-encoding` });
    }
  }
  return Object.freeze(entries);
});

/** The samplers of the specification that need no extra component. */
export const SAMPLERS = [
  'always_on',
  'always_off',
  'traceidratio',
  'parentbased_always_on',
  'parentbased_always_off',
  'parentbased_traceidratio',
] as const;

export type SamplerName = (typeof SAMPLERS)[number];

export const samplerName: z.ZodType<SamplerName, string> = z
  .string()
  .trim()
  .pipe(z.enum(SAMPLERS, { message: `must be one of ${SAMPLERS.join(', ')}` }));

/** The ratio of the `traceidratio` samplers: a number from 0 to 1. */
const RATIO_MESSAGE = 'must be a number from 0 to 1 (the share of traces sampled)';
export const samplerRatio: z.ZodType<number, string> = z
  .string()
  .trim()
  .regex(/^(\d+(\.\d*)?|\.\d+)$/, { message: RATIO_MESSAGE })
  .transform(Number)
  .pipe(z.number().max(1, { message: RATIO_MESSAGE }));

/** `true` or `false`, in any case (the specification's boolean). */
export const otelBoolean: z.ZodType<boolean, string> = z
  .string()
  .trim()
  .toLowerCase()
  .pipe(z.enum(['true', 'false'], { message: 'must be true or false' }))
  .transform((value) => value === 'true');

/** The OTLP encodings the relay's exporters speak. */
export const otlpProtocol = z
  .string()
  .trim()
  .pipe(z.enum(['http/protobuf', 'http/json'], { message: 'must be http/protobuf or http/json (gRPC is not supported)' }));
