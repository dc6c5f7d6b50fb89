import type { ConsumeMessage } from 'amqplib';
import { cli, envFor } from '../kit/cli';
import { OutboxFixture } from '../kit/outbox-fixture';
import { PgBouncer } from '../kit/pgbouncer';
import type { RelayProcess } from '../kit/relay-process';
import { testDatabaseUrl } from '../kit/services';
import { TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';

/**
 * Behind a transaction-pooling PgBouncer (a server connection lent for one transaction
 * at a time), as many platforms front PostgreSQL: the claim, the marks, the replicas'
 * coordination and the CLI work, and nothing is logged as an error.
 */
const fx = OutboxFixture.forFile('bouncer', { afterEach: 'reset' });
const broker = TestBroker.forFile();
let bouncer: PgBouncer;

beforeAll(async () => {
  bouncer = await PgBouncer.start(testDatabaseUrl());
}, 30_000);
afterAll(async () => {
  await bouncer?.close();
});

function throughBouncer(overrides: Record<string, string> = {}): Record<string, string> {
  return { OUTBOX_DATABASE_URL: bouncer.url(testDatabaseUrl()), ...overrides };
}

/** Log lines of `relay` at warn or above, but the one expected LISTEN notice. */
function problems(relay: RelayProcess): Record<string, unknown>[] {
  return relay.logs().filter((l) => {
    if (l['level'] !== 'warn' && l['level'] !== 'error' && l['level'] !== 'fatal') return false;
    return !String(l['msg']).startsWith('LISTEN/NOTIFY does not reach this relay');
  });
}

function firstArrivalsInOrder(messages: readonly ConsumeMessage[]): { unique: number } {
  const seen = new Set<number>();
  const lastSeq = new Map<string, number>();
  for (const m of messages) {
    const body = JSON.parse(m.content.toString()) as { n: number; key: string; seq: number };
    if (seen.has(body.n)) continue;
    seen.add(body.n);
    const last = lastSeq.get(body.key) ?? 0;
    if (body.seq !== last + 1) throw new Error(`key ${body.key}: seq ${body.seq} arrived after ${last}`);
    lastSeq.set(body.key, body.seq);
  }
  return { unique: seen.size };
}

test('two replicas behind PgBouncer (transaction pooling): every message in per-key order, the lead moves on a kill -9 and a freeze, no error logged; LISTEN said once to be unavailable', async () => {
  const total = 8_000;
  const { exchange, received } = await broker.exchangeWithQueue('bouncer');
  const migrated = await cli(['migrate'], envFor(fx.schema, throughBouncer()));
  expect(migrated).toMatchObject({ code: 0, stderr: '' });
  await fx.insertBacklog({ count: total / 2, exchange, routingKey: 'k', keys: 50 });
  const relays = [await fx.spawnRelay(throughBouncer()), await fx.spawnRelay(throughBouncer())];
  await Promise.all(relays.map((r) => r.ready()));
  await waitFor('the first half received', () => firstArrivalsInOrder(received).unique === total / 2, 60_000);
  // Steady state: nothing at warn or above but the one LISTEN notice.
  for (const relay of relays) expect(problems(relay)).toEqual([]);

  // The lead moves when the leader freezes past its lease (its sessions are ended
  // through PgBouncer) and when it is killed.
  const leaderPid = async (): Promise<number | undefined> => {
    const { rows } = await fx.pool.query<{ pid: number }>(
      `SELECT r.pid FROM "${fx.schema}".relay_lease l JOIN "${fx.schema}".relay_replicas r ON r.replica_id = l.holder WHERE l.expires_at > now()`,
    );
    return rows[0]?.pid;
  };
  const first = await waitFor('a leader', leaderPid);
  const frozen = relays.find((r) => r.pid === first)!;
  const other = relays.find((r) => r !== frozen)!;
  frozen.kill('SIGSTOP');
  await waitFor('the other replica to lead', async () => (await leaderPid()) === other.pid, 20_000, 100);
  frozen.kill('SIGCONT');
  await waitFor('the woken one to stand by', () => frozen.logged('no longer leading: standing by'), 10_000);

  // Rows inserted with psql-like plain INSERTs while the lead moves again, by a kill.
  await fx.pool.query(
    `INSERT INTO "${fx.schema}".messages (exchange, routing_key, partition_key, payload)
     SELECT $1, 'k', 'key' || (1 + (g - 1) % 50), jsonb_build_object('n', g, 'key', 'key' || (1 + (g - 1) % 50), 'seq', (g - 1) / 50 + 1)
       FROM generate_series($2::int + 1, $2::int * 2) AS g ORDER BY g`,
    [exchange, total / 2],
  );
  other.kill('SIGKILL');
  await waitFor('every message received', () => firstArrivalsInOrder(received).unique === total, 60_000);
  expect(await fx.counts()).toMatchObject({ published: total, pending: 0, dead: 0, attempts: 0 });

  // status and check through PgBouncer.
  const status = await cli(['status'], envFor(fx.schema, throughBouncer()));
  expect(status).toMatchObject({ code: 0, stderr: '' });
  expect(status.stdout).toMatch(/^pending\s+0/m);
  const check = await cli(['check'], envFor(fx.schema, throughBouncer()));
  expect(check).toMatchObject({ code: 0, stderr: '' });

  // The lead moving is said at warn; nothing is an error.
  for (const relay of relays) expect(problems(relay).filter((l) => l['level'] === 'error' || l['level'] === 'fatal')).toEqual([]);
  const listenNotices = frozen.logs().filter((l) => String(l['msg']).startsWith('LISTEN/NOTIFY does not reach this relay'));
  expect(listenNotices.length).toBeLessThanOrEqual(1);
  expect(bouncer.lastLog()).not.toMatch(/prepared statement/);
}, 180_000);
