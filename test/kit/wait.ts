/**
 * Polls `probe` until it returns a truthy value, or fails with `what` after
 * `timeoutMs`. Tests wait for results with a deadline, never a fixed sleep.
 */
export async function waitFor<T>(what: string, probe: () => T | Promise<T>, timeoutMs = 20_000, intervalMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value) return value as NonNullable<T>;
      last = value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Asserts that `probe` stays falsy for `ms` (e.g. a delayed message is not yet delivered). */
export async function staysFalse(what: string, probe: () => unknown, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (await probe()) throw new Error(`expected ${what} not to happen within ${ms} ms`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}
