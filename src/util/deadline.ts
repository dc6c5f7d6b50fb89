/** What `withDeadline` resolves to when the time ran out first. */
export const TIMED_OUT: unique symbol = Symbol('timed out');

/**
 * `work`'s value, or TIMED_OUT once `ms` have passed (work goes on in the background;
 * a rejection of `work` before then is passed on). The timer keeps no process alive and
 * is cleared as soon as `work` settles.
 */
export function withDeadline<T>(work: Promise<T>, ms: number): Promise<T | typeof TIMED_OUT> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<typeof TIMED_OUT>((resolve) => {
    timer = setTimeout(() => resolve(TIMED_OUT), ms);
    timer.unref();
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** Whether `work` settled, either way, within `ms` (a rejection is swallowed: best-effort steps such as closing). */
export async function settlesWithin(work: Promise<unknown>, ms: number): Promise<boolean> {
  const settled = work.then(
    () => true,
    () => true,
  );
  return (await withDeadline(settled, ms)) !== TIMED_OUT;
}
