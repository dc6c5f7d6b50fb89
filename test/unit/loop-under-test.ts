import pino from 'pino';
import type { BatchReport } from '../../src/relay/batch';
import { RelayLoop, type LoopSettings } from '../../src/relay/loop';
import { systemClock } from '../../src/relay/ports';
import { fullJitterBackoff } from '../../src/retry/backoff';
import { FakeBroker, FakeHealth, FakeQueue, FakeWake } from './relay-fakes';

/** Fast settings for a loop driven by fakes. */
export const LOOP_SETTINGS: LoopSettings = {
  batchSize: 10,
  batchBytes: 1_048_576,
  pollIntervalMs: 20,
  maxAttempts: 3,
  publishTimeoutMs: 1_000,
  unroutable: 'publish',
  orderingOnDead: 'skip',
  retentionMs: 60_000,
  shutdownTimeoutMs: 200,
  concurrency: 2,
  stallTimeoutMs: 60_000,
};

/** A relay loop over fakes of all its ports, and the reports of its batches. */
export function loopUnderTest(settings: Partial<LoopSettings> = {}) {
  const queue = new FakeQueue();
  const broker = new FakeBroker();
  const wake = new FakeWake();
  const health = new FakeHealth();
  const reports: BatchReport[] = [];
  const loop = new RelayLoop(
    { ...LOOP_SETTINGS, ...settings },
    {
      queue,
      broker,
      wake,
      health,
      backoff: fullJitterBackoff(1, 1),
      log: pino({ level: 'silent' }),
      clock: systemClock,
      onBatch: (report) => reports.push(report),
      errorBackoffMs: () => 5,
    },
  );
  return { queue, broker, wake, health, reports, loop };
}
