import { heldDestinationOf, heldNote, HELD_NOTE_PREFIX, HOLD_SPREAD_MS } from '../../src/domain/held-note';
import type { OutboxMessage } from '../../src/domain/message';
import type { PublishOutcome } from '../../src/domain/outcome';
import { HeldDestinations, type HoldEpisode, type HoldListener } from '../../src/relay/held-destinations';
import {
  HORIZON_MAX_MS,
  HORIZON_MIN_MS,
  LAPSE_MS,
  maxProbesWithin,
  PROBE_FIRST_MS,
  PROBE_MAX_MS,
  probeDelayMs,
  RELEASE_FIRST,
  SETTLE_MS,
} from '../../src/relay/probe-schedule';
import { fakeMessage } from './fake-message';

const T0 = 1_800_000_000_000;
const REFUSED: PublishOutcome = { kind: 'refused' };
const CONFIRMED: PublishOutcome = { kind: 'confirmed' };

const to = (routingKey: string, overrides: Partial<OutboxMessage> = {}): OutboxMessage =>
  fakeMessage({ exchange: 'orders', routingKey, ...overrides });

/** Held destinations with a listener that records what it was told. */
function holdsUnderTest(): { holds: HeldDestinations; events: string[]; episodes: HoldEpisode[]; counts: number[] } {
  const events: string[] = [];
  const episodes: HoldEpisode[] = [];
  const counts: number[] = [];
  const listener: HoldListener = {
    held: (d, firstProbeInMs) => events.push(`held ${d.routingKey} (probe in ${firstProbeInMs} ms)`),
    flowing: (e) => {
      events.push(`flowing ${e.destination.routingKey}`);
      episodes.push(e);
    },
    abandoned: (e) => {
      events.push(`abandoned ${e.destination.routingKey}`);
      episodes.push(e);
    },
    changed: (count) => counts.push(count),
  };
  return { holds: new HeldDestinations(listener), events, episodes, counts };
}

describe('the probe schedule', () => {
  test('100 ms doubling to 5 s, never less, never more', () => {
    expect([0, 1, 2, 3, 4, 5, 6, 7, 50].map(probeDelayMs)).toEqual([100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000, 5_000]);
    expect(probeDelayMs(-1)).toBe(PROBE_FIRST_MS);
    expect(probeDelayMs(1_000)).toBe(PROBE_MAX_MS);
  });

  test('the probes a destination gets while held: a few quick ones, then one per 5 s', () => {
    expect(maxProbesWithin(99)).toBe(0);
    expect(maxProbesWithin(100)).toBe(1);
    // 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 11.3 s
    expect(maxProbesWithin(11_300)).toBe(7);
    expect(maxProbesWithin(60_000)).toBe(6 + Math.floor((60_000 - 6_300) / 5_000));
  });
});

describe('the held-destination note', () => {
  test('names the destination, and is read back from last_error; other errors name none', () => {
    const note = heldNote({ exchange: 'or"ders', routingKey: 'order.créé' });
    expect(note.startsWith(HELD_NOTE_PREFIX)).toBe(true);
    expect(note).toContain('exchange "or\\"ders" routing key "order.créé" refuses messages');
    expect(heldDestinationOf(note)).toEqual({ exchange: 'or"ders', routingKey: 'order.créé' });
    expect(heldDestinationOf(heldNote({ exchange: '', routingKey: 'commands' }))).toEqual({ exchange: '', routingKey: 'commands' });
    expect(heldDestinationOf('no broker confirm within 10000 ms')).toBeUndefined();
    expect(heldDestinationOf(null)).toBeUndefined();
  });
});

