import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, secretsOf } from '../../src/config/load-config';
import { configError, names } from './config-errors';

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
