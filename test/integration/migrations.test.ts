import { appendFileSync, cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client, escapeIdentifier, type Notification } from 'pg';
import { migrateCommand } from '../../src/commands/migrate';
import { statusCommand } from '../../src/commands/status';
import { loadConfig } from '../../src/config/load-config';
import { loadMigrations, migrate, MIGRATIONS_DIR, verifySchema, type Migration } from '../../src/db/migrator';
import { notifyChannel } from '../../src/db/sql';
import { OutboxError } from '../../src/errors';
import { createLogger } from '../../src/observability/logger';
import { OutboxFixture } from '../kit/outbox-fixture';
import { testAmqpUrl, testDatabaseUrl } from '../kit/services';
import { uniqueName } from '../kit/unique-name';
import { waitFor } from '../kit/wait';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let fx: OutboxFixture;
/** Schemas created outside the fixture, dropped after all tests. */
const extraSchemas: string[] = [];

async function connected(): Promise<Client> {
  const client = new Client({ connectionString: testDatabaseUrl() });
  await client.connect();
  return client;
}

/** Runs `work` on a fresh client, always closing it. */
async function withClient<T>(work: (client: Client) => Promise<T>): Promise<T> {
  const client = await connected();
  try {
    return await work(client);
  } finally {
    await client.end();
  }
}

