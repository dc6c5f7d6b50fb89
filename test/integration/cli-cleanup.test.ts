import { buildIfMissing, cli, envFor } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';

beforeAll(() => buildIfMissing());

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
