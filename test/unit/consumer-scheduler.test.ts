import fc from 'fast-check';
import { BatchScheduler, type Schedulable } from '../../src/consumer/scheduler';

/**
 * The consumer's batch scheduler, with a fake batch runner: generated deliveries (keys
 * from a small set, some without), batch sizes, concurrency, batches finishing in any
 * order, and handlers that fail and are retried in place. Whatever happens, under
 * `ordered` a message starts only when every earlier message of its key is done (or runs
 * before it in the same batch), a key is never in two running batches, every message is
 * processed exactly once, and the limits hold.
 */

interface Item extends Schedulable {
  readonly id: number;
}

interface Plan {
  readonly keys: readonly (string | undefined)[];
  readonly batchSize: number;
  readonly concurrency: number;
  /** Per batch started, how many turns it takes (cycled). */
  readonly turns: readonly number[];
  /** Per handler run, whether it fails (cycled); a failed one is retried in place. */
  readonly failures: readonly boolean[];
}

const plan: fc.Arbitrary<Plan> = fc.record({
  keys: fc.array(fc.option(fc.constantFrom('a', 'b', 'c', 'd'), { nil: undefined, freq: 4 }), { minLength: 1, maxLength: 40 }),
  batchSize: fc.integer({ min: 1, max: 6 }),
  concurrency: fc.integer({ min: 1, max: 4 }),
  turns: fc.array(fc.integer({ min: 0, max: 5 }), { minLength: 1, maxLength: 10 }),
  failures: fc.array(fc.boolean(), { minLength: 1, maxLength: 10 }),
});

async function turns(n: number): Promise<void> {
  for (let i = 0; i < n; i += 1) await new Promise((resolve) => setImmediate(resolve));
}

/** Runs `p` through a scheduler; returns the violations found and the processing order. */
async function simulate(p: Plan, ordered: boolean): Promise<{ violations: string[]; done: number[]; maxRunning: number }> {
  const violations: string[] = [];
  const done: number[] = [];
  const runningKeys = new Map<string, number>();
  let running = 0;
  let maxRunning = 0;
  let batches = 0;
  let runs = 0;
  const items: Item[] = p.keys.map((key, id) => ({ id, seq: id, key, notBefore: 0, alone: false, arrivedAt: 0 }));
  let finished: () => void = () => undefined;
  const all = new Promise<void>((resolve) => {
    finished = resolve;
  });
  const scheduler: BatchScheduler<Item> = new BatchScheduler<Item>(
    {
      batchSize: p.batchSize,
      batchWaitMs: 0,
      concurrency: p.concurrency,
      ordered,
      windowFull: () => false,
      isLive: () => true,
      now: Date.now,
    },
    async (batch) => {
      running += 1;
      maxRunning = Math.max(maxRunning, running);
      if (batch.length > p.batchSize) violations.push(`batch of ${batch.length} > ${p.batchSize}`);
      if (running > p.concurrency) violations.push(`${running} batches at once > ${p.concurrency}`);
      const keys = new Set(batch.map((item) => item.key).filter((key) => key !== undefined));
      if (ordered) {
        for (const key of keys) {
          if (runningKeys.has(key)) violations.push(`key ${key} in two running batches`);
          runningKeys.set(key, batches);
        }
      }
      await turns(p.turns[batches++ % p.turns.length] as number);
      const failedKeys = new Set<string>();
      for (const item of batch) {
        if (ordered && item.key !== undefined && failedKeys.has(item.key)) {
          scheduler.add(item); // deferred: an earlier message of its key failed in this batch
          continue;
        }
        if (ordered && item.key !== undefined) {
          const earlier = items.filter((other) => other.key === item.key && other.seq < item.seq && !done.includes(other.id));
          if (earlier.length > 0) violations.push(`message ${item.id} of key ${item.key} before ${earlier.map((e) => e.id).join(',')}`);
        }
        if (p.failures[runs++ % p.failures.length] === true && runs % 3 !== 0) {
          if (item.key !== undefined) failedKeys.add(item.key);
          item.notBefore = Date.now() + 3; // retried in place, after a delay
          scheduler.add(item);
          continue;
        }
        if (done.includes(item.id)) violations.push(`message ${item.id} processed twice`);
        done.push(item.id);
      }
      if (ordered) for (const key of keys) runningKeys.delete(key);
      running -= 1;
      if (done.length === items.length) finished();
    },
    () => violations.push('a delivery dropped'),
  );
  for (const item of items) scheduler.add(item);
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([all, new Promise((resolve) => (timer = setTimeout(resolve, 5_000)))]);
  clearTimeout(timer);
  if (done.length !== items.length) violations.push(`${done.length} of ${items.length} processed`);
  scheduler.stop();
  return { violations, done, maxRunning };
}

test('ordered: each key in delivery order, a key in one batch at a time, every message once, within the limits', async () => {
  await fc.assert(
    fc.asyncProperty(plan, async (p) => {
      const { violations } = await simulate(p, true);
      expect(violations).toEqual([]);
    }),
    { numRuns: 150 },
  );
});

test('not ordered: every message once, within the limits, whatever the keys', async () => {
  await fc.assert(
    fc.asyncProperty(plan, async (p) => {
      const { violations } = await simulate(p, false);
      expect(violations).toEqual([]);
    }),
    { numRuns: 100 },
  );
});

