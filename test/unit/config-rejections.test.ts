import { loadConfig } from '../../src/config/load-config';
import { exitCodeFor } from '../../src/errors';
import { ALL_ENV_NAMES, configError, names } from './config-errors';

describe('loadConfig rejects bad values', () => {
  // Every variable with values that must be refused.
  const BAD: Record<string, readonly string[]> = {
    OUTBOX_DATABASE_URL: [
      'not a url',
      'mysql://u@host/db',
      'postgres://a@h1/db,postgres://b@h2/db',
      ' , ',
      'postgres://u@/db',
      'postgres://u@h1:5432,h2:99999/db',
      'postgres://u@h1,,h2/db',
      'postgres://u@[::1/db',
      'postgres://u@h1,h2/db?target_session_attrs=standby',
      'postgres://u@h1,h2/db?target_session_attrs=writable',
    ],
    OUTBOX_AMQP_URL: ['localhost:5672', 'http://guest:guest@localhost:15672', 'amqp://ok:5672,nonsense', ','],
    OUTBOX_SCHEMA: ['1outbox', 'out-box', 'out box', 'x'.repeat(55), 'outbox;drop'],
    OUTBOX_BATCH_SIZE: ['0', '-1', '1.5', 'ten', '10001', '1e3'],
    OUTBOX_BATCH_BYTES: ['0', '65535', '63KiB', '2GiB', '1073741825', '8MB', '8 mib', '1.5MiB', '-1', 'lots'],
    OUTBOX_POLL_INTERVAL_MS: ['9', 'soon', '3600001'],
    OUTBOX_MAX_ATTEMPTS: ['0', 'many', '-3'],
    OUTBOX_BACKOFF_BASE_MS: ['0', 'x', '86400001'],
    OUTBOX_BACKOFF_MAX_MS: ['0', '604800001', '1s'],
    OUTBOX_PUBLISH_TIMEOUT_MS: ['99', '600001', 'never'],
    OUTBOX_UNROUTABLE: ['drop', 'PUBLISHED', 'yes'],
    OUTBOX_ORDERING_ON_DEAD: ['wait', 'skip,block'],
    OUTBOX_RETENTION: ['forever', '7', '-1d', '1.5h', '7w', '99999999999999999999d'],
    OUTBOX_CLEANUP_CRON: ['every minute', '* * *', '61 * * * *'],
    OUTBOX_SHUTDOWN_TIMEOUT_MS: ['-1', '600001', 'later'],
    OUTBOX_STALL_TIMEOUT_MS: ['999', '86400001', 'a minute'],
    OUTBOX_STAGE_TIMINGS: ['yes', '1', 'on'],
    OUTBOX_HTTP_HOST: ['   '],
    OUTBOX_HTTP_PORT: ['65536', '-1', 'http', '80.5'],
    OUTBOX_APP_ID: ['   ', 'x'.repeat(256)],
    OUTBOX_SIGNING_KEY_FILE: ['/nonexistent/signing-key.pem'],
    OUTBOX_SIGNING_KEY_ID: ['has space', 'a;b', 'kid=x', 'x'.repeat(65)],
    OUTBOX_PUBLISH_USER_ID: ['yes', '1', 'on'],
    OUTBOX_LOG_LEVEL: ['verbose', 'INFO!', 'warning'],
    OTEL_EXPORTER_OTLP_ENDPOINT: ['collector:4318', 'grpc://collector:4317', 'not a url', 'ftp://x'],
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: ['localhost:4318/v1/traces', 'amqp://mq'],
    OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: ['grpc', 'http', 'json'],
    OTEL_EXPORTER_OTLP_TRACES_HEADERS: ['api-key', 'a=1,=2', 'x=%zz'],
    OTEL_SERVICE_NAME: ['   '],
    OTEL_RESOURCE_ATTRIBUTES: ['env', 'a=%'],
    OTEL_TRACES_SAMPLER: ['jaeger_remote', 'xray', 'on'],
    OTEL_TRACES_SAMPLER_ARG: ['1.5', '-0.1', 'half', '2'],
    OTEL_SDK_DISABLED: ['yes', '1', 'off'],
    // What the batch span processor would have taken unchecked: 0 made its flush loop until the heap ran out.
    OTEL_BSP_SCHEDULE_DELAY: ['-1', '1e3', 'soon', '600001', '5000.5', ' '],
    OTEL_BSP_EXPORT_TIMEOUT: ['0', '-5', 'Infinity', 'NaN', '600001'],
    OTEL_BSP_MAX_QUEUE_SIZE: ['0', '-1', '65537', '1e9', '2.5'],
    OTEL_BSP_MAX_EXPORT_BATCH_SIZE: ['0', '-1', '0.5', 'Infinity', 'all', '65537'],
  };

  test('the table covers every setting', () => {
    expect(Object.keys(BAD).sort()).toEqual([...ALL_ENV_NAMES].sort());
  });

  const cases = Object.entries(BAD).flatMap(([name, values]) =>
    values.map((value) => [name, value.length > 24 ? `${value.slice(0, 12)}… (${value.length} chars)` : value, value] as const),
  );
  // A variable that is only read with its partner (the key file with its key id) is given one that is valid.
  const PARTNERS: Readonly<Record<string, NodeJS.ProcessEnv>> = { OUTBOX_SIGNING_KEY_FILE: { OUTBOX_SIGNING_KEY_ID: 'k1' } };
  test.each(cases)('%s=%j fails with CONFIG_INVALID naming only that variable, on one line', (name, _label, value) => {
    const err = configError({ ...PARTNERS[name], [name]: value });
    expect(err.code).toBe('CONFIG_INVALID');
    expect(exitCodeFor(err)).toBe(2);
    expect(err.message).not.toMatch(/[\r\n]/);
    expect(names(err.message, name)).toBe(true);
    for (const other of ALL_ENV_NAMES) {
      if (other !== name) expect(names(err.message, other)).toBe(false);
    }
  });

  test('a non-secret bad value is shown, with what is expected', () => {
    const err = configError({ OUTBOX_BATCH_SIZE: 'ten' });
    expect(err.message).toContain('OUTBOX_BATCH_SIZE');
    expect(err.message).toContain('"ten"');
    expect(err.message).toMatch(/whole number from 1 to 10000/);
    expect(configError({ OUTBOX_LOG_LEVEL: 'verbose' }).message).toMatch(
      /OUTBOX_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent/,
    );
  });

  test('several bad variables are reported at once, in one error', () => {
    const err = configError({
      OUTBOX_BATCH_SIZE: '0',
      OUTBOX_LOG_LEVEL: 'loud',
      OUTBOX_SCHEMA: '9lives',
      OUTBOX_AMQP_URL: 'http://x',
      OUTBOX_RETENTION: 'forever',
    });
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).not.toMatch(/[\r\n]/);
    for (const name of ['OUTBOX_BATCH_SIZE', 'OUTBOX_LOG_LEVEL', 'OUTBOX_SCHEMA', 'OUTBOX_AMQP_URL', 'OUTBOX_RETENTION']) {
      expect(names(err.message, name)).toBe(true);
    }
    expect(names(err.message, 'OUTBOX_MAX_ATTEMPTS')).toBe(false);
  });

  test('OUTBOX_BACKOFF_BASE_MS above OUTBOX_BACKOFF_MAX_MS is rejected; equal is fine', () => {
    const err = configError({ OUTBOX_BACKOFF_BASE_MS: '5000', OUTBOX_BACKOFF_MAX_MS: '1000' });
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('OUTBOX_BACKOFF_BASE_MS');
    expect(err.message).toContain('OUTBOX_BACKOFF_MAX_MS');
    expect(err.message).not.toMatch(/[\r\n]/);
    // The default maximum (300000) is below this base too.
    expect(configError({ OUTBOX_BACKOFF_BASE_MS: '300001' }).message).toContain('OUTBOX_BACKOFF_BASE_MS');
    const config = loadConfig({ OUTBOX_BACKOFF_BASE_MS: '2000', OUTBOX_BACKOFF_MAX_MS: '2000' });
    expect([config.backoffBaseMs, config.backoffMaxMs]).toEqual([2000, 2000]);
  });
});

test('OTEL_BSP_MAX_EXPORT_BATCH_SIZE above OTEL_BSP_MAX_QUEUE_SIZE: CONFIG_INVALID naming both', () => {
  const err = configError({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4096' });
  expect(err.message).toContain('OTEL_BSP_MAX_EXPORT_BATCH_SIZE (4096) must not exceed OTEL_BSP_MAX_QUEUE_SIZE (2048)');
  expect(loadConfig({ OTEL_BSP_MAX_EXPORT_BATCH_SIZE: '4096', OTEL_BSP_MAX_QUEUE_SIZE: '4096' }).bspMaxExportBatchSize).toBe(4096);
});
