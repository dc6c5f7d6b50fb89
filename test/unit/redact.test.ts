import { loadConfig, secretsOf } from '../../src/config/load-config';
import { maskUrlsInJson, maskUrlsInOutput, maskUrlsInText, redactUrl } from '../../src/config/redact';
import { OutboxError } from '../../src/errors';
import { createLogger } from '../../src/observability/logger';
import { LogCapture } from '../kit/log-capture';

/** Passwords that a substring mask would find everywhere: digits, letters, words of the product, the user name. */
const AWKWARD_PASSWORDS = ['1', 'a', 'outbox', 'guest', 'postgres', 'relay', '5432', 'localhost', 'true', 'null'];

describe('redactUrl', () => {
  test.each([
    ['postgres://relay:s3cret@db:5432/orders', 'postgres://relay:***@db:5432/orders'],
    ['amqp://guest:guest@mq:5672', 'amqp://guest:***@mq:5672'],
    ['postgres://postgres:1@127.0.0.1:5432/test', 'postgres://postgres:***@127.0.0.1:5432/test'],
    ['amqps://u:a@mq.example.com/vhost?heartbeat=10', 'amqps://u:***@mq.example.com/vhost?heartbeat=10'],
    // %-escapes are masked whole, as written
    ['postgres://relay:p%40ss%2Fw%3Ard%25@db/orders', 'postgres://relay:***@db/orders'],
    ['postgres://us%3Aer:p%3Aw@db/orders', 'postgres://us%3Aer:***@db/orders'],
    // unescaped @ / ? # in a password: the URL does not parse as meant, it is masked all the same
    ['postgres://relay:p@ss/w#r?d@db:5432/orders', 'postgres://relay:***@db:5432/orders'],
    ['postgres://relay:12/cd@db/orders', 'postgres://relay:***@db/orders'],
    ['postgres://relay:s3cret@[bad host/x', 'postgres://relay:***@[bad host/x'],
    ['postgres://relay:pa ss"wo\'rd@db/orders', 'postgres://relay:***@db/orders'],
    // libpq multi-host URL: one user info, several hosts
    ['postgres://u:p@h1:5432,h2:5432/db', 'postgres://u:***@h1:5432,h2:5432/db'],
    ['postgresql://u:p@h1,h2,h3/db?target_session_attrs=read-write', 'postgresql://u:***@h1,h2,h3/db?target_session_attrs=read-write'],
    ['postgres://u:p@[::1]:5432,[fe80::2]:5433/db', 'postgres://u:***@[::1]:5432,[fe80::2]:5433/db'],
    ['postgres://u:p,w:5433@h1:5432,h2:5433/db', 'postgres://u:***@h1:5432,h2:5433/db'],
    ['postgres://u:p%2Cw@h1,h2/db?sslmode=require', 'postgres://u:***@h1,h2/db?sslmode=require'],
    // a comma-separated list of AMQP URLs, each masked
    ['amqp://guest:a@mq1:5672,amqp://guest:b@mq2:5672', 'amqp://guest:***@mq1:5672,amqp://guest:***@mq2:5672'],
    ['amqp://u:a@h1, amqps://u:b@h2,amqp://h3', 'amqp://u:***@h1, amqps://u:***@h2,amqp://h3'],
    // credentials in the query, as libpq and node-postgres read them
    ['postgres://relay@db/orders?password=s3cret&sslmode=require', 'postgres://relay@db/orders?password=***&sslmode=require'],
    [
      'postgres://relay@db/orders?sslmode=verify-full&sslpassword=k3y#frag',
      'postgres://relay@db/orders?sslmode=verify-full&sslpassword=***#frag',
    ],
    // no scheme: still user info, host and path
    ['relay:s3cret@db:5432/orders', 'relay:***@db:5432/orders'],
  ])('%s → %s', (url, expected) => {
    expect(redactUrl(url)).toBe(expected);
  });

  test.each([
    'postgres://postgres@localhost:5432/postgres',
    'amqp://mq',
    'amqp://u:@mq:5672',
    'postgres://h/db?x=a@b',
    'postgres://u@[::1]:5432,[::2]:5433/db?target_session_attrs=read-write',
    'postgres://[::1]:5432,h2:5433/db',
    'not a url at all, 1 a outbox',
  ])('%s has nothing to mask and stays as it is', (url) => {
    expect(redactUrl(url)).toBe(url);
  });

  test('an @ in the query ends the user info: more is masked, never less', () => {
    expect(redactUrl('postgres://u:p@db/orders?application_name=me@example')).toBe('postgres://u:***@example');
    expect(redactUrl('postgres://db:5432/orders?application_name=me@example')).toBe('postgres://db:***@example');
  });

  test('a user name holding an unescaped @ stays; a password holding a colon goes whole', () => {
    expect(redactUrl('postgres://me@tenant:pw@tenant.example.com:5432/db')).toBe('postgres://me@tenant:***@tenant.example.com:5432/db');
    expect(redactUrl('amqp://guest:a:b:c@mq')).toBe('amqp://guest:***@mq');
  });

  test('only the password goes: the user name stays even when it equals the password', () => {
    for (const password of AWKWARD_PASSWORDS) {
      for (const user of ['postgres', 'guest', password]) {
        const url = `postgres://${user}:${password}@127.0.0.1:5432/outbox?sslmode=disable`;
        expect(redactUrl(url)).toBe(`postgres://${user}:***@127.0.0.1:5432/outbox?sslmode=disable`);
      }
    }
  });
});

