import type { ConsumeMessage } from 'amqplib';
import fc from 'fast-check';
import { normaliseArguments } from '../../src/commands/replay';
import { buildIfMissing, cli, envFor, expectOneLineFailure, lines } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { RelayProcess } from '../kit/relay-process';
import { TestBroker } from '../kit/test-broker';
import { uniqueName } from '../kit/unique-name';
import { staysFalse, waitFor } from '../kit/wait';

beforeAll(() => buildIfMissing());

const fx = OutboxFixture.forFile('cli_replay', { afterEach: 'reset' });
const broker = TestBroker.forFile();
const SINCE = '2000-01-01';
// The fixture's reset deletes the messages; each test's replays are its own too.
afterEach(() => fx.pool.query(`DELETE FROM "${fx.schema}".audit`));

const isReplay = (m: ConsumeMessage): boolean => m.properties.headers?.['x-outbox-replay'] === true;
const payload = (m: ConsumeMessage): { n: number; key?: string; seq?: number } =>
  JSON.parse(m.content.toString('utf8')) as { n: number; key?: string; seq?: number };

/** Marks every row published, as a relay would have (the replay reads published rows only). */
async function markAllPublished(): Promise<void> {
  await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE published_at IS NULL`);
}

async function auditRows(): Promise<
  { id: string; count: number; cursor: string | null; finished: boolean; arguments: Record<string, unknown> }[]
> {
  const { rows } = await fx.pool.query<{
    id: string;
    count: string;
    cursor: string | null;
    finished: boolean;
    arguments: Record<string, unknown>;
  }>(
    `SELECT id::text, count::text, replay_cursor::text AS cursor, finished_at IS NOT NULL AS finished, arguments
       FROM "${fx.schema}".audit WHERE command = 'replay' ORDER BY id`,
  );
  return rows.map((r) => ({ ...r, count: Number(r.count) }));
}

/** Per key, whether the `seq` of `messages` (first arrivals) runs 1, 2, 3 … with nothing missing or twice. */
function perKeySequences(messages: readonly ConsumeMessage[]): Map<string, number[]> {
  const byKey = new Map<string, number[]>();
  for (const m of messages) {
    const { key, seq } = payload(m);
    if (key === undefined || seq === undefined) continue;
    byKey.set(key, [...(byKey.get(key) ?? []), seq]);
  }
  return byKey;
}

test('two relays running and new messages flowing: each key replayed once, in its original order, with the original properties and x-outbox-replay', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_order');
  const COUNT = 2_000;
  const KEYS = 7;
  await fx.insertBacklog({ count: COUNT, exchange, routingKey: 'backlog', keys: KEYS });
  await Promise.all([fx.startRelay(), fx.startRelay()]);
  await waitFor('the backlog published by the two relays', () => received.length >= COUNT);
  const originals = new Map(received.map((m) => [m.properties.messageId as string, m]));
  expect(originals.size).toBe(COUNT);

  // New messages keep flowing through the relays while the replay runs.
  let live = 0;
  let flowing = true;
  const flow = (async () => {
    while (flowing) {
      await fx.insert(
        Array.from({ length: 5 }, (_, i) => ({ exchange, routing_key: 'live', partition_key: `live${i}`, payload: { n: (live += 1) } })),
      );
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
  })();
  const replay = await cli(['replay', '--since', SINCE, '--routing-key', 'backlog', '--rate', '2500'], envFor(fx.schema));
  flowing = false;
  await flow;
  expect(replay).toMatchObject({ code: 0 });
  expect(lines(replay.stdout).at(-1)).toMatch(/^replayed 2,000 messages \([\d,]+ per second\) as replay #\d+$/);

  await waitFor('every replayed message', () => received.filter(isReplay).length >= COUNT);
  await waitFor('the live messages published by the relays', async () => (await fx.counts()).pending === 0);
  const replayed = received.filter(isReplay);
  expect(replayed).toHaveLength(COUNT);
  expect(new Set(replayed.map((m) => m.properties.messageId as string))).toEqual(new Set(originals.keys()));
  const sequences = perKeySequences(replayed);
  expect(sequences.size).toBe(KEYS);
  for (const seqs of sequences.values()) expect(seqs).toEqual(seqs.map((_, i) => i + 1));
  for (const copy of replayed) {
    const original = originals.get(copy.properties.messageId as string) as ConsumeMessage;
    const { ['x-outbox-replay']: flag, ...headers } = copy.properties.headers ?? {};
    expect(flag).toBe(true);
    // The key and the position a consumer keeps order by come with the copy too.
    expect(Object.keys(headers)).toEqual(expect.arrayContaining(['x-outbox-partition-key', 'x-outbox-position']));
    expect({ ...copy.properties, headers }).toEqual(original.properties);
    expect(copy.content.equals(original.content)).toBe(true);
    expect(copy.fields.routingKey).toBe('backlog');
  }
  // The relays went on publishing the new ones, none of them replayed.
  const liveArrived = received.filter((m) => m.fields.routingKey === 'live');
  expect(liveArrived.length).toBe(live);
  expect(liveArrived.some(isReplay)).toBe(false);
  const [entry] = await auditRows();
  expect(entry).toMatchObject({ count: COUNT, finished: true });
});

test('filters by type, exchange, routing key and partition key, and ids, combine', async () => {
  const a = await broker.exchangeWithQueue('replay_fa');
  const b = await broker.exchangeWithQueue('replay_fb');
  const rows = [
    { exchange: a.exchange, routing_key: 'r1', message_type: 't1', partition_key: 'k1', payload: { n: 1 } },
    { exchange: a.exchange, routing_key: 'r2', message_type: 't2', partition_key: 'k1', payload: { n: 2 } },
    { exchange: a.exchange, routing_key: 'r1', message_type: 't1', partition_key: 'k2', payload: { n: 3 } },
    { exchange: b.exchange, routing_key: 'r1', message_type: 't1', partition_key: 'k1', payload: { n: 4 } },
    { exchange: b.exchange, routing_key: 'r2', message_type: 't2', partition_key: null, payload: { n: 5 } },
  ];
  const ids = await fx.insert(rows);
  await fx.insert([{ exchange: a.exchange, routing_key: 'r1', message_type: 't1', payload: { n: 6 } }]); // never published
  await fx.pool.query(`UPDATE ${fx.table} SET published_at = now() WHERE message_id = ANY($1::uuid[])`, [ids]);

  const run = async (args: string[]): Promise<number[]> => {
    a.received.length = 0;
    b.received.length = 0;
    const result = await cli(['replay', ...args, '--rate', 'unlimited', '--json'], envFor(fx.schema));
    if (result.code !== 0) throw new Error(`replay ${args.join(' ')}: exit ${result.code}: ${result.stderr}`);
    const report = JSON.parse(lines(result.stdout).at(-1) as string) as { replayed: number };
    await waitFor(`${report.replayed} replayed messages`, () => a.received.length + b.received.length >= report.replayed);
    return [...a.received, ...b.received].map((m) => payload(m).n).sort();
  };
  expect(await run(['--since', SINCE])).toEqual([1, 2, 3, 4, 5]);
  expect(await run(['--since', SINCE, '--type', 't1'])).toEqual([1, 3, 4]);
  expect(await run(['--since', SINCE, '--exchange', a.exchange])).toEqual([1, 2, 3]);
  expect(await run(['--since', SINCE, '--key', 'k1', '--type', 't1'])).toEqual([1, 4]);
  expect(await run(['--since', SINCE, '--routing-key', 'r2'])).toEqual([2, 5]);
  expect(await run(['--since', SINCE, '--until', '2001-01-01'])).toEqual([]);
  expect(await run([ids[4] as string, (ids[1] as string).toUpperCase()])).toEqual([2, 5]);
  expect(await run([ids[0] as string, ids[3] as string, '--exchange', b.exchange])).toEqual([4]);
  const entries = await auditRows();
  expect(entries).toHaveLength(8);
  expect(entries.every((e) => e.finished)).toBe(true);
  expect(entries[6]?.arguments).toMatchObject({ ids: [ids[1], ids[4]].sort(), since: null });

  // A message that is not published (or no longer kept): nothing is sent, exit 1 naming it.
  const pending = (await fx.pool.query<{ message_id: string }>(`SELECT message_id FROM ${fx.table} WHERE published_at IS NULL`)).rows[0]!
    .message_id;
  const notPublished = await cli(['replay', ids[0] as string, pending], envFor(fx.schema));
  expect(expectOneLineFailure(notPublished, 1)).toContain(pending);
});

test('an event a named exchange routes to no queue counts as replayed, as the relay counts it', async () => {
  const exchange = await broker.exchange(uniqueName('replay_nobody'));
  await fx.insert([
    { exchange, routing_key: 'nobody.listens', payload: { n: 1 } },
    { exchange, routing_key: 'nobody.listens', payload: { n: 2 } },
  ]);
  await markAllPublished();
  const result = await cli(['replay', '--since', SINCE, '--rate', 'unlimited'], envFor(fx.schema));
  expect(result).toMatchObject({ code: 0, stderr: '' });
  const [entry] = await auditRows();
  expect(entry).toMatchObject({ count: 2, finished: true });
});

test('a destination that does not exist (a deleted exchange, a command to no queue): its messages are left out, the rest replayed; the printed command replays them once it exists', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_kept');
  const gone = uniqueName('replay_deleted_exchange');
  const queue = await broker.declareQueue(uniqueName('replay_cmd'));
  const commands: ConsumeMessage[] = [];
  await broker.consume(queue, (m) => commands.push(m));
  const noQueue = uniqueName('replay_no_such_queue');
  await fx.insert([
    { exchange, routing_key: 'k', payload: { n: 1 } },
    { exchange: gone, routing_key: 'k', payload: { n: 2 } },
    { routing_key: noQueue, payload: { n: 3 } },
    { routing_key: queue, payload: { n: 4 } },
    { exchange: gone, routing_key: 'k', payload: { n: 5 } },
    { exchange, routing_key: 'k', payload: { n: 6 } },
  ]);
  await markAllPublished();
  const result = await cli(['replay', '--since', SINCE, '--rate', 'unlimited'], envFor(fx.schema));
  const line = expectOneLineFailure(result, 1);
  expect(line).toContain('finished but left out 3 of 6 messages, whose destination does not exist: ');
  expect(line).toContain(`exchange "${gone}" (2), queue "${noQueue}" (1)`);
  await waitFor('the rest replayed', () => received.length === 2 && commands.length === 1);
  expect(received.map((m) => payload(m).n)).toEqual([1, 6]);
  const [entry] = await auditRows();
  expect(entry).toMatchObject({
    count: 3,
    finished: true,
    arguments: { leftOut: { count: 3, exchanges: { [gone]: 2 }, queues: { [noQueue]: 1 } } },
  });

  // The way forward it prints is true: once the exchange exists, that command replays exactly its messages.
  const command = new RegExp(`(outbox-relay replay [^;]*--exchange ${gone})`).exec(line)?.[1];
  expect(command).toBeDefined();
  const arrived = await broker.queue(uniqueName('replay_revived_q'), { exchange: await broker.exchange(gone), pattern: '#' });
  const again = await cli(command!.split(' ').slice(1), envFor(fx.schema));
  expect(again).toMatchObject({ code: 0, stderr: '' });
  await waitFor('the left-out messages replayed', () => arrived.length === 2);
  expect(arrived.map((m) => payload(m).n)).toEqual([2, 5]);
});

test('a message the broker or AMQP cannot take (headers over 64 KiB) is left out for good, the rest replayed, the entry finished', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_unencodable');
  await fx.insert([
    { exchange, routing_key: 'k', payload: { n: 1 } },
    { exchange, routing_key: 'k', payload: { n: 2 }, headers: { 'x-big': 'h'.repeat(70_000) } },
    { exchange, routing_key: 'k', payload: { n: 3 } },
  ]);
  await markAllPublished();
  const result = await cli(['replay', '--since', SINCE, '--rate', 'unlimited'], envFor(fx.schema));
  expect(expectOneLineFailure(result, 1)).toContain(
    'finished but left out 1 of 3 messages, that the broker cannot take (invalid_message 1',
  );
  await waitFor('the others replayed', () => received.length === 2);
  expect(received.map((m) => payload(m).n)).toEqual([1, 3]);
  const [entry] = await auditRows();
  expect(entry).toMatchObject({ count: 2, finished: true, arguments: { leftOut: { count: 1, unpublishable: { invalid_message: 1 } } } });
});

test('whatever destinations exist: exactly the messages of existing ones arrive, once each and in order, the others are counted per destination (property)', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_prop');
  const gone = uniqueName('replay_prop_gone');
  const queue = await broker.declareQueue(uniqueName('replay_prop_cmd'));
  const commands: ConsumeMessage[] = [];
  await broker.consume(queue, (m) => commands.push(m));
  const noQueue = uniqueName('replay_prop_noq');
  const kinds = ['event', 'event to a missing exchange', 'command', 'command to a missing queue'] as const;
  await fc.assert(
    fc.asyncProperty(fc.array(fc.constantFrom(...kinds), { minLength: 1, maxLength: 40 }), async (plan) => {
      received.length = 0;
      commands.length = 0;
      await fx.reset();
      await fx.pool.query(`DELETE FROM "${fx.schema}".audit`);
      const target = (kind: (typeof kinds)[number]): { exchange?: string; routing_key: string } =>
        kind === 'event'
          ? { exchange, routing_key: 'k' }
          : kind === 'event to a missing exchange'
            ? { exchange: gone, routing_key: 'k' }
            : { routing_key: kind === 'command' ? queue : noQueue };
      await fx.insert(plan.map((kind, n) => ({ ...target(kind), payload: { n } })));
      await markAllPublished();
      const result = await cli(['replay', '--since', SINCE, '--rate', 'unlimited', '--json'], envFor(fx.schema));
      const expectIndexes = (kind: (typeof kinds)[number]): number[] => plan.flatMap((k, n) => (k === kind ? [n] : []));
      const missingExchange = expectIndexes('event to a missing exchange').length;
      const missingQueue = expectIndexes('command to a missing queue').length;
      expect(result.code).toBe(missingExchange + missingQueue > 0 ? 1 : 0);
      const report = JSON.parse(lines(result.stdout)[0]!) as { replayed: number; leftOut: { count: number } };
      expect(report).toMatchObject({
        replayed: plan.length - missingExchange - missingQueue,
        leftOut: { count: missingExchange + missingQueue },
      });
      await waitFor('the replayed messages', () => received.length + commands.length === report.replayed);
      await new Promise((resolve) => setTimeout(resolve, 100));
      expect(received.map((m) => payload(m).n)).toEqual(expectIndexes('event'));
      expect(commands.map((m) => payload(m).n)).toEqual(expectIndexes('command'));
      const [entry] = await auditRows();
      expect(entry).toMatchObject({ finished: true, count: report.replayed });
    }),
    { numRuns: 6 },
  );
}, 180_000);

test('two identical replays started at once: one runs, the others exit 1 naming it; every message once', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_twice');
  const COUNT = 200;
  await fx.insertBacklog({ count: COUNT, exchange, routingKey: 'twice', keys: 4 });
  await markAllPublished();
  // 4 s at 50 per second: the three processes surely start while the first runs.
  const args = ['replay', '--since', SINCE, '--exchange', exchange, '--rate', '50'];
  const results = await Promise.all([1, 2, 3].map(() => cli(args, envFor(fx.schema))));
  const ran = results.filter((r) => r.code === 0);
  expect(ran).toHaveLength(1);
  for (const refused of results.filter((r) => r.code !== 0)) {
    expect(expectOneLineFailure(refused, 1)).toMatch(/the same replay( \(#\d+\))? is running in another process right now/);
  }
  await waitFor('every message replayed', () => received.length >= COUNT);
  await new Promise((resolve) => setTimeout(resolve, 300));
  expect(received).toHaveLength(COUNT);
  expect(await auditRows()).toHaveLength(1);
});

test('the lock of a running replay is transaction-level (no session lock, as a transaction-pooling PgBouncer needs), and holds back no vacuum', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_lock');
  await fx.insertBacklog({ count: 150, exchange, routingKey: 'lock', keys: 2 });
  await markAllPublished();
  const replay = await RelayProcess.start(envFor(fx.schema), ['replay', '--since', SINCE, '--exchange', exchange, '--rate', '50']);
  try {
    await waitFor('the replay under way', () => received.length >= 10);
    // The replay's advisory lock (first key "obxr", second the hash of its selection): whose, and in what state.
    const selection = `replay:${fx.schema}:${JSON.stringify(normaliseArguments([], { since: SINCE, exchange }))}`;
    const { rows } = await fx.pool.query<{
      state: string;
      in_transaction: boolean;
      backend_xid: string | null;
      backend_xmin: string | null;
    }>(
      `SELECT a.state, a.xact_start IS NOT NULL AS in_transaction, a.backend_xid::text, a.backend_xmin::text
         FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid = $1::bigint::oid
          AND l.objid = ((hashtext($2)::bigint + 4294967296) % 4294967296)::oid`,
      [0x6f627872, selection],
    );
    expect(rows).toHaveLength(1);
    for (const row of rows) expect(row).toMatchObject({ in_transaction: true, backend_xid: null, backend_xmin: null });
  } finally {
    replay.kill('SIGINT');
    await replay.exited;
  }
});

test('--dry-run prints how many and the first ids, publishes nothing and records nothing', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_dry');
  await fx.insertBacklog({ count: 30, exchange, routingKey: 'dry', keys: 3 });
  await markAllPublished();
  const { rows } = await fx.pool.query<{ message_id: string }>(`SELECT message_id FROM ${fx.table} ORDER BY id LIMIT 20`);
  const result = await cli(['replay', '--since', SINCE, '--dry-run'], envFor(fx.schema));
  expect(result).toMatchObject({ code: 0, stderr: '' });
  const out = lines(result.stdout);
  expect(out[0]).toMatch(/^would replay 30 messages \(created from 2000-01-01T00:00:00.000Z until /);
  expect(out.slice(2).map((l) => l.trim().split(/\s+/)[0])).toEqual(rows.map((r) => r.message_id));
  const json = await cli(['replay', '--since', SINCE, '--key', 'key1', '--dry-run', '--json'], envFor(fx.schema));
  expect(JSON.parse(json.stdout)).toMatchObject({ count: 10, resumes: null });
  await staysFalse('a message published by a dry run', () => received.length > 0, 500);
  expect(await auditRows()).toEqual([]);
});

test('killed with SIGKILL mid-way and run again: it resumes, nothing is lost, per-key order holds, at most the chunk in flight twice', async () => {
  const { exchange, received } = await broker.exchangeWithQueue('replay_kill');
  const COUNT = 300;
  await fx.insertBacklog({ count: COUNT, exchange, routingKey: 'kill', keys: 3 });
  await markAllPublished();
  const args = ['replay', '--since', SINCE, '--exchange', exchange];
  // 50 per second: chunks of 10, so the kill lands in the middle.
  const first = await RelayProcess.start(envFor(fx.schema), [...args, '--rate', '50']);
  await waitFor('some messages replayed', () => received.length >= 60);
  first.kill('SIGKILL');
  await first.exited;
  const [interrupted] = await auditRows();
  expect(interrupted).toMatchObject({ finished: false });
  expect(interrupted!.count).toBeGreaterThanOrEqual(50);
  expect(interrupted!.count).toBeLessThan(COUNT);

  const again = await cli([...args, '--rate', 'unlimited'], envFor(fx.schema));
  expect(again).toMatchObject({ code: 0 });
  expect(lines(again.stdout)[0]).toMatch(new RegExp(`^resuming replay #${interrupted!.id} after [\\d,]+ of 300 messages`));
  await waitFor('every message replayed', () => new Set(received.map((m) => m.properties.messageId as string)).size >= COUNT);
  await new Promise((resolve) => setTimeout(resolve, 200));

  const firsts = new Map<string, ConsumeMessage>();
  for (const m of received) if (!firsts.has(m.properties.messageId as string)) firsts.set(m.properties.messageId as string, m);
  expect(firsts.size).toBe(COUNT);
  expect(received.every(isReplay)).toBe(true);
  for (const seqs of perKeySequences([...firsts.values()]).values()) expect(seqs).toEqual(seqs.map((_, i) => i + 1));
  expect(received.length - COUNT).toBeLessThanOrEqual(10);
  const entries = await auditRows();
  expect(entries).toHaveLength(1);
  expect(entries[0]).toMatchObject({ id: interrupted!.id, count: COUNT, finished: true });
});

