import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, secretsOf, type Config } from '../../src/config/load-config';
import { SETTINGS } from '../../src/config/settings';
import { exitCodeFor, OutboxError } from '../../src/errors';

/** Runs loadConfig and returns the error it throws; fails the test when it does not throw. */
function configError(env: NodeJS.ProcessEnv, readFile?: (path: string) => string): OutboxError {
  try {
    loadConfig(env, readFile);
  } catch (err: unknown) {
    expect(err).toBeInstanceOf(OutboxError);
    return err as OutboxError;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

const ALL_ENV_NAMES = Object.values(SETTINGS).map((s) => s.env);

/** Whether `text` names the variable `name` as a whole word (OUTBOX_HTTP_HOST is not OUTBOX_HTTP_HOST_X). */
function names(text: string, name: string): boolean {
  return new RegExp(`(^|[^A-Z_])${name}([^A-Z_]|$)`).test(text);
}

describe('loadConfig defaults', () => {
  test('an empty environment gives every setting its documented default', () => {
    const config = loadConfig({});
    expect(config).toEqual({
      databaseUrl: 'postgres://postgres@localhost:5432/postgres',
      amqpUrls: ['amqp://guest:guest@localhost:5672'],
      schema: 'outbox',
      batchSize: 500,
      pollIntervalMs: 100,
      maxAttempts: 10,
      backoffBaseMs: 1000,
      backoffMaxMs: 300_000,
      publishTimeoutMs: 10_000,
      unroutable: 'publish',
      orderingOnDead: 'skip',
      retentionMs: 7 * 24 * 3_600_000,
      cleanupCron: '* * * * *',
      shutdownTimeoutMs: 10_000,
      stallTimeoutMs: 60_000,
      httpHost: '0.0.0.0',
      httpPort: 9464,
      appId: 'outbox-relay',
      logLevel: 'info',
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
    expect(Object.keys(config).sort()).toEqual(Object.keys(SETTINGS).sort());
  });

  test('an empty variable counts as unset', () => {
    const config = loadConfig({ OUTBOX_BATCH_SIZE: '', OUTBOX_SCHEMA: '', OUTBOX_DATABASE_URL: '' });
    expect(config.batchSize).toBe(500);
    expect(config.schema).toBe('outbox');
    expect(config.databaseUrl).toBe('postgres://postgres@localhost:5432/postgres');
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
      OUTBOX_HTTP_HOST: '127.0.0.1',
      OUTBOX_HTTP_PORT: '0',
      OUTBOX_APP_ID: 'orders-service',
      OUTBOX_LOG_LEVEL: 'debug',
    });
    expect(config).toEqual({
      databaseUrl: 'postgresql://relay:pw@db.internal:6432/orders?sslmode=require',
      amqpUrls: ['amqps://relay:pw@mq.internal:5671/vhost'],
      schema: 'Orders_Outbox',
      batchSize: 250,
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
      stallTimeoutMs: 5_000,
      httpHost: '127.0.0.1',
      httpPort: 0,
      appId: 'orders-service',
      logLevel: 'debug',
    });
  });
});

describe('loadConfig rejects bad values', () => {
  // Every variable with values that must be refused.
  const BAD: Record<string, readonly string[]> = {
    OUTBOX_DATABASE_URL: ['not a url', 'mysql://u@host/db', 'postgres://a@h1/db,postgres://b@h2/db', ' , '],
    OUTBOX_AMQP_URL: ['localhost:5672', 'http://guest:guest@localhost:15672', 'amqp://ok:5672,nonsense', ','],
    OUTBOX_SCHEMA: ['1outbox', 'out-box', 'out box', 'x'.repeat(55), 'outbox;drop'],
    OUTBOX_BATCH_SIZE: ['0', '-1', '1.5', 'ten', '10001', '1e3'],
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
    OUTBOX_HTTP_HOST: ['   '],
    OUTBOX_HTTP_PORT: ['65536', '-1', 'http', '80.5'],
    OUTBOX_APP_ID: ['   ', 'x'.repeat(256)],
    OUTBOX_LOG_LEVEL: ['verbose', 'INFO!', 'warning'],
  };

  test('the table covers every setting', () => {
    expect(Object.keys(BAD).sort()).toEqual([...ALL_ENV_NAMES].sort());
  });

  const cases = Object.entries(BAD).flatMap(([name, values]) =>
    values.map((value) => [name, value.length > 24 ? `${value.slice(0, 12)}… (${value.length} chars)` : value, value] as const),
  );
  test.each(cases)('%s=%j fails with CONFIG_INVALID naming only that variable, on one line', (name, _label, value) => {
    const err = configError({ [name]: value });
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

describe('secrets in URLs', () => {
  const SECRET = 'hunter2SECRET';
  const badUrls: readonly [string, string][] = [
    ['OUTBOX_DATABASE_URL', `mysql://relay:${SECRET}@db:3306/orders`],
    ['OUTBOX_DATABASE_URL', `postgres://relay:${SECRET}@db1/x,postgres://relay:${SECRET}@db2/x`],
    ['OUTBOX_DATABASE_URL', `relay:${SECRET}@db:5432/orders`],
    ['OUTBOX_DATABASE_URL', `postgres://relay:${SECRET}@[bad host/x`],
    ['OUTBOX_AMQP_URL', `http://guest:${SECRET}@mq:15672`],
    ['OUTBOX_AMQP_URL', `amqp://guest:${SECRET}@mq1,guest:${SECRET}@mq2`],
    ['OUTBOX_AMQP_URL', `amqp://guest:${SECRET}@[::1:5672`],
  ];
  test.each(badUrls)('a bad %s never echoes its password', (name, value) => {
    const err = configError({ [name]: value });
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain(name);
    expect(err.message).not.toContain(SECRET);
    expect(err.message).not.toContain('relay:');
  });

  test('the position of the bad URL in a list is named', () => {
    const err = configError({ OUTBOX_AMQP_URL: 'amqp://a:5672,http://b:80' });
    expect(err.message).toMatch(/OUTBOX_AMQP_URL.*#2/);
    expect(err.message).not.toMatch(/#1/);
  });

  // Output masks these whole URLs (test/unit/redact.test.ts), never a bare password.
  test('secretsOf returns every URL that holds a password, as configured', () => {
    const secrets = secretsOf({
      databaseUrl: 'postgres://relay:p%40ss%2Fword@db:5432/orders',
      amqpUrls: ['amqp://guest:guestpw@mq1:5672', 'amqp://mq2:5672', 'amqps://u:other@mq3'],
    });
    expect([...secrets].sort()).toEqual(
      ['postgres://relay:p%40ss%2Fword@db:5432/orders', 'amqp://guest:guestpw@mq1:5672', 'amqps://u:other@mq3'].sort(),
    );
  });

  test('secretsOf leaves out URLs without a password', () => {
    expect(secretsOf({ databaseUrl: 'postgres://postgres@localhost/db', amqpUrls: ['amqp://localhost', 'amqp://user@mq'] })).toEqual([]);
    expect(secretsOf(loadConfig({ OUTBOX_AMQP_URL: 'amqp://mq' }))).toEqual([]);
    expect(secretsOf(loadConfig({}))).toEqual(['amqp://guest:guest@localhost:5672']);
  });
});

describe('<NAME>_FILE secrets', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'outbox-config-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  test('OUTBOX_DATABASE_URL_FILE and OUTBOX_AMQP_URL_FILE are read from disk and trimmed', () => {
    const dbFile = join(dir, 'db-url');
    const amqpFile = join(dir, 'amqp-url');
    writeFileSync(dbFile, '  postgres://relay:filepw@db:5432/orders\n\n');
    writeFileSync(amqpFile, 'amqp://relay:mqpw@mq1:5672,amqp://relay:mqpw@mq2:5672\n');
    const config = loadConfig({ OUTBOX_DATABASE_URL_FILE: dbFile, OUTBOX_AMQP_URL_FILE: amqpFile });
    expect(config.databaseUrl).toBe('postgres://relay:filepw@db:5432/orders');
    expect(config.amqpUrls).toEqual(['amqp://relay:mqpw@mq1:5672', 'amqp://relay:mqpw@mq2:5672']);
  });

  test('the injected reader is given the path', () => {
    const read = jest.fn((path: string) => (path === '/run/secrets/db' ? 'postgres://u:p@h/d\r\n' : 'amqp://u:p@mq\n'));
    const config = loadConfig({ OUTBOX_DATABASE_URL_FILE: '/run/secrets/db', OUTBOX_AMQP_URL_FILE: '/run/secrets/mq' }, read);
    expect(read.mock.calls.map((c) => c[0]).sort()).toEqual(['/run/secrets/db', '/run/secrets/mq']);
    expect(config.databaseUrl).toBe('postgres://u:p@h/d');
    expect(config.amqpUrls).toEqual(['amqp://u:p@mq']);
  });

  test('an unreadable file is named, with the variable', () => {
    const missing = join(dir, 'no-such-file');
    const err = configError({ OUTBOX_AMQP_URL_FILE: missing });
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.message).toContain('OUTBOX_AMQP_URL_FILE');
    expect(err.message).toContain(missing);
    expect(err.message).toContain('ENOENT');
    expect(err.message).not.toMatch(/[\r\n]/);
    const dbErr = configError({ OUTBOX_DATABASE_URL_FILE: dir }); // a directory: EISDIR
    expect(dbErr.message).toContain('OUTBOX_DATABASE_URL_FILE');
    expect(dbErr.message).toContain(dir);
  });

  test('a variable and its _FILE both set is an error naming both', () => {
    const file = join(dir, 'both');
    writeFileSync(file, 'postgres://a@b/c');
    for (const name of ['OUTBOX_DATABASE_URL', 'OUTBOX_AMQP_URL']) {
      const value = name === 'OUTBOX_DATABASE_URL' ? 'postgres://a@b/c' : 'amqp://a@b';
      const err = configError({ [name]: value, [`${name}_FILE`]: file });
      expect(err.code).toBe('CONFIG_INVALID');
      expect(err.message).toContain(`${name}_FILE`);
      expect(names(err.message, name)).toBe(true);
    }
  });

  test('a bad URL in a file is reported under the _FILE variable, without its password', () => {
    const err = configError({ OUTBOX_DATABASE_URL_FILE: '/x' }, () => 'mysql://relay:filesecret@db/x\n');
    expect(err.message).toContain('OUTBOX_DATABASE_URL_FILE');
    expect(err.message).not.toContain('filesecret');
  });

  test('settings that are not URLs have no _FILE variant', () => {
    const read = jest.fn(() => 'custom');
    expect(loadConfig({ OUTBOX_SCHEMA_FILE: '/x', OUTBOX_APP_ID_FILE: '/y' }, read).schema).toBe('outbox');
    expect(read).not.toHaveBeenCalled();
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