describe('maskUrlsInText', () => {
  test('masks every URL in an error text and nothing else', () => {
    const text =
      'cannot reach postgres://postgres:1@127.0.0.1:1/test (connect ECONNREFUSED 127.0.0.1:1); ' +
      'tried "amqp://guest:guest@mq1:5672" and <amqp://guest:guest@mq2:5672>, attempt 1 of 11';
    expect(maskUrlsInText(text)).toBe(
      'cannot reach postgres://postgres:***@127.0.0.1:1/test (connect ECONNREFUSED 127.0.0.1:1); ' +
        'tried "amqp://guest:***@mq1:5672" and <amqp://guest:***@mq2:5672>, attempt 1 of 11',
    );
  });

  test('never replaces a bare password: numbers, words and the user name stay', () => {
    for (const password of AWKWARD_PASSWORDS) {
      const secrets = [`postgres://${password}:${password}@127.0.0.1:5432/test`, `amqp://guest:${password}@127.0.0.1:5672`];
      const text = `schema "outbox" at migration 1: 11 pending, role ${password}, user guest, 127.0.0.1:5432 localhost ***`;
      expect(maskUrlsInText(text, secrets)).toBe(text);
    }
  });

  test('a configured URL is masked whole even where its password holds white space or quotes', () => {
    const url = 'postgres://relay:pa ss"w\\d@db/orders';
    const text = `driver: could not connect to ${url}; and JSON-quoted: ${JSON.stringify(url)}`;
    const masked = maskUrlsInText(text, [url]);
    expect(masked).toBe(`driver: could not connect to postgres://relay:***@db/orders; and JSON-quoted: "postgres://relay:***@db/orders"`);
  });

  test('several URLs on one line, each with its own end', () => {
    expect(maskUrlsInText('a amqp://u:p@h1,amqp://v:q@h2 b postgres://w:r@h3/db,c')).toBe(
      'a amqp://u:***@h1,amqp://v:***@h2 b postgres://w:***@h3/db,c',
    );
  });

  test('is linear: long texts full of "://" and long words come back at once', () => {
    const started = Date.now();
    const many = 'abc://'.repeat(200_000);
    expect(maskUrlsInText(many)).toBe(many);
    const longWord = `${'a'.repeat(500_000)}://u:p@h`;
    expect(maskUrlsInText(longWord)).toBe(`${'a'.repeat(500_000)}://u:***@h`);
    expect(Date.now() - started).toBeLessThan(5_000);
  });
});

