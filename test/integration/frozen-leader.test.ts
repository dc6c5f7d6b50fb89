import { OutboxFixture } from '../kit/outbox-fixture';
import { endpointStatus } from '../kit/relay-http';
import type { RelayProcess } from '../kit/relay-process';
import { TestBroker } from '../kit/test-broker';
import { waitFor } from '../kit/wait';

// A leader frozen mid-drain (SIGSTOP: a paused VM, a node swapping, a debugger) past its
// lease: a standby ends its sessions and takes over; thawed, the old leader finds its
// batch cut off and stands by — and must be ready again, or its pod leaves the service's
// endpoints for as long as another replica leads (found by `npm run chaos`: the thawed
// relay answered /readyz 503 `database=down role=standby` until the end of the run).

const fx = OutboxFixture.forFile('frozen', { afterEach: 'reset' });
const broker = TestBroker.forFile();

/** The relay whose pid the running lease's holder registered, if one of `relays`. */
async function leader(relays: readonly RelayProcess[]): Promise<RelayProcess | undefined> {
  const { rows } = await fx.pool.query<{ pid: number }>(
    `SELECT r.pid FROM "${fx.schema}".relay_lease AS l
       JOIN "${fx.schema}".relay_replicas AS r ON r.replica_id = l.holder
      WHERE l.expires_at > now()`,
  );
  return relays.find((relay) => relay.pid === rows[0]?.pid);
}

test('a leader frozen past its lease mid-drain: another takes over, and thawed it is ready again as a standby', async () => {
  const total = 30_000;
  const { exchange, received } = await broker.exchangeWithQueue('frozen');
  await fx.insertBacklog({ count: total, exchange, routingKey: 'k' });
  const relays = await Promise.all([fx.spawnRelay(), fx.spawnRelay()]);
  await Promise.all(relays.map((relay) => relay.ready()));
  await waitFor('the leader to be publishing', () => received.length > 1_000, 30_000, 5);
  const frozen = await waitFor('a leader', () => leader(relays), 10_000);
  const other = relays.find((relay) => relay !== frozen)!;

  frozen.freeze();
  try {
    await waitFor('the standby to take over', async () => (await leader(relays)) === other, 20_000, 100);
  } finally {
    frozen.thaw();
  }
  await waitFor('the thawed relay ready again', async () => (await endpointStatus(frozen.port, '/readyz')) === 200, 10_000, 100);
  expect(await leader(relays)).toBe(other);

  await waitFor('every message published', async () => (await fx.counts()).published === total, 90_000);
  await waitFor('every message received', () => new Set(received.map((m) => m.properties.messageId as string)).size === total, 30_000);
  expect(await Promise.all(relays.map((relay) => endpointStatus(relay.port, '/readyz')))).toEqual([200, 200]);
}, 180_000);
