import { randomBytes } from 'node:crypto';
import { Client, escapeIdentifier } from 'pg';
import { OutboxFixture } from '../kit/outbox-fixture';
import { readMetrics } from '../kit/relay-http';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { staysFalse, waitFor } from '../kit/wait';

// What no single message, grant or broker setting may do: stall the relay or make it
// publish the same messages again and again (docs/guarantees.md).

const fx = OutboxFixture.forFile('isolation', { afterEach: 'reset' });
const broker = TestBroker.forFile();

async function readyzBody(port: number): Promise<{ status: number; body: string }> {
  const response = await fetch(`http://127.0.0.1:${port}/readyz`);
  return { status: response.status, body: await response.text() };
}

function withFrameMax(url: string, frameMax: number): string {
  const parsed = new URL(url);
  parsed.searchParams.set('frameMax', String(frameMax));
  return parsed.toString();
}

test('a message the broker closes the connection for (headers beyond a small frameMax) fails alone; the others flow', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('frames');
  const [bigId] = await fx.insert([{ exchange, routing_key: 'r', payload: { big: true }, headers: { 'x-blob': 'x'.repeat(12_000) } }]);
  await fx.insertBacklog({ count: 50, exchange, routingKey: 'r' });
  const { relay, logs } = await fx.startRelay({
    OUTBOX_AMQP_URL: withFrameMax(testAmqpUrl(), 8192),
    OUTBOX_MAX_ATTEMPTS: '2',
    OUTBOX_BATCH_SIZE: '20',
    OUTBOX_LOG_LEVEL: 'debug',
  });
  // Each close costs a reconnect, and the messages in flight at it are then sent one by one:
  // on a loaded machine that takes tens of seconds, not a few. On a timeout, say what the
  // relay was doing (received so far, the table, its last log lines).
  const explain = async (): Promise<string> =>
    `received ${received.length}; rows ${JSON.stringify(await fx.counts())}\n` + logs.lines.slice(-40).join('\n');
  const distinct = (): number => new Set(received.map((m) => m.properties.messageId as string)).size;
  await waitFor('the 50 good messages', () => distinct() === 50, 60_000).catch(async (err: Error) => {
    throw new Error(`${err.message}\n${await explain()}`);
  });
  await waitFor('the big message dead', async () => (await fx.row(bigId!))['dead_at'] !== null, 60_000).catch(async (err: Error) => {
    throw new Error(`${err.message}\n${await explain()}`);
  });
  const row = await fx.row(bigId!);
  expect(row['attempts']).toBe(2);
  expect(String(row['last_error'])).toMatch(/FRAME|frame/);
  expect(received.every((m) => !(m.properties.headers && 'x-blob' in m.properties.headers))).toBe(true);
  // At-least-once, as "When duplicates happen" in docs/guarantees.md says: a message is delivered
  // twice only when it was unconfirmed in a batch a close cut short (the broker may have
  // routed it before the close). With two batches in flight, the first close can cut the
  // other worker's batch too; the big message is then sent alone, so later closes cut nothing.
  const unconfirmedAtCloses = logs
    .entries()
    .filter((e) => e['msg'] === 'batch had failures')
    .reduce((sum, e) => sum + Number(e['unconfirmed'] ?? 0), 0);
  expect(received.length - 50).toBeLessThanOrEqual(unconfirmedAtCloses);
  expect(await fx.counts()).toMatchObject({ pending: 0, published: 50, dead: 1 });
  const metrics = await readMetrics(relay.port);
  expect(metrics.value('outbox_messages_dead_total')).toBe(1);
}, 150_000);

