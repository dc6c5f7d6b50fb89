import { appendFileSync, cpSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { escapeIdentifier, type Notification } from 'pg';
import { migrateCommand } from '../../src/commands/migrate';
import { statusCommand } from '../../src/commands/status';
import { loadConfig } from '../../src/config/load-config';
import { loadMigrations, migrate, MIGRATIONS_DIR, verifySchema } from '../../src/db/migrator';
import { notifyChannel } from '../../src/db/sql';
import { OutboxError } from '../../src/errors';
import { createLogger } from '../../src/observability/logger';
import { OutboxFixture } from '../kit/outbox-fixture';
import { installOptionalTrigger } from '../kit/outbox-schema';
import { connected, withClient } from '../kit/pg-client';
import { rejection } from '../kit/rejection';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

let fx: OutboxFixture;
/** Schemas created outside the fixture, dropped after all tests. */
const extraSchemas: string[] = [];

beforeAll(async () => {
  fx = await OutboxFixture.create('mig');
});

afterAll(async () => {
  for (const schema of extraSchemas) await fx.pool.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`);
  await fx.close();
});

describe('migrate', () => {
  test('is idempotent: a second run applies nothing and changes nothing', async () => {
    await withClient(async (client) => {
      const before = await client.query(`SELECT version, checksum, applied_at FROM "${fx.schema}".schema_migrations ORDER BY version`);
      await expect(migrate(client, fx.schema)).resolves.toEqual([]);
      await expect(migrate(client, fx.schema)).resolves.toEqual([]);
      const after = await client.query(`SELECT version, checksum, applied_at FROM "${fx.schema}".schema_migrations ORDER BY version`);
      expect(after.rows).toEqual(before.rows);
      expect(after.rows.map((r: { version: number }) => r.version)).toEqual(loadMigrations().map((m) => m.version));
      await expect(verifySchema(client, fx.schema)).resolves.toBe(loadMigrations().length);
    });
  });

  test('5 concurrent migrations of a fresh schema all succeed and apply each file once', async () => {
    const schema = uniqueName('t_concurrent');
    extraSchemas.push(schema);
    const clients = await Promise.all(Array.from({ length: 5 }, () => connected()));
    try {
      const results = await Promise.all(clients.map((client) => migrate(client, schema)));
      const migrations = loadMigrations();
      // Exactly one caller applied each migration; the others found it applied.
      expect(
        results
          .flat()
          .map((m) => m.version)
          .sort(),
      ).toEqual(migrations.map((m) => m.version));
      const { rows } = await fx.pool.query<{ version: number; n: number }>(
        `SELECT version, count(*)::int AS n FROM ${escapeIdentifier(schema)}.schema_migrations GROUP BY version ORDER BY version`,
      );
      expect(rows).toEqual(migrations.map((m) => ({ version: m.version, n: 1 })));
      await expect(verifySchema(clients[0]!, schema)).resolves.toBe(migrations.length);
    } finally {
      await Promise.all(clients.map((c) => c.end()));
    }
  });

  test('a changed, already applied file is an error (MIGRATION_CHANGED), not a silent re-run', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'outbox-migrations-'));
    try {
      cpSync(MIGRATIONS_DIR, dir, { recursive: true });
      const first = loadMigrations(dir)[0]!;
      appendFileSync(join(dir, first.fileName), '\n-- an innocent-looking edit\n');
      const changed = loadMigrations(dir);
      expect(changed[0]!.checksum).not.toBe(first.checksum);
      await withClient(async (client) => {
        const err = await rejection(migrate(client, fx.schema, changed));
        expect(err).toBeInstanceOf(OutboxError);
        expect((err as OutboxError).code).toBe('MIGRATION_CHANGED');
        expect(err.message).toContain(first.fileName);
        const verifyErr = await rejection(verifySchema(client, fx.schema, changed));
        expect((verifyErr as OutboxError).code).toBe('MIGRATION_CHANGED');
        // The failed run left the connection usable and the ledger untouched.
        const { rows } = await client.query(`SELECT checksum FROM "${fx.schema}".schema_migrations WHERE version = $1`, [first.version]);
        expect(rows[0].checksum).toBe(first.checksum);
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a ledger with a newer, unknown version: SCHEMA_TOO_NEW from verifySchema and from migrate', async () => {
    const other = await OutboxFixture.create('mig_new');
    try {
      const next = loadMigrations().length + 1;
      await other.pool.query(
        `INSERT INTO "${other.schema}".schema_migrations (version, name, checksum) VALUES ($1, 'from_the_future', 'x')`,
        [next],
      );
      await withClient(async (client) => {
        const err = await rejection(verifySchema(client, other.schema));
        expect(err).toBeInstanceOf(OutboxError);
        expect((err as OutboxError).code).toBe('SCHEMA_TOO_NEW');
        expect(err.message).toContain(String(next));
        expect(err.message).toMatch(/upgrade outbox-relay/);
        const migrateErr = await rejection(migrate(client, other.schema));
        expect((migrateErr as OutboxError).code).toBe('SCHEMA_TOO_NEW');
      });
    } finally {
      await other.close();
    }
  });

  test('verifySchema on an empty or missing schema: SCHEMA_NOT_MIGRATED, "run outbox-relay migrate"', async () => {
    const empty = uniqueName('t_empty');
    extraSchemas.push(empty);
    await fx.pool.query(`CREATE SCHEMA ${escapeIdentifier(empty)}`);
    await withClient(async (client) => {
      for (const schema of [empty, uniqueName('t_never_created')]) {
        const err = await rejection(verifySchema(client, schema));
        expect(err).toBeInstanceOf(OutboxError);
        expect((err as OutboxError).code).toBe('SCHEMA_NOT_MIGRATED');
        expect(err.message).toContain('run outbox-relay migrate');
        expect(err.message).toContain(schema);
      }
      // An empty ledger is not migrated either.
      await client.query(
        `CREATE TABLE ${escapeIdentifier(empty)}.schema_migrations (version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`,
      );
      expect(((await rejection(verifySchema(client, empty))) as OutboxError).code).toBe('SCHEMA_NOT_MIGRATED');
    });
  });

  test('an OUTBOX_SCHEMA with upper-case letters works end to end (identifiers are quoted)', async () => {
    const schema = `Outbox_Mixed_${uniqueName('x').slice(2)}`;
    extraSchemas.push(schema);
    const lower = schema.toLowerCase();
    const config = loadConfig({ OUTBOX_DATABASE_URL: testDatabaseUrl(), OUTBOX_AMQP_URL: testAmqpUrl(), OUTBOX_SCHEMA: schema });
    expect(config.schema).toBe(schema);
    const out: string[] = [];
    const io = { out: (text: string) => out.push(text), err: (text: string) => out.push(`ERR ${text}`) };
    const log = createLogger({ level: 'silent', secrets: [] });

    await migrateCommand(config, log, io, {});
    expect(out.join('\n')).toContain(`applied 0001_messages.sql to schema "${schema}"`);
    out.length = 0;
    await migrateCommand(config, log, io, {});
    expect(out.join('\n')).toMatch(/up to date/);

    // The schema exists under its exact, mixed-case name, and not folded to lower case.
    const { rows } = await fx.pool.query<{ nspname: string }>(`SELECT nspname FROM pg_namespace WHERE nspname IN ($1, $2)`, [
      schema,
      lower,
    ]);
    expect(rows.map((r) => r.nspname)).toEqual([schema]);
    await fx.pool.query(`INSERT INTO ${escapeIdentifier(schema)}.messages (routing_key, payload) VALUES ('q', '{}')`);

    // The optional trigger notifies the channel the relay LISTENs on, with the schema's exact case.
    expect(notifyChannel(schema)).toBe(`${schema}.messages`);
    await installOptionalTrigger(fx.pool, schema);
    const listener = await connected();
    try {
      const heard: Notification[] = [];
      listener.on('notification', (n) => heard.push(n));
      await listener.query(`LISTEN ${escapeIdentifier(notifyChannel(schema))}`);
      await fx.pool.query(`INSERT INTO ${escapeIdentifier(schema)}.messages (routing_key, payload) VALUES ('q', '{}')`);
      await waitFor('the notification on the mixed-case channel', () => heard.some((n) => n.channel === `${schema}.messages`));
    } finally {
      await listener.end();
    }

    out.length = 0;
    await statusCommand(config, log, io, { json: true });
    expect(JSON.parse(out.join('\n'))).toMatchObject({ schema, pending: 2, due: 2, dead: 0 });
    await withClient(async (client) => {
      await expect(verifySchema(client, schema)).resolves.toBe(loadMigrations().length);
    });
  });
});
