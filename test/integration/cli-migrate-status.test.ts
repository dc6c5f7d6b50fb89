import { escapeIdentifier, Pool } from 'pg';
import { loadMigrations } from '../../src/db/migrator';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testDatabaseUrl } from '../kit/services';
import { uniqueName } from '../kit/unique-name';

// `outbox-relay migrate` and `status`. (cli-dead.test.ts: `dead`; cli-check.test.ts: `check`
// and an unreachable database; cli-cleanup.test.ts: `cleanup`; cli-usage.test.ts: exit 2.)

let admin: Pool;
const droppedAfterAll: string[] = [];

beforeAll(() => {
  buildIfMissing();
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

  test('--print on a reachable database prints only the migrations the schema lacks; --all prints every one', async () => {
    const fx = await OutboxFixture.create(
      'cli_print_pending',
      loadMigrations().filter((m) => m.version <= 2),
    );
    try {
      const printed = await cli(['migrate', '--print'], envFor(fx.schema));
      expect(printed).toMatchObject({ code: 0, stderr: '' });
      const total = loadMigrations().length;
      expect(lines(printed.stdout)[0]).toBe(`-- the ${total - 2} of ${total} migrations not yet applied; --all prints every migration`);
      expect(printed.stdout).toContain('-- 0003_cheap_publish.sql');
      expect(printed.stdout).not.toContain('0001_messages.sql');
      expect(printed.stdout).not.toContain('0002_ordering.sql');
      const client = await admin.connect();
      try {
        await client.query(printed.stdout);
      } finally {
        client.release();
      }
      const again = await cli(['migrate', '--print'], envFor(fx.schema));
      expect(again).toMatchObject({ code: 0, stderr: '' });
      expect(again.stdout.trim()).toBe(`-- schema "${fx.schema}" is up to date: no migration pending (--all prints every migration)`);
      const all = await cli(['migrate', '--print', '--all'], envFor(fx.schema));
      expect(all).toMatchObject({ code: 0, stderr: '' });
      for (const m of loadMigrations()) expect(all.stdout).toContain(`-- ${m.fileName}`);
      const status = await cli(['status', '--json'], envFor(fx.schema));
      expect(status).toMatchObject({ code: 0, stderr: '' });
    } finally {
      await fx.close();
    }
  });

  test('--print against a database that does not answer prints every migration and says why in its first line', async () => {
    const printed = await cli(
      ['migrate', '--print'],
      envFor(uniqueName('t_cli_print_down'), { OUTBOX_DATABASE_URL: 'postgres://postgres:s3cret@127.0.0.1:1/test' }),
    );
    expect(printed).toMatchObject({ code: 0, stderr: '' });
    expect(lines(printed.stdout)[0]).toMatch(
      /^-- the database did not answer \(cannot reach the database: .*\): every migration follows, as with --all$/,
    );
    expect(printed.stdout).not.toContain('s3cret');
    for (const m of loadMigrations()) expect(printed.stdout).toContain(`-- ${m.fileName}`);
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
        expired: 0,
        published: 0,
        publishedEstimated: false,
        lagSeconds: 0,
        oldestPending: null,
        held: { messages: 0, destinations: [] },
        relays: { leader: null, leadingSince: null, epoch: '0', replicas: [] },
      });
      const text = await cli(['status'], envFor(fx.schema));
      expect(text.stdout).toMatch(/^relays +none running \(no replica seen in the last 45 s\)$/m);
    } finally {
      await fx.close();
    }
  });

  test('a table of more than 100,000 rows: the published count is estimated (no scan of the retained history), pending and dead stay exact', async () => {
    const fx = await OutboxFixture.create('cli_estimate');
    try {
      await fx.pool.query(
        `INSERT INTO ${fx.table} (routing_key, payload, published_at)
         SELECT 'q', jsonb_build_object('n', g), now() FROM generate_series(1, 150000) AS g`,
      );
      await fx.insert(Array.from({ length: 7 }, (_, n) => ({ routing_key: 'q', payload: { n } })));
      const [dead] = await fx.insert([{ routing_key: 'q', payload: { dead: true } }]);
      await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 10 WHERE message_id = $1`, [dead]);
      await fx.pool.query(`ANALYZE ${fx.table}`);

      const result = await cli(['status', '--json'], envFor(fx.schema));
      expect(result).toMatchObject({ code: 0, stderr: '' });
      const report = JSON.parse(result.stdout) as Record<string, unknown>;
      expect(report).toMatchObject({ pending: 7, due: 7, dead: 1, publishedEstimated: true });
      expect(Math.abs((report['published'] as number) - 150_000)).toBeLessThan(7_500);
      const text = await cli(['status'], envFor(fx.schema));
      expect(text.stdout).toMatch(/published\s+about \d+ \(estimated from table statistics; kept for OUTBOX_RETENTION\)/);
    } finally {
      await fx.close();
    }
  });
});
