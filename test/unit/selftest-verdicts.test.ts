import fc from 'fast-check';
import { SELFTEST_HEADER, SELFTEST_MESSAGE_TYPE } from '../../src/domain/selftest-message';
import type { PublishOutcome } from '../../src/domain/outcome';
import { decideVerdicts, type VerdictSettings } from '../../src/relay/verdicts';
import { fakeMessage } from './fake-message';

// A self-test canary is never a dead message: an interrupted selftest leaves it behind,
// its temporary exchange gone, and the relay retries it until its expires_at, then it
// expires. A message that only looks like one (no expires_at) dies as any other.

const NOW = 1_000_000_000;
const backoff = { delayMs: (attempt: number) => 1_000 * 2 ** Math.min(attempt, 20) };
const missing: PublishOutcome = { kind: 'failed', reason: 'unknown_exchange', error: 'exchange "outbox-selftest-x" does not exist' };

test('a canary whose attempts run out is retried up to its expires_at, never dead; any other message is dead (property)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 20 }),
      fc.integer({ min: 0, max: 40 }),
      fc.integer({ min: 0, max: 120_000 }),
      fc.constantFrom<VerdictSettings['orderingOnDead']>('skip', 'block'),
      (maxAttempts, attempts, leftMs, orderingOnDead) => {
        const settings: VerdictSettings = { maxAttempts, unroutable: 'publish', orderingOnDead };
        const canary = fakeMessage({
          messageType: SELFTEST_MESSAGE_TYPE,
          headers: { [SELFTEST_HEADER]: true, 'x-outbox-selftest-nonce': 'n' },
          attempts,
          expiresAt: NOW + leftMs,
        });
        const event = fakeMessage({ attempts });
        const lookalike = fakeMessage({
          messageType: SELFTEST_MESSAGE_TYPE,
          headers: { [SELFTEST_HEADER]: true },
          attempts,
          expiresAt: null,
        });
        const [c, e, l] = decideVerdicts([canary, event, lookalike], [missing, missing, missing], settings, backoff, false, NOW);
        expect(c).toMatchObject({ kind: 'failed', dead: false });
        expect(c!.kind === 'failed' && c!.retryInMs).toBeLessThanOrEqual(leftMs);
        const runsOut = attempts + 1 >= maxAttempts;
        expect(e).toMatchObject({ kind: 'failed', dead: runsOut });
        expect(l).toMatchObject({ kind: 'failed', dead: runsOut });
      },
    ),
  );
});
