import fc from 'fast-check';
import { readMetrics } from '../kit/relay-http';
import { OutboxFixture } from '../kit/outbox-fixture';
import { TestBroker } from '../kit/test-broker';
import { staysFalse, waitFor } from '../kit/wait';

/**
 * A message expires at its expires_at however late it would otherwise be due: delayed to
 * 'infinity', parked behind a dead message, or retried after its expiry. It is then
 * claimed, marked expired and never sent — like any other expired message.
 */
const fx = OutboxFixture.forFile('expiry_due', { afterEach: 'reset' });
const broker = TestBroker.forFile();

/** Instants a row's columns take, as SQL relative to the moment of the insert. */
const AT = {
  past: `now() - interval '1 minute'`,
  soon: `now() + interval '1.5 seconds'`,
  later: `now() + interval '1 hour'`,
  infinity: `'infinity'::timestamptz`,
  '-infinity': `'-infinity'::timestamptz`,
} as const;
type At = keyof typeof AT;

interface Spec {
  readonly key: string | null;
  readonly available: At;
  readonly next: At | null;
  readonly expires: At | null;
}

/** Inserts the rows of `specs` (in order) to `exchange`, then makes the first row of each key in `deadKeys` dead. */
async function insert(exchange: string, specs: readonly Spec[], deadKeys: readonly string[] = []): Promise<void> {
  for (const [n, s] of specs.entries()) {
    await fx.pool.query(
      `INSERT INTO ${fx.table} (exchange, routing_key, partition_key, payload, available_at, next_attempt_at, attempts, expires_at)
       VALUES ($1, 'r', $2, jsonb_build_object('n', $3::int), ${AT[s.available]}, ${s.next ? AT[s.next] : 'NULL'},
               ${s.next && s.next !== 'infinity' ? 1 : 0}, ${s.expires ? AT[s.expires] : 'NULL'})`,
      [exchange, s.key, n],
    );
  }
  for (const key of deadKeys) {
    await fx.pool.query(
      `UPDATE ${fx.table} SET dead_at = now(), attempts = 10, last_error = 'dead'
        WHERE id = (SELECT min(id) FROM ${fx.table} WHERE partition_key = $1)`,
      [key],
    );
  }
}

/** Pending rows whose expires_at has passed: none once the relay has caught up. */
async function overdue(): Promise<number> {
  const { rows } = await fx.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM ${fx.table} WHERE published_at IS NULL AND dead_at IS NULL AND expires_at <= now()`,
  );
  return rows[0]!.n;
}

test('rows due after their expires_at expire at it: delayed to infinity, parked behind a dead message, retried too late', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('late');
  await insert(
    exchange,
    [
      { key: 'held', available: 'past', next: null, expires: null }, // made dead: holds key "held"
      { key: null, available: 'infinity', next: null, expires: 'soon' },
      { key: null, available: 'later', next: null, expires: 'soon' },
      { key: 'held', available: 'past', next: 'infinity', expires: 'soon' },
      { key: 'held', available: 'past', next: 'infinity', expires: null }, // stays parked
      { key: null, available: 'past', next: 'later', expires: 'soon' },
      { key: null, available: 'infinity', next: null, expires: '-infinity' },
      { key: null, available: '-infinity', next: 'infinity', expires: 'past' },
      { key: null, available: 'infinity', next: null, expires: null }, // stays delayed
    ],
    ['held'],
  );
  const { relay } = await fx.startRelay({ OUTBOX_ORDERING_ON_DEAD: 'block' });
  await waitFor('every row past its expires_at expired', async () => (await overdue()) === 0 && (await fx.counts()).dead === 7, 15_000);
  const { rows } = await fx.pool.query<{ n: number; state: string; attempts: number; last_error: string | null }>(
    `SELECT (payload->>'n')::int AS n, attempts, last_error,
            CASE WHEN expired_at IS NOT NULL THEN 'expired' WHEN dead_at IS NOT NULL THEN 'dead'
                 WHEN published_at IS NOT NULL THEN 'published' ELSE 'pending' END AS state
       FROM ${fx.table} ORDER BY id`,
  );
  expect(rows.map((r) => [r.n, r.state])).toEqual([
    [0, 'dead'],
    [1, 'expired'],
    [2, 'expired'],
    [3, 'expired'],
    [4, 'pending'],
    [5, 'expired'],
    [6, 'expired'],
    [7, 'expired'],
    [8, 'pending'],
  ]);
  // Expired as any other: attempts kept, the reason stored, counted; nothing sent.
  expect(rows.filter((r) => r.state === 'expired').map((r) => r.attempts)).toEqual([0, 0, 0, 1, 0, 0]);
  for (const r of rows.filter((x) => x.state === 'expired')) expect(r.last_error).toMatch(/^expired at .* before it could be published$/);
  await waitFor('the expired counter', async () => (await readMetrics(relay.port)).value('outbox_messages_expired_total') === 6);
  await staysFalse('a message sent', () => received.length > 0, 500);
});

/** Rows over every combination of due and expiry, with keys, some of them held by a dead message. */
const spec: fc.Arbitrary<Spec> = fc.record({
  key: fc.constantFrom(null, 'k1', 'k2', 'k3'),
  available: fc.constantFrom<At>('past', 'later', 'infinity', '-infinity'),
  next: fc.constantFrom<At | null>(null, 'past', 'later', 'infinity'),
  expires: fc.constantFrom<At | null>(null, 'past', 'soon', 'later', 'infinity', '-infinity'),
});

test('whatever makes a row due, it is published before its expires_at or expired at it, never stuck past it', async () => {
  await fc.assert(
    fc.asyncProperty(
      fc.array(spec, { minLength: 10, maxLength: 30 }),
      fc.subarray(['k1', 'k2', 'k3']),
      fc.constantFrom('skip', 'block'),
      async (specs, deadKeys, orderingOnDead) => {
        await fx.reset();
        const { exchange, received } = await broker.exchangeWithQueue('any');
        await insert(exchange, specs, deadKeys);
        await fx.startRelay({ OUTBOX_ORDERING_ON_DEAD: orderingOnDead });
        await new Promise((resolve) => setTimeout(resolve, 1_600));
        await waitFor('no pending row past its expires_at', async () => (await overdue()) === 0, 15_000);
        const { rows } = await fx.pool.query<{ n: number; sent_late: boolean; expired_early: boolean }>(
          `SELECT (payload->>'n')::int AS n,
                  published_at IS NOT NULL AND published_at >= expires_at AS sent_late,
                  expired_at IS NOT NULL AND expired_at < expires_at AS expired_early
             FROM ${fx.table}`,
        );
        expect(rows.filter((r) => r.sent_late || r.expired_early)).toEqual([]);
        const { rows: expired } = await fx.pool.query<{ n: number }>(
          `SELECT (payload->>'n')::int AS n FROM ${fx.table} WHERE expired_at IS NOT NULL`,
        );
        const sent = new Set(received.map((m) => (JSON.parse(m.content.toString()) as { n: number }).n));
        expect(expired.filter((r) => sent.has(r.n))).toEqual([]);
        await fx.stopRelays();
      },
    ),
    { numRuns: 4 },
  );
}, 120_000);
