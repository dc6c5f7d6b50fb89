export default async function globalTeardown(): Promise<void> {
  const started = (globalThis as { __OUTBOX_CONTAINERS__?: { stop(): Promise<unknown> }[] }).__OUTBOX_CONTAINERS__ ?? [];
  await Promise.all(started.map((c) => c.stop()));
}