test('an idle scheduler runs a delivery at once, alone; a busy one batches what arrived meanwhile', async () => {
  const batches: number[][] = [];
  let release: () => void = () => undefined;
  const gate = new Promise<void>((resolve) => {
    release = resolve;
  });
  const scheduler = new BatchScheduler<Item>(
    { batchSize: 50, batchWaitMs: 0, concurrency: 1, ordered: false, windowFull: () => false, isLive: () => true, now: Date.now },
    async (batch) => {
      batches.push(batch.map((item) => item.id));
      if (batches.length === 1) await gate;
    },
    () => undefined,
  );
  const item = (id: number): Item => ({ id, seq: id, key: undefined, notBefore: 0, alone: false, arrivedAt: Date.now() });
  scheduler.add(item(0));
  await turns(2);
  expect(batches).toEqual([[0]]);
  for (let id = 1; id <= 5; id += 1) scheduler.add(item(id));
  await turns(2);
  expect(batches).toEqual([[0]]); // the only connection is busy
  release();
  await turns(3);
  expect(batches).toEqual([[0], [1, 2, 3, 4, 5]]);
});

test('batchWaitMs: a small batch waits for more while another runs, never when the window is full or nothing runs', async () => {
  const started: { ids: number[]; at: number }[] = [];
  let windowFull = false;
  const gates: (() => void)[] = [];
  const scheduler = new BatchScheduler<Item>(
    { batchSize: 10, batchWaitMs: 200, concurrency: 2, ordered: false, windowFull: () => windowFull, isLive: () => true, now: Date.now },
    (batch) => {
      started.push({ ids: batch.map((item) => item.id), at: Date.now() });
      return new Promise<void>((resolve) => gates.push(resolve));
    },
    () => undefined,
  );
  const item = (id: number): Item => ({ id, seq: id, key: undefined, notBefore: 0, alone: false, arrivedAt: Date.now() });
  const t0 = Date.now();
  scheduler.add(item(0)); // nothing runs: at once
  await turns(2);
  expect(started.map((s) => s.ids)).toEqual([[0]]);
  scheduler.add(item(1)); // one runs, the window has room: waits up to 200 ms
  await turns(3);
  expect(started).toHaveLength(1);
  await new Promise((resolve) => setTimeout(resolve, 260));
  expect(started.map((s) => s.ids)).toEqual([[0], [1]]);
  expect((started[1] as { at: number }).at - t0).toBeGreaterThanOrEqual(190);
  (gates.shift() as () => void)();
  await turns(3);
  windowFull = true; // no more can arrive: no point in waiting
  scheduler.add(item(2));
  await turns(3);
  expect(started.map((s) => s.ids)).toEqual([[0], [1], [2]]);
  for (const gate of gates) gate();
  scheduler.stop();
});

test('a delivery that must run alone runs in a batch of its own; under ordered it holds its key', async () => {
  const batches: string[][] = [];
  const scheduler = new BatchScheduler<Item>(
    { batchSize: 10, batchWaitMs: 0, concurrency: 1, ordered: true, windowFull: () => false, isLive: () => true, now: Date.now },
    (batch) => {
      batches.push(batch.map((item) => `${item.id}${item.key ?? '-'}`));
      return Promise.resolve();
    },
    () => undefined,
  );
  const item = (id: number, key: string | undefined, alone = false): Item => ({ id, seq: id, key, notBefore: 0, alone, arrivedAt: 0 });
  for (const it of [item(0, 'a'), item(1, 'b', true), item(2, 'b'), item(3, 'c'), item(4, undefined)]) scheduler.add(it);
  await turns(5);
  expect(batches).toEqual([['0a', '3c', '4-'], ['1b'], ['2b']]);
});

test('stop() returns what waits and starts nothing more; a delivery whose channel closed is dropped', async () => {
  const dropped: number[] = [];
  let live = true;
  const ran: number[] = [];
  const scheduler = new BatchScheduler<Item>(
    { batchSize: 10, batchWaitMs: 0, concurrency: 1, ordered: false, windowFull: () => false, isLive: () => live, now: Date.now },
    (batch) => {
      ran.push(...batch.map((item) => item.id));
      return Promise.resolve();
    },
    (item) => dropped.push(item.id),
  );
  const item = (id: number, notBefore = 0): Item => ({ id, seq: id, key: undefined, notBefore, alone: false, arrivedAt: 0 });
  scheduler.add(item(0, Date.now() + 60_000));
  live = false;
  scheduler.prune();
  expect(dropped).toEqual([0]);
  live = true;
  scheduler.add(item(1, Date.now() + 60_000));
  expect(scheduler.stop().map((it) => it.id)).toEqual([1]);
  scheduler.add(item(2));
  await turns(3);
  expect(ran).toEqual([]);
  expect(dropped).toEqual([0, 2]);
});

test('a batch takes its share of what waits, so that every connection gets work (slow handlers, or every key in one batch)', async () => {
  for (const ordered of [false, true]) {
    const sizes: number[] = [];
    const gates: (() => void)[] = [];
    const scheduler = new BatchScheduler<Item>(
      { batchSize: 50, batchWaitMs: 0, concurrency: 4, ordered, windowFull: () => false, isLive: () => true, now: Date.now },
      (batch) => {
        sizes.push(batch.length);
        return new Promise<void>((resolve) => gates.push(resolve));
      },
      () => undefined,
    );
    // 50 keys, two messages each: under ordered, one batch of everything would hold all keys.
    for (let id = 0; id < 100; id += 1) scheduler.add({ id, seq: id, key: `k${id % 50}`, notBefore: 0, alone: false, arrivedAt: 0 });
    await turns(3);
    // Not ordered: four batches of 25. Ordered: the keys spread over three (the fourth
    // would find only the second messages of keys that are busy), instead of one of 50.
    expect({ ordered, batches: sizes.length }).toEqual({ ordered, batches: ordered ? 3 : 4 });
    expect(Math.max(...sizes)).toBeLessThanOrEqual(25);
    for (const gate of gates) gate();
    scheduler.stop();
  }
});
