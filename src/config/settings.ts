import cron from 'node-cron';
import { z } from 'zod';
import {
  keyValueList,
  otelBoolean,
  otlpEndpoint,
  otlpProtocol,
  SAMPLERS,
  samplerName,
  samplerRatio,
  type SamplerName,
} from './otel-schemas';
import { databaseUrlSchema } from './database-url';
import { KEY_ID_PATTERN } from '../domain/signature';

/**
 * The settings table: one row per environment variable. It drives parsing, defaults
 * and validation messages (`loadConfig`). The README's configuration table is kept by
 * hand and checked against this table by `test/unit/readme-config.test.ts` (order,
 * names, aliases, `_FILE` variants, defaults, `doc`): a new setting is added here and
 * as a README row, which that test prints when it is missing or differs.
 */
export interface Setting<T> {
  /** Environment variable name. */
  readonly env: string;
  /** Older or conventional names accepted when `env` is unset, in order. */
  readonly aliases?: readonly string[];
  /** Default as the operator would write it. */
  readonly defaultValue: string;
  /** Holds a credential: its value is never echoed and may be read from `<NAME>_FILE`. */
  readonly secret?: boolean;
  /** May be given as `<NAME>_FILE`, a path to a file holding the value. */
  readonly fromFile?: boolean;
  /** One sentence for the documentation: the README table's "meaning" cell, word for word. */
  readonly doc: string;
  /** Parses the raw string; the message of a failure names what is expected. */
  readonly schema: z.ZodType<T, string>;
}

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * The most spans the batch processor may hold (OTEL_BSP_MAX_QUEUE_SIZE): 32 times its
 * default. A span of the relay is about 1-2 KB, so this bounds the buffer near 100 MiB.
 */
const BSP_MAX_QUEUE_SIZE = 65_536;

/** AMQP's `app-id` is a short string: one length octet, at most 255 bytes. */
const APP_ID_MAX_BYTES = 255;

function integer(min: number, max: number): z.ZodType<number, string> {
  return z
    .string()
    .trim()
    .regex(/^\d+$/, { message: `must be a whole number from ${min} to ${max}` })
    .transform(Number)
    .pipe(
      z
        .number()
        .int()
        .min(min, { message: `must be a whole number from ${min} to ${max}` })
        .max(max, { message: `must be a whole number from ${min} to ${max}` }),
    );
}

function oneOf<const T extends readonly [string, ...string[]]>(values: T): z.ZodType<T[number], string> {
  return z
    .string()
    .trim()
    .pipe(z.enum(values, { message: `must be one of ${values.join(', ')}` }));
}

const DURATION_UNITS_MS: Readonly<Record<string, number>> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `7d`, `12h`, `30m`, `45s`, `500ms` or `0` → milliseconds. */
export function parseDurationMs(text: string): number | undefined {
  const match = /^(\d+)\s*(ms|s|m|h|d)?$/.exec(text.trim());
  if (!match) return undefined;
  const amount = Number(match[1]);
  if (amount === 0) return 0;
  const unit = match[2];
  if (unit === undefined) return undefined;
  return amount * (DURATION_UNITS_MS[unit] ?? Number.NaN);
}

const duration = z.string().transform((text, ctx) => {
  const ms = parseDurationMs(text);
  if (ms === undefined || !Number.isSafeInteger(ms)) {
    ctx.addIssue({ code: 'custom', message: 'must be a duration such as 7d, 12h, 30m, 45s or 0' });
    return z.NEVER;
  }
  return ms;
});

