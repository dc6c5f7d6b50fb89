import { loadConfig, type Config } from '../../src/config/load-config';
import { SETTINGS } from '../../src/config/settings';
import fc from 'fast-check';
import { configError, names } from './config-errors';

// Defaults and parsing. Rejected values: config-rejections.test.ts; passwords and <NAME>_FILE: config-secrets.test.ts.

describe('loadConfig defaults', () => {
  test('an empty environment gives every setting its documented default', () => {
    const config = loadConfig({});
    expect(config).toEqual({
      databaseUrl: 'postgres://postgres@localhost:5432/postgres',
      amqpUrls: ['amqp://guest:guest@localhost:5672'],
      schema: 'outbox',
      batchSize: 500,
      batchBytes: 8_388_608,
      pollIntervalMs: 1_000,
      maxAttempts: 10,
      backoffBaseMs: 1000,
      backoffMaxMs: 300_000,
      publishTimeoutMs: 10_000,
      unroutable: 'publish',
      orderingOnDead: 'skip',
      retentionMs: 7 * 24 * 3_600_000,
      cleanupCron: '* * * * *',
      shutdownTimeoutMs: 10_000,
      stageTimings: false,
      stallTimeoutMs: 60_000,
      httpHost: '0.0.0.0',
      httpPort: 9464,
      appId: 'outbox-relay',
      signingKeyFile: undefined,
      signingKeyId: undefined,
      publishUserId: false,
      logLevel: 'info',
      otlpEndpoint: undefined,
      otlpTracesEndpoint: undefined,
      otlpProtocol: 'http/protobuf',
      otlpHeaders: {},
      serviceName: 'outbox-relay',
      resourceAttributes: {},
      tracesSampler: 'parentbased_always_on',
      tracesSamplerArg: 1,
      sdkDisabled: false,
      bspScheduleDelayMs: 5_000,
      bspExportTimeoutMs: 30_000,
      bspMaxQueueSize: 2_048,
      bspMaxExportBatchSize: 512,
      signing: undefined,
      userId: undefined,
    });
  });

  test('every entry of SETTINGS has a value, and its default parses to that value', () => {
    const config = loadConfig({}) as unknown as Record<string, unknown>;
    for (const [key, setting] of Object.entries(SETTINGS)) {
      expect(config).toHaveProperty(key);
      const parsed = setting.schema.safeParse(setting.defaultValue);
      expect(parsed.success).toBe(true);
      expect(config[key]).toEqual(parsed.data);
    }
    // Besides the settings: the signing key read from OUTBOX_SIGNING_KEY_FILE, and the user-id.
    expect(Object.keys(config).sort()).toEqual([...Object.keys(SETTINGS), 'signing', 'userId'].sort());
  });

  test('a variable set but empty is an error naming it, never its default; OTEL_* follow OpenTelemetry: empty is unset (property)', () => {
    // Every name a setting is read from: the variable, its aliases and <NAME>_FILE variants.
    const namesOf = Object.values(SETTINGS).flatMap((setting) => {
      const names = [setting.env, ...('aliases' in setting ? setting.aliases : [])];
      return 'fromFile' in setting && setting.fromFile ? [...names, ...names.map((n) => `${n}_FILE`)] : names;
    });
    fc.assert(
      fc.property(fc.constantFrom(...namesOf), fc.stringMatching(/^[ \t\n\r]{0,3}$/), (name, empty) => {
        if (name.startsWith('OTEL_') && empty === '') {
          expect(loadConfig({ [name]: empty })).toEqual(loadConfig({}));
          return;
        }
        if (name.startsWith('OTEL_')) return; // whitespace: each OTEL_* setting's own rule (config-rejections.test.ts)
        const err = configError({ [name]: empty });
        expect(err.code).toBe('CONFIG_INVALID');
        expect(names(err.message, name)).toBe(true);
        expect(err.message).toContain('empty');
      }),
      { numRuns: 300 },
    );
    // The three: an empty URL silently meant localhost.
    for (const name of ['OUTBOX_DATABASE_URL', 'OUTBOX_DATABASE_URL_FILE', 'OUTBOX_AMQP_URL']) {
      expect(configError({ [name]: '' }).message).toContain(`${name} is set but empty`);
    }
  });

  test('a <NAME>_FILE naming an empty file (or only whitespace) is an error naming it', () => {
    for (const name of ['OUTBOX_DATABASE_URL', 'OUTBOX_AMQP_URL']) {
      for (const contents of ['', '\n', '  \n\t']) {
        expect(configError({ [`${name}_FILE`]: '/run/secrets/x' }, () => contents).message).toContain(
          `${name}_FILE names an empty file (/run/secrets/x)`,
        );
      }
    }
  });

  test('reads only the environment it is given, never process.env', () => {
    const saved = process.env['OUTBOX_BATCH_SIZE'];
    process.env['OUTBOX_BATCH_SIZE'] = 'not-a-number';
    try {
      expect(loadConfig({}).batchSize).toBe(500);
    } finally {
      if (saved === undefined) delete process.env['OUTBOX_BATCH_SIZE'];
      else process.env['OUTBOX_BATCH_SIZE'] = saved;
    }
  });

  test('valid values are parsed into their types', () => {
    const config = loadConfig({
      OUTBOX_DATABASE_URL: 'postgresql://relay:pw@db.internal:6432/orders?sslmode=require',
      OUTBOX_AMQP_URL: 'amqps://relay:pw@mq.internal:5671/vhost',
      OUTBOX_SCHEMA: 'Orders_Outbox',
      OUTBOX_BATCH_SIZE: ' 250 ',
      OUTBOX_BATCH_BYTES: ' 512KiB ',
      OUTBOX_POLL_INTERVAL_MS: '10',
      OUTBOX_MAX_ATTEMPTS: '1',
      OUTBOX_BACKOFF_BASE_MS: '5',
      OUTBOX_BACKOFF_MAX_MS: '5',
      OUTBOX_PUBLISH_TIMEOUT_MS: '600000',
      OUTBOX_UNROUTABLE: 'retry',
      OUTBOX_ORDERING_ON_DEAD: 'block',
      OUTBOX_RETENTION: '12h',
      OUTBOX_CLEANUP_CRON: '*/30 * * * * *',
      OUTBOX_SHUTDOWN_TIMEOUT_MS: '0',
      OUTBOX_STALL_TIMEOUT_MS: '5000',
      OUTBOX_STAGE_TIMINGS: 'true',
      OUTBOX_HTTP_HOST: '127.0.0.1',
      OUTBOX_HTTP_PORT: '0',
      OUTBOX_APP_ID: 'orders-service',
      OUTBOX_PUBLISH_USER_ID: 'true',
      OUTBOX_LOG_LEVEL: 'debug',
      OTEL_EXPORTER_OTLP_ENDPOINT: 'http://otel-collector:4318',
      OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: 'https://traces.example.com/otlp/v1/traces',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_HEADERS: 'x-api-key=k%3Dy , x-team=orders',
      OTEL_SERVICE_NAME: 'orders-relay',
      OTEL_RESOURCE_ATTRIBUTES: 'deployment.environment.name=prod',
      OTEL_TRACES_SAMPLER: 'parentbased_traceidratio',
      OTEL_TRACES_SAMPLER_ARG: '0.25',
      OTEL_SDK_DISABLED: 'TRUE',
      OTEL_BSP_SCHEDULE_DELAY: '0',
      OTEL_BSP_EXPORT_TIMEOUT: '1',
      OTEL_BSP_MAX_QUEUE_SIZE: '100',
      OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '100',
    });
    expect(config).toEqual({
      databaseUrl: 'postgresql://relay:pw@db.internal:6432/orders?sslmode=require',
      amqpUrls: ['amqps://relay:pw@mq.internal:5671/vhost'],
      schema: 'Orders_Outbox',
      batchSize: 250,
      batchBytes: 524_288,
      pollIntervalMs: 10,
      maxAttempts: 1,
      backoffBaseMs: 5,
      backoffMaxMs: 5,
      publishTimeoutMs: 600_000,
      unroutable: 'retry',
      orderingOnDead: 'block',
      retentionMs: 12 * 3_600_000,
      cleanupCron: '*/30 * * * * *',
      shutdownTimeoutMs: 0,
      stageTimings: true,
      stallTimeoutMs: 5_000,
      httpHost: '127.0.0.1',
      httpPort: 0,
      appId: 'orders-service',
      signingKeyFile: undefined,
      signingKeyId: undefined,
      publishUserId: true,
      logLevel: 'debug',
      otlpEndpoint: 'http://otel-collector:4318',
      otlpTracesEndpoint: 'https://traces.example.com/otlp/v1/traces',
      otlpProtocol: 'http/json',
      otlpHeaders: { 'x-api-key': 'k=y', 'x-team': 'orders' },
      serviceName: 'orders-relay',
      resourceAttributes: { 'deployment.environment.name': 'prod' },
      tracesSampler: 'parentbased_traceidratio',
      tracesSamplerArg: 0.25,
      sdkDisabled: true,
      bspScheduleDelayMs: 0,
      bspExportTimeoutMs: 1,
      bspMaxQueueSize: 100,
      bspMaxExportBatchSize: 100,
      signing: undefined,
      userId: 'relay',
    });
  });
});

