import { connect, type ChannelModel } from 'amqplib';
import { escapeIdentifier } from 'pg';
import fc from 'fast-check';
import { SELFTEST_HEADER, SELFTEST_MESSAGE_TYPE } from '../../src/domain/selftest-message';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines, STACK_FRAME } from '../kit/cli';
import { freePort } from '../kit/free-port';
import { trackOpen } from '../kit/open-resources';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { RelayProcess } from '../kit/relay-process';
import { TcpProxy } from '../kit/tcp-proxy';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

// `outbox-relay selftest` (docs/runbook.md, Self-test): a canary through the database and the
// broker, against the real services; whatever the outcome, nothing is left behind.

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('selftest');
const broker = TestBroker.forFile();

/** A connection of its own for passive declares: a 404 closes the channel it is asked on. */
let admin: { model: ChannelModel; untrack: () => void };
beforeAll(async () => {
  const model = await connect(testAmqpUrl());
  admin = { model, untrack: trackOpen(model, { kind: 'AMQP connection', detail: 'cli-selftest passive declares' }) };
});
afterAll(async () => {
  await admin.model.close();
  admin.untrack();
});

async function brokerHas(kind: 'exchange' | 'queue', name: string): Promise<boolean> {
  const channel = await admin.model.createChannel();
  channel.on('error', () => undefined);
  try {
    if (kind === 'exchange') await channel.checkExchange(name);
    else await channel.checkQueue(name);
    await channel.close();
    return true;
  } catch (err: unknown) {
    const code = (err as { code?: unknown }).code;
    if (code === 404) return false;
    if (code === 405) return true; // an exclusive queue of another connection: it exists
    throw err;
  }
}

/** The temporary queue (and exchange) name the output gives. */
function temporaryName(stdout: string): string {
  const name = /outbox-selftest-[0-9a-f-]{36}/.exec(stdout)?.[0];
  if (name === undefined) throw new Error(`no temporary queue named in: ${stdout}`);
  return name;
}

async function rowCount(schema = fx.schema): Promise<number> {
  const { rows } = await fx.pool.query<{ n: string }>(`SELECT count(*) AS n FROM ${escapeIdentifier(schema)}.messages`);
  return Number(rows[0]!.n);
}

async function expectNothingLeft(stdout: string): Promise<void> {
  const name = temporaryName(stdout);
  expect(await rowCount()).toBe(0);
  expect(await brokerHas('queue', name)).toBe(false);
  expect(await brokerHas('exchange', name)).toBe(false);
}

