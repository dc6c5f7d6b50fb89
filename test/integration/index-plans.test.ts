import type { Pool } from 'pg';
import { DeadStore } from '../../src/outbox/dead-store';
import { InspectStore } from '../../src/outbox/inspect-store';
import { relayStatements } from '../../src/outbox/relay-statements';
import { OutboxFixture } from '../kit/outbox-fixture';

/**
 * The statements that find messages by their due time or their key read the pending
 * indexes, and read as many rows as they return, however long a key's backlog: checked
 * with EXPLAIN ANALYZE on a table with a hot key, so that a planner's change of mind
 * (or a statement written differently) shows here and not in production.
 */
const fx = OutboxFixture.forFile('index_plans', { afterEach: 'keep relays' });

interface PlanNode {
  'Node Type': string;
  'Index Name'?: string;
  'Actual Rows': number;
  'Actual Loops': number;
  Plans?: PlanNode[];
}

function nodes(plan: PlanNode): PlanNode[] {
  return [plan, ...(plan.Plans ?? []).flatMap(nodes)];
}

/** The plan of `text` with `values`, run (and rolled back) on `pool`. */
async function plan(pool: Pool, text: string, values: unknown[]): Promise<PlanNode[]> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const { rows } = await client.query<{ 'QUERY PLAN': [{ Plan: PlanNode }] }>(`EXPLAIN (ANALYZE, FORMAT JSON) ${text}`, values);
    return nodes(rows[0]!['QUERY PLAN'][0].Plan);
  } finally {
    await client.query('ROLLBACK');
    client.release();
  }
}

/** Rows read from `index` by all the scans of it in `all`. */
function readFrom(all: readonly PlanNode[], index: string): number {
  return all.filter((n) => n['Index Name'] === index).reduce((sum, n) => sum + n['Actual Rows'] * n['Actual Loops'], 0);
}

beforeAll(async () => {
  // 30,000 published, 20,000 pending: a hot key of 10,000, 100 keys of 50, 5,000 without a key.
  await fx.pool.query(
    `INSERT INTO ${fx.table} (routing_key, payload, partition_key, published_at)
     SELECT 'r', '{}', CASE WHEN g <= 10000 THEN 'hot' WHEN g <= 15000 THEN 'key-' || (g % 100) END,
            CASE WHEN g > 20000 THEN now() END
       FROM generate_series(1, 50000) AS g`,
  );
  await fx.pool.query(`VACUUM ANALYZE ${fx.table}`);
});

const KEY_INDEX = 'messages_pending_key_idx';
const DUE_INDEX = 'messages_pending_due_idx';

test("the ordering read of a key reads its first rows through the key index, not the key's backlog", async () => {
  const { keyRows } = relayStatements(fx.schema);
  const all = await plan(fx.pool, keyRows.text, [['hot', 'key-1'], ['1000000', '1000000'], [11, 11], true]);
  expect(all.map((n) => n['Node Type'])).not.toContain('Sort');
  expect(all.map((n) => n['Node Type'])).not.toContain('Seq Scan');
  expect(readFrom(all, KEY_INDEX)).toBe(22);
});

test('the claim and the peek read the due index; the claim reads no further than its byte budget', async () => {
  const { claim, peek } = relayStatements(fx.schema);
  const claimed = await plan(fx.pool, claim.text, [100, 8_388_608]);
  expect(claimed.map((n) => n['Node Type'])).not.toContain('Sort');
  expect(readFrom(claimed, DUE_INDEX)).toBe(100);
  // A budget of 40 bytes holds 10 of these rows ({} and {}): the scan stops a few rows after them.
  const withinBudget = await plan(fx.pool, claim.text, [100, 40]);
  expect(withinBudget[0]?.['Actual Rows']).toBe(10);
  expect(readFrom(withinBudget, DUE_INDEX)).toBeLessThanOrEqual(13);
  const peeked = await plan(fx.pool, peek.text, []);
  expect(peeked.find((n) => n['Index Name'] === DUE_INDEX)?.['Node Type']).toBe('Index Only Scan');
});

test("inspect's messages ahead and the unparking of a retried key use the key index", async () => {
  const statements: { text: string; values: unknown[] }[] = [];
  const capture = {
    query: (text: string | { text: string; values?: unknown[] }, values?: unknown[]) => {
      statements.push(typeof text === 'string' ? { text, values: values ?? [] } : { text: text.text, values: text.values ?? [] });
      return Promise.resolve({ rows: [], rowCount: 0 });
    },
  };
  const inspectStore = new InspectStore(fx.schema) as unknown as {
    keyAhead(db: unknown, key: string, id: string, options: { deadHoldsKey: boolean; firstAhead: number }): Promise<unknown>;
  };
  const deadStore = new DeadStore(fx.schema) as unknown as { retryDead(db: unknown, ids: readonly string[]): Promise<unknown> };
  await inspectStore.keyAhead(capture, 'hot', '9000', { deadHoldsKey: true, firstAhead: 5 });
  await deadStore.retryDead(capture, ['00000000-0000-4000-8000-000000000000']);
  const [count, first, retry] = statements;
  expect(readFrom(await plan(fx.pool, count!.text, count!.values), KEY_INDEX)).toBe(8_999);
  const firstPlan = await plan(fx.pool, first!.text, first!.values);
  expect(firstPlan.map((n) => n['Node Type'])).not.toContain('Sort');
  expect(readFrom(firstPlan, KEY_INDEX)).toBe(5);
  const retryPlan = await plan(fx.pool, retry!.text, retry!.values);
  expect(retryPlan.map((n) => n['Node Type'])).not.toContain('Seq Scan');
});