describe('DATABASE_URL alias', () => {
  test('DATABASE_URL is used when OUTBOX_DATABASE_URL is unset', () => {
    expect(loadConfig({ DATABASE_URL: 'postgres://svc@db:5432/app' }).databaseUrl).toBe('postgres://svc@db:5432/app');
  });

  test('OUTBOX_DATABASE_URL wins over DATABASE_URL', () => {
    const config = loadConfig({ DATABASE_URL: 'postgres://svc@db:5432/app', OUTBOX_DATABASE_URL: 'postgres://relay@db:5432/app' });
    expect(config.databaseUrl).toBe('postgres://relay@db:5432/app');
  });

  test('a bad DATABASE_URL is reported under its own name, without its password', () => {
    const err = configError({ DATABASE_URL: 'mysql://svc:aliaspw@db/app' });
    expect(err.message).toMatch(/(^|[^_A-Z])DATABASE_URL/);
    expect(err.message).not.toContain('aliaspw');
  });
});

describe('OUTBOX_RETENTION', () => {
  test.each([
    ['7d', 7 * 86_400_000],
    ['12h', 12 * 3_600_000],
    ['30m', 30 * 60_000],
    ['45s', 45_000],
    ['500ms', 500],
    ['0', 0],
    ['0d', 0],
    [' 2d ', 2 * 86_400_000],
  ])('%j is %d ms', (text, ms) => {
    expect(loadConfig({ OUTBOX_RETENTION: text }).retentionMs).toBe(ms);
  });

  test('a bad duration says what a duration looks like', () => {
    const err = configError({ OUTBOX_RETENTION: 'a week' });
    expect(err.message).toContain('OUTBOX_RETENTION');
    expect(err.message).toMatch(/7d/);
    expect(err.message).toContain('"a week"');
  });
});

