/** How long the run may stay alive after its last test file before it is ended, saying what held it (ms). */
const EXIT_GRACE_MS = 5_000;

export default async function globalTeardown(): Promise<void> {
  const started = (globalThis as { __OUTBOX_CONTAINERS__?: { stop(): Promise<unknown> }[] }).__OUTBOX_CONTAINERS__ ?? [];
  await Promise.all(started.map((c) => c.stop()));
  // The run ends by itself when nothing is left open, which the leak check
  // (leak-check-environment.ts) enforces file by file. Should something it cannot see
  // still hold the process (a test that timed out mid-way), this unref'd timer ends the
  // run after EXIT_GRACE_MS instead of letting it hang until CI's own time limit, naming
  // what was open; Jest's exit handler keeps the run's exit code.
  setTimeout(() => {
    const open = process.getActiveResourcesInfo().filter((type) => type !== 'TTYWrap');
    process.stderr.write(`test run: still open ${EXIT_GRACE_MS} ms after the last test file (${open.join(', ')}); exiting\n`);
    process.exit();
  }, EXIT_GRACE_MS).unref();
}
