import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { escapeIdentifier, Pool } from 'pg';
import { cli, envFor, expectOneLineFailure, lines, ROOT } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';

let admin: Pool;
const droppedAfterAll: string[] = [];

beforeAll(() => {
  if (!existsSync(join(ROOT, 'dist', 'cli.js'))) execFileSync('npm', ['run', 'build'], { cwd: ROOT, stdio: 'inherit' });
  admin = new Pool({ connectionString: testDatabaseUrl(), max: 2 });
});

afterAll(async () => {
  for (const schema of droppedAfterAll) await admin.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`);
  await admin.end();
});

async function schemaExists(schema: string): Promise<boolean> {
  const { rows } = await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [schema]);
  return rows.length === 1;
}

describe('migrate', () => {
  test('prints what it applied; a second run says the schema is up to date', async () => {
    const schema = uniqueName('t_cli_migrate');
    droppedAfterAll.push(schema);
    const first = await cli(['migrate'], envFor(schema));
    expect(first).toMatchObject({ code: 0, stderr: '' });
    expect(first.stdout).toContain(`applied 0001_messages.sql to schema "${schema}"`);
    const second = await cli(['migrate'], envFor(schema));
    expect(second).toMatchObject({ code: 0, stderr: '' });
    expect(second.stdout).toMatch(/up to date/);
    expect(second.stdout).not.toMatch(/applied 0001/);
    expect((await cli(['status'], envFor(schema))).code).toBe(0);
  });

  test('--print needs no database, applies nothing, and its SQL gives a schema `status` accepts', async () => {
    const schema = uniqueName('t_cli_print');
    droppedAfterAll.push(schema);
    // Not even a reachable database is needed to print.
    const printed = await cli(['migrate', '--print'], envFor(schema, { OUTBOX_DATABASE_URL: 'postgres://postgres@127.0.0.1:1/test' }));
    expect(printed).toMatchObject({ code: 0, stderr: '' });
    expect(printed.stdout).toContain(`"${schema}"`);
    expect(await schemaExists(schema)).toBe(false);

    // What a DBA does with it: run it as one script (here through the pg client, as psql would).
    const client = await admin.connect();
    try {
      await client.query(printed.stdout);
    } finally {
      client.release();
    }
    expect(await schemaExists(schema)).toBe(true);
    const status = await cli(['status', '--json'], envFor(schema));
    expect(status).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(status.stdout)).toMatchObject({ schema, pending: 0, dead: 0 });
    // The printed script recorded itself in the ledger: migrate has nothing left to do.
    const migrate = await cli(['migrate'], envFor(schema));
    expect(migrate.code).toBe(0);
    expect(migrate.stdout).toMatch(/up to date/);
  });
});

describe('status', () => {
  test('on a schema that is not migrated: exit 1, "run outbox-relay migrate"', async () => {
    const schema = uniqueName('t_cli_unmigrated');
    const result = await cli(['status'], envFor(schema));
    expect(expectOneLineFailure(result, 1)).toContain('run outbox-relay migrate');
    expect(result.stdout).toBe('');
    expect(await schemaExists(schema)).toBe(false);
  });

  test('--json prints one object with pending, due, delayed, dead, published and lagSeconds', async () => {
    const fx = await OutboxFixture.create('cli_status');
    try {
      const queue = uniqueName('q');
      const [oldest] = await fx.insert([{ routing_key: queue, payload: { n: 1 }, available_at: new Date(Date.now() - 60_000) }]);
      await fx.insert([
        { routing_key: queue, payload: { n: 2 } },
        { routing_key: queue, payload: { n: 3 } },
      ]);
      const future = new Date(Date.now() + 3_600_000);
      await fx.insert([
        { routing_key: queue, payload: { n: 4 }, available_at: future },
        { routing_key: queue, payload: { n: 5 }, available_at: future },
      ]);
      // Waiting for its retry: delayed too.
      const [retrying] = await fx.insert([{ routing_key: queue, payload: { n: 6 } }]);
      await fx.pool.query(
        `UPDATE ${fx.table} SET attempts = 1, next_attempt_at = now() + interval '1 hour', last_error = 'nack' WHERE message_id = $1`,
        [retrying],
      );
      const [dead] = await fx.insert([{ routing_key: queue, payload: { n: 7 } }]);
      await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 10 WHERE message_id = $1`, [dead]);
      const published = await fx.insert([
        { routing_key: queue, payload: { n: 8 } },
        { routing_key: queue, payload: { n: 9 } },
      ]);
      await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE message_id = ANY($1::uuid[])`, [published]);

      const result = await cli(['status', '--json'], envFor(fx.schema));
      expect(result).toMatchObject({ code: 0, stderr: '' });
      expect(lines(result.stdout)).toHaveLength(1);
      const report = JSON.parse(result.stdout) as Record<string, unknown>;
      expect(report).toMatchObject({ schema: fx.schema, pending: 6, due: 3, delayed: 3, dead: 1, published: 2 });
      expect(report['lagSeconds']).toEqual(expect.any(Number));
      expect(report['lagSeconds'] as number).toBeGreaterThanOrEqual(59);
      expect(report['lagSeconds'] as number).toBeLessThan(120);
      expect(report['oldestPending']).toMatchObject({ messageId: oldest });

      const text = await cli(['status'], envFor(fx.schema));
      expect(text).toMatchObject({ code: 0, stderr: '' });
      expect(text.stdout).toMatch(/pending\s+6 \(due 3, delayed 3\)/);
      expect(text.stdout).toMatch(/dead\s+1/);
      expect(text.stdout).toContain(oldest);
    } finally {
      await fx.close();
    }
  });

  test('an empty outbox has zero lag and no oldest message', async () => {
    const fx = await OutboxFixture.create('cli_empty');
    try {
      const result = await cli(['status', '--json'], envFor(fx.schema));
      expect(result.code).toBe(0);
      expect(JSON.parse(result.stdout)).toEqual({
        schema: fx.schema,
        pending: 0,
        due: 0,
        delayed: 0,
        dead: 0,
        published: 0,
        lagSeconds: 0,
        oldestPending: null,
      });
    } finally {
      await fx.close();
    }
  });
});

describe('dead', () => {
  let fx: OutboxFixture;
  beforeEach(async () => {
    fx = await OutboxFixture.create('cli_dead');
  });
  afterEach(async () => {
    await fx.close();
  });

  /** Inserts messages and makes them dead, the n-th dead `n` minutes ago with error "boom n". */
  async function deadMessages(count: number): Promise<string[]> {
    const ids = await fx.insert(
      Array.from({ length: count }, (_, i) => ({ exchange: 'orders', routing_key: `order.${i + 1}`, payload: { n: i + 1 } })),
    );
    for (const [i, id] of ids.entries()) {
      await fx.pool.query(
        `UPDATE ${fx.table} SET dead_at = now() - $2 * interval '1 minute', attempts = 10, last_error = $3, next_attempt_at = now() + interval '1 hour' WHERE message_id = $1`,
        [id, i + 1, `boom ${i + 1}`],
      );
    }
    return ids;
  }

  async function state(id: string): Promise<{ dead: boolean; due: boolean; attempts: number } | undefined> {
    const { rows } = await fx.pool.query<{ dead: boolean; due: boolean; attempts: number }>(
      `SELECT dead_at IS NOT NULL AS dead, published_at IS NULL AND dead_at IS NULL AND GREATEST(available_at, next_attempt_at) <= now() AS due, attempts
         FROM ${fx.table} WHERE message_id = $1`,
      [id],
    );
    return rows[0];
  }

  test('list --json --limit N: the newest N dead messages with their last error', async () => {
    const ids = await deadMessages(3);
    await fx.insert([{ routing_key: 'pending', payload: {} }]);
    const result = await cli(['dead', 'list', '--json', '--limit', '2'], envFor(fx.schema));
    expect(result).toMatchObject({ code: 0, stderr: '' });
    expect(lines(result.stdout)).toHaveLength(1);
    const listed = JSON.parse(result.stdout) as Record<string, unknown>[];
    expect(listed).toHaveLength(2);
    expect(listed[0]).toMatchObject({ messageId: ids[0], exchange: 'orders', routingKey: 'order.1', attempts: 10, lastError: 'boom 1' });
    expect(listed[1]).toMatchObject({ messageId: ids[1], lastError: 'boom 2' });

    const all = await cli(['dead', 'list'], envFor(fx.schema));
    expect(all.code).toBe(0);
    expect(lines(all.stdout)).toHaveLength(3);
    ids.forEach((id, i) => {
      const line = lines(all.stdout).find((l) => l.includes(id));
      expect(line).toContain(`boom ${i + 1}`);
    });
  });

  test('list on an outbox without dead messages', async () => {
    await fx.insert([{ routing_key: 'pending', payload: {} }]);
    const json = await cli(['dead', 'list', '--json'], envFor(fx.schema));
    expect(json.code).toBe(0);
    expect(JSON.parse(json.stdout)).toEqual([]);
    const text = await cli(['dead', 'list'], envFor(fx.schema));
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/no dead messages/);
  });

  test('retry <id> makes that message due again with attempts reset; --all does the rest', async () => {
    const [a, b, c] = await deadMessages(3);
    const one = await cli(['dead', 'retry', a!], envFor(fx.schema));
    expect(one).toMatchObject({ code: 0, stderr: '' });
    expect(one.stdout).toMatch(/^1 dead message made due again/);
    expect(await state(a!)).toEqual({ dead: false, due: true, attempts: 0 });
    expect(await state(b!)).toMatchObject({ dead: true, attempts: 10 });

    // Ids are accepted in upper case too.
    const upper = await cli(['dead', 'retry', b!.toUpperCase()], envFor(fx.schema));
    expect(upper.code).toBe(0);
    expect(await state(b!)).toEqual({ dead: false, due: true, attempts: 0 });

    await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 10 WHERE message_id = $1`, [a]);
    const all = await cli(['dead', 'retry', '--all'], envFor(fx.schema));
    expect(all).toMatchObject({ code: 0, stderr: '' });
    expect(all.stdout).toMatch(/^2 dead messages made due again/);
    for (const id of [a!, b!, c!]) expect(await state(id)).toEqual({ dead: false, due: true, attempts: 0 });
    const status = JSON.parse((await cli(['status', '--json'], envFor(fx.schema))).stdout) as Record<string, unknown>;
    expect(status).toMatchObject({ due: 3, dead: 0 });
  });

  test('discard <id> and --all delete dead messages only and print how many', async () => {
    const [a, b, c] = await deadMessages(3);
    const [pending] = await fx.insert([{ routing_key: 'pending', payload: {} }]);
    const [published] = await fx.insert([{ routing_key: 'published', payload: {} }]);
    await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE message_id = $1`, [published]);

    const one = await cli(['dead', 'discard', b!], envFor(fx.schema));
    expect(one).toMatchObject({ code: 0, stderr: '' });
    expect(one.stdout).toMatch(/^1 dead message discarded/);
    expect(await state(b!)).toBeUndefined();
    expect(await state(a!)).toMatchObject({ dead: true });

    const all = await cli(['dead', 'discard', '--all'], envFor(fx.schema));
    expect(all).toMatchObject({ code: 0, stderr: '' });
    expect(all.stdout).toMatch(/^2 dead messages discarded/);
    expect(await state(a!)).toBeUndefined();
    expect(await state(c!)).toBeUndefined();
    expect(await state(pending!)).toMatchObject({ dead: false, due: true });
    expect(await fx.row(published!)).toBeDefined();

    const none = await cli(['dead', 'discard', '--all'], envFor(fx.schema));
    expect(none.code).toBe(0);
    expect(none.stdout).toMatch(/^0 dead messages discarded/);
  });

  test('an unknown id, or one that is not dead: exit 1 naming it, nothing changed', async () => {
    const [pending] = await fx.insert([{ routing_key: 'pending', payload: {} }]);
    const unknown = randomUUID();
    for (const verb of ['retry', 'discard']) {
      for (const id of [unknown, pending!]) {
        const result = await cli(['dead', verb, id], envFor(fx.schema));
        expect(expectOneLineFailure(result, 1)).toContain(id);
      }
    }
    expect(await state(pending!)).toEqual({ dead: false, due: true, attempts: 0 });
  });
});

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

describe('cleanup', () => {
  test('deletes published messages older than OUTBOX_RETENTION, never dead or pending ones', async () => {
    const fx = await OutboxFixture.create('cli_cleanup');
    try {
      const ids = await fx.insert(
        ['8d', '2h', '10m', 'dead-old', 'pending-old', 'dead-new'].map((label) => ({ routing_key: 'q', payload: { label } })),
      );
      const [old8d, old2h, old10m, deadOld, pendingOld, deadNew] = ids as [string, string, string, string, string, string];
      const set = (id: string, sql: string): Promise<unknown> => fx.pool.query(`UPDATE ${fx.table} SET ${sql} WHERE message_id = $1`, [id]);
      await set(old8d, `published_at = now() - interval '8 days', created_at = now() - interval '8 days'`);
      await set(old2h, `published_at = now() - interval '2 hours'`);
      await set(old10m, `published_at = now() - interval '10 minutes'`);
      await set(deadOld, `dead_at = now() - interval '30 days', created_at = now() - interval '31 days'`);
      await set(pendingOld, `created_at = now() - interval '30 days', available_at = now() - interval '30 days'`);
      await set(deadNew, `dead_at = now()`);
      const remaining = async (): Promise<string[]> => {
        const { rows } = await fx.pool.query<{ message_id: string }>(`SELECT message_id FROM ${fx.table}`);
        return rows.map((r) => r.message_id).sort();
      };

      const weekly = await cli(['cleanup'], envFor(fx.schema, { OUTBOX_RETENTION: '7d' }));
      expect(weekly).toMatchObject({ code: 0, stderr: '' });
      expect(weekly.stdout).toMatch(/deleted 1 published message\b/);
      expect(await remaining()).toEqual([old2h, old10m, deadOld, pendingOld, deadNew].sort());

      const hourly = await cli(['cleanup'], envFor(fx.schema, { OUTBOX_RETENTION: '1h' }));
      expect(hourly.code).toBe(0);
      expect(hourly.stdout).toMatch(/deleted 1 published message\b/);
      expect(await remaining()).toEqual([old10m, deadOld, pendingOld, deadNew].sort());

      const immediate = await cli(['cleanup'], envFor(fx.schema, { OUTBOX_RETENTION: '0' }));
      expect(immediate.code).toBe(0);
      expect(immediate.stdout).toMatch(/deleted 1 published message\b/);
      expect(await remaining()).toEqual([deadOld, pendingOld, deadNew].sort());

      const again = await cli(['cleanup'], envFor(fx.schema, { OUTBOX_RETENTION: '0' }));
      expect(again.code).toBe(0);
      expect(again.stdout).toMatch(/deleted 0 published messages\b/);
      expect(await remaining()).toEqual([deadOld, pendingOld, deadNew].sort());
    } finally {
      await fx.close();
    }
  });
});
