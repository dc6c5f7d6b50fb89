// What `outbox-relay selftest`'s options need, apart from the self-test itself: the CLI
// defines its commands without loading what they run.

/** `--timeout-ms` default: from the insert to the delivery (ms). */
export const SELFTEST_TIMEOUT_MS = 10_000;

/** Why an `--exchange` value cannot be used, or undefined when it can. */
export function exchangeProblem(name: string): string | undefined {
  if (name === '') return "the default exchange ('') cannot be bound to: name an exchange, or leave --exchange out for a temporary one";
  if (Buffer.byteLength(name, 'utf8') > 255) return 'longer than 255 bytes (AMQP allows at most 255)';
  return undefined;
}