describe('selftest', () => {
  test('no relay running: it publishes the canary itself, exit 0, each step timed, nothing left behind', async () => {
    const result = await cli(['selftest'], envFor(fx.schema));
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const output = lines(result.stdout);
    for (const step of [
      'connect database',
      'schema',
      'privileges',
      'connect broker',
      'declare queue',
      'insert',
      'claim',
      'confirm',
      'mark published',
      'delivery',
      'cleanup',
    ]) {
      expect(output).toContainEqual(expect.stringMatching(new RegExp(`^${step} \\.+ ok +\\d+ ms`)));
    }
    expect(result.stdout).toMatch(/^no relay claimed it within 2000 ms \(.*\): published by selftest itself$/m);
    expect(output.at(-1)).toMatch(
      /^selftest passed in \d+ ms: the canary arrived intact \(published by the selftest itself\); nothing left behind$/,
    );
    const password = new URL(testAmqpUrl()).password;
    if (password) expect(result.stdout).not.toContain(`:${password}@`);
    await expectNothingLeft(result.stdout);
  });

  test('a relay running: the relay claims and publishes the canary, the selftest says so; --json', async () => {
    const { relay } = await fx.startRelay();
    const published = async (): Promise<number> => (await relay.metrics.publishedTotal.get()).values.reduce((sum, v) => sum + v.value, 0);
    const before = await published();
    const text = await cli(['selftest'], envFor(fx.schema));
    expect(text).toMatchObject({ code: 0, stderr: '' });
    expect(text.stdout).toMatch(/^claimed by a running relay \(published_at set after \d+ ms\)$/m);
    expect(text.stdout).not.toMatch(/^(claim|confirm) \./m);
    expect(text.stdout).toMatch(/published by a running relay\); nothing left behind$/m);
    await expectNothingLeft(text.stdout);

    const json = await cli(['selftest', '--json'], envFor(fx.schema));
    expect(json).toMatchObject({ code: 0, stderr: '' });
    const report = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ ok: true, publishedBy: 'relay', relayWaitMs: 2000, temporaryExchange: true });
    expect(report['steps']).toContainEqual(
      expect.objectContaining({ step: 'publish', ok: true, detail: expect.stringMatching(/running relay/) }),
    );
    await expectNothingLeft(json.stdout);
    // The relay counted both canaries as published messages (said in docs/runbook.md).
    expect((await published()) - before).toBe(2);
  });

  test('--exchange E: the queue is bound to E, which is left as it was', async () => {
    const exchange = await broker.exchange(uniqueName('selftest_ex'));
    const result = await cli(['selftest', '--exchange', exchange, '--timeout-ms', '2000'], envFor(fx.schema));
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(result.stdout).toContain(`bound to exchange "${exchange}"`);
    expect(result.stdout).toMatch(/^no relay claimed it within 1000 ms \(half of --timeout-ms\)/m);
    const queue = temporaryName(result.stdout);
    expect(await brokerHas('queue', queue)).toBe(false);
    expect(await brokerHas('exchange', exchange)).toBe(true);
    expect(await rowCount()).toBe(0);
  });

  test('--exchange E with a full queue bound (x-overflow reject-publish): exit 1 at confirm, the refusal named, nothing left behind', async () => {
    const exchange = await broker.exchange(uniqueName('selftest_full'));
    await broker.declareQueue(
      uniqueName('selftest_fullq'),
      { exchange, pattern: '#' },
      { 'x-max-length': 0, 'x-overflow': 'reject-publish' },
    );
    const result = await cli(['selftest', '--exchange', exchange, '--timeout-ms', '2000'], envFor(fx.schema));
    const stderr = expectOneLineFailure(result, 1);
    expect(stderr).toContain('selftest failed at confirm: the broker refused it (a negative confirm');
    expect(result.stdout).not.toMatch(/^mark published /m);
    await expectNothingLeft(result.stdout);
  });

  test('--exchange naming a missing exchange: exit 1 naming it, nothing inserted', async () => {
    const missing = uniqueName('no_such_exchange');
    const result = await cli(['selftest', '--exchange', missing], envFor(fx.schema));
    const stderr = expectOneLineFailure(result, 1);
    expect(stderr).toContain(`selftest failed at declare queue: exchange "${missing}" does not exist`);
    expect(result.stdout).not.toMatch(/^insert /m);
    expect(await rowCount()).toBe(0);
  });

  test('a broker that does not answer: exit 1 naming the broker step, one line, no stack trace, no password, nothing inserted', async () => {
    const url = `amqp://guest:secretpw@127.0.0.1:${await freePort()}`;
    const result = await cli(['selftest'], envFor(fx.schema, { OUTBOX_AMQP_URL: url }));
    const stderr = expectOneLineFailure(result, 1);
    expect(stderr).toMatch(
      /^outbox-relay: selftest failed at connect broker: cannot reach the broker \(amqp:\/\/guest:\*\*\*@127\.0\.0\.1:\d+: /,
    );
    expect(result.stdout).toMatch(/^connect broker \.+ FAIL/m);
    expect(result.stdout + result.stderr).not.toContain('secretpw');
    expect(await rowCount()).toBe(0);
  });

  test('an unmigrated database (an empty schema): exit 1 naming the schema and the migrate command, nothing created', async () => {
    const schema = uniqueName('t_selftest_empty');
    await fx.pool.query(`CREATE SCHEMA ${escapeIdentifier(schema)}`);
    try {
      const result = await cli(['selftest'], envFor(schema));
      const stderr = expectOneLineFailure(result, 1);
      expect(stderr).toContain(`selftest failed at schema: schema "${schema}" is not migrated: run outbox-relay migrate`);
      expect(result.stdout).not.toMatch(/^connect broker /m);
      const { rows } = await fx.pool.query<{ n: string }>(`SELECT count(*) AS n FROM pg_class WHERE relnamespace = $1::regnamespace`, [
        schema,
      ]);
      expect(Number(rows[0]!.n)).toBe(0);
    } finally {
      await fx.pool.query(`DROP SCHEMA ${escapeIdentifier(schema)} CASCADE`);
    }
  });

  test('the broker goes away after the insert: exit 1 naming the step, the canary row deleted, the queue and exchange gone', async () => {
    const proxy = await TcpProxy.inFrontOf(testAmqpUrl());
    try {
      const running = cli(['selftest', '--timeout-ms', '4000'], envFor(fx.schema, { OUTBOX_AMQP_URL: proxy.url(testAmqpUrl()) }));
      await waitFor('the canary row', async () => (await rowCount()) === 1, 10_000, 5);
      proxy.cut();
      const result = await running;
      const stderr = expectOneLineFailure(result, 1);
      expect(stderr).toMatch(/^outbox-relay: selftest failed at confirm: /);
      expect(result.stdout).toMatch(/^cleanup \.+ ok .*canary row deleted/m);
      await expectNothingLeft(result.stdout);
    } finally {
      await proxy.close();
    }
  });

  test('a role that may not INSERT into messages (the relay role): exit 1 naming the privilege, nothing created', async () => {
    const role = uniqueName('selftest_relay');
    const schema = escapeIdentifier(fx.schema);
    await fx.pool.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await fx.pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
      await fx.pool.query(`GRANT SELECT, UPDATE, DELETE ON ${fx.table} TO ${role}`);
      await fx.pool.query(`GRANT SELECT ON ${schema}.schema_migrations TO ${role}`);
      const asRole = new URL(testDatabaseUrl());
      asRole.username = role;
      asRole.password = '';
      const result = await cli(['selftest'], envFor(fx.schema, { OUTBOX_DATABASE_URL: asRole.toString() }));
      const stderr = expectOneLineFailure(result, 1);
      expect(stderr).toContain(`selftest failed at privileges: the role lacks INSERT on "${fx.schema}"."messages"`);
      expect(result.stdout).not.toMatch(/^connect broker /m);
    } finally {
      await fx.pool.query(`DROP OWNED BY ${role}`);
      await fx.pool.query(`DROP ROLE ${role}`);
    }
  });

  test('a role of its own with the grants migrations/roles.example.sql shows for the selftest: it passes', async () => {
    const role = uniqueName('selftest_role');
    const schema = escapeIdentifier(fx.schema);
    await fx.pool.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await fx.pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
      await fx.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${fx.table} TO ${role}`);
      await fx.pool.query(`GRANT SELECT ON ${schema}.schema_migrations TO ${role}`);
      const asRole = new URL(testDatabaseUrl());
      asRole.username = role;
      asRole.password = '';
      const result = await cli(['selftest', '--timeout-ms', '2000'], envFor(fx.schema, { OUTBOX_DATABASE_URL: asRole.toString() }));
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(result.stdout).toContain(`role ${role}`);
      await expectNothingLeft(result.stdout);
    } finally {
      await fx.pool.query(`DROP OWNED BY ${role}`);
      await fx.pool.query(`DROP ROLE ${role}`);
    }
  });

  test.each([
    ['--timeout-ms soon', ['--timeout-ms', 'soon'], '--timeout-ms'],
    ['--timeout-ms 0', ['--timeout-ms', '0'], '--timeout-ms'],
    ["--exchange ''", ['--exchange', ''], '--exchange'],
    ['--exchange of 256 bytes', ['--exchange', 'x'.repeat(256)], '--exchange'],
  ])('bad arguments (%s): exit 2 naming the option, before connecting to anything', async (_label, args, named) => {
    const result = await cli(['selftest', ...args], envFor(fx.schema));
    expect(result.code).toBe(2);
    expect(lines(result.stderr)[0]).toContain(named);
    expect(result.stderr).not.toContain(STACK_FRAME);
    expect(result.stdout).toBe('');
  });

  test('SIGINT or SIGTERM at any moment: exit 1 saying so (or 0 if it had passed), and nothing left behind (property)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom<NodeJS.Signals>('SIGINT', 'SIGTERM'),
        fc.oneof(
          fc.record({ after: fc.constant('start' as const), ms: fc.integer({ min: 0, max: 900 }) }),
          fc.record({ after: fc.constant('insert' as const), ms: fc.integer({ min: 0, max: 2_500 }) }),
        ),
        async (signal, moment) => {
          const selftest = await RelayProcess.start(envFor(fx.schema), ['selftest', '--timeout-ms', '6000']);
          try {
            if (moment.after === 'insert') await waitFor('the canary row', async () => (await rowCount()) === 1, 15_000, 5);
            await new Promise((resolve) => setTimeout(resolve, moment.ms));
            selftest.kill(signal);
            const exit = await selftest.exitWithin(20_000);
            const stdout = selftest.stdout.join('\n');
            if (exit.code === 0) expect(stdout).toMatch(/^selftest passed/m);
            // Before the command started (Node still loading), the signal ends the process as usual: nothing exists yet.
            else if (exit.signal !== null) expect({ exit, stdout }).toEqual({ exit: { code: null, signal }, stdout: '' });
            else {
              expect(exit).toEqual({ code: 1, signal: null });
              expect(selftest.stderr).toHaveLength(1);
              expect(selftest.stderr[0]).toMatch(new RegExp(`^outbox-relay: (selftest interrupted by ${signal}|selftest failed at)`));
            }
            expect(await rowCount()).toBe(0);
            if (/outbox-selftest-/.test(stdout)) await expectNothingLeft(stdout);
          } finally {
            if (selftest.running) selftest.kill('SIGKILL');
            await fx.pool.query(`DELETE FROM ${fx.table}`);
          }
        },
      ),
      { numRuns: 6 },
    );
  }, 240_000);

  test('a canary left behind (a selftest killed by SIGKILL, its exchange gone) is never a dead message: retried until it expires', async () => {
    // The row as a killed selftest leaves it: its temporary exchange went with its connection.
    const gone = uniqueName('outbox-selftest-gone');
    await fx.pool.query(
      `INSERT INTO ${fx.table} (exchange, routing_key, message_type, payload, headers, expires_at)
       VALUES ($1, 'outbox-selftest.k', $2, '{"selftest": true}', $3::jsonb, now() + interval '3 seconds'),
              ($1, 'order.created', 'order.created', '{"n": 1}', '{}', NULL)`,
      [gone, SELFTEST_MESSAGE_TYPE, JSON.stringify({ [SELFTEST_HEADER]: true, 'x-outbox-selftest-nonce': 'n' })],
    );
    // One attempt makes a message dead: the canary's failures must not.
    await fx.startRelay({ OUTBOX_MAX_ATTEMPTS: '1' });
    await waitFor(
      'the canary expired',
      async () =>
        (await fx.pool.query(`SELECT 1 FROM ${fx.table} WHERE message_type = $1 AND expired_at IS NOT NULL`, [SELFTEST_MESSAGE_TYPE]))
          .rowCount === 1,
      20_000,
    );
    const { rows } = await fx.pool.query<{ message_type: string; attempts: number }>(
      `SELECT message_type, attempts FROM ${fx.table} WHERE dead_at IS NOT NULL AND expired_at IS NULL`,
    );
    expect(rows.map((r) => r.message_type)).toEqual(['order.created']);
    const status = await cli(['status', '--json'], envFor(fx.schema));
    expect(JSON.parse(status.stdout)).toMatchObject({ dead: 1, expired: 1 });
    await fx.pool.query(`DELETE FROM ${fx.table}`);
  });
});
