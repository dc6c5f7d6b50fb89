import fc from 'fast-check';

/**
 * Rows over the whole value domain of the producer's columns, as any program that can
 * INSERT could write them: lengths across every 255-byte AMQP limit, unicode, every JSON
 * shape and number range in `headers` (integers beyond 2^53 and 2^63), timestamps
 * including ±infinity, partition keys shared with good messages. Each row is kept as the
 * SQL text of its values, so integers of any size reach PostgreSQL exactly.
 */

/** A header value as JSON text can hold it: integers as bigint, so none is rounded on the way. */
export type JsonTree =
  null | boolean | string | bigint | { readonly float: number } | readonly JsonTree[] | { readonly [key: string]: JsonTree };

export interface FuzzRow {
  /** `target`: the run's exchange; `missing`: one that does not exist; `command`: the default exchange. */
  readonly exchange: { readonly kind: 'target' } | { readonly kind: 'missing'; readonly name: string } | { readonly kind: 'command' };
  /** For a command: `queue` names the run's queue, anything else a queue that may not exist. */
  readonly routingKey: { readonly kind: 'queue' } | { readonly kind: 'text'; readonly text: string };
  readonly messageType: string | null;
  readonly body: { readonly kind: 'payload'; readonly json: JsonTree } | { readonly kind: 'bytes'; readonly bytes: Uint8Array };
  readonly contentType: string | undefined;
  readonly headers: { readonly [key: string]: JsonTree };
  readonly partitionKey: string | null;
  readonly correlationId: string | null;
  readonly availableAt: 'now' | 'past' | '-infinity' | 'infinity';
}

/** Text PostgreSQL's text and jsonb accept: any unicode but NUL. */
const text = (maxLength: number): fc.Arbitrary<string> =>
  fc.string({ unit: 'grapheme', maxLength }).map((s) => s.split(String.fromCharCode(0)).join(''));

/** Strings on both sides of AMQP's 255-byte short-string limit, in ASCII and in 3-byte characters. */
const aroundLimit: fc.Arbitrary<string> = fc.oneof(
  fc.constantFrom(254, 255, 256, 300).map((n) => 'k'.repeat(n)),
  fc.constantFrom(85, 86, 100).map((n) => '€'.repeat(n)),
  fc.string({ unit: 'grapheme', minLength: 60, maxLength: 140 }).map((s) => s.split(String.fromCharCode(0)).join('')),
);

const shortString: fc.Arbitrary<string> = fc.oneof({ weight: 6, arbitrary: text(24) }, { weight: 1, arbitrary: aroundLimit });

const integer: fc.Arbitrary<bigint> = fc.oneof(
  fc.bigInt({ min: -1000n, max: 1000n }),
  fc.constantFrom(2n ** 53n, 2n ** 53n + 1n, -(2n ** 53n) - 1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 63n, -(2n ** 63n) - 1n, 10n ** 30n),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }),
);

const headerKey: fc.Arbitrary<string> = fc.oneof(
  { weight: 8, arbitrary: text(12).filter((k) => k.length > 0) },
  { weight: 1, arbitrary: fc.constantFrom('!', 'x-!', '€', 'traceparent') },
  { weight: 1, arbitrary: aroundLimit },
);

const jsonTree: fc.Arbitrary<JsonTree> = fc.letrec<{ tree: JsonTree }>((tie) => ({
  tree: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    fc.constant(null),
    fc.boolean(),
    text(40),
    integer,
    fc.double({ noNaN: true, noDefaultInfinity: true }).map((float) => ({ float })),
    fc.array(tie('tree'), { maxLength: 4 }),
    fc.dictionary(headerKey, tie('tree'), { maxKeys: 4 }),
  ),
})).tree;

export function fuzzRow(sharedKeys: readonly string[]): fc.Arbitrary<FuzzRow> {
  return fc.record({
    exchange: fc.oneof(
      { weight: 6, arbitrary: fc.constant({ kind: 'target' as const }) },
      { weight: 2, arbitrary: fc.constant({ kind: 'command' as const }) },
      { weight: 2, arbitrary: shortString.filter((n) => n !== '').map((name) => ({ kind: 'missing' as const, name })) },
    ),
    routingKey: fc.oneof(
      { weight: 3, arbitrary: fc.constant({ kind: 'queue' as const }) },
      { weight: 2, arbitrary: shortString.filter((t) => t !== '').map((t) => ({ kind: 'text' as const, text: t })) },
    ),
    messageType: fc.option(shortString),
    body: fc.oneof(
      { weight: 3, arbitrary: jsonTree.map((json) => ({ kind: 'payload' as const, json })) },
      { weight: 1, arbitrary: fc.uint8Array({ maxLength: 2_048 }).map((bytes) => ({ kind: 'bytes' as const, bytes })) },
    ),
    contentType: fc.option(shortString, { nil: undefined }),
    headers: fc.oneof(
      { weight: 3, arbitrary: fc.dictionary(headerKey, jsonTree, { maxKeys: 5 }) },
      { weight: 1, arbitrary: fc.constant({}) },
    ),
    partitionKey: fc.oneof(fc.constant(null), fc.constantFrom(...sharedKeys), shortString),
    correlationId: fc.option(shortString),
    availableAt: fc.constantFrom('now', 'now', 'now', 'past', '-infinity', 'infinity'),
  });
}

/** The JSON text of a tree: integers printed digit by digit. */
export function jsonText(tree: JsonTree): string {
  if (tree === null || typeof tree === 'boolean') return JSON.stringify(tree);
  if (typeof tree === 'string') return JSON.stringify(tree);
  if (typeof tree === 'bigint') return tree.toString();
  if (Array.isArray(tree)) return `[${tree.map(jsonText).join(',')}]`;
  if ('float' in tree && typeof tree.float === 'number' && Object.keys(tree).length === 1) return JSON.stringify(tree.float);
  const entries = Object.entries(tree as { [key: string]: JsonTree });
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${jsonText(v)}`).join(',')}}`;
}

/** Whether every integer of a tree is within ±2^53, so amqplib's decoding (to numbers) shows it exactly. */
export function safeForComparison(tree: JsonTree): boolean {
  if (tree === null || typeof tree === 'boolean' || typeof tree === 'string') return true;
  if (typeof tree === 'bigint') return tree >= -(2n ** 53n) && tree <= 2n ** 53n;
  if (Array.isArray(tree)) return tree.every(safeForComparison);
  if ('float' in tree && Object.keys(tree).length === 1) return true;
  return Object.values(tree as { [key: string]: JsonTree }).every(safeForComparison);
}
