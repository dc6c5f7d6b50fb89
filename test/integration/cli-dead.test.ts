import { randomUUID } from 'node:crypto';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines, STACK_FRAME } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';

beforeAll(() => buildIfMissing());

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
  /** Makes `id` expired as the relay does: expired_at and dead_at both set (the row is no longer pending). */
  async function expire(id: string): Promise<void> {
    await fx.pool.query(
      `UPDATE ${fx.table} SET expires_at = now() - interval '1 minute', expired_at = now(), dead_at = now(), last_error = 'expired' WHERE message_id = $1`,
      [id],
    );
  }

  test('list filters --type, --exchange, --key, --routing-key and --since combine; --limit still applies', async () => {
    const rows = [
      { exchange: 'orders', routing_key: 'order.created', message_type: 'order.created', partition_key: 'o-1', payload: {} },
      { exchange: 'orders', routing_key: 'order.created', message_type: 'order.created', partition_key: 'o-2', payload: {} },
      { exchange: 'orders', routing_key: 'order.paid', message_type: 'order.paid', partition_key: 'o-1', payload: {} },
      { exchange: 'billing', routing_key: 'order.created', message_type: 'order.created', partition_key: 'o-1', payload: {} },
      { exchange: '', routing_key: 'mailer', message_type: 'order.created', partition_key: 'o-1', payload: {} },
      { exchange: 'orders', routing_key: 'order.created', message_type: 'order.created', partition_key: 'o-1', payload: {} },
    ];
    const ids = await fx.insert(rows);
    // All dead; the last one two days ago, the others a minute ago.
    await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now() - interval '1 minute', attempts = 10, last_error = 'boom'`);
    await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now() - interval '2 days' WHERE message_id = $1`, [ids[5]]);
    const listed = async (args: string[]): Promise<string[]> => {
      const result = await cli(['dead', 'list', '--json', ...args], envFor(fx.schema));
      expect({ args, code: result.code, stderr: result.stderr }).toEqual({ args, code: 0, stderr: '' });
      return (JSON.parse(result.stdout) as { messageId: string }[]).map((m) => m.messageId).sort();
    };
    const sorted = (...picked: (string | undefined)[]): string[] => (picked as string[]).sort();

    expect(await listed(['--type', 'order.created'])).toEqual(sorted(ids[0], ids[1], ids[3], ids[4], ids[5]));
    expect(await listed(['--type', 'order.created', '--exchange', 'orders'])).toEqual(sorted(ids[0], ids[1], ids[5]));
    expect(await listed(['--type', 'order.created', '--exchange', 'orders', '--key', 'o-1'])).toEqual(sorted(ids[0], ids[5]));
    const since = new Date(Date.now() - 3_600_000).toISOString();
    expect(await listed(['--type', 'order.created', '--exchange', 'orders', '--key', 'o-1', '--since', since])).toEqual([ids[0]]);
    expect(await listed(['--routing-key', 'order.paid'])).toEqual([ids[2]]);
    // '' is the default exchange, not "no filter".
    expect(await listed(['--exchange', ''])).toEqual([ids[4]]);
    expect(await listed(['--key', 'o-1', '--routing-key', 'order.created', '--exchange', 'billing'])).toEqual([ids[3]]);
    // Anything PostgreSQL reads as a timestamptz.
    expect(await listed(['--since', 'yesterday'])).toEqual(sorted(ids[0], ids[1], ids[2], ids[3], ids[4]));
    expect(await listed(['--key', 'o-1', '--limit', '2'])).toHaveLength(2);
    expect(await listed(['--key', 'nobody'])).toEqual([]);

    const text = await cli(['dead', 'list', '--key', 'nobody'], envFor(fx.schema));
    expect(text).toMatchObject({ code: 0, stderr: '', stdout: 'no dead messages match\n' });
    const filteredText = await cli(['dead', 'list', '--routing-key', 'order.paid'], envFor(fx.schema));
    expect(lines(filteredText.stdout)).toEqual([expect.stringContaining(ids[2]!)]);
  });

  test('--since that is not a timestamp: exit 2, one line naming --since; a missing value is a usage error too', async () => {
    await deadMessages(1);
    for (const bad of ['yesterdayish', '2026-13-45T00:00:00Z', '2026-05-01 12:00 Mars/Olympus', '']) {
      const result = await cli(['dead', 'list', '--since', bad], envFor(fx.schema));
      expect(expectOneLineFailure(result, 2)).toContain('--since');
      expect(result.stdout).toBe('');
    }
    const missing = await cli(['dead', 'list', '--since'], envFor(fx.schema));
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('--since');
    expect(missing.stderr).not.toContain(STACK_FRAME);
  });

  test('expired messages are not dead: never listed, retried, discarded (by id or --all) or counted as dead; status counts them as expired', async () => {
    const [dead] = await deadMessages(1);
    const [expired, expiredToo] = await fx.insert([
      { exchange: 'orders', routing_key: 'order.1', partition_key: 'k', payload: { n: 'x' } },
      { exchange: 'orders', routing_key: 'order.2', payload: { n: 'y' } },
    ]);
    await expire(expired!);
    await expire(expiredToo!);

    const list = await cli(['dead', 'list', '--json'], envFor(fx.schema));
    expect((JSON.parse(list.stdout) as { messageId: string }[]).map((m) => m.messageId)).toEqual([dead]);
    const status = JSON.parse((await cli(['status', '--json'], envFor(fx.schema))).stdout) as Record<string, unknown>;
    expect(status).toMatchObject({ pending: 0, dead: 1, expired: 2 });
    const statusText = await cli(['status'], envFor(fx.schema));
    expect(statusText.stdout).toMatch(/^dead\s+1$/m);
    expect(statusText.stdout).toMatch(/^expired\s+2\b/m);

    for (const verb of ['retry', 'discard']) {
      const byId = await cli(['dead', verb, expired!], envFor(fx.schema));
      expect(expectOneLineFailure(byId, 1)).toContain(expired);
    }
    const retryAll = await cli(['dead', 'retry', '--all'], envFor(fx.schema));
    expect(retryAll.stdout).toMatch(/^1 dead message made due again/);
    await fx.pool.query(`UPDATE ${fx.table} SET dead_at = now(), attempts = 10 WHERE message_id = $1`, [dead]);
    const discardAll = await cli(['dead', 'discard', '--all'], envFor(fx.schema));
    expect(discardAll.stdout).toMatch(/^1 dead message discarded/);
    expect(await state(dead!)).toBeUndefined();
    for (const id of [expired!, expiredToo!]) {
      expect(await fx.row(id)).toMatchObject({ expired_at: expect.any(Date), dead_at: expect.any(Date), attempts: 0 });
    }
    const after = JSON.parse((await cli(['status', '--json'], envFor(fx.schema))).stdout) as Record<string, unknown>;
    expect(after).toMatchObject({ pending: 0, dead: 0, expired: 2 });
  });
});
