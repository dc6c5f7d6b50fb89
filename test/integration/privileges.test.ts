import { randomBytes } from 'node:crypto';
import { Client, escapeIdentifier, escapeLiteral } from 'pg';
import { defineMessage, enqueue } from '../../src/index';
import { cli, envFor, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { readMetrics } from '../kit/relay-http';
import { renderRolesSql, testDatabaseName, urlAs } from '../kit/roles';
import { testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

// Least privilege (docs/runbook.md, "Least-privilege database roles"): migrations/roles.example.sql creates a service role that
// can only INSERT into messages and a relay role that can use only the outbox schema.
// The relay runs as its role, a producer as the service's, and each is denied the
// other's tables. Roles are cluster-wide: unique names, dropped afterwards.

const suffix = randomBytes(4).toString('hex');
const serviceRole = `outbox_test_app_${suffix}`;
const relayRole = `outbox_test_relay_${suffix}`;
const serviceSchema = `t_privsvc_${suffix}`;
// Passwords only matter where the test database does not trust local connections.
const password = randomBytes(12).toString('hex');

let fx: OutboxFixture;
let broker: TestBroker;
let service: Client;
let relayClient: Client;

async function denied(client: Client, sql: string): Promise<string> {
  const error = await client.query(sql).then(
    () => undefined,
    (err: unknown) => err as { code?: string; message: string },
  );
  if (!error) throw new Error(`expected permission denied for: ${sql}`);
  expect(error.code).toBe('42501'); // insufficient_privilege
  return error.message;
}

beforeAll(async () => {
  fx = await OutboxFixture.create('privileges');
  broker = await TestBroker.connect();
  const sql = renderRolesSql({ schema: fx.schema, service_role: serviceRole, relay_role: relayRole, DBNAME: testDatabaseName() });
  await fx.pool.query(sql);
  await fx.pool.query(sql); // re-runnable, as the file says
  for (const role of [serviceRole, relayRole])
    await fx.pool.query(`ALTER ROLE ${escapeIdentifier(role)} PASSWORD ${escapeLiteral(password)}`);

  // The service's own data, in its own schema, owned by the service's role.
  await fx.pool.query(`CREATE SCHEMA ${escapeIdentifier(serviceSchema)} AUTHORIZATION ${escapeIdentifier(serviceRole)}`);
  service = new Client({ connectionString: urlAs(serviceRole, password) });
  await service.connect();
  await service.query(`CREATE TABLE ${escapeIdentifier(serviceSchema)}.orders (id text PRIMARY KEY, status text NOT NULL)`);
  relayClient = new Client({ connectionString: urlAs(relayRole, password) });
  await relayClient.connect();
});

afterAll(async () => {
  await fx.stopRelays();
  await service?.end();
  await relayClient?.end();
  await broker?.close();
  await fx.pool.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(serviceSchema)} CASCADE`);
  const fxSchema = fx.schema;
  await fx.close();
  const admin = new Client({ connectionString: testDatabaseUrl() });
  await admin.connect();
  try {
    for (const role of [serviceRole, relayRole]) {
      const exists = await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
      if (exists.rowCount === 0) continue;
      await admin.query(`DROP OWNED BY ${escapeIdentifier(role)}`);
      await admin.query(`DROP ROLE ${escapeIdentifier(role)}`);
    }
    const left = await admin.query('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [[serviceRole, relayRole]]);
    expect({ left: left.rows, schema: fxSchema }).toEqual({ left: [], schema: fxSchema });
  } finally {
    await admin.end();
  }
});

const OrderPlaced = defineMessage<{ orderId: string }>({ type: 'order.placed', exchange: '', routingKey: 'unused' });

test('the relay, running as its role, publishes what the service, as its role, wrote in its own transaction', async () => {
  const queue = uniqueName('priv');
  const received = await broker.queue(queue);
  const { relay } = await fx.startRelay({ OUTBOX_DATABASE_URL: urlAs(relayRole, password) });

  // The producer library, inside the service's transaction that also writes its data.
  await service.query('BEGIN');
  await service.query(`INSERT INTO ${escapeIdentifier(serviceSchema)}.orders (id, status) VALUES ('o-1', 'placed')`);
  const messageId = await enqueue(service, OrderPlaced, { orderId: 'o-1' }, { routingKey: queue, schema: fx.schema });
  await service.query('COMMIT');
  // And the bare SQL INSERT of the README's contract.
  await service.query(`INSERT INTO ${fx.table} (routing_key, message_type, payload) VALUES ($1, 'order.placed', '{"orderId": "o-2"}')`, [
    queue,
  ]);

  await waitFor('both messages delivered', () => received.length === 2);
  expect(received.map((m) => m.properties.messageId)).toContain(messageId);
  await waitFor('both rows marked published', async () => (await fx.counts()).published === 2);
  const metrics = await readMetrics(relay.port);
  expect(metrics.value('outbox_up', { dependency: 'database' })).toBe(1);
  expect(metrics.value('outbox_messages_published_total')).toBe(2);
});

test('the service role can only insert producer columns: it cannot read, change, delete or forge relay state', async () => {
  expect(await denied(service, `SELECT message_id FROM ${fx.table}`)).toMatch(/permission denied for table messages/);
  await denied(service, `UPDATE ${fx.table} SET dead_at = now()`);
  await denied(service, `DELETE FROM ${fx.table}`);
  await denied(service, `INSERT INTO ${fx.table} (routing_key, payload, published_at) VALUES ('q', '{}', now())`);
  await denied(service, `INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}') RETURNING id`);
  await denied(service, `SELECT * FROM "${fx.schema}".schema_migrations`);
  await denied(service, `CREATE TABLE "${fx.schema}".sneaky (id int)`);
});

