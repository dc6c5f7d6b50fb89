import { formatReport, runChaos } from './chaos';

// The short chaos run of `npm test`: about a minute of faults; `npm run chaos -- --minutes 10`
// runs the same for as long as you like. A failure prints the seed to replay it.
test('chaos: nothing lost, nothing rolled back delivered, per-key order kept, every duplicate explained', async () => {
  const seed = Number(process.env['OUTBOX_CHAOS_SEED'] ?? Math.floor(Math.random() * 2 ** 31));
  const lines: string[] = [];
  const report = await runChaos({ seconds: 45, seed, log: (line) => lines.push(line) });
  const text = formatReport(report);
  console.info(`${lines.join('\n')}\n${text}`);
  expect(report.violations).toEqual([]);
  expect(report.committed).toBeGreaterThan(1_000);
}, 240_000);