function urlList(protocols: readonly string[], what: string, allowMany: boolean): z.ZodType<readonly string[], string> {
  return z.string().transform((text, ctx) => {
    const urls = text
      .split(',')
      .map((u) => u.trim())
      .filter((u) => u.length > 0);
    if (urls.length === 0) {
      ctx.addIssue({ code: 'custom', message: `must be a ${what} URL` });
      return z.NEVER;
    }
    if (!allowMany && urls.length > 1) {
      ctx.addIssue({ code: 'custom', message: `must be a single ${what} URL` });
      return z.NEVER;
    }
    for (const [index, url] of urls.entries()) {
      let parsed: URL;
      try {
        parsed = new URL(url);
      } catch {
        // Never echo the value: it may hold a password.
        ctx.addIssue({ code: 'custom', message: `URL #${index + 1} is not a valid URL (expected ${protocols.join(' or ')}//host…)` });
        continue;
      }
      if (!protocols.includes(parsed.protocol)) {
        ctx.addIssue({ code: 'custom', message: `URL #${index + 1} must start with ${protocols.map((p) => `${p}//`).join(' or ')}` });
      }
    }
    return Object.freeze(urls);
  });
}

const schemaName = z
  .string()
  .trim()
  .regex(/^[A-Za-z_][A-Za-z0-9_]{0,53}$/, {
    message: 'must be a schema name of letters, digits and underscores (at most 54, not starting with a digit)',
  });

const cronExpression = z
  .string()
  .trim()
  .refine((expr) => cron.validate(expr), { message: 'must be a cron expression such as "* * * * *" (optional seconds field first)' });

const SIZE_UNITS: Readonly<Record<string, number>> = { B: 1, KiB: 1_024, MiB: 1_048_576, GiB: 1_073_741_824 };

/** `8MiB`, `512KiB`, `1GiB` or a number of bytes → bytes; undefined when it is none of them. */
export function parseBytes(text: string): number | undefined {
  const match = /^(\d+)\s*(B|KiB|MiB|GiB)?$/.exec(text.trim());
  if (!match) return undefined;
  return Number(match[1]) * (SIZE_UNITS[match[2] ?? 'B'] ?? Number.NaN);
}

function bytes(min: number, max: number, shown: string): z.ZodType<number, string> {
  return z.string().transform((text, ctx) => {
    const value = parseBytes(text);
    if (value === undefined || !Number.isSafeInteger(value) || value < min || value > max) {
      ctx.addIssue({ code: 'custom', message: `must be a size from ${shown} such as 8MiB, 512KiB or a number of bytes` });
      return z.NEVER;
    }
    return value;
  });
}

/** Unset (the default, empty) or a path; the key in it is read and checked by `loadConfig`. */
const optionalPath = z.string().transform((text) => (text.trim() === '' ? undefined : text.trim()));

const keyId = z.string().transform((text, ctx) => {
  const id = text.trim();
  if (id === '') return undefined;
  if (!KEY_ID_PATTERN.test(id)) {
    ctx.addIssue({ code: 'custom', message: 'must be 1 to 64 letters, digits or ._:- (it travels in the x-outbox-signature header)' });
    return z.NEVER;
  }
  return id;
});

const httpHost = z.string().trim().min(1, { message: 'must be a host name or IP address' });

/** Every setting of `outbox-relay`, in the order the README documents them. */
export const SETTINGS = {
  databaseUrl: {
    env: 'OUTBOX_DATABASE_URL',
    aliases: ['DATABASE_URL'],
    defaultValue: 'postgres://postgres@localhost:5432/postgres',
    secret: true,
    fromFile: true,
    doc:
      "PostgreSQL connection URL of the service database holding the outbox. Several hosts in libpq's form" +
      ' (`postgres://u@h1:5432,h2:5432/db?target_session_attrs=read-write`, or `primary`; `any` is the default)' +
      ' are tried in turn, and a failover to a promoted standby is followed. TLS through `sslmode=` in the URL.',
    schema: databaseUrlSchema,
  } satisfies Setting<string>,
  amqpUrls: {
    env: 'OUTBOX_AMQP_URL',
    defaultValue: 'amqp://guest:guest@localhost:5672',
    secret: true,
    fromFile: true,
    doc: 'RabbitMQ URL, or a comma-separated list tried in turn (cluster nodes). `amqps://` for TLS.',
    schema: urlList(['amqp:', 'amqps:'], 'amqp://', true),
  } satisfies Setting<readonly string[]>,
  schema: {
    env: 'OUTBOX_SCHEMA',
    defaultValue: 'outbox',
    doc: 'Database schema holding the outbox table and the migration ledger.',
    schema: schemaName,
  } satisfies Setting<string>,
  batchSize: {
    env: 'OUTBOX_BATCH_SIZE',
    defaultValue: '500',
    doc: 'Messages claimed and published per batch.',
    schema: integer(1, 10_000),
  } satisfies Setting<number>,
  batchBytes: {
    env: 'OUTBOX_BATCH_BYTES',
    defaultValue: '8MiB',
    doc:
      'Bytes of message bodies and headers a batch holds at most: a claim stops before the message that would exceed it' +
      ' (a larger message is claimed alone). With two batches in flight it bounds the memory the relay needs for messages' +
      ' (see Memory).',
    schema: bytes(64 * 1_024, 1_073_741_824, '64KiB to 1GiB'),
  } satisfies Setting<number>,
  pollIntervalMs: {
    env: 'OUTBOX_POLL_INTERVAL_MS',
    defaultValue: '1000',
    doc:
      'How often a quiet relay checks for new messages (ms); from 1000 on, once a second, with the' +
      " leader's heartbeat. While messages flow it checks every 3 ms, for 15 s after every 100 ms;" +
      ' a NOTIFY on `<schema>.messages` wakes it at once.',
    schema: integer(10, 3_600_000),
  } satisfies Setting<number>,
  maxAttempts: {
    env: 'OUTBOX_MAX_ATTEMPTS',
    defaultValue: '10',
    doc: 'Failed attempts after which a message is dead.',
    schema: integer(1, 1_000_000),
  } satisfies Setting<number>,
  backoffBaseMs: {
    env: 'OUTBOX_BACKOFF_BASE_MS',
    defaultValue: '1000',
    doc: 'Retry backoff after the first failure (ms); doubles per attempt, with full jitter.',
    schema: integer(1, 86_400_000),
  } satisfies Setting<number>,
  backoffMaxMs: {
    env: 'OUTBOX_BACKOFF_MAX_MS',
    defaultValue: '300000',
    doc: 'Cap of the retry backoff (ms).',
    schema: integer(1, 604_800_000),
  } satisfies Setting<number>,
  publishTimeoutMs: {
    env: 'OUTBOX_PUBLISH_TIMEOUT_MS',
    defaultValue: '10000',
    doc: 'How long a published message may wait for the broker confirm before it counts as failed (ms).',
    schema: integer(100, 600_000),
  } satisfies Setting<number>,
  unroutable: {
    env: 'OUTBOX_UNROUTABLE',
    defaultValue: 'publish',
    doc:
      '`publish`: a message returned as unroutable by a named exchange counts as published (and is counted);' +
      ' `retry`: it fails and is retried. Unroutable commands (default exchange) always fail.',
    schema: oneOf(['publish', 'retry']),
  } satisfies Setting<'publish' | 'retry'>,
  orderingOnDead: {
    env: 'OUTBOX_ORDERING_ON_DEAD',
    defaultValue: 'skip',
    doc: '`skip`: a dead message releases its partition key; `block`: the key stays held until the dead message is retried or discarded.',
    schema: oneOf(['skip', 'block']),
  } satisfies Setting<'skip' | 'block'>,
  retentionMs: {
    env: 'OUTBOX_RETENTION',
    defaultValue: '7d',
    doc: 'How long published messages are kept (`7d`, `12h`, `30m`, `0` = delete at publish time).',
    schema: duration,
  } satisfies Setting<number>,
  cleanupCron: {
    env: 'OUTBOX_CLEANUP_CRON',
    defaultValue: '* * * * *',
    doc: 'When the retention cleanup runs (node-cron syntax, optional seconds field).',
    schema: cronExpression,
  } satisfies Setting<string>,
  shutdownTimeoutMs: {
    env: 'OUTBOX_SHUTDOWN_TIMEOUT_MS',
    defaultValue: '10000',
    doc: 'On SIGTERM/SIGINT, how long the in-flight batch may take before it is abandoned (ms).',
    schema: integer(0, 600_000),
  } satisfies Setting<number>,
  stallTimeoutMs: {
    env: 'OUTBOX_STALL_TIMEOUT_MS',
    defaultValue: '60000',
    doc:
      'While due messages wait and the database and broker are up, how long the relay may go without publishing a message' +
      ' or recording a failure before it reports itself stalled (`outbox_stalled` 1, `/readyz` 503, one log line) (ms).' +
      ' Counted from when the relay could have published the oldest due message: an idle relay looks every' +
      ' `OUTBOX_POLL_INTERVAL_MS`, so at most that long after it became due.',
    schema: integer(1_000, 86_400_000),
  } satisfies Setting<number>,
  stageTimings: {
    env: 'OUTBOX_STAGE_TIMINGS',
    defaultValue: 'false',
    doc:
      'true: the histogram `outbox_stage_seconds{stage}` says where a message spends its time between its commit and its mark' +
      ' (due→claimed, claimed→written, written→confirmed, confirmed→marked); costs the relay a few µs of CPU per message.',
    schema: otelBoolean,
  } satisfies Setting<boolean>,
  httpHost: {
    env: 'OUTBOX_HTTP_HOST',
    defaultValue: '0.0.0.0',
    doc: 'Address of the HTTP server (/metrics, /healthz, /readyz).',
    schema: httpHost,
  } satisfies Setting<string>,
  httpPort: {
    env: 'OUTBOX_HTTP_PORT',
    defaultValue: '9464',
    doc: 'Port of the HTTP server; 0 picks a free port.',
    schema: integer(0, 65_535),
  } satisfies Setting<number>,
  appId: {
    env: 'OUTBOX_APP_ID',
    defaultValue: 'outbox-relay',
    doc: 'AMQP `app-id` property of every published message.',
    schema: z
      .string()
      .trim()
      .min(1, { message: 'must not be empty' })
      .superRefine((value, ctx) => {
        // AMQP counts the bytes of a short string, not its characters: 100 × "€" is 300 bytes.
        const bytes = Buffer.byteLength(value, 'utf8');
        if (bytes > APP_ID_MAX_BYTES) {
          ctx.addIssue({
            code: 'custom',
            message: `must be at most ${APP_ID_MAX_BYTES} bytes of UTF-8, AMQP's limit for app-id (it is ${bytes} bytes)`,
          });
        }
      }),
  } satisfies Setting<string>,
  signingKeyFile: {
    env: 'OUTBOX_SIGNING_KEY_FILE',
    defaultValue: '',
    doc:
      'Path of an Ed25519 private key (PEM, PKCS#8) the relay signs every message with, in the header `x-outbox-signature`' +
      ' (docs/signing.md); set together with `OUTBOX_SIGNING_KEY_ID`. Unset: messages are not signed.',
    schema: optionalPath,
  } satisfies Setting<string | undefined>,
  signingKeyId: {
    env: 'OUTBOX_SIGNING_KEY_ID',
    defaultValue: '',
    doc: 'The id consumers know the signing key by (1 to 64 letters, digits or `._:-`), sent and signed with each signature.',
    schema: keyId,
  } satisfies Setting<string | undefined>,
  publishUserId: {
    env: 'OUTBOX_PUBLISH_USER_ID',
    defaultValue: 'false',
    doc:
      "true: every message carries the AMQP `user-id` of the relay's broker user (the AMQP URL's user name), which RabbitMQ" +
      ' checks against the connection, so a consumer can trust it (docs/signing.md). Every URL of the list must name the same user.',
    schema: otelBoolean,
  } satisfies Setting<boolean>,
  logLevel: {
    env: 'OUTBOX_LOG_LEVEL',
    defaultValue: 'info',
    doc: `Log level: ${LOG_LEVELS.join(', ')}.`,
    schema: oneOf(LOG_LEVELS),
  } satisfies Setting<(typeof LOG_LEVELS)[number]>,
  // Tracing: the standard OpenTelemetry variables (docs/tracing.md); off while both endpoints are unset.
  otlpEndpoint: {
    env: 'OTEL_EXPORTER_OTLP_ENDPOINT',
    defaultValue: '',
    doc: 'Base URL of an OTLP/HTTP receiver (an OpenTelemetry Collector, `http://otel-collector:4318`): spans go to `<base>/v1/traces`. While no endpoint is set, tracing is off and its code is not loaded.',
    schema: otlpEndpoint,
  } satisfies Setting<string | undefined>,
  otlpTracesEndpoint: {
    env: 'OTEL_EXPORTER_OTLP_TRACES_ENDPOINT',
    defaultValue: '',
    doc: 'Full URL spans are sent to, used as it is; wins over the base URL above.',
    schema: otlpEndpoint,
  } satisfies Setting<string | undefined>,
  otlpProtocol: {
    env: 'OTEL_EXPORTER_OTLP_TRACES_PROTOCOL',
    aliases: ['OTEL_EXPORTER_OTLP_PROTOCOL'],
    defaultValue: 'http/protobuf',
    doc: 'Encoding of the spans sent: `http/protobuf` or `http/json`.',
    schema: otlpProtocol,
  } satisfies Setting<'http/protobuf' | 'http/json'>,
  otlpHeaders: {
    env: 'OTEL_EXPORTER_OTLP_TRACES_HEADERS',
    aliases: ['OTEL_EXPORTER_OTLP_HEADERS'],
    defaultValue: '',
    secret: true,
    doc: 'HTTP headers of every export, `key1=value1,key2=value2` (percent-encoded values), e.g. an API key; never logged or echoed.',
    schema: keyValueList,
  } satisfies Setting<Readonly<Record<string, string>>>,
  serviceName: {
    env: 'OTEL_SERVICE_NAME',
    defaultValue: 'outbox-relay',
    doc: "The `service.name` of the relay's spans.",
    schema: z.string().trim().min(1, { message: 'must not be empty' }),
  } satisfies Setting<string>,
  resourceAttributes: {
    env: 'OTEL_RESOURCE_ATTRIBUTES',
    defaultValue: '',
    doc: 'More attributes of the resource the spans come from, `key1=value1,key2=value2`, e.g. `deployment.environment.name=prod`.',
    schema: keyValueList,
  } satisfies Setting<Readonly<Record<string, string>>>,
  tracesSampler: {
    env: 'OTEL_TRACES_SAMPLER',
    defaultValue: 'parentbased_always_on',
    doc: `Which traces are recorded: ${SAMPLERS.join(', ')}. The parent-based ones follow the sampled flag of the row's \`traceparent\`.`,
    schema: samplerName,
  } satisfies Setting<SamplerName>,
  tracesSamplerArg: {
    env: 'OTEL_TRACES_SAMPLER_ARG',
    defaultValue: '1',
    doc: 'The share of traces the `traceidratio` samplers record, from 0 to 1.',
    schema: samplerRatio,
  } satisfies Setting<number>,
  sdkDisabled: {
    env: 'OTEL_SDK_DISABLED',
    defaultValue: 'false',
    doc: '`true` turns tracing off whatever the endpoints say.',
    schema: otelBoolean,
  } satisfies Setting<boolean>,
  // The batch span processor's settings, validated here and handed to it: the SDK would
  // read them unchecked (OTEL_BSP_MAX_EXPORT_BATCH_SIZE=0 made its flush loop forever).
  bspScheduleDelayMs: {
    env: 'OTEL_BSP_SCHEDULE_DELAY',
    defaultValue: '5000',
    doc: 'How long finished spans wait before they are exported as a batch (ms).',
    schema: integer(0, 600_000),
  } satisfies Setting<number>,
  bspExportTimeoutMs: {
    env: 'OTEL_BSP_EXPORT_TIMEOUT',
    defaultValue: '30000',
    doc: 'How long one export of spans may take before it is given up (ms).',
    schema: integer(1, 600_000),
  } satisfies Setting<number>,
  bspMaxQueueSize: {
    env: 'OTEL_BSP_MAX_QUEUE_SIZE',
    defaultValue: '2048',
    doc: 'Spans kept for export at most; more are dropped (counted in the log) rather than held in memory.',
    schema: integer(1, BSP_MAX_QUEUE_SIZE),
  } satisfies Setting<number>,
  bspMaxExportBatchSize: {
    env: 'OTEL_BSP_MAX_EXPORT_BATCH_SIZE',
    defaultValue: '512',
    doc: 'Spans per export at most; not more than `OTEL_BSP_MAX_QUEUE_SIZE`.',
    schema: integer(1, BSP_MAX_QUEUE_SIZE),
  } satisfies Setting<number>,
} as const;

export type SettingKey = keyof typeof SETTINGS;