/** The error `promise` rejects with; fails when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string; constraint?: string }> {
  try {
    await promise;
  } catch (err: unknown) {
    return err as Error & { code?: string; constraint?: string };
  }
  throw new Error('expected a rejection');
}

beforeAll(async () => {
  fx = await OutboxFixture.create('mig');
});

afterAll(async () => {
  for (const schema of extraSchemas) await fx.pool.query(`DROP SCHEMA IF EXISTS ${escapeIdentifier(schema)} CASCADE`);
  await fx.close();
});

describe("producer contract constraints (the README's SQL contract)", () => {
  const cases: readonly [string, string, readonly unknown[], string][] = [
    [
      'both payload and body',
      '(routing_key, payload, body) VALUES ($1, $2, $3)',
      ['q', '{"a":1}', Buffer.from('x')],
      'messages_payload_xor_body',
    ],
    ['neither payload nor body', '(routing_key, message_type) VALUES ($1, $2)', ['q', 't'], 'messages_payload_xor_body'],
    [
      'an empty routing key on the default exchange',
      "(exchange, routing_key, payload) VALUES ('', $1, $2)",
      ['', '{}'],
      'messages_command_needs_queue',
    ],
    [
      'an empty routing key, exchange left to its default',
      '(routing_key, payload) VALUES ($1, $2)',
      ['', '{}'],
      'messages_command_needs_queue',
    ],
    [
      'headers that are an array',
      '(routing_key, payload, headers) VALUES ($1, $2, $3)',
      ['q', '{}', '["a"]'],
      'messages_headers_is_object',
    ],
    [
      'headers that are a string',
      '(routing_key, payload, headers) VALUES ($1, $2, $3)',
      ['q', '{}', '"x-tenant"'],
      'messages_headers_is_object',
    ],
    ['headers that are a number', '(routing_key, payload, headers) VALUES ($1, $2, $3)', ['q', '{}', '42'], 'messages_headers_is_object'],
  ];

  test.each(cases)('rejects %s at INSERT, naming the constraint', async (_what, columnsAndValues, values, constraint) => {
    const err = await rejection(fx.pool.query(`INSERT INTO ${fx.table} ${columnsAndValues}`, [...values]));
    expect(err.code).toBe('23514'); // check_violation
    expect(err.constraint).toBe(constraint);
    expect(err.message).toContain(constraint);
  });

  test('the violation fails the service transaction itself: nothing of it is committed', async () => {
    const queue = uniqueName('tx');
    await withClient(async (client) => {
      await client.query('BEGIN');
      await client.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ($1, '{"ok":true}')`, [queue]);
      const err = await rejection(client.query(`INSERT INTO ${fx.table} (routing_key) VALUES ($1)`, [queue]));
      expect(err.constraint).toBe('messages_payload_xor_body');
      await expect(client.query('COMMIT')).resolves.toMatchObject({ command: 'ROLLBACK' });
    });
    const { rows } = await fx.pool.query(`SELECT 1 FROM ${fx.table} WHERE routing_key = $1`, [queue]);
    expect(rows).toHaveLength(0);
  });

  test('accepts the valid shapes: JSON payload, raw body, an event with an empty routing key on a named exchange', async () => {
    const queue = uniqueName('ok');
    await fx.pool.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ($1, 'null'::jsonb)`, [queue]);
    await fx.pool.query(`INSERT INTO ${fx.table} (routing_key, body, content_type) VALUES ($1, $2, 'application/octet-stream')`, [
      queue,
      Buffer.alloc(0),
    ]);
    await fx.pool.query(`INSERT INTO ${fx.table} (exchange, routing_key, payload) VALUES ('fanout_ex', '', '{}')`);
    const { rows } = await fx.pool.query(`SELECT count(*)::int AS n FROM ${fx.table} WHERE routing_key = $1 OR exchange = 'fanout_ex'`, [
      queue,
    ]);
    expect(rows[0].n).toBe(3);
  });

  test('routing_key is required and message_id is unique', async () => {
    const missingKey = await rejection(fx.pool.query(`INSERT INTO ${fx.table} (payload) VALUES ('{}')`));
    expect(missingKey.code).toBe('23502'); // not_null_violation
    expect(missingKey.message).toContain('routing_key');
    const { rows } = await fx.pool.query<{ message_id: string }>(
      `INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}') RETURNING message_id`,
    );
    const duplicate = await rejection(
      fx.pool.query(`INSERT INTO ${fx.table} (message_id, routing_key, payload) VALUES ($1, 'q', '{}')`, [rows[0]!.message_id]),
    );
    expect(duplicate.code).toBe('23505');
    expect(duplicate.constraint).toBe('messages_message_id_key');
  });
});

describe('defaults of the producer columns', () => {
  test('a minimal INSERT gets a generated message_id, the default exchange, JSON content type, {} headers and available_at now', async () => {
    const { rows } = await fx.pool.query(
      `INSERT INTO ${fx.table} (routing_key, payload) VALUES ('orders', '{"orderId":1}') RETURNING *, now() AS tx_now`,
    );
    const row = rows[0] as Record<string, unknown>;
    expect(row['message_id']).toMatch(UUID);
    expect(row['exchange']).toBe('');
    expect(row['content_type']).toBe('application/json');
    expect(row['headers']).toEqual({});
    expect((row['available_at'] as Date).getTime()).toBe((row['tx_now'] as Date).getTime());
    expect(row['payload']).toEqual({ orderId: 1 });
    expect(row['body']).toBeNull();
    expect(row['message_type']).toBeNull();
    expect(row['partition_key']).toBeNull();
    expect(row['correlation_id']).toBeNull();
    // Relay-owned state starts out pending.
    expect(row['attempts']).toBe(0);
    expect(row['published_at']).toBeNull();
    expect(row['dead_at']).toBeNull();
  });

  test('two rows get distinct message ids, and ids follow insertion order', async () => {
    const { rows } = await fx.pool.query<{ id: string; message_id: string }>(
      `INSERT INTO ${fx.table} (routing_key, payload) SELECT 'orders', jsonb_build_object('n', g) FROM generate_series(1, 3) g RETURNING id, message_id`,
    );
    expect(new Set(rows.map((r) => r.message_id)).size).toBe(3);
    const ids = rows.map((r) => BigInt(r.id));
    expect(ids[1]! > ids[0]! && ids[2]! > ids[1]!).toBe(true);
  });
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
    await installOptionalTrigger(schema);
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

/**
 * Comment lines reworded after the files were released (commit 7bc2138), with the sha256
 * that release recorded in ledgers. Putting the released lines back rebuilds those files
 * byte for byte (`git show 7bc2138:migrations/<file> | sha256sum` gives the same sums).
 */
