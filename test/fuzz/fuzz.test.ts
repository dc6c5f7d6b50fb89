import fc from 'fast-check';
import { runRound } from './round';
import { fuzzRow } from './rows';

// Property-based: rows generated over the whole value domain of the producer's columns,
// with good messages between them, through the real PostgreSQL and RabbitMQ. A fixed
// seed and a bounded size here; `npm run fuzz -- --minutes N [--seed S]` runs long.
const SEED = 20261201;
const SHARED_KEYS = ['key-0', 'key-1', 'key-2', 'key-3', 'key-4'];

test(`every good message arrives exactly once, every generated row is published exactly or dead with an error (seed ${SEED})`, async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(fuzzRow(SHARED_KEYS), { minLength: 20, maxLength: 30 }), async (rows) => {
      const report = await runRound(rows);
      expect(report.violations).toEqual([]);
      expect(report.goodDelivered).toBe(report.goodInserted);
    }),
    { seed: SEED, numRuns: 3, endOnFailure: true },
  );
}, 300_000);
