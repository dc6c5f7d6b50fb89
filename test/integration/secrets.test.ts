import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { redactUrl } from '../../src/config/redact';
import { cli, lines, ROOT, type CliResult } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { waitFor } from '../kit/wait';

// Passwords that a substring mask finds everywhere (in numbers, in 127.0.0.1, in the
// schema name, in the user name), and one with %-escapes. The test database trusts
// local connections (see the README's Quick start), so any password logs in; the broker
// only takes its own, so a wrong one is the first of a list and the right URL follows.

const testDb = new URL(testDatabaseUrl());
const dbUser = decodeURIComponent(testDb.username) || 'postgres';
const amqp = new URL(testAmqpUrl());
const amqpUser = decodeURIComponent(amqp.username) || 'guest';

interface Case {
  readonly name: string;
  /** As written in the URL. */
  readonly password: string;
  /** Long and unusual enough that it must not appear anywhere, not even as a substring. */
  readonly distinctive: boolean;
}

const CASES: readonly Case[] = [
  { name: 'password 1', password: '1', distinctive: false },
  { name: 'password a', password: 'a', distinctive: false },
  { name: 'password outbox', password: 'outbox', distinctive: false },
  { name: 'user = password', password: dbUser, distinctive: false },
  { name: '%-escaped password', password: 'Pw%40Se%2Fcr%3At%25%201', distinctive: true },
];

