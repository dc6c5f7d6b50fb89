/** `npm run chaos -- --minutes N [--seed S]`: exits 1 on any violation, printing the seed. */
import { formatReport, runChaos } from './chaos';

function arg(name: string): string | undefined {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? process.argv[index + 1] : undefined;
}

const minutes = Number(arg('minutes') ?? '1');
const seed = Number(arg('seed') ?? Math.floor(Math.random() * 2 ** 31));
if (!Number.isFinite(minutes) || minutes <= 0 || !Number.isInteger(seed)) {
  console.error('usage: npm run chaos -- [--minutes N] [--seed S]');
  process.exit(2);
}

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
