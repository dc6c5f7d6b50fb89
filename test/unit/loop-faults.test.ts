import type { LoopSettings, RelayLoop } from '../../src/relay/loop';
import { staysFalse, waitFor } from '../kit/wait';
import { fakeMessage } from './fake-message';
import { loopUnderTest } from './loop-under-test';

const setup = (settings: Partial<LoopSettings> = {}): ReturnType<typeof loopUnderTest> =>
  loopUnderTest({ batchSize: 16, maxAttempts: 1, ...settings });

describe('the relay loop when something is wrong that is not a lost connection', () => {
  const running: RelayLoop[] = [];
  afterEach(async () => {
    await Promise.all(running.splice(0).map((loop) => loop.stop()));
  });

  test('a message that makes its batch throw is found by itself and fails alone; every other message flows', async () => {
    const parts = setup();
    const messages = Array.from({ length: 40 }, (_, i) => fakeMessage({ partitionKey: i % 2 === 0 ? 'even' : null }));
    const culprit = messages[13]!;
    parts.broker.throwFor = culprit.messageId;
    parts.queue.add(...messages);
    parts.loop.start();
    running.push(parts.loop);
    await waitFor('every message published or dead', () => parts.queue.pending().length === 0, 10_000);
    const row = parts.queue.rows.find((r) => r.message.id === culprit.id)!;
    expect(row.dead).toBe(true);
    expect(row.errors).toEqual(["cannot publish: Field 'exchange' is the wrong type; must be a string (up to 255 chars)"]);
    expect(parts.queue.published().sort()).toEqual(
      messages
        .filter((m) => m !== culprit)
        .map((m) => m.id)
        .sort(),
    );
    const failed = parts.reports.flatMap((r) => r.verdicts).filter((v) => v.kind === 'failed');
    expect(failed).toEqual([expect.objectContaining({ reason: 'invalid_message', dead: true })]);
  });

  test('the relay’s own writes fail: not ready with the reason, nothing is published over and over; fixed: it resumes', async () => {
    const parts = setup();
    parts.queue.failWritesWith = Object.assign(new Error('permission denied for table messages'), { code: '42501' });
    const messages = Array.from({ length: 5 }, () => fakeMessage());
    parts.queue.add(...messages);
    parts.loop.start();
    running.push(parts.loop);
    await waitFor('the writes problem', () => parts.health.problems.get('writes'));
    expect(parts.health.problems.get('writes')).toContain('permission denied for table messages');
    // Claiming stopped: the probe (which changes nothing) fails too, so nothing more is sent.
    parts.queue.probeFailsWith = parts.queue.failWritesWith;
    const sentSoFar = parts.broker.sent.length;
    await staysFalse('more messages sent', () => parts.broker.sent.length > sentSoFar, 300);
    parts.queue.failWritesWith = undefined;
    parts.queue.probeFailsWith = undefined;
    await waitFor('all published once the grant is back', () => parts.queue.published().length === 5, 15_000);
    expect(parts.queue.probes).toBeGreaterThan(0);
    expect(parts.health.problems.has('writes')).toBe(false);
    expect(parts.queue.rows.every((r) => r.attempts === 0)).toBe(true);
    // Sent once in the batch whose marks failed, once more after the writes came back.
    for (const m of messages) expect(parts.broker.sent.filter((s) => s.id === m.id).length).toBeLessThanOrEqual(2);
  });

  test('due messages and no progress past OUTBOX_STALL_TIMEOUT_MS: stalled with the reason and message; progress clears it', async () => {
    const parts = setup({ stallTimeoutMs: 1_000 });
    parts.broker.decide = () => ({ kind: 'unconfirmed', error: 'channel closed' });
    const message = fakeMessage();
    parts.queue.add(message);
    parts.loop.start();
    running.push(parts.loop);
    const reason = await waitFor('the stall', () => parts.health.problems.get('stalled'), 10_000);
    expect(reason).toContain(`stuck on message ${message.messageId}`);
    expect(reason).toContain('nothing published or failed');
    parts.broker.decide = () => ({ kind: 'confirmed' });
    await waitFor('published', () => parts.queue.published().length === 1, 10_000);
    await waitFor('the stall cleared', () => !parts.health.problems.has('stalled'));
  });

  test('a broker that blocks publishers while messages are due is a stall too, once the timeout is past', async () => {
    const parts = setup({ stallTimeoutMs: 1_000 });
    parts.health.databaseUp = true; // as the relay starts: the schema was verified, no batch has run yet
    parts.broker.blocked = true;
    parts.queue.add(fakeMessage());
    parts.loop.start();
    running.push(parts.loop);
    const reason = await waitFor('the stall', () => parts.health.problems.get('stalled'), 10_000);
    expect(reason).toContain('blocks publishers');
    parts.broker.blocked = false;
    await waitFor('the stall cleared', () => !parts.health.problems.has('stalled'), 5_000);
  });

  test('an idle relay with nothing due is never stalled', async () => {
    const parts = setup({ stallTimeoutMs: 1_000 });
    parts.loop.start();
    running.push(parts.loop);
    await staysFalse('stalled', () => parts.health.problems.has('stalled'), 1_500);
  });
});