/** `scheme://authority/path` of `base`, logged in as `user` with `password` (as written). */
function urlWith(base: URL, user: string, password: string, port = base.port): string {
  return `${base.protocol}//${encodeURIComponent(user)}:${password}@${base.hostname}${port ? `:${port}` : ''}${base.pathname}`;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Fails if `text` holds the password in a URL's user info, or (when distinctive) anywhere. */
function expectNoPassword(text: string, c: Case): void {
  const forms = [...new Set([c.password, decodeURIComponent(c.password)])];
  for (const form of forms) {
    expect(text).not.toMatch(new RegExp(`://[^\\s"]*:${escapeRegExp(form)}@`));
    if (c.distinctive) expect(text).not.toContain(form);
  }
}

function allOutput(...results: readonly CliResult[]): string {
  return results.map((r) => `${r.stdout}\n${r.stderr}`).join('\n');
}

const fx = OutboxFixture.forFile('secrets');

/** The stored error of the dead message: it quotes a URL with the password. */
function lastError(password: string): string {
  return `broker refused amqp://${amqpUser}:${password}@mq.example:5672 once`;
}

beforeAll(async () => {
  if (!existsSync(join(ROOT, 'dist', 'cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  // One delayed message (no relay claims it) and one dead one: status counts of 1.
  await fx.insert([{ routing_key: 'secrets-later', payload: { n: 1 }, available_at: new Date(Date.now() + 3_600_000) }]);
  const [dead] = await fx.insert([{ routing_key: 'secrets-dead', payload: { n: 1 } }]);
  await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 1, last_error = 'dead for the test' WHERE message_id = $1`, [
    dead,
  ]);
});

describe.each(CASES)('$name', (c) => {
  const databaseUrl = urlWith(testDb, dbUser, c.password);
  const wrongAmqpUrl = urlWith(amqp, amqpUser, c.password);
  const amqpUrls = wrongAmqpUrl === testAmqpUrl() ? testAmqpUrl() : `${wrongAmqpUrl},${testAmqpUrl()}`;
  const env = (): Record<string, string> => ({ OUTBOX_DATABASE_URL: databaseUrl, OUTBOX_AMQP_URL: amqpUrls, OUTBOX_SCHEMA: fx.schema });

  test('status, status --json and dead list --json: exact counts, valid JSON, no password', async () => {
    await fx.pool.query(`UPDATE ${fx.table} SET last_error = $1 WHERE dead_at IS NOT NULL`, [lastError(c.password)]);
    const json = await cli(['status', '--json'], env());
    expect(json).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(json.stdout)).toMatchObject({ schema: fx.schema, pending: 1, due: 0, delayed: 1, dead: 1 });

    const text = await cli(['status'], env());
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout).toContain(`schema          ${fx.schema}\n`);
    expect(text.stdout).toContain('pending         1 (due 0, delayed 1)\n');
    expect(text.stdout).toContain('dead            1\n');

    const dead = await cli(['dead', 'list', '--json'], env());
    expect(dead).toMatchObject({ code: 0, stderr: '' });
    const list = JSON.parse(dead.stdout) as { routingKey: string; attempts: number; lastError: string }[];
    // The stored error quotes a URL with the password: printed, its password is masked, its user stays.
    expect(list).toEqual([
      expect.objectContaining({
        routingKey: 'secrets-dead',
        attempts: 1,
        lastError: `broker refused amqp://${amqpUser}:***@mq.example:5672 once`,
      }),
    ]);
    expectNoPassword(allOutput(json, text, dead), c);
  });

  test('check: the user names stay visible, the passwords do not', async () => {
    const result = await cli(['check'], env(), 40_000);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const output = lines(result.stdout);
    expect(output).toContainEqual(expect.stringMatching(new RegExp(`^ok .*database reachable .*role ${escapeRegExp(dbUser)}\\)$`)));
    expect(output).toContainEqual(`ok    broker reachable (${redactUrl(testAmqpUrl())})`);
    expect(redactUrl(testAmqpUrl())).toContain(`//${amqpUser}:***@`);
    if (amqpUrls !== testAmqpUrl()) {
      expect(output).toContainEqual(
        expect.stringContaining(`FAIL  broker not reachable at ${amqp.protocol}//${amqpUser}:***@${amqp.host}: `),
      );
    }
    expectNoPassword(result.stdout, c);
  });

  test('an unreachable database: the error line keeps every digit and hides the password', async () => {
    const unreachable = urlWith(testDb, dbUser, c.password, '1');
    const result = await cli(['status', '--json'], { ...env(), OUTBOX_DATABASE_URL: unreachable });
    expect(result.code).toBe(1);
    expect(result.stdout).toBe('');
    expect(result.stderr).toBe(`outbox-relay: cannot reach the database: connect ECONNREFUSED ${testDb.hostname}:1\n`);
  });

  // The multi-host form: a dead host first, the test database second.
  const multiHostUrl = (ports: string): string =>
    `${testDb.protocol}//${encodeURIComponent(dbUser)}:${c.password}@${ports}${testDb.pathname}?target_session_attrs=read-write`;
  const testDbHost = `${testDb.hostname}:${testDb.port || '5432'}`;

  test('a multi-host URL: status finds the writable host; no host reachable names each, never the password', async () => {
    const found = await cli(['status', '--json'], { ...env(), OUTBOX_DATABASE_URL: multiHostUrl(`${testDb.hostname}:1,${testDbHost}`) });
    expect({ code: found.code, stderr: found.stderr }).toEqual({ code: 0, stderr: '' });
    expect(JSON.parse(found.stdout)).toMatchObject({ dead: 1 });
    const none = await cli(['status', '--json'], {
      ...env(),
      OUTBOX_DATABASE_URL: multiHostUrl(`${testDb.hostname}:1,${testDb.hostname}:2`),
    });
    expect(none.code).toBe(1);
    expect(none.stderr).toBe(
      `outbox-relay: cannot reach the database: no database host serves target_session_attrs=read-write:` +
        ` ${testDb.hostname}:1 cannot be reached (connect ECONNREFUSED ${testDb.hostname}:1);` +
        ` ${testDb.hostname}:2 cannot be reached (connect ECONNREFUSED ${testDb.hostname}:2)\n`,
    );
    expectNoPassword(allOutput(found, none), c);
  });

  test('a multi-host URL with a bad port: exit 2 naming the variable, never the password', async () => {
    const result = await cli(['status'], { ...env(), OUTBOX_DATABASE_URL: multiHostUrl(`${testDbHost},${testDb.hostname}:99999`) });
    expect(result.code).toBe(2);
    expect(lines(result.stderr)).toHaveLength(1);
    expect(result.stderr).toContain('OUTBOX_DATABASE_URL host #2 has a bad port');
    expectNoPassword(allOutput(result), c);
  });

  test('outbox-relay run with a multi-host URL: logs the chosen host, never the password', async () => {
    const relay = await fx.spawnRelay({
      ...env(),
      OUTBOX_DATABASE_URL: multiHostUrl(`${testDb.hostname}:1,${testDbHost}`),
      OUTBOX_LOG_LEVEL: 'debug',
    });
    await relay.ready();
    expect(relay.logs().find((l) => l['msg'] === 'database host chosen')).toMatchObject({ host: testDbHost });
    relay.kill('SIGTERM');
    expect((await relay.exitWithin(20_000)).code).toBe(0);
    expectNoPassword([...relay.stdout, ...relay.stderr].join('\n'), c);
  });

  test('outbox-relay run: every log line is JSON, URLs are logged redacted, the password never', async () => {
    const relay = await fx.spawnRelay({ ...env(), OUTBOX_LOG_LEVEL: 'debug' });
    await relay.ready();
    await waitFor('connected to the broker', () => relay.logged('connected to the broker'));
    relay.kill('SIGTERM');
    expect((await relay.exitWithin(20_000)).code).toBe(0);

    expect(relay.stderr).toEqual([]);
    const entries = relay.logs();
    expect(entries).toHaveLength(relay.stdout.length);
    expect(entries.find((e) => e['msg'] === 'connected to the broker')).toMatchObject({ broker: redactUrl(testAmqpUrl()) });
    if (amqpUrls !== testAmqpUrl()) {
      const refused = entries.find((e) => e['msg'] === 'cannot connect to the broker');
      expect(refused).toMatchObject({ failures: 1, retryInMs: expect.any(Number) as unknown as number });
      expect(refused?.['err']).toEqual(expect.stringContaining(`${amqp.protocol}//${amqpUser}:***@${amqp.host}: `));
    }
    expectNoPassword(relay.stdout.join('\n'), c);
  }, 60_000);
});
