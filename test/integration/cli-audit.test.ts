import { randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { escapeIdentifier, escapeLiteral, Pool } from 'pg';
import { AuditLog } from '../../src/outbox/audit';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { dropRoles, renderRolesSql, testDatabaseName, urlAs } from '../kit/roles';
import { testDatabaseUrl } from '../kit/services';
import { uniqueName } from '../kit/unique-name';

// The audit trail: `dead retry` and `dead discard` record what they changed in
// <schema>.audit, in the transaction of the change, as the database role that ran them;
// `outbox-relay audit` lists it; the cleanup deletes old entries. The commands run as the
// relay role of migrations/roles.example.sql (cluster-wide roles: unique names, dropped after).

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('cli_audit', { afterEach: 'reset' });
const suffix = randomBytes(4).toString('hex');
const relayRole = `outbox_test_audit_relay_${suffix}`;
const serviceRole = `outbox_test_audit_app_${suffix}`;
/** May change messages but not write the audit trail. */
const noAuditRole = `outbox_test_audit_none_${suffix}`;
const password = randomBytes(12).toString('hex');
const audit = new AuditLog(fx.schema);

beforeAll(async () => {
  await fx.pool.query(renderRolesSql({ schema: fx.schema, service_role: serviceRole, relay_role: relayRole, DBNAME: testDatabaseName() }));
  const schema = escapeIdentifier(fx.schema);
  await fx.pool.query(`CREATE ROLE ${escapeIdentifier(noAuditRole)} LOGIN`);
  await fx.pool.query(`GRANT USAGE ON SCHEMA ${schema} TO ${escapeIdentifier(noAuditRole)}`);
  await fx.pool.query(`GRANT SELECT, UPDATE, DELETE ON ${fx.table} TO ${escapeIdentifier(noAuditRole)}`);
  await fx.pool.query(`GRANT SELECT ON ${schema}.schema_migrations, ${schema}.audit TO ${escapeIdentifier(noAuditRole)}`);
  for (const role of [relayRole, serviceRole, noAuditRole]) {
    await fx.pool.query(`ALTER ROLE ${escapeIdentifier(role)} PASSWORD ${escapeLiteral(password)}`);
  }
});

afterEach(async () => {
  await fx.pool.query(`DELETE FROM ${audit.table}`);
});

afterAll(async () => {
  const admin = new Pool({ connectionString: testDatabaseUrl(), max: 1 });
  try {
    await dropRoles(admin, [relayRole, serviceRole, noAuditRole]);
  } finally {
    await admin.end();
  }
});

const asRelay = (overrides: Record<string, string> = {}): Record<string, string> =>
  envFor(fx.schema, { OUTBOX_DATABASE_URL: urlAs(relayRole, password), ...overrides });

/** Inserts `count` dead messages; returns their ids in insertion order. */
async function deadMessages(count: number): Promise<string[]> {
  const ids = await fx.insert(Array.from({ length: count }, (_, n) => ({ routing_key: 'q', partition_key: 'k', payload: { n } })));
  await fx.pool.query(
    `UPDATE ${fx.table} SET dead_at = now(), attempts = 10, last_error = 'boom', next_attempt_at = 'infinity' WHERE message_id = ANY($1::uuid[])`,
    [ids],
  );
  return ids;
}

interface AuditJson {
  id: string;
  at: string;
  role: string;
  command: string;
  arguments: Record<string, unknown>;
  count: number;
  messageIds: string[];
  replayCursor: string | null;
  finishedAt: string | null;
}

async function auditJson(env: Record<string, string> = asRelay(), args: string[] = []): Promise<AuditJson[]> {
  const result = await cli(['audit', '--json', ...args], env);
  expect({ code: result.code, stderr: result.stderr }).toEqual({ code: 0, stderr: '' });
  expect(lines(result.stdout)).toHaveLength(1);
  return JSON.parse(result.stdout) as AuditJson[];
}

test('dead retry and dead discard, run as the restricted relay role, each record one entry with that role; audit lists them newest first', async () => {
  const [a, b, c] = await deadMessages(3);
  const retry = await cli(['dead', 'retry', a!, b!.toUpperCase()], asRelay());
  expect(retry).toMatchObject({ code: 0, stderr: '', stdout: '2 dead messages made due again\n' });
  const discard = await cli(['dead', 'discard', '--all'], asRelay());
  expect(discard).toMatchObject({ code: 0, stderr: '', stdout: '1 dead message discarded\n' });

  const entries = await auditJson();
  expect(entries).toHaveLength(2);
  expect(entries[0]).toMatchObject({
    role: relayRole,
    command: 'dead discard',
    arguments: { all: true },
    count: 1,
    messageIds: [c],
    replayCursor: null,
    finishedAt: null,
  });
  // The arguments as given (the upper-case id too); the ids as changed.
  expect(entries[1]).toMatchObject({ role: relayRole, command: 'dead retry', arguments: { ids: [a, b!.toUpperCase()] }, count: 2 });
  expect([...entries[1]!.messageIds].sort()).toEqual([a, b].sort());
  expect(Date.parse(entries[0]!.at)).toBeGreaterThanOrEqual(Date.parse(entries[1]!.at));

  // The role is the database's current_user, whatever the client claims.
  const { rows } = await fx.pool.query<{ role: string }>(`SELECT DISTINCT role FROM ${audit.table}`);
  expect(rows).toEqual([{ role: relayRole }]);

  const limited = await auditJson(asRelay(), ['--limit', '1']);
  expect(limited.map((e) => e.command)).toEqual(['dead discard']);

  const text = await cli(['audit'], asRelay());
  expect(text).toMatchObject({ code: 0, stderr: '' });
  const [discardLine, retryLine] = lines(text.stdout);
  expect(discardLine).toMatch(
    new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z  role=${relayRole}  dead discard  count=1  args=\\{"all":true\\}  ids ${c}$`),
  );
  expect(retryLine).toMatch(new RegExp(`role=${relayRole}  dead retry  count=2  `));
});

test('the entry and its change are one transaction: same transaction time; a role that may retry but not write the audit changes nothing', async () => {
  const [id] = await deadMessages(1);
  expect((await cli(['dead', 'retry', id!], asRelay())).code).toBe(0);
  // now() is the transaction's start: the retried row's next attempt and the entry's time are one instant.
  const { rows } = await fx.pool.query<{ same: boolean }>(
    `SELECT a.at = m.next_attempt_at AS same FROM ${audit.table} a, ${fx.table} m WHERE m.message_id = $1`,
    [id],
  );
  expect(rows).toEqual([{ same: true }]);
  await fx.pool.query(`DELETE FROM ${audit.table}`);

  const [other] = await deadMessages(1);
  const env = envFor(fx.schema, { OUTBOX_DATABASE_URL: urlAs(noAuditRole, password) });
  for (const args of [
    ['dead', 'retry', other!],
    ['dead', 'discard', '--all'],
  ]) {
    const result = await cli(args, env);
    const message = expectOneLineFailure(result, 1);
    expect(message).toMatch(/nothing changed: permission denied for table audit/);
    expect(message).toContain(`INSERT on ${escapeIdentifier(fx.schema)}.audit`);
    expect(message).not.toContain(password);
  }
  const { rows: still } = await fx.pool.query<{ dead: boolean }>(
    `SELECT dead_at IS NOT NULL AS dead FROM ${fx.table} WHERE message_id = $1`,
    [other],
  );
  expect(still).toEqual([{ dead: true }]);
  expect(await audit.list(fx.pool, 10)).toEqual([]);
});

test('an action that changes no message records nothing', async () => {
  await fx.insert([{ routing_key: 'q', payload: {} }]);
  for (const args of [
    ['dead', 'retry', '--all'],
    ['dead', 'discard', '--all'],
  ]) {
    expect((await cli(args, asRelay())).code).toBe(0);
  }
  const unknown = await cli(['dead', 'retry', randomUUID()], asRelay());
  expectOneLineFailure(unknown, 1);
  expect(await auditJson()).toEqual([]);
  expect(await cli(['audit'], asRelay())).toMatchObject({ code: 0, stdout: 'no audit entries\n' });
});

test('the text form: the first ids, then "… and N more"; a replay with its cursor and whether it finished', async () => {
  const ids = await deadMessages(5);
  expect((await cli(['dead', 'discard', ...ids], asRelay())).code).toBe(0);
  const replay = await audit.record(fx.pool, { command: 'replay', arguments: { since: '2026-01-01T00:00:00Z' }, count: 0, messageIds: [] });
  await audit.replayProgress(fx.pool, replay, { cursor: '42', count: 2, messageIds: [ids[0]!, ids[1]!], finished: false });

  const text = await cli(['audit'], asRelay());
  expect(text).toMatchObject({ code: 0, stderr: '' });
  const [replayLine, discardLine] = lines(text.stdout);
  expect(replayLine).toMatch(/ {2}replay {2}count=2 {2}args=\{"since":"2026-01-01T00:00:00Z"\} {2}ids .* {2}cursor=42 {2}unfinished$/);
  const shown = discardLine!.match(/ids (.*) … and (\d+) more$/);
  expect(shown?.[1]?.split(', ')).toHaveLength(3);
  expect(shown?.[2]).toBe('2');

  await audit.replayProgress(fx.pool, replay, { cursor: '43', count: 3, messageIds: [ids[2]!], finished: true });
  const [finished] = lines((await cli(['audit'], asRelay())).stdout);
  expect(finished).toMatch(/ {2}replay {2}count=3 {2}.*cursor=43 {2}finished \d{4}-\d\d-\d\dT[\d:.]+Z$/);
  expect((await auditJson())[0]).toMatchObject({ command: 'replay', replayCursor: '43', finishedAt: expect.any(String) });
});

test('the cleanup, run as the relay role, deletes entries older than OUTBOX_RETENTION; with 0 it keeps 7 days; an unfinished replay stays', async () => {
  const entry = (command: 'dead retry' | 'replay') =>
    audit.record(fx.pool, { command, arguments: { ids: [] }, count: 1, messageIds: [randomUUID()] });
  const aged = async (id: string, age: string): Promise<void> => {
    await fx.pool.query(`UPDATE ${audit.table} SET at = now() - $2::interval WHERE id = $1::bigint`, [id, age]);
  };
  const ages: Record<string, string> = { '2d': '2 days', '6d': '6 days', '8d': '8 days', fresh: '1 minute' };
  const made: Record<string, string> = {};
  for (const [label, age] of Object.entries(ages)) {
    made[label] = await entry('dead retry');
    await aged(made[label]!, age);
  }
  const unfinishedReplay = await entry('replay');
  await aged(unfinishedReplay, '30 days');
  const remaining = async (): Promise<string[]> => (await audit.list(fx.pool, 100)).map((e) => e.id).sort();

  const zero = await cli(['cleanup'], asRelay({ OUTBOX_RETENTION: '0' }));
  expect(zero).toMatchObject({ code: 0, stderr: '' });
  expect(zero.stdout).toMatch(/, and 1 audit entry older than 7 days \(OUTBOX_RETENTION is 0\)$/m);
  expect(await remaining()).toEqual([made['2d'], made['6d'], made['fresh'], unfinishedReplay].sort());

  const daily = await cli(['cleanup'], asRelay({ OUTBOX_RETENTION: '1d' }));
  expect(daily).toMatchObject({ code: 0, stderr: '' });
  expect(daily.stdout).toMatch(
    /^deleted 0 published messages older than OUTBOX_RETENTION, and 2 audit entries older than OUTBOX_RETENTION$/m,
  );
  expect(await remaining()).toEqual([made['fresh'], unfinishedReplay].sort());
});

test('bad --limit: exit 2, one line; an unmigrated schema: exit 1, one line', async () => {
  for (const limit of ['0', 'ten', '-1']) {
    const result = await cli(['audit', '--limit', limit], asRelay());
    expect(result.code).toBe(2);
    expect(lines(result.stderr)[0]).toMatch(/--limit/);
  }
  const unmigrated = await cli(['audit'], envFor(uniqueName('t_cli_audit_none')));
  expect(expectOneLineFailure(unmigrated, 1)).toContain('run outbox-relay migrate');
});

test('a role without DELETE on the audit table still cleans the messages, says so once, and leaves the old entries', async () => {
  await fx.pool.query(
    `INSERT INTO ${fx.table} (routing_key, payload, created_at, published_at)
     SELECT 'q', jsonb_build_object('n', g), now() - interval '8 days', now() - interval '8 days' FROM generate_series(1, 3) AS g`,
  );
  const old = await audit.record(fx.pool, { command: 'dead retry', arguments: { all: true }, count: 1, messageIds: [randomUUID()] });
  await fx.pool.query(`UPDATE ${audit.table} SET at = now() - interval '30 days' WHERE id = $1`, [old]);
  const env = envFor(fx.schema, { OUTBOX_DATABASE_URL: urlAs(noAuditRole, password), OUTBOX_RETENTION: '7d' });
  const result = await cli(['cleanup'], env);
  expect(result.code).toBe(0);
  expect(result.stdout).toBe('deleted 3 published messages older than OUTBOX_RETENTION\n');
  expect(lines(result.stderr)).toEqual([
    expect.stringMatching(/^outbox-relay: cannot delete old audit entries: permission denied for table audit/),
  ]);
  expect((await audit.list(fx.pool, 10)).map((e) => e.id)).toEqual([old]);
});

test('newest first by id, whatever the number of entries; --limit N shows the N newest (property)', async () => {
  await fc.assert(
    fc.asyncProperty(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 45 }), async (entries, limit) => {
      await fx.pool.query(`DELETE FROM ${audit.table}`);
      const made: bigint[] = [];
      for (let n = 0; n < entries; n += 1) {
        made.push(BigInt(await audit.record(fx.pool, { command: 'dead retry', arguments: { n }, count: 1, messageIds: [randomUUID()] })));
      }
      const newest = made.sort((a, b) => (a < b ? 1 : a > b ? -1 : 0)).slice(0, limit);
      const json = await auditJson(asRelay(), ['--limit', String(limit)]);
      expect(json.map((e) => e.id)).toEqual(newest.map(String));
      const text = await cli(['audit', '--limit', String(limit)], asRelay());
      expect(lines(text.stdout).map((l) => (JSON.parse(/args=(\{.*?\})/.exec(l)![1]!) as { n: number }).n)).toEqual(
        json.map((e) => e.arguments['n']),
      );
    }),
    { numRuns: 6 },
  );
}, 180_000);