describe('maskUrlsInJson', () => {
  test('stays valid JSON with the same numbers, whatever the password', () => {
    for (const password of [...AWKWARD_PASSWORDS, 'p%40ss%2Fw%3Ard', 'p@ss"w\\rd', '}{"],']) {
      const url = `postgres://postgres:${password}@127.0.0.1:5432/test`;
      const document = {
        schema: 'outbox_1',
        pending: 1,
        lagSeconds: 1.5,
        dead: 11,
        ok: true,
        none: null,
        err: `${url}: connect ECONNREFUSED 127.0.0.1:1`,
        nested: [{ msg: `retrying ${url}`, attempt: 1 }],
      };
      const masked = maskUrlsInJson(JSON.stringify(document), [url]);
      expect(JSON.parse(masked)).toEqual({
        ...document,
        err: 'postgres://postgres:***@127.0.0.1:5432/test: connect ECONNREFUSED 127.0.0.1:1',
        nested: [{ msg: 'retrying postgres://postgres:***@127.0.0.1:5432/test', attempt: 1 }],
      });
    }
  });

  test('a text with nothing to mask comes back byte for byte', () => {
    const json = JSON.stringify({ a: 'x"y\\z', b: [1, 2.5e-7, -0], c: 'http://example.com/no-user-info', d: '\u2028' });
    expect(maskUrlsInJson(json, ['amqp://guest:guest@h'])).toBe(json);
  });
});

describe('maskUrlsInOutput', () => {
  test('a JSON document stays one; a text is masked as text', () => {
    const list = JSON.stringify([{ messageId: '1', attempts: 1, lastError: 'amqp://guest:1@127.0.0.1:5672: 403 (ACCESS-REFUSED)' }]);
    expect(JSON.parse(maskUrlsInOutput(list, []))).toEqual([
      { messageId: '1', attempts: 1, lastError: 'amqp://guest:***@127.0.0.1:5672: 403 (ACCESS-REFUSED)' },
    ]);
    expect(maskUrlsInOutput('FAIL  broker not reachable at amqp://guest:1@127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1')).toBe(
      'FAIL  broker not reachable at amqp://guest:***@127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1',
    );
    const status = JSON.stringify({ schema: 'outbox', pending: 1, due: 1, dead: 0 });
    expect(maskUrlsInOutput(status, ['postgres://postgres:1@127.0.0.1/test'])).toBe(status);
  });
});

describe('secretsOf', () => {
  test('the configured URLs that hold a password, as given; none without', () => {
    const config = loadConfig({
      OUTBOX_DATABASE_URL: 'postgres://relay:p%40ss@db:5432/orders',
      OUTBOX_AMQP_URL: 'amqp://guest:1@mq1:5672, amqp://mq2:5672,amqps://u:guest@mq3',
    });
    expect([...secretsOf(config)].sort()).toEqual([
      'amqp://guest:1@mq1:5672',
      'amqps://u:guest@mq3',
      'postgres://relay:p%40ss@db:5432/orders',
    ]);
    expect(secretsOf(loadConfig({ OUTBOX_AMQP_URL: 'amqp://mq' }))).toEqual([]);
  });
});

describe('a multi-host database URL', () => {
  test('secretsOf holds the URL and the one-host URL built for each host', () => {
    const config = loadConfig({ OUTBOX_DATABASE_URL: 'postgres://relay:pw@h1:5432,[::1]:5433/orders?target_session_attrs=read-write' });
    expect([...secretsOf(config)].sort()).toEqual([
      'amqp://guest:guest@localhost:5672',
      'postgres://relay:pw@[::1]:5433/orders',
      'postgres://relay:pw@h1:5432,[::1]:5433/orders?target_session_attrs=read-write',
      'postgres://relay:pw@h1:5432/orders',
    ]);
  });

  test('a password with a space or a quote is masked in the one-host URL of any host too', () => {
    const config = loadConfig({ OUTBOX_DATABASE_URL: 'postgres://relay:Multi Host"9@h1:5432,h2:5433/orders?target_session_attrs=primary' });
    const text = 'cannot connect to postgres://relay:Multi Host"9@h2:5433/orders: refused';
    expect(maskUrlsInText(text, secretsOf(config))).toBe('cannot connect to postgres://relay:***@h2:5433/orders: refused');
    const logs = new LogCapture();
    createLogger({ level: 'info', secrets: secretsOf(config), destination: logs.stream }).error(
      { err: text, url: config.databaseUrl },
      'x',
    );
    expect(logs.lines.join('\n')).not.toContain('Host"9');
    expect(logs.entries()[0]?.['url']).toBe('postgres://relay:***@h1:5432,h2:5433/orders?target_session_attrs=primary');
  });
});

