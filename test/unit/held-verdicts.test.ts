import { heldNote } from '../../src/domain/held-note';
import type { OutboxMessage } from '../../src/domain/message';
import type { PublishOutcome } from '../../src/domain/outcome';
import { HeldDestinations } from '../../src/relay/held-destinations';
import { HORIZON_MIN_MS, PROBE_FIRST_MS } from '../../src/relay/probe-schedule';
import { sendBatch } from '../../src/relay/send';
import { decideVerdicts, marksOf, type VerdictSettings } from '../../src/relay/verdicts';
import { fakeMessage } from './fake-message';
import { FakeBroker } from './relay-fakes';

const SETTINGS: VerdictSettings = { maxAttempts: 3, unroutable: 'publish', orderingOnDead: 'skip' };
const backoff = { delayMs: (n: number) => n * 100 };
const NOW = 1_800_000_000_000;
const REFUSED: PublishOutcome = { kind: 'refused' };
const OK: PublishOutcome = { kind: 'confirmed' };
const NOTE_A = heldNote({ exchange: 'orders', routingKey: 'a' });

const to = (routingKey: string, overrides: Partial<OutboxMessage> = {}): OutboxMessage =>
  fakeMessage({ exchange: 'orders', routingKey, ...overrides });

describe('verdicts of refused messages (negative confirms)', () => {
  test('no attempt, no failure: the message waits for its destination, its key behind it; the rest of the batch flows', () => {
    const holds = new HeldDestinations();
    const batch = [
      to('a', { partitionKey: 'k', attempts: 2 }),
      to('a', { partitionKey: 'k' }),
      to('b', { partitionKey: 'k' }),
      to('b'),
      to('a'),
    ];
    const outcomes = [REFUSED, OK, OK, OK, REFUSED];
    holds.record(batch, outcomes, NOW - 5, NOW);
    const verdicts = decideVerdicts(batch, outcomes, SETTINGS, backoff, false, NOW, holds);
    expect(verdicts.map((v) => v.kind)).toEqual(['refused', 'parked', 'parked', 'published', 'refused']);
    const marks = marksOf(batch, verdicts);
    expect(marks.failed).toEqual([]);
    expect(marks.published).toEqual([batch[3]!.id]);
    // The first refused waits for the next probe; everything else for the hold's horizon,
    // spread after it by id (from the first refused one), all with its note.
    const spreadFromId = batch[0]!.id;
    expect(marks.hold).toEqual([
      { id: batch[0]!.id, at: new Date(NOW + PROBE_FIRST_MS), note: NOTE_A },
      { id: batch[1]!.id, at: new Date(NOW + HORIZON_MIN_MS), note: NOTE_A, spreadFromId },
      { id: batch[2]!.id, at: new Date(NOW + HORIZON_MIN_MS), note: NOTE_A, spreadFromId },
      { id: batch[4]!.id, at: new Date(NOW + HORIZON_MIN_MS), note: NOTE_A, spreadFromId },
    ]);
    expect(marks.park).toEqual([]);
    // Even the last allowed attempt does not make it dead: a refusal is not an attempt.
    expect(marks.failed.some((f) => f.dead)).toBe(false);
  });

  test('a message kept back for a held destination (not sent) waits the same way; one whose destination flowed meanwhile is claimed again', () => {
    const holds = new HeldDestinations();
    holds.record([to('a')], [REFUSED], NOW - 10, NOW - 10);
    const waiting = to('a');
    const verdicts = decideVerdicts([waiting], [{ kind: 'destination_held' }], SETTINGS, backoff, false, NOW, holds);
    expect(verdicts).toEqual([{ kind: 'waiting', at: new Date(NOW - 10 + PROBE_FIRST_MS), note: NOTE_A }]);
    const probe = to('a');
    holds.admit(probe, NOW + 100);
    holds.record([probe], [OK], NOW + 100, NOW + 101);
    expect(decideVerdicts([to('a')], [{ kind: 'destination_held' }], SETTINGS, backoff, false, NOW + 102, holds)).toEqual([
      { kind: 'kept_back', cause: 'not_sent' },
    ]);
  });

  test('expires_at still applies: the later messages of its key wait no longer than it can', () => {
    const holds = new HeldDestinations();
    const expiring = to('a', { partitionKey: 'k', expiresAt: NOW + 2_000 });
    const behind = to('b', { partitionKey: 'k' });
    holds.record([expiring], [REFUSED], NOW, NOW);
    const marks = marksOf([expiring, behind], decideVerdicts([expiring, behind], [REFUSED, OK], SETTINGS, backoff, false, NOW, holds));
    // Its own row: the database keeps it no later than its expires_at (outbox/held-rows.ts).
    expect(marks.hold).toEqual([
      { id: expiring.id, at: new Date(NOW + PROBE_FIRST_MS), note: NOTE_A },
      { id: behind.id, at: new Date(NOW + 2_000), note: NOTE_A, spreadFromId: expiring.id },
    ]);
  });

  test('without held destinations to ask, a refused message waits a first probe time and costs nothing', () => {
    const refused = to('a');
    const verdicts = decideVerdicts([refused], [REFUSED], SETTINGS, backoff, false, NOW);
    expect(verdicts).toEqual([{ kind: 'refused', at: new Date(NOW + PROBE_FIRST_MS), note: NOTE_A }]);
  });
});

describe('sending while a destination is held', () => {
  test('its messages are not sent but the probe; the probe goes alone in its key; other destinations are sent', async () => {
    const holds = new HeldDestinations();
    holds.record([to('a')], [REFUSED], Date.now() - 1_000, Date.now() - 1_000);
    const broker = new FakeBroker();
    const probe = to('a', { partitionKey: 'k' });
    const behindProbe = to('b', { partitionKey: 'k' });
    const waiting = to('a');
    const other = to('b');
    const otherExchange = to('a', { exchange: 'payments' });
    const outcomes = await sendBatch(broker, [probe, behindProbe, waiting, other, otherExchange], {
      timeoutMs: 1_000,
      signal: new AbortController().signal,
      gate: holds,
    });
    expect(outcomes.map((o) => o.kind)).toEqual(['confirmed', 'kept_back', 'destination_held', 'confirmed', 'confirmed']);
    expect(broker.sent.map((m) => m.id)).toEqual([probe.id, other.id, otherExchange.id]);
  });
});
