import type { ConsumerOptions, ConsumerTopology } from './options';

/** Every option of createConsumer: a name missing here, or one too many, does not compile. */
const OPTION_NAMES: Readonly<Record<keyof ConsumerOptions, true>> = {
  amqpUrl: true,
  queue: true,
  pool: true,
  name: true,
  schema: true,
  prefetch: true,
  batchSize: true,
  batchWaitMs: true,
  ordered: true,
  handler: true,
  topology: true,
  maxRetries: true,
  retryDelayMs: true,
  retryMaxDelayMs: true,
  retryMode: true,
  retryQueue: true,
  deadLetterExchange: true,
  inboxRetentionMs: true,
  inboxCleanupIntervalMs: true,
  heartbeatSeconds: true,
  connectTimeoutMs: true,
  reconnectBaseMs: true,
  reconnectMaxMs: true,
  startTimeoutMs: true,
  shutdownTimeoutMs: true,
  registry: true,
  log: true,
  onStateChange: true,
  tracing: true,
  verify: true,
};

const TOPOLOGY_NAMES: Readonly<Record<keyof ConsumerTopology, true>> = {
  exchange: true,
  exchangeType: true,
  bindingKeys: true,
  queueType: true,
  deadLetterQueue: true,
  queueArguments: true,
  singleActiveConsumer: true,
};

/**
 * `unknown option "prefech" (did you mean "prefetch"?)` for each key of `given` that is
 * not an option; `prefix` names where (`topology.`). A typo silently ignored would leave
 * the default in place, which is worse than a refusal.
 */
export function unknownOptions(given: object, prefix: '' | 'topology.'): string[] {
  const known = Object.keys(prefix === '' ? OPTION_NAMES : TOPOLOGY_NAMES);
  return Object.keys(given)
    .filter((key) => !known.includes(key))
    .map((key) => {
      const near = known.find((name) => editDistance(name.toLowerCase(), key.toLowerCase()) <= 2);
      return `unknown option ${JSON.stringify(`${prefix}${key}`)}${near === undefined ? '' : ` (did you mean "${prefix}${near}"?)`}`;
    });
}

/** Levenshtein distance (short option names only). */
function editDistance(a: string, b: string): number {
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i += 1) {
    const current = [i];
    for (let j = 1; j <= b.length; j += 1) {
      const substitution = (previous[j - 1] as number) + (a[i - 1] === b[j - 1] ? 0 : 1);
      current[j] = Math.min((previous[j] as number) + 1, (current[j - 1] as number) + 1, substitution);
    }
    previous = current;
  }
  return previous[b.length] as number;
}

/** PostgreSQL truncates identifiers to 63 bytes (NAMEDATALEN - 1): a longer schema name would name another schema. */
export const MAX_IDENTIFIER_BYTES = 63;

/** A high surrogate not followed by a low one, or a low one not preceded by a high one. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why PostgreSQL would refuse `value` as text, or undefined when it takes it: a NUL
 * character (text cannot hold one), or a lone surrogate (not Unicode: the driver would
 * send U+FFFD in its place, a different value from the one given).
 */
export function databaseTextProblem(value: string): string | undefined {
  if (value.includes('\u0000')) return 'contains a NUL character, which PostgreSQL text cannot hold';
  if (LONE_SURROGATE.test(value)) return 'contains a lone surrogate (not valid Unicode)';
  return undefined;
}
