import type { OutboxMessage } from '../../src/domain/message';
import type { PublishOutcome } from '../../src/domain/outcome';
import { decideMarks, type VerdictSettings } from '../../src/relay/verdicts';

function msg(id: number, options: { key?: string; exchange?: string; attempts?: number } = {}): OutboxMessage {
  return {
    id: String(id),
    messageId: `m-${id}`,
    exchange: options.exchange ?? 'events',
    routingKey: 'rk',
    messageType: null,
    content: Buffer.from('{}'),
    contentType: 'application/json',
    headers: {},
    partitionKey: options.key ?? null,
    correlationId: null,
    createdAt: new Date(0),
    availableAt: new Date(0),
    attempts: options.attempts ?? 0,
  };
}

const SETTINGS: VerdictSettings = { maxAttempts: 3, unroutable: 'publish', orderingOnDead: 'skip' };
const backoff = { delayMs: (n: number) => n * 100 };
const ok: PublishOutcome = { kind: 'confirmed' };
const failure: PublishOutcome = { kind: 'failed', reason: 'unknown_exchange', error: 'exchange "events" does not exist' };

test('confirmed messages are published; a failure costs an attempt with its backoff', () => {
  const marks = decideMarks([msg(1), msg(2, { attempts: 1 })], [ok, failure], SETTINGS, backoff, false);
  expect(marks.published).toEqual(['1']);
  expect(marks.failed).toEqual([{ id: '2', error: 'exchange "events" does not exist', retryInMs: 200, dead: false }]);
});

test('the attempt that reaches OUTBOX_MAX_ATTEMPTS makes the message dead', () => {
  const marks = decideMarks([msg(1, { attempts: 2 })], [failure], SETTINGS, backoff, false);
  expect(marks.failed[0]).toMatchObject({ id: '1', dead: true });
});

test('a returned event is published (OUTBOX_UNROUTABLE=publish) or fails (retry); a returned command always fails', () => {
  const returned: PublishOutcome = { kind: 'returned', replyText: 'NO_ROUTE' };
  const events = decideMarks([msg(1), msg(2, { exchange: '' })], [returned, returned], SETTINGS, backoff, false);
  expect(events.published).toEqual(['1']);
  expect(events.failed.map((f) => [f.id, f.error])).toEqual([['2', 'returned as unroutable: no queue named "rk" (NO_ROUTE)']]);
  const retry = decideMarks([msg(1)], [returned], { ...SETTINGS, unroutable: 'retry' }, backoff, false);
  expect(retry.failed[0]?.error).toMatch(/unroutable by exchange "events"/);
});

test('no verdict (connection lost, or a timeout while the broker blocked publishers) burns no attempt', () => {
  const timeout: PublishOutcome = { kind: 'failed', reason: 'timeout', error: 'no confirm' };
  const marks = decideMarks([msg(1), msg(2)], [{ kind: 'unconfirmed', error: 'gone' }, timeout], SETTINGS, backoff, true);
  expect(marks).toEqual({ published: [], failed: [], park: [], keptBack: 0, expired: [], hold: [] });
  expect(decideMarks([msg(2)], [timeout], SETTINGS, backoff, false).failed).toHaveLength(1);
});

describe('within a key, the first message that does not go through stops the rest of the batch', () => {
  const batch = [msg(1, { key: 'K' }), msg(2, { key: 'K' }), msg(3, { key: 'L' }), msg(4, { key: 'K' })];

  test('a retry: the later ones are parked until its next attempt, even if confirmed', () => {
    const marks = decideMarks(batch, [failure, ok, ok, ok], SETTINGS, backoff, false);
    expect(marks.published).toEqual(['3']);
    expect(marks.park).toEqual([
      { id: '2', until: { inMs: 100 } },
      { id: '4', until: { inMs: 100 } },
    ]);
  });

  test('dead under block: parked forever; dead under skip: held for the next claim', () => {
    const dying = [msg(1, { key: 'K', attempts: 2 }), msg(2, { key: 'K' })];
    expect(decideMarks(dying, [failure, ok], { ...SETTINGS, orderingOnDead: 'block' }, backoff, false).park).toEqual([
      { id: '2', until: { forever: true } },
    ]);
    const skip = decideMarks(dying, [failure, ok], SETTINGS, backoff, false);
    expect(skip.park).toEqual([]);
    expect(skip.keptBack).toBe(1);
    expect(skip.published).toEqual([]);
  });

  test('no verdict for the first: the later ones are held, not marked', () => {
    const marks = decideMarks(batch, [{ kind: 'unconfirmed', error: 'gone' }, ok, ok, { kind: 'kept_back' }], SETTINGS, backoff, false);
    expect(marks.published).toEqual(['3']);
    expect(marks.keptBack).toBe(2);
  });
});
