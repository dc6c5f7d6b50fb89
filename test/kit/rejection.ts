/** The error `promise` rejects with; fails when it resolves. */
export async function rejection(promise: Promise<unknown>): Promise<Error & { code?: string; constraint?: string }> {
  try {
    await promise;
  } catch (err: unknown) {
    return err as Error & { code?: string; constraint?: string };
  }
  throw new Error('expected a rejection');
}
