import pino from 'pino';
import type { BatchReport } from '../../src/relay/batch';
import { HeldDestinations, type HoldListener } from '../../src/relay/held-destinations';
import { RelayLoop, type LoopSettings } from '../../src/relay/loop';
import { systemClock } from '../../src/relay/ports';
import { fullJitterBackoff } from '../../src/util/backoff';
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

/** What the held destinations told (in order): `held <exchange>/<routing key>`, `flowing …`, `abandoned …`. */
function recordingListener(events: string[]): HoldListener {
  const name = (d: { exchange: string; routingKey: string }): string => `${d.exchange}/${d.routingKey}`;
  return {
    held: (d) => events.push(`held ${name(d)}`),
    flowing: (e) => events.push(`flowing ${name(e.destination)}`),
    abandoned: (e) => events.push(`abandoned ${name(e.destination)}`),
    changed: () => undefined,
  };
}

/** A relay loop over fakes of all its ports, and the reports of its batches. */
export function loopUnderTest(settings: Partial<LoopSettings> = {}) {
  const holdEvents: string[] = [];
  const holds = new HeldDestinations(recordingListener(holdEvents));
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
      holds,
      onBatch: (report) => reports.push(report),
      errorBackoffMs: () => 5,
    },
  );
  // The leader's heartbeat (relay/leadership.ts), faked: every 100 ms the head of the due
  // messages goes to the loop, for its stall check and to wake it when idle.
  let heartbeat: NodeJS.Timeout | undefined;
  const start = loop.start.bind(loop);
  const stop = loop.stop.bind(loop);
  loop.start = () => {
    start();
    heartbeat ??= setInterval(() => void queue.oldestDue().then((head) => loop.observeDueHead(head)), HEARTBEAT_MS);
  };
  loop.stop = () => {
    clearInterval(heartbeat);
    return stop();
  };
  return { queue, broker, wake, health, reports, loop, holds, holdEvents };
}

/** The fake heartbeat's period (ms). */
const HEARTBEAT_MS = 100;