describe('OUTBOX_AMQP_URL list', () => {
  test('a comma-separated list keeps its order, trims blanks and drops empty entries', () => {
    const config = loadConfig({ OUTBOX_AMQP_URL: ' amqp://u:p@mq1:5672 , amqps://u:p@mq2:5671,, amqp://mq3 ' });
    expect(config.amqpUrls).toEqual(['amqp://u:p@mq1:5672', 'amqps://u:p@mq2:5671', 'amqp://mq3']);
  });

  test('OUTBOX_DATABASE_URL is a single URL', () => {
    expect(configError({ OUTBOX_DATABASE_URL: 'postgres://a@h1/x,postgres://a@h2/x' }).message).toMatch(/OUTBOX_DATABASE_URL.*single/);
  });
});

describe('the result is frozen', () => {
  test('neither the config nor its URL list can be changed', () => {
    const config: Config = loadConfig({ OUTBOX_AMQP_URL: 'amqp://a,amqp://b' });
    expect(Object.isFrozen(config)).toBe(true);
    expect(Object.isFrozen(config.amqpUrls)).toBe(true);
    expect(() => {
      (config as { batchSize: number }).batchSize = 1;
    }).toThrow(TypeError);
    expect(() => {
      (config.amqpUrls as string[]).push('amqp://c');
    }).toThrow(TypeError);
    expect(config.batchSize).toBe(500);
    expect(config.amqpUrls).toEqual(['amqp://a', 'amqp://b']);
  });
});