const REWORDED_COMMENTS: readonly { file: string; now: string; released: string; releasedChecksum: string }[] = [
  {
    file: '0001_messages.sql',
    now: '    -- Relay-owned. Insertion order: per-key ordering (README "Ordering") follows it.',
    released: '    -- Relay-owned. Insertion order: the per-key ordering of SPEC §3.4 follows it.',
    releasedChecksum: 'de425de425b16569f5c0a72257e9a88849b1771424c0717b68bb6bcb03e9a2db',
  },
  {
    file: '0002_ordering.sql',
    now: '-- outbox-relay migration 0002: per-key ordering (README "Ordering").',
    released: '-- outbox-relay migration 0002: per-key ordering (SPEC §3.4).',
    releasedChecksum: 'f6b9ee8feb3590a4d0b584504ffc40affae8940ebc44dd48f6a0e8bb7e0135eb',
  },
];

/** A copy of migrations/ in a temporary directory, with `edit` applied to the text of each file it names. */
function editedMigrationsDir(edits: Readonly<Record<string, (sql: string) => string>>): string {
  const dir = mkdtempSync(join(tmpdir(), 'outbox-migrations-'));
  cpSync(MIGRATIONS_DIR, dir, { recursive: true });
  for (const [file, edit] of Object.entries(edits)) {
    const path = join(dir, file);
    writeFileSync(path, edit(readFileSync(path, 'utf8')));
  }
  return dir;
}

describe('migrations whose comments were reworded after their release', () => {
  const dirs: string[] = [];
  /** The files as the previous release shipped them. */
  let released: readonly Migration[];
  /** A schema migrated with those files: its ledger holds the released checksums. */
  const schema = uniqueName('t_released');

  beforeAll(async () => {
    const dir = editedMigrationsDir(
      Object.fromEntries(REWORDED_COMMENTS.map(({ file, now, released: old }) => [file, (sql: string) => sql.replace(now, old)])),
    );
    dirs.push(dir);
    released = loadMigrations(dir);
    extraSchemas.push(schema);
    await withClient(async (client) => {
      await expect(migrate(client, schema, released)).resolves.toHaveLength(released.length);
    });
  });

  afterAll(() => {
    for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
  });

  test('putting the old comment lines back gives the released checksums; only comment lines differ', () => {
    const current = loadMigrations();
    for (const { file, now, released: old, releasedChecksum } of REWORDED_COMMENTS) {
      expect(now.trimStart().startsWith('--') && old.trimStart().startsWith('--')).toBe(true);
      const today = current.find((m) => m.fileName === file)!;
      expect(today.sql.split('\n').filter((line) => line === now)).toHaveLength(1);
      const then = released.find((m) => m.fileName === file)!;
      expect(then.checksum).toBe(releasedChecksum);
      expect(today.checksum).not.toBe(releasedChecksum);
      expect(today.acceptedChecksums).toEqual([today.checksum, releasedChecksum]);
      const changedLines = today.sql.split('\n').filter((line, i) => line !== then.sql.split('\n')[i]);
      expect(changedLines).toEqual([now]);
    }
  });

  test('a schema migrated with the released files is accepted by verifySchema and migrate; its ledger keeps the released checksums', async () => {
    await withClient(async (client) => {
      await expect(verifySchema(client, schema)).resolves.toBe(loadMigrations().length);
      await expect(migrate(client, schema)).resolves.toEqual([]);
      const { rows } = await client.query<{ version: number; checksum: string }>(
        `SELECT version, checksum FROM ${escapeIdentifier(schema)}.schema_migrations ORDER BY version`,
      );
      expect(rows).toEqual(released.map((m) => ({ version: m.version, checksum: m.checksum })));
    });
  });

  test.each([
    [
      'a changed statement',
      '0002_ordering.sql',
      (sql: string) => sql.replace('WHERE published_at IS NULL AND partition_key IS NOT NULL', 'WHERE published_at IS NULL'),
    ],
    ['a further comment edit', '0001_messages.sql', (sql: string) => `${sql}\n-- an innocent-looking edit\n`],
  ] as const)('on that schema, %s is still MIGRATION_CHANGED', async (_what, file, edit) => {
    const dir = editedMigrationsDir({ [file]: edit });
    dirs.push(dir);
    const changed = loadMigrations(dir);
    const target = changed.find((m) => m.fileName === file)!;
    expect(target.sql).not.toBe(loadMigrations().find((m) => m.fileName === file)!.sql);
    await withClient(async (client) => {
      for (const attempt of [() => migrate(client, schema, changed), () => verifySchema(client, schema, changed)]) {
        const err = await rejection(attempt());
        expect(err).toBeInstanceOf(OutboxError);
        expect((err as OutboxError).code).toBe('MIGRATION_CHANGED');
        expect(err.message).toContain(file);
      }
    });
  });
});

