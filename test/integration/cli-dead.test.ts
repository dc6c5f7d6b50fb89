import { randomUUID } from 'node:crypto';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines } from '../kit/cli';
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
});
