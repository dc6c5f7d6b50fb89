/**
 * `npm run chaos -- --minutes N [--seed S] [--rolling-restarts] [--rabbit-cluster]
 * [--pg-failover]`: exits 1 on any violation, printing the seed (replay it with the same
 * flags). `--rolling-restarts` adds the restart of every relay in turn to the faults;
 * `--rabbit-cluster` runs against a three-node RabbitMQ cluster of its own and adds the
 * node loss; `--pg-failover` runs against a PostgreSQL primary and synchronous standby of
 * its own and adds the failover.
 */
import { formatReport, runChaos } from './chaos';
import { minutesAndSeed } from '../kit/run-options';

const { minutes, seed } = minutesAndSeed(
  'usage: npm run chaos -- [--minutes N] [--seed S] [--rolling-restarts] [--rabbit-cluster] [--pg-failover]',
);
const rollingRestarts = process.argv.includes('--rolling-restarts');
const rabbitCluster = process.argv.includes('--rabbit-cluster');
const pgFailover = process.argv.includes('--pg-failover');

runChaos({ seconds: Math.round(minutes * 60), seed, rollingRestarts, rabbitCluster, pgFailover }).then(
  (report) => {
    console.log(formatReport(report));
    process.exit(report.violations.length === 0 ? 0 : 1);
  },
  (err: unknown) => {
    console.error(`chaos run failed (seed ${seed}): ${(err as Error).message}`);
    process.exit(1);
  },
);
