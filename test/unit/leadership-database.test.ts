import type { LeaderTerm, LockAttempt } from '../../src/domain/fleet';
import { createLogger } from '../../src/observability/logger';
import { Leadership, type LeadershipEvents } from '../../src/relay/leadership';
import type { LeasePort } from '../../src/relay/ports';
import { waitFor } from '../kit/wait';

// What a replica's readiness hears from its leadership about the database. A leader
// frozen past its lease (SIGSTOP) wakes to find its sessions ended by the standby that
// took over: its last batch fails, the loop reports the database down, and the replica
// stands by. From then on its leadership checks are its only statements, so they must
// report the database up again, or the woken replica stays not ready (/readyz 503,
// `database=down`) until it happens to lead again (found by `npm run chaos`: a frozen
// leader, thawed, was not ready at the end of the run).

const silent = createLogger({ level: 'silent', secrets: [] });

/** A lease port on which this replica wins the lock once, loses it when `loseLock()` is called, and then finds another leader. */
function fakePort(): { port: LeasePort; loseLock: () => void } {
  let loseLock: () => void = () => undefined;
  let won = false;
  const port: LeasePort = {
    tryLock: (): Promise<LockAttempt> => {
      if (!won) {
        won = true;
        return Promise.resolve({ won: true, lost: new Promise<void>((resolve) => (loseLock = resolve)) });
      }
      return Promise.resolve({ won: false, lease: { holder: 'other', epoch: '2', expired: false }, standbys: 1, rank: 0 });
    },
    releaseLock: () => Promise.resolve(),
    claim: (): Promise<LeaderTerm> => Promise.resolve({ epoch: '1', previous: null, previousLive: false }),
    renew: () => Promise.resolve({ renewed: true, outbox: { lagSeconds: null, dueMessageId: null } }),
    release: () => Promise.resolve(),
    fence: () => Promise.resolve(0),
    heartbeat: () => Promise.resolve(),
    unregister: () => Promise.resolve(),
    close: () => Promise.resolve(),
  };
  return { port, loseLock: () => loseLock() };
}

test('a leader that loses its lock and stands by reports the database up once its checks succeed', async () => {
  const { port, loseLock } = fakePort();
  const events: string[] = [];
  const record: LeadershipEvents = {
    onLead: () => events.push('lead'),
    onFollow: () => events.push('follow'),
    onDatabase: (up) => events.push(up ? 'database up' : 'database down'),
    onHeartbeat: () => undefined,
  };
  const leadership = new Leadership(port, 'me', record, silent);
  leadership.start();
  try {
    await waitFor('the lead', () => leadership.leading, 5_000);
    // Meanwhile the loop's batch failed on the ended session (RelayLoop: setDatabaseUp(false)).
    loseLock();
    await waitFor('standing by', () => events.includes('follow'), 5_000);
    const followedAt = events.lastIndexOf('follow');
    await waitFor('the database reported up after standing by', () => events.indexOf('database up', followedAt) > followedAt, 5_000);
    expect(leadership.leading).toBe(false);
  } finally {
    await leadership.stop();
  }
});