describe('<NAME>_FILE contents', () => {
  test('an invalid URL read from a file is never echoed', () => {
    const contents: Record<string, string> = {
      '/run/secrets/db': 'mysql://relay:FileSecret1@db/orders\n',
      '/run/secrets/mq': 'just-the-password-FileSecret2\n',
    };
    const read = (path: string): string => contents[path] ?? '';
    let message = '';
    try {
      loadConfig({ OUTBOX_DATABASE_URL_FILE: '/run/secrets/db', OUTBOX_AMQP_URL_FILE: '/run/secrets/mq' }, read);
    } catch (err: unknown) {
      expect(err).toBeInstanceOf(OutboxError);
      message = (err as OutboxError).message;
    }
    expect(message).toContain('OUTBOX_DATABASE_URL_FILE');
    expect(message).toContain('OUTBOX_AMQP_URL_FILE');
    expect(message).not.toContain('FileSecret');
  });

  test('a valid URL read from a file is masked where it reaches a log line', () => {
    const url = 'postgres://relay:File Secret"3@db:5432/orders';
    const config = loadConfig({ OUTBOX_DATABASE_URL_FILE: '/run/secrets/db' }, () => `${url}\n`);
    expect(config.databaseUrl).toBe(url);
    const logs = new LogCapture();
    createLogger({ level: 'info', secrets: secretsOf(config), destination: logs.stream }).error(
      { err: `pg: cannot parse ${config.databaseUrl}` },
      'driver error',
    );
    expect(logs.lines.join('\n')).not.toContain('Secret');
    expect(logs.entries()[0]?.['err']).toBe('pg: cannot parse postgres://relay:***@db:5432/orders');
  });
});

describe('the logger', () => {
  test('every line stays JSON, numbers stay numbers, the user stays, the password goes', () => {
    for (const password of [...AWKWARD_PASSWORDS, 'p%40ss%2Fw%3Ard']) {
      const url = `amqp://guest:${password}@127.0.0.1:5672`;
      const logs = new LogCapture();
      const log = createLogger({ level: 'debug', secrets: [url], destination: logs.stream });
      log.warn(
        { err: `${url}: Handshake terminated by server: 403 (ACCESS-REFUSED)`, retryInMs: 100, failures: 1 },
        'cannot connect to the broker',
      );
      log.child({ component: 'broker' }).info({ broker: redactUrl(url), outageMs: 1 }, 'connected to the broker');
      log.error(new Error(`driver quotes ${url}`), 'failed');
      const entries = logs.entries();
      expect(entries).toHaveLength(3);
      expect(entries[0]).toMatchObject({
        err: 'amqp://guest:***@127.0.0.1:5672: Handshake terminated by server: 403 (ACCESS-REFUSED)',
        retryInMs: 100,
        failures: 1,
        service: 'outbox-relay',
      });
      expect(entries[1]).toMatchObject({ broker: 'amqp://guest:***@127.0.0.1:5672', outageMs: 1, component: 'broker' });
      expect(entries[2]?.['msg']).toBe('failed');
      expect(JSON.stringify(entries[2]?.['err'])).toContain('driver quotes amqp://guest:***@127.0.0.1:5672');
      for (const line of logs.lines) expect(line).not.toContain(`:${password}@`);
    }
  });

  test('masks URL credentials without any configured secret', () => {
    const logs = new LogCapture();
    createLogger({ level: 'info', secrets: [], destination: logs.stream }).info({ url: 'postgres://u:pw1@h/db' }, 'x');
    expect(logs.entries()[0]?.['url']).toBe('postgres://u:***@h/db');
  });
});