/** Applies migrations/optional/notify-on-insert.sql to `schema` (it is written for "outbox"). */
async function installOptionalTrigger(schema: string): Promise<void> {
  const sql = readFileSync(join(MIGRATIONS_DIR, 'optional', 'notify-on-insert.sql'), 'utf8').replace(
    /\boutbox\./g,
    `${escapeIdentifier(schema)}.`,
  );
  await fx.pool.query(sql);
}

describe('the optional NOTIFY trigger', () => {
  let listener: Client;
  let installed = false;
  async function ensureTrigger(): Promise<void> {
    if (!installed) await installOptionalTrigger(fx.schema);
    installed = true;
  }
  const notifications: Notification[] = [];

  beforeAll(async () => {
    listener = await connected();
    listener.on('notification', (n) => notifications.push(n));
    await listener.query(`LISTEN ${escapeIdentifier(`${fx.schema}.messages`)}`);
  });

  afterAll(async () => {
    await listener.end();
  });

  /** Sends a marker on the channel from `client` and waits for it: everything sent before it has arrived. */
  async function sync(client: Client, marker: string): Promise<Notification[]> {
    await client.query('SELECT pg_notify($1, $2)', [`${fx.schema}.messages`, marker]);
    await waitFor(`marker ${marker}`, () => notifications.some((n) => n.payload === marker));
    const index = notifications.findIndex((n) => n.payload === marker);
    return notifications.splice(0, index + 1).slice(0, -1);
  }

  test('by default an INSERT raises no NOTIFY: producers do not pay for one', async () => {
    await withClient(async (producer) => {
      await sync(producer, 'default-start');
      await producer.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}')`);
      expect(await sync(producer, 'default-after')).toEqual([]);
    });
  });

  test('a committed INSERT notifies channel "<schema>.messages" once, at commit', async () => {
    await ensureTrigger();
    await withClient(async (producer) => {
      await sync(producer, 'start');
      await producer.query('BEGIN');
      await producer.query(
        `INSERT INTO ${fx.table} (routing_key, payload) SELECT 'q', jsonb_build_object('n', g) FROM generate_series(1, 3) g`,
      );
      // Not delivered while the transaction is open.
      await withClient(async (other) => {
        expect(await sync(other, 'still-open')).toEqual([]);
      });
      await producer.query('COMMIT');
      await waitFor('the notification of the committed insert', () => notifications.length > 0);
      const before = await sync(producer, 'after-commit');
      // One per inserting statement (FOR EACH STATEMENT), not per row.
      expect(before).toHaveLength(1);
      expect(before[0]!.channel).toBe(`${fx.schema}.messages`);
    });
  });

  test('a rolled-back INSERT notifies nobody', async () => {
    await ensureTrigger();
    await withClient(async (producer) => {
      await sync(producer, 'before-rollback');
      await producer.query('BEGIN');
      await producer.query(`INSERT INTO ${fx.table} (routing_key, payload) VALUES ('q', '{}')`);
      await producer.query('ROLLBACK');
      // Notifications of one session arrive in order: anything the rollback had sent
      // would arrive before this marker.
      expect(await sync(producer, 'after-rollback')).toEqual([]);
    });
  });
});