describe('the relay role’s privileges', () => {
  const role = `outbox_test_iso_${randomBytes(4).toString('hex')}`;
  let admin: Client;

  beforeAll(async () => {
    admin = new Client({ connectionString: testDatabaseUrl() });
    await admin.connect();
    await admin.query(`CREATE ROLE ${escapeIdentifier(role)} LOGIN PASSWORD 'x'`);
    await admin.query(`GRANT USAGE ON SCHEMA ${escapeIdentifier(fx.schema)} TO ${escapeIdentifier(role)}`);
    await admin.query(`GRANT SELECT ON ${fx.table}, ${escapeIdentifier(fx.schema)}.schema_migrations TO ${escapeIdentifier(role)}`);
    await admin.query(`GRANT UPDATE ON ${fx.table} TO ${escapeIdentifier(role)}`);
    // The replicas' coordination (the relay takes the lead through these).
    await admin.query(`GRANT SELECT, UPDATE ON ${escapeIdentifier(fx.schema)}.relay_lease TO ${escapeIdentifier(role)}`);
    await admin.query(`GRANT SELECT, INSERT, UPDATE, DELETE ON ${escapeIdentifier(fx.schema)}.relay_replicas TO ${escapeIdentifier(role)}`);
  });
  afterAll(async () => {
    await admin.query(`DROP OWNED BY ${escapeIdentifier(role)}`);
    await admin.query(`DROP ROLE ${escapeIdentifier(role)}`);
    await admin.end();
  });
  const asRole = (): string => {
    const url = new URL(testDatabaseUrl());
    url.username = role;
    url.password = 'x';
    return url.toString();
  };

  test('a missing privilege stops `run` at start, exit 1, naming it — not a relay that publishes and rolls back forever', async () => {
    await fx.insert([{ exchange: '', routing_key: 'nowhere', payload: {} }]);
    const relay = await fx.spawnRelay({ OUTBOX_DATABASE_URL: asRole(), OUTBOX_RETENTION: '0' });
    const exit = await relay.exitWithin(30_000);
    expect(exit.code).toBe(1);
    expect(relay.lastOutput(20)).toContain(`lacks DELETE on "${fx.schema}"."messages"`);
  });

  test('writes revoked while running: not ready with the reason, nothing re-published in a loop; granted again: it resumes', async () => {
    await admin.query(`GRANT DELETE ON ${fx.table} TO ${escapeIdentifier(role)}`);
    const { exchange, received } = await broker.exchangeWithQueue('revoked');
    const { relay } = await fx.startRelay({ OUTBOX_DATABASE_URL: asRole(), OUTBOX_STALL_TIMEOUT_MS: '60000' });
    await admin.query(`REVOKE UPDATE ON ${fx.table} FROM ${escapeIdentifier(role)}`);
    await fx.insertBacklog({ count: 5, exchange, routingKey: 'r' });
    await waitFor('not ready with the writes reason', async () => (await readyzBody(relay.port)).body.includes('writes:'), 20_000);
    const { status, body } = await readyzBody(relay.port);
    expect(status).toBe(503);
    expect(body).toContain('permission denied');
    const deliveredSoFar = received.length;
    await staysFalse('messages published again while the writes fail', () => received.length > deliveredSoFar, 3_000);
    expect(deliveredSoFar).toBeLessThanOrEqual(5);
    await admin.query(`GRANT UPDATE ON ${fx.table} TO ${escapeIdentifier(role)}`);
    await waitFor('everything published and marked', async () => (await fx.counts()).published === 5, 30_000);
    await waitFor('ready again', async () => (await readyzBody(relay.port)).status === 200);
    const ids = received.map((m) => m.properties.messageId as string);
    expect(new Set(ids).size).toBe(5);
    // Each message at most once in the batch whose marks failed and once after the grant.
    expect(ids.length).toBeLessThanOrEqual(10);
  });
});

test('due messages that cannot move past OUTBOX_STALL_TIMEOUT_MS: stalled, /readyz 503 naming the message, outbox_stalled 1; cleared on progress', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('stall');
  const [headId] = await fx.insert([
    { exchange, routing_key: 'r', payload: { n: 1 }, partition_key: 'k' },
    { exchange, routing_key: 'r', payload: { n: 2 }, partition_key: 'k' },
  ]);
  // Another session holds the head of the key: the relay's claims skip it (SKIP LOCKED) and
  // must hold the next message of the key behind it.
  const holder = new Client({ connectionString: testDatabaseUrl() });
  await holder.connect();
  try {
    await holder.query('BEGIN');
    await holder.query(`SELECT 1 FROM ${fx.table} WHERE message_id = $1 FOR UPDATE`, [headId]);
    const { relay, logs: logsOf } = await fx.startRelay({ OUTBOX_STALL_TIMEOUT_MS: '2000', OUTBOX_LOG_LEVEL: 'debug' });
    await waitFor('stalled', async () => (await readyzBody(relay.port)).body.includes('stalled:'), 20_000).catch(async (err) => {
      console.log((await readyzBody(relay.port)).body, logsOf.lines.slice(-15).join('\n'));
      throw err;
    });
    const { status, body } = await readyzBody(relay.port);
    expect(status).toBe(503);
    expect(body).toContain(`stuck on message ${headId}`);
    expect((await readMetrics(relay.port)).value('outbox_stalled')).toBe(1);
    await holder.query('COMMIT');
    await waitFor('both published', () => received.length === 2, 20_000);
    await waitFor('ready again', async () => (await readyzBody(relay.port)).status === 200, 20_000);
    expect((await readMetrics(relay.port)).value('outbox_stalled')).toBe(0);
  } finally {
    await holder.end();
  }
});
