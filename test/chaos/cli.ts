/** `npm run chaos -- --minutes N [--seed S]`: exits 1 on any violation, printing the seed. */
import { formatReport, runChaos } from './chaos';
import { minutesAndSeed } from '../kit/run-options';

const { minutes, seed } = minutesAndSeed('usage: npm run chaos -- [--minutes N] [--seed S]');

runChaos({ seconds: Math.round(minutes * 60), seed }).then(
  (report) => {
    console.log(formatReport(report));
    process.exit(report.violations.length === 0 ? 0 : 1);
  },
  (err: unknown) => {
    console.error(`chaos run failed (seed ${seed}): ${(err as Error).message}`);
    process.exit(1);
  },
);
