import fc from 'fast-check';
import type { OutboxMessage } from '../../src/domain/message';
import { MessageQueue, type ClaimSession } from '../../src/outbox/message-queue';
import { OutboxFixture } from '../kit/outbox-fixture';
import { bodies, TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';

/**
 * The claim holds at most OUTBOX_BATCH_BYTES of messages (their body and headers as the
 * relay receives them), however large they are: rows of 1 MB claim fewer rows, a row
 * larger than the budget is claimed alone, and the claim locks no more than a few rows
 * beyond those it returns.
 */
const fx = OutboxFixture.forFile('claim_bytes', { afterEach: 'reset' });
const broker = TestBroker.forFile();
const MiB = 1_048_576;

/** Inserts one message per size (a JSON payload of about that many bytes), due in that order. */
async function insertSized(sizes: readonly number[], headers: Record<string, string> = {}): Promise<void> {
  await fx.pool.query(
    `INSERT INTO ${fx.table} (routing_key, payload, headers, available_at)
     SELECT 'r', to_jsonb(repeat('x', greatest(s - 2, 0))), $2::jsonb, now() - interval '1 hour' + o * interval '1 millisecond'
       FROM unnest($1::int[]) WITH ORDINALITY AS u(s, o)`,
    [sizes, JSON.stringify(headers)],
  );
}

/** The bytes the claim counts for each row, in due order. */
async function sizesInTable(): Promise<{ id: string; bytes: number }[]> {
  const { rows } = await fx.pool.query<{ id: string; bytes: number }>(
    `SELECT id::text, octet_length(payload::text) + octet_length(headers::text) AS bytes FROM ${fx.table} ORDER BY available_at`,
  );
  return rows;
}

/** Runs `work` in a claim transaction and rolls it back. */
async function inClaim<T>(work: (session: ClaimSession) => Promise<T>): Promise<T> {
  const queue = new MessageQueue(fx.pool, fx.schema, 60_000);
  let result: T | undefined;
  await queue
    .withClaim(async (session) => {
      result = await work(session);
      throw new Error('roll back');
    })
    .catch((err: unknown) => {
      if (!(err instanceof Error) || err.message !== 'roll back') throw err;
    });
  return result as T;
}

/** The longest prefix of `sizes` within `budget`, and the first alone when it is larger. */
function expectedCount(sizes: readonly number[], budget: number): number {
  let total = 0;
  let count = 0;
  for (const size of sizes) {
    total += size;
    if (count > 0 && total > budget) break;
    count += 1;
  }
  return count;
}

const total = (messages: readonly OutboxMessage[]): number => messages.reduce((sum, m) => sum + (m.claimBytes ?? Number.NaN), 0);

test('rows of 1 MB: a claim of up to 500 within 4 MiB takes 4, their bytes counted as the relay receives them, and locks at most 3 more', async () => {
  await insertSized(
    Array.from({ length: 20 }, () => 1_000_000),
    { 'x-tenant': 'acme' },
  );
  const { claimed, locked } = await inClaim(async (session) => ({
    claimed: await session.claim(500, 4 * MiB),
    locked: await fx.lockedRows(),
  }));
  expect(claimed).toHaveLength(4);
  expect(total(claimed)).toBeLessThanOrEqual(4 * MiB);
  const rows = await sizesInTable();
  expect(claimed.map((m) => m.claimBytes)).toEqual(rows.slice(0, 4).map((r) => r.bytes));
  for (const m of claimed) expect(m.claimBytes).toBe(m.content.length + '{"x-tenant": "acme"}'.length);
  expect(locked - claimed.length).toBeLessThanOrEqual(3);
});

test('a row larger than the budget is claimed alone, whatever follows it', async () => {
  await insertSized([6 * MiB, 10, 10]);
  const claimed = await inClaim((session) => session.claim(500, 4 * MiB));
  expect(claimed.map((m) => m.claimBytes)).toEqual([6 * MiB + 2]);
});

test('generated sizes and budgets: the claim takes the longest due-order prefix within the budget; claimIds the longest id-order prefix', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(fc.oneof(fc.integer({ min: 2, max: 2_000 }), fc.integer({ min: 2_000, max: 300_000 })), { minLength: 1, maxLength: 25 }),
      fc.integer({ min: 1, max: 1_000_000 }),
      fc.integer({ min: 1, max: 30 }),
      async (sizes, budget, limit) => {
        await fx.pool.query(`DELETE FROM ${fx.table}`);
        await insertSized(sizes);
        const rows = await sizesInTable();
        const claimed = await inClaim((session) => session.claim(limit, budget));
        const inLimit = rows.slice(0, limit);
        expect(claimed.map((m) => m.id)).toEqual(
          inLimit
            .slice(
              0,
              expectedCount(
                inLimit.map((r) => r.bytes),
                budget,
              ),
            )
            .map((r) => r.id),
        );
        expect(claimed.map((m) => m.claimBytes)).toEqual(rows.slice(0, claimed.length).map((r) => r.bytes));
        const byId = [...rows].sort((a, b) => Number(a.id) - Number(b.id));
        const picked = await inClaim((session) => session.claimIds(byId.map((r) => r.id).reverse(), budget));
        expect(picked.map((m) => m.id)).toEqual(
          byId
            .slice(
              0,
              expectedCount(
                byId.map((r) => r.bytes),
                budget,
              ),
            )
            .map((r) => r.id),
        );
      },
    ),
    { numRuns: 40 },
  );
});

test('a relay drains messages larger than its budget, each key in order', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('large');
  await fx.pool.query(
    `INSERT INTO ${fx.table} (exchange, routing_key, partition_key, payload)
     SELECT $1, 'r', 'k' || (g % 2), jsonb_build_object('g', g, 'pad', repeat('y', 700000)) FROM generate_series(1, 12) AS g`,
    [exchange],
  );
  await fx.startRelay({ OUTBOX_BATCH_BYTES: '1MiB' });
  await waitFor('the 12 messages', () => received.length === 12, 30_000);
  const order = (bodies(received) as { g: number }[]).map((b) => b.g);
  for (const parity of [0, 1]) {
    const ofKey = order.filter((g) => g % 2 === parity);
    expect(ofKey).toEqual([...ofKey].sort((a, b) => a - b));
  }
});