describe('held destinations', () => {
  test('a refusal holds its destination only: one log line, the gauge, a probe after 100 ms, nothing else sent meanwhile', () => {
    const { holds, events, counts } = holdsUnderTest();
    const refused = to('a');
    expect(holds.admit(refused, T0)).toBe('send');
    holds.record([refused, to('b')], [REFUSED, CONFIRMED], T0, T0 + 5);
    expect(events).toEqual(['held a (probe in 100 ms)']);
    expect(counts).toEqual([1]);
    expect(holds.isHeld({ exchange: 'orders', routingKey: 'a' })).toBe(true);
    expect(holds.isHeld({ exchange: 'orders', routingKey: 'b' })).toBe(false);
    // Another destination of the same exchange flows; a later message of the held one waits.
    expect(holds.admit(to('b'), T0 + 10)).toBe('send');
    expect(holds.admit(to('a'), T0 + 10)).toBe('wait');
    expect(holds.admit(to('a', { exchange: 'other' }), T0 + 10)).toBe('send');
    // At the probe time, one message is the probe; the rest wait while it is in flight.
    expect(holds.admit(to('a'), T0 + 105)).toBe('probe');
    expect(holds.admit(to('a'), T0 + 106)).toBe('wait');
    expect(holds.admit(to('a'), T0 + 10_000)).toBe('wait');
  });

  test('refused probes back off 100 ms doubling to 5 s, one probe at a time', () => {
    const { holds, episodes } = holdsUnderTest();
    holds.record([to('a')], [REFUSED], T0, T0);
    const gaps: number[] = [];
    let last = T0;
    for (let i = 0; i < 8; i += 1) {
      const probe = to('a');
      let now = last;
      while (holds.admit(probe, now) !== 'probe') now += 1;
      gaps.push(now - last);
      holds.record([probe], [REFUSED], now, now + 3);
      last = now + 3;
    }
    expect(gaps).toEqual([100, 200, 400, 800, 1_600, 3_200, 5_000, 5_000]);
    expect(episodes).toEqual([]);
  });

  test('a probe refused, then confirmed: flows at once; the parked rows are released in growing chunks paced by confirms', () => {
    const { holds, events, episodes, counts } = holdsUnderTest();
    holds.record([to('a')], [REFUSED], T0, T0);
    const probe = to('a');
    expect(holds.admit(probe, T0 + 100)).toBe('probe');
    holds.record([probe], [REFUSED], T0 + 100, T0 + 102);
    // The next probe 200 ms after the refused one.
    expect(holds.admit(to('a'), T0 + 301)).toBe('wait');
    const second = to('a');
    expect(holds.admit(second, T0 + 302)).toBe('probe');
    holds.record([second], [CONFIRMED], T0 + 302, T0 + 310);
    expect(holds.isHeld({ exchange: 'orders', routingKey: 'a' })).toBe(false);
    expect(holds.admit(to('a'), T0 + 311)).toBe('send');
    const first = holds.releases(T0 + 311, 1_000);
    expect(first).toEqual([
      expect.objectContaining({ limit: RELEASE_FIRST, lapse: false, note: heldNote({ exchange: 'orders', routingKey: 'a' }) }),
    ]);
    expect(holds.releases(T0 + 312, 1_000)).toEqual([]); // the next one waits for confirms
    holds.released(first[0]!, RELEASE_FIRST, T0 + 312);
    const sent = to('a');
    holds.record([sent], [CONFIRMED], T0 + 320, T0 + 330);
    expect(holds.releases(T0 + 331, 1_000)).toEqual([expect.objectContaining({ limit: RELEASE_FIRST * 2 })]);
    holds.record([to('a')], [CONFIRMED], T0 + 340, T0 + 350);
    const third = holds.releases(T0 + 351, 40);
    expect(third).toEqual([expect.objectContaining({ limit: 40 })]); // capped by the caller
    holds.released(third[0]!, 7, T0 + 352); // fewer than asked: nothing left parked
    // Still counted as held until it has flowed for SETTLE_MS without a refusal.
    expect(holds.tick(T0 + 310 + SETTLE_MS - 1)).toBe(false);
    expect(holds.size).toBe(1);
    holds.tick(T0 + 310 + SETTLE_MS);
    expect(holds.size).toBe(0);
    expect(events).toEqual(['held a (probe in 100 ms)', 'flowing a']);
    expect(episodes).toEqual([{ destination: { exchange: 'orders', routingKey: 'a' }, heldMs: 310, refused: 2 }]);
    expect(counts).toEqual([1, 0]);
  });

  test('answers to publishes sent before the hold began change nothing; one sent after it (a straggler) does', () => {
    const { holds } = holdsUnderTest();
    holds.record([to('a'), to('a')], [REFUSED, CONFIRMED], T0, T0 + 10);
    expect(holds.isHeld({ exchange: 'orders', routingKey: 'a' })).toBe(true);
    // Another worker's batch, sent before the refusal came back, confirmed: in flight before the hold.
    holds.record([to('a')], [CONFIRMED], T0 + 5, T0 + 20);
    expect(holds.isHeld({ exchange: 'orders', routingKey: 'a' })).toBe(true);
    // One sent after the hold began (not the probe: e.g. released by another relay) proves it flows.
    holds.record([to('a')], [CONFIRMED], T0 + 15, T0 + 30);
    expect(holds.isHeld({ exchange: 'orders', routingKey: 'a' })).toBe(false);
  });

  test('refused again while flowing (a consumer slower than the relay): held again in the same hold, probed after 100 ms, small release', () => {
    const { holds, events, counts } = holdsUnderTest();
    holds.record([to('a')], [REFUSED], T0, T0);
    for (let i = 0; i < 5; i += 1) {
      const probe = to('a');
      let now = T0;
      while (holds.admit(probe, now) !== 'probe') now += 10;
      holds.record([probe], [REFUSED], now, now);
    }
    const probe = to('a');
    let now = T0;
    while (holds.admit(probe, now) !== 'probe') now += 10;
    holds.record([probe], [CONFIRMED], now, now + 1);
    const release = holds.releases(now + 1, 1_000);
    holds.released(release[0]!, RELEASE_FIRST, now + 1);
    holds.record([to('a'), to('a')], [CONFIRMED, REFUSED], now + 2, now + 3);
    expect(holds.isHeld({ exchange: 'orders', routingKey: 'a' })).toBe(true);
    expect(holds.admit(to('a'), now + 3 + PROBE_FIRST_MS - 1)).toBe('wait');
    const next = to('a');
    expect(holds.admit(next, now + 3 + PROBE_FIRST_MS)).toBe('probe');
    holds.record([next], [CONFIRMED], now + 110, now + 111);
    expect(holds.releases(now + 111, 1_000)).toEqual([expect.objectContaining({ limit: RELEASE_FIRST })]);
    expect(events).toEqual(['held a (probe in 100 ms)']);
    expect(counts).toEqual([1]);
  });

  test('where waiting messages are parked: the first until the next probe, the others and their keys until the horizon', () => {
    const { holds } = holdsUnderTest();
    const refused = to('a');
    holds.record([refused], [REFUSED], T0, T0);
    const [first, second, third] = [to('a'), to('a'), to('a')];
    const note = heldNote({ exchange: 'orders', routingKey: 'a' });
    const spreadFromId = refused.id; // the horizon's rows are spread after it by their id above the first refused one
    expect(holds.parkOf(first!, T0 + 1, true)).toEqual({ atMs: T0 + 100, keyAtMs: T0 + HORIZON_MIN_MS, note, spread: false, spreadFromId });
    expect(holds.parkOf(second!, T0 + 2, false)).toEqual({
      atMs: T0 + HORIZON_MIN_MS,
      keyAtMs: T0 + HORIZON_MIN_MS,
      note,
      spread: true,
      spreadFromId,
    });
    // The candidate asked again (claimed again before its probe): still the candidate.
    expect(holds.parkOf(first!, T0 + 3, false)?.atMs).toBe(T0 + 100);
    const parkedHold = { note, flowing: false, upToMs: T0 + HORIZON_MIN_MS + HOLD_SPREAD_MS, spreadFromId };
    expect(holds.holdForPark(T0 + HORIZON_MIN_MS)).toEqual(parkedHold);
    // Behind a row spread after the horizon: the same hold; not before it, nor past the spread.
    expect(holds.holdForPark(T0 + HORIZON_MIN_MS + 1_234)).toEqual(parkedHold);
    expect(holds.holdForPark(T0 + HORIZON_MIN_MS - 1)).toBeUndefined();
    expect(holds.holdForPark(T0 + HORIZON_MIN_MS + HOLD_SPREAD_MS + 1)).toBeUndefined();
    // The probe takes over from the candidate; while it is in flight, the next waiting
    // message becomes the candidate, one probe delay from now, and the others the horizon.
    expect(holds.admit(third!, T0 + 100)).toBe('probe');
    expect(holds.parkOf(to('a'), T0 + 150, false)?.atMs).toBe(T0 + 150 + PROBE_FIRST_MS);
    expect(holds.parkOf(first!, T0 + 150, false)?.atMs).toBe(T0 + HORIZON_MIN_MS);
    // Near the horizon, a new one further away (the longer it has been held, up to 5 minutes).
    const late = T0 + HORIZON_MIN_MS - 1_000;
    const park = holds.parkOf(to('a'), late, false);
    // Further than the spread after the previous horizon, so the two cannot be told apart.
    expect(park?.keyAtMs).toBe(T0 + HORIZON_MIN_MS + HOLD_SPREAD_MS + 1);
    // The previous horizon still names it; releases reach up to the new one.
    expect(holds.holdForPark(T0 + HORIZON_MIN_MS)).toEqual({ ...parkedHold, upToMs: park!.keyAtMs + HOLD_SPREAD_MS });
    const much = T0 + 20 * 60_000;
    expect(holds.parkOf(to('a'), much, false)?.keyAtMs).toBe(much + HORIZON_MAX_MS);
  });

  test('two holds never share a horizon: each names its own hold', () => {
    const { holds } = holdsUnderTest();
    holds.record([to('a'), to('b')], [REFUSED, REFUSED], T0, T0);
    const a = holds.parkOf(to('a'), T0, false)!;
    const b = holds.parkOf(to('b'), T0, false)!;
    expect(Math.abs(a.keyAtMs - b.keyAtMs)).toBeGreaterThan(HOLD_SPREAD_MS);
    expect(holds.holdForPark(a.keyAtMs)?.note).toBe(a.note);
    expect(holds.holdForPark(b.keyAtMs)?.note).toBe(b.note);
  });

  test('a waiting message whose destination flowed meanwhile is not parked; a straggler refused meanwhile waits briefly', () => {
    const { holds } = holdsUnderTest();
    holds.record([to('a')], [REFUSED], T0, T0);
    const probe = to('a');
    holds.admit(probe, T0 + 100);
    holds.record([probe], [CONFIRMED], T0 + 100, T0 + 105);
    expect(holds.parkOf(to('a'), T0 + 106, false)).toBeUndefined();
    expect(holds.parkOf(to('a'), T0 + 106, true)?.atMs).toBe(T0 + 106 + PROBE_FIRST_MS);
  });

  test('a probe without an answer (a timeout, a failed batch) is forgotten: the next one after the usual wait', () => {
    const { holds } = holdsUnderTest();
    holds.record([to('a')], [REFUSED], T0, T0);
    const probe = to('a');
    expect(holds.admit(probe, T0 + 100)).toBe('probe');
    holds.probesEnded([probe], T0 + 200);
    expect(holds.admit(to('a'), T0 + 299)).toBe('wait');
    expect(holds.admit(to('a'), T0 + 300)).toBe('probe');
  });

  test('a lapsed probe (its message expired or was discarded): one parked row released to be it; none left ends the hold', () => {
    const { holds, events, counts } = holdsUnderTest();
    const candidate = to('a');
    holds.record([candidate], [REFUSED], T0, T0);
    holds.parkOf(candidate, T0, true);
    holds.record([candidate], [{ kind: 'expired' }], T0 + 50, T0 + 100);
    expect(holds.tick(T0 + 99)).toBe(false);
    expect(holds.tick(T0 + 100)).toBe(true); // a probe is due: the loop wakes a worker
    expect(holds.lapses(T0 + 100 + LAPSE_MS - 1)).toEqual([]);
    const [lapse] = holds.lapses(T0 + 100 + LAPSE_MS);
    expect(lapse).toMatchObject({ limit: 1, lapse: true });
    expect(holds.lapses(T0 + 100 + LAPSE_MS)).toEqual([]); // not twice
    const lapsedAt = T0 + 100 + LAPSE_MS;
    holds.released(lapse!, 1, lapsedAt);
    // The released row, claimed in the same batch, is the probe at once.
    const released = to('a');
    expect(holds.admit(released, lapsedAt)).toBe('probe');
    holds.probesEnded([released], lapsedAt); // no answer (the batch failed): the next probe 100 ms later
    expect(holds.lapses(lapsedAt + PROBE_FIRST_MS + LAPSE_MS - 1)).toEqual([]);
    const [again] = holds.lapses(lapsedAt + PROBE_FIRST_MS + LAPSE_MS);
    holds.released(again!, 0, lapsedAt + PROBE_FIRST_MS + LAPSE_MS);
    expect(holds.size).toBe(0);
    expect(events).toEqual(['held a (probe in 100 ms)', 'abandoned a']);
    expect(counts).toEqual([1, 0]);
  });

  test('releasing that stalls (its rows confirmed nowhere) is tried again after SETTLE_MS, so the hold can end', () => {
    const { holds } = holdsUnderTest();
    holds.record([to('a')], [REFUSED], T0, T0);
    const probe = to('a');
    holds.admit(probe, T0 + 100);
    holds.record([probe], [CONFIRMED], T0 + 100, T0 + 100);
    const [first] = holds.releases(T0 + 100, 1_000);
    holds.released(first!, RELEASE_FIRST, T0 + 100);
    expect(holds.tick(T0 + 100 + SETTLE_MS - 1)).toBe(false);
    // Due again: the loop is told to run a batch (which releases before it claims).
    expect(holds.tick(T0 + 100 + SETTLE_MS)).toBe(true);
    const [second] = holds.releases(T0 + 100 + SETTLE_MS, 1_000);
    expect(second).toMatchObject({ limit: RELEASE_FIRST * 2 });
    holds.released(second!, 0, T0 + 100 + SETTLE_MS);
    holds.tick(T0 + 100 + SETTLE_MS + 1);
    expect(holds.size).toBe(0);
  });

  test('clear() forgets every hold (the relay stops publishing)', () => {
    const { holds, counts } = holdsUnderTest();
    holds.record([to('a'), to('b')], [REFUSED, REFUSED], T0, T0);
    holds.clear();
    expect(holds.size).toBe(0);
    expect(holds.admit(to('a'), T0 + 1)).toBe('send');
    expect(counts).toEqual([1, 2, 0]);
  });
});