test("the relay role cannot read or touch the service's tables, insert messages or create objects", async () => {
  expect(await denied(relayClient, `SELECT * FROM ${escapeIdentifier(serviceSchema)}.orders`)).toMatch(/permission denied for schema/);
  await denied(relayClient, `INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}')`);
  await denied(relayClient, `CREATE TABLE "${fx.schema}".sneaky (id int)`);
  await denied(relayClient, `DELETE FROM "${fx.schema}".schema_migrations`);
  const { rows } = await relayClient.query<{ usage: boolean }>("SELECT has_schema_privilege($1, $2, 'USAGE') AS usage", [
    relayRole,
    serviceSchema,
  ]);
  expect(rows[0]!.usage).toBe(false);
});

test('`outbox-relay check` passes for the relay role and fails for the service role', async () => {
  const asRelay = await cli(['check'], envFor(fx.schema, { OUTBOX_DATABASE_URL: urlAs(relayRole, password) }));
  expect({ code: asRelay.code, stderr: asRelay.stderr }).toEqual({ code: 0, stderr: '' });
  expect(lines(asRelay.stdout)).toEqual(
    expect.arrayContaining([
      expect.stringMatching(new RegExp(`^ok\\s+database reachable .*role ${relayRole}\\)`)),
      expect.stringMatching(/^ok\s+schema ".*" at migration \d+$/),
      expect.stringMatching(/^ok\s+role may claim, mark and delete in/),
    ]),
  );
  expect(asRelay.stdout + asRelay.stderr).not.toContain(password);

  const asService = await cli(['check'], envFor(fx.schema, { OUTBOX_DATABASE_URL: urlAs(serviceRole, password) }));
  expect(asService.code).toBe(1);
  expect(asService.stdout).toMatch(/^FAIL\s+.*permission denied/m);
});

test('`outbox-relay status` works for the relay role', async () => {
  const result = await cli(['status', '--json'], envFor(fx.schema, { OUTBOX_DATABASE_URL: urlAs(relayRole, password) }));
  expect(result.code).toBe(0);
  expect(JSON.parse(result.stdout)).toMatchObject({ schema: fx.schema, published: 2, dead: 0 });
});

test('the relay role can run the retention cleanup and the dead-message commands', async () => {
  const env = envFor(fx.schema, { OUTBOX_DATABASE_URL: urlAs(relayRole, password), OUTBOX_RETENTION: '0' });
  const cleanup = await cli(['cleanup'], env);
  expect({ code: cleanup.code, stdout: cleanup.stdout.trim() }).toEqual({
    code: 0,
    stdout: 'deleted 2 published messages older than OUTBOX_RETENTION',
  });
  for (const args of [
    ['dead', 'list'],
    ['dead', 'retry', '--all'],
    ['dead', 'discard', '--all'],
  ]) {
    const result = await cli(args, env);
    expect({ args, code: result.code, stderr: result.stderr }).toEqual({ args, code: 0, stderr: '' });
  }
});
