import type { KeyRow, OutboxMessage } from '../../src/domain/message';
import { compareIds, keysToCheck, planBatch } from '../../src/relay/ordering';

function msg(id: number, key: string | null, attempts = 0): OutboxMessage {
  return {
    id: String(id),
    messageId: `m-${id}`,
    exchange: 'ex',
    routingKey: 'rk',
    messageType: null,
    content: Buffer.from('{}'),
    contentType: 'application/json',
    headers: {},
    partitionKey: key,
    correlationId: null,
    createdAt: new Date(0),
    availableAt: new Date(0),
    attempts,
  };
}

const NOW = new Date('2026-01-01T00:00:00Z');
const LATER = new Date('2026-01-01T00:05:00Z');

function row(id: number, key: string, state: 'due' | 'waiting' | 'dead' = 'due', due = state === 'waiting' ? LATER : NOW): KeyRow {
  return { key, id: String(id), waiting: state === 'waiting', due, dead: state === 'dead' };
}

const ids = (messages: readonly OutboxMessage[]): number[] => messages.map((m) => Number(m.id));

describe('planBatch', () => {
  test('unkeyed messages always go out; the plan is in id order', () => {
    const plan = planBatch([msg(3, null), msg(1, null), msg(2, null)], []);
    expect(ids(plan.publish)).toEqual([1, 2, 3]);
    expect(plan).toMatchObject({ park: [], keptBack: 0 });
  });

  test("a key's claimed rows that form a prefix of its unpublished rows go out together, in order", () => {
    const plan = planBatch([msg(7, 'K'), msg(5, 'K'), msg(6, 'K')], [row(5, 'K'), row(6, 'K'), row(7, 'K')]);
    expect(ids(plan.publish)).toEqual([5, 6, 7]);
  });

  test('rows behind a head in flight elsewhere are held (released at commit), not parked', () => {
    const plan = planBatch([msg(6, 'K'), msg(7, 'K'), msg(9, null)], [row(5, 'K'), row(6, 'K'), row(7, 'K')]);
    expect(ids(plan.publish)).toEqual([9]);
    expect(plan.keptBack).toBe(2);
    expect(plan.park).toEqual([]);
  });

  test('rows behind a head waiting for its retry are parked until it is due, so no later claim rescans them', () => {
    const plan = planBatch([msg(6, 'K'), msg(7, 'K')], [row(5, 'K', 'waiting'), row(6, 'K'), row(7, 'K')]);
    expect(plan.publish).toEqual([]);
    expect(plan.park).toEqual([
      { id: '6', until: { at: LATER } },
      { id: '7', until: { at: LATER } },
    ]);
  });

  test('a gap in the middle: the run stops at the first unpublished row that is not claimed', () => {
    const plan = planBatch([msg(5, 'K'), msg(7, 'K')], [row(5, 'K'), row(6, 'K', 'waiting'), row(7, 'K')]);
    expect(ids(plan.publish)).toEqual([5]);
    expect(plan.park).toEqual([{ id: '7', until: { at: LATER } }]);
  });

  test('a dead head (block mode: the store returns dead rows) parks the key forever', () => {
    const plan = planBatch([msg(6, 'K')], [row(5, 'K', 'dead'), row(6, 'K')]);
    expect(plan.park).toEqual([{ id: '6', until: { forever: true } }]);
  });

  test('a head parked at infinity behind a dead message parks the rows behind it forever too', () => {
    const plan = planBatch([msg(7, 'K')], [row(6, 'K', 'waiting', Infinity as unknown as Date), row(7, 'K')]);
    expect(plan.park).toEqual([{ id: '7', until: { forever: true } }]);
  });

  test('a head that failed before goes out alone; the rest of its key waits for it', () => {
    const plan = planBatch([msg(5, 'K', 2), msg(6, 'K'), msg(7, 'K')], [row(5, 'K'), row(6, 'K'), row(7, 'K')]);
    expect(ids(plan.publish)).toEqual([5]);
    expect(plan.keptBack).toBe(2);
  });

  test('keys are independent: one held key does not hold another', () => {
    const plan = planBatch(
      [msg(2, 'A'), msg(3, 'B'), msg(4, 'A'), msg(5, 'B')],
      [row(1, 'A', 'waiting'), row(2, 'A'), row(4, 'A'), row(3, 'B'), row(5, 'B')],
    );
    expect(ids(plan.publish)).toEqual([3, 5]);
    expect(plan.park.map((p) => p.id)).toEqual(['2', '4']);
  });

  test('a claimed row past its expires_at goes out whatever is ahead of it (it is only marked expired), the others still wait', () => {
    const now = NOW.getTime();
    const expired = (id: number): OutboxMessage => ({ ...msg(id, 'K'), expiresAt: now });
    const behindDead = planBatch([expired(6), msg(7, 'K')], [row(5, 'K', 'dead'), row(6, 'K'), row(7, 'K')], now);
    expect(ids(behindDead.publish)).toEqual([6]);
    expect(behindDead.park).toEqual([{ id: '7', until: { forever: true } }]);
    const behindWaiting = planBatch([expired(6), msg(7, 'K')], [row(5, 'K', 'waiting'), row(6, 'K'), row(7, 'K')], now);
    expect(ids(behindWaiting.publish)).toEqual([6]);
    expect(behindWaiting.park).toEqual([{ id: '7', until: { at: LATER } }]);
    const behindInFlight = planBatch([expired(6), msg(7, 'K')], [row(5, 'K'), row(6, 'K'), row(7, 'K')], now);
    expect(ids(behindInFlight.publish)).toEqual([6]);
    expect(behindInFlight.keptBack).toBe(1);
    // Not yet expired: it waits like the others.
    const notYet = planBatch([{ ...msg(6, 'K'), expiresAt: now + 1 }], [row(5, 'K', 'dead'), row(6, 'K')], now);
    expect(notYet.publish).toEqual([]);
  });
});

test('keysToCheck: per key the last claimed id and how many', () => {
  expect(keysToCheck([msg(10, 'A'), msg(9, 'A'), msg(100, 'B'), msg(1, null)])).toEqual([
    { key: 'A', maxId: '10', count: 2 },
    { key: 'B', maxId: '100', count: 1 },
  ]);
});

test('compareIds compares decimal bigint strings numerically', () => {
  expect(compareIds('9', '10')).toBeLessThan(0);
  expect(compareIds('9007199254740993', '9007199254740992')).toBeGreaterThan(0);
  expect(compareIds('42', '42')).toBe(0);
});