test.each([
  [[], 'give --since'],
  [['--since', SINCE, '6f1c1c38-8a55-4d4f-a0a8-30b2c1f1e6a1'], 'not both'],
  [['--since', 'tuesday'], '--since'],
  [['--since', SINCE, '--until', '2000-13-45'], '--until'],
  [['--since', '2001-01-01', '--until', SINCE], '--until'],
  [['--until', SINCE], '--until'],
  [['--since', SINCE, '--rate', '0'], '--rate'],
  [['--since', SINCE, '--rate', 'fast'], '--rate'],
  [['not-a-uuid'], 'not-a-uuid'],
])('replay %j: exit 2, one line naming %s', async (args, named) => {
  const result = await cli(['replay', ...args], envFor(fx.schema));
  expect(expectOneLineFailure(result, 2)).toContain(named);
  expect(result.stdout).toBe('');
});

test('run again, it resumes the newest unfinished replay of its arguments, also among 10 and more (ids compared as numbers)', async () => {
  await fx.insert([{ routing_key: 'q', payload: { n: 1 } }]);
  await markAllPublished();
  const args = ['replay', '--since', SINCE, '--type', 'none.such'];
  const fresh = await cli([...args, '--dry-run', '--json'], envFor(fx.schema));
  const { selection } = JSON.parse(fresh.stdout) as { selection: Record<string, unknown> };
  // Entries #1 … #16 of the same replay, all unfinished: as text, "9" would sort after "16".
  const { rows } = await fx.pool.query<{ id: string }>(
    `INSERT INTO "${fx.schema}".audit (command, arguments, count)
     SELECT 'replay', $1::jsonb, n FROM generate_series(1, 16) AS n RETURNING id::text AS id`,
    [JSON.stringify(selection)],
  );
  const newest = rows.map((r) => BigInt(r.id)).reduce((a, b) => (a > b ? a : b));
  const again = await cli([...args, '--dry-run', '--json'], envFor(fx.schema));
  expect(JSON.parse(again.stdout)).toMatchObject({ resumes: String(newest) });
});
