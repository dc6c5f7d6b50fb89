import { buildIfMissing, cli, envFor, expectOneLineFailure, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

beforeAll(() => buildIfMissing());

describe('check', () => {
  let fx: OutboxFixture;
  let broker: TestBroker;
  beforeAll(async () => {
    broker = await TestBroker.connect();
  });
  afterAll(async () => {
    await broker.close();
  });
  beforeEach(async () => {
    fx = await OutboxFixture.create('cli_check');
  });
  afterEach(async () => {
    await fx.close();
  });

  test('a good schema and broker: exit 0, one "ok" line per check, no password', async () => {
    const exchange = await broker.exchange(uniqueName('ex'));
    await fx.insert([
      { exchange, routing_key: 'a.b', payload: {} },
      { routing_key: 'some-queue', payload: {} },
    ]);
    const result = await cli(['check'], envFor(fx.schema));
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const output = lines(result.stdout);
    expect(output.length).toBeGreaterThanOrEqual(5);
    for (const line of output) expect(line).toMatch(/^ok\b/);
    expect(result.stdout).toMatch(/database/);
    expect(result.stdout).toMatch(/schema/);
    expect(result.stdout).toMatch(/broker/);
    expect(result.stdout).toMatch(/exchange/);
    const password = new URL(testAmqpUrl()).password;
    if (password) expect(result.stdout).not.toContain(`:${password}@`);
  });

  test('a relay role with column-level UPDATE grants (only the columns the relay writes): check passes and the relay publishes', async () => {
    const role = uniqueName('col_relay');
    const table = fx.table;
    const schema = `"${fx.schema}"`;
    await fx.pool.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await fx.pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
      await fx.pool.query(`GRANT SELECT, DELETE ON ${table} TO ${role}`);
      await fx.pool.query(`GRANT UPDATE (published_at, attempts, last_error, next_attempt_at, dead_at) ON ${table} TO ${role}`);
      await fx.pool.query(`GRANT SELECT ON ${schema}.schema_migrations TO ${role}`);
      await fx.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${schema}.audit TO ${role}`);
      await fx.pool.query(`GRANT SELECT, UPDATE ON ${schema}.relay_lease TO ${role}`);
      await fx.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${schema}.relay_replicas TO ${role}`);
      const asRole = new URL(testDatabaseUrl());
      asRole.username = role;
      asRole.password = '';

      const result = await cli(['check'], envFor(fx.schema, { OUTBOX_DATABASE_URL: asRole.toString() }));
      expect(result).toMatchObject({ code: 0, stderr: '' });
      for (const line of lines(result.stdout)) expect(line).toMatch(/^ok\b/);
      expect(result.stdout).toMatch(/^ok +role may claim, mark and delete in /m);

      const queue = uniqueName('colq');
      const received = await broker.queue(queue);
      await fx.startRelay({ OUTBOX_DATABASE_URL: asRole.toString() });
      await fx.insert([{ routing_key: queue, payload: { columnGrants: true } }]);
      await waitFor('the message published by the column-granted role', () => received.length === 1);
      await waitFor('its mark', async () => (await fx.counts()).published === 1);
      await fx.stopRelays();
    } finally {
      await fx.stopRelays();
      await fx.pool.query(`DROP OWNED BY ${role}`);
      await fx.pool.query(`DROP ROLE ${role}`);
    }
  });

  test('a role that may relay but lacks privileges on the audit table: check fails on one line naming each missing privilege', async () => {
    const role = uniqueName('no_audit');
    const schema = `"${fx.schema}"`;
    await fx.pool.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await fx.pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
      await fx.pool.query(`GRANT SELECT, UPDATE, DELETE ON ${fx.table} TO ${role}`);
      await fx.pool.query(`GRANT SELECT ON ${schema}.schema_migrations TO ${role}`);
      await fx.pool.query(`GRANT SELECT, UPDATE ON ${schema}.audit TO ${role}`);
      await fx.pool.query(`GRANT SELECT, UPDATE ON ${schema}.relay_lease TO ${role}`);
      await fx.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${schema}.relay_replicas TO ${role}`);
      const asRole = new URL(testDatabaseUrl());
      asRole.username = role;
      asRole.password = '';

      const result = await cli(['check'], envFor(fx.schema, { OUTBOX_DATABASE_URL: asRole.toString() }));
      expectOneLineFailure(result, 1);
      const failing = lines(result.stdout).filter((l) => !/^ok\b/.test(l));
      expect(failing).toEqual([
        `FAIL  role lacks INSERT, DELETE on ${schema}."audit" (the audit trail of dead retry, dead discard and replay)`,
      ]);
      expect(result.stdout).toMatch(/^ok +role may claim, mark and delete in /m);

      await fx.pool.query(`GRANT INSERT, DELETE ON ${schema}.audit TO ${role}`);
      const granted = await cli(['check'], envFor(fx.schema, { OUTBOX_DATABASE_URL: asRole.toString() }));
      expect(granted).toMatchObject({ code: 0, stderr: '' });
      expect(granted.stdout).toMatch(/^ok +role may read and write the audit trail /m);
    } finally {
      await fx.pool.query(`DROP OWNED BY ${role}`);
      await fx.pool.query(`DROP ROLE ${role}`);
    }
  });

  test("a role that may relay but lacks privileges on the replicas' tables: check fails naming each one, and a relay will not start", async () => {
    const role = uniqueName('no_fleet');
    const schema = `"${fx.schema}"`;
    await fx.pool.query(`CREATE ROLE ${role} LOGIN`);
    try {
      await fx.pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${role}`);
      await fx.pool.query(`GRANT SELECT, UPDATE, DELETE ON ${fx.table} TO ${role}`);
      await fx.pool.query(`GRANT SELECT ON ${schema}.schema_migrations TO ${role}`);
      await fx.pool.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${schema}.audit TO ${role}`);
      await fx.pool.query(`GRANT SELECT ON ${schema}.relay_lease TO ${role}`);
      const asRole = new URL(testDatabaseUrl());
      asRole.username = role;
      asRole.password = '';

      const result = await cli(['check'], envFor(fx.schema, { OUTBOX_DATABASE_URL: asRole.toString() }));
      expectOneLineFailure(result, 1);
      const failing = lines(result.stdout).filter((l) => !/^ok\b/.test(l));
      expect(failing).toEqual([
        `FAIL  role lacks UPDATE on ${schema}."relay_lease", SELECT, INSERT, UPDATE, DELETE on ${schema}."relay_replicas"`,
      ]);
      const run = await cli(['run'], envFor(fx.schema, { OUTBOX_DATABASE_URL: asRole.toString(), OUTBOX_HTTP_PORT: '0' }));
      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`lacks UPDATE on ${schema}."relay_lease"`);
    } finally {
      await fx.pool.query(`DROP OWNED BY ${role}`);
      await fx.pool.query(`DROP ROLE ${role}`);
    }
  });

  test('a pending message naming a missing exchange: exit 1, the failing line names it', async () => {
    const missing = uniqueName('no_such_exchange');
    const gone = uniqueName('published_only');
    const exchange = await broker.exchange(uniqueName('ex'));
    await fx.insert([
      { exchange: missing, routing_key: 'a', payload: {} },
      { exchange, routing_key: 'b', payload: {} },
    ]);
    // Published messages do not count, whatever exchange they named.
    const [published] = await fx.insert([{ exchange: gone, routing_key: 'c', payload: {} }]);
    await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE message_id = $1`, [published]);

    const result = await cli(['check'], envFor(fx.schema));
    expectOneLineFailure(result, 1);
    const failing = lines(result.stdout).filter((l) => !/^ok\b/.test(l));
    expect(failing).toHaveLength(1);
    expect(failing[0]).toContain(missing);
    expect(failing[0]).not.toContain(exchange);
    expect(result.stdout).not.toContain(gone);
  });

  test('an unreachable broker: exit 1, and its password appears nowhere', async () => {
    const result = await cli(['check'], envFor(fx.schema, { OUTBOX_AMQP_URL: 'amqp://guest:secretpw@127.0.0.1:1' }), 40_000);
    expectOneLineFailure(result, 1);
    expect(result.stdout).toMatch(/broker/);
    expect(lines(result.stdout).some((l) => /broker/.test(l) && !/^ok\b/.test(l))).toBe(true);
    expect(result.stdout + result.stderr).not.toContain('secretpw');
  });

  test('a list of AMQP URLs: an unreachable node is reported, the next one is used, the check passes', async () => {
    const result = await cli(
      ['check'],
      envFor(fx.schema, { OUTBOX_AMQP_URL: `amqp://guest:secretpw@127.0.0.1:1,${testAmqpUrl()}` }),
      40_000,
    );
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const output = lines(result.stdout);
    expect(output.filter((l) => !/^ok\b/.test(l))).toEqual([expect.stringMatching(/broker not reachable.*127\.0\.0\.1:1/)]);
    expect(output.some((l) => /^ok\b.*broker reachable/.test(l))).toBe(true);
    expect(result.stdout).not.toContain('secretpw');
  });

  test('a schema that is not migrated fails the schema check', async () => {
    const result = await cli(['check'], envFor(uniqueName('t_cli_unmigrated')));
    expectOneLineFailure(result, 1);
    expect(result.stdout).toContain('run outbox-relay migrate');
  });
});

describe('an unreachable database', () => {
  const DEAD_DB = 'postgres://postgres:secretpw@127.0.0.1:1/test';

  test.each([[['status']], [['status', '--json']], [['migrate']], [['dead', 'list']], [['dead', 'retry', '--all']], [['cleanup']]])(
    '%j: exit 1, one line, no password',
    async (args) => {
      const result = await cli(args, envFor('outbox', { OUTBOX_DATABASE_URL: DEAD_DB }));
      expectOneLineFailure(result, 1);
      expect(result.stderr).toMatch(/database/);
      expect(result.stdout + result.stderr).not.toContain('secretpw');
    },
  );

  test('check: exit 1, the database line fails, no password', async () => {
    const result = await cli(['check'], envFor('outbox', { OUTBOX_DATABASE_URL: DEAD_DB }));
    expectOneLineFailure(result, 1);
    expect(lines(result.stdout).some((l) => /database/.test(l) && !/^ok\b/.test(l))).toBe(true);
    expect(result.stdout + result.stderr).not.toContain('secretpw');
  });
});
