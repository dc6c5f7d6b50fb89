/**
 * `npm run fuzz -- --minutes N [--seed S]`: rounds of generated rows through the real
 * services until the time is up; prints the totals; exits 1 on any violation, printing
 * the seed and the round that broke.
 */
import fc from 'fast-check';
import { runRound, type RoundReport } from './round';
import { fuzzRow } from './rows';
import { minutesAndSeed } from '../kit/run-options';

const { minutes, seed } = minutesAndSeed('usage: npm run fuzz -- [--minutes N] [--seed S]');

async function main(): Promise<number> {
  const endAt = Date.now() + minutes * 60_000;
  const totals = {
    rounds: 0,
    generated: 0,
    refused: 0,
    published: 0,
    dead: 0,
    goodInserted: 0,
    goodDelivered: 0,
    duplicates: 0,
    longestGoodWaitMs: 0,
    healthyWhileStalled: 0,
  };
  const deadBy: Record<string, number> = {};
  const samples = fc.sample(fc.array(fuzzRow(['key-0', 'key-1', 'key-2', 'key-3', 'key-4']), { minLength: 40, maxLength: 80 }), {
    seed,
    numRuns: 10_000,
  });
  for (const rows of samples) {
    if (Date.now() > endAt) break;
    const report: RoundReport = await runRound(rows);
    totals.rounds += 1;
    totals.generated += report.generated;
    totals.refused += report.refused;
    totals.published += report.published;
    totals.dead += report.dead;
    totals.goodInserted += report.goodInserted;
    totals.goodDelivered += report.goodDelivered;
    totals.duplicates += report.duplicates;
    totals.healthyWhileStalled += report.healthyWhileStalled;
    totals.longestGoodWaitMs = Math.max(totals.longestGoodWaitMs, report.longestGoodWaitMs);
    for (const [reason, n] of Object.entries(report.deadBy)) deadBy[reason] = (deadBy[reason] ?? 0) + n;
    process.stdout.write(
      `round ${totals.rounds}: ${report.generated} rows, ${report.published} published, ${report.dead} dead, ${report.violations.length} violations\n`,
    );
    if (report.violations.length > 0) {
      console.error(`violations in round ${totals.rounds} (seed ${seed}):\n  ${report.violations.join('\n  ')}`);
      return 1;
    }
  }
  console.log(JSON.stringify({ seed, minutes, ...totals, deadBy }, null, 2));
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(`fuzz run failed (seed ${seed}): ${(err as Error).message}`);
    process.exit(1);
  },
);
