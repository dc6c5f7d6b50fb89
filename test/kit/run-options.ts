/** `--minutes N [--seed S]` of a long-running suite's command line; exits 2 with `usage` when they are wrong. */
export function minutesAndSeed(usage: string): { minutes: number; seed: number } {
  const arg = (name: string): string | undefined => {
    const index = process.argv.indexOf(`--${name}`);
    return index >= 0 ? process.argv[index + 1] : undefined;
  };
  const minutes = Number(arg('minutes') ?? '1');
  const seed = Number(arg('seed') ?? Math.floor(Math.random() * 2 ** 31));
  if (!Number.isFinite(minutes) || minutes <= 0 || !Number.isInteger(seed)) {
    console.error(usage);
    process.exit(2);
  }
  return { minutes, seed };
}
