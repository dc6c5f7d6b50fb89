/** The class of a stored error, for the totals. */
export function reasonOf(error: string): string {
  const classes: [RegExp, string][] = [
    [/^header key .* bytes/, 'header key over 255 bytes'],
    [/^header .* is the integer .* beyond/, 'header integer beyond 64 bits'],
    [/^header/, 'header that cannot be encoded'],
    [/ is \d+ bytes; AMQP allows at most 255 bytes/, 'field over 255 bytes'],
    [/^exchange ".*" does not exist/, 'unknown exchange'],
    [/^no queue named|returned as unroutable/, 'command to a missing queue'],
    [/^cannot check/, 'topology check refused the name'],
    [/^cannot read the row/, 'row that cannot be read'],
    [/^cannot publish/, 'isolated by narrowing'],
    [/broker closed the connection/, 'refused by the broker'],
  ];
  return classes.find(([pattern]) => pattern.test(error))?.[1] ?? `other: ${error.slice(0, 60)}`;
}

/** `value` with its object keys sorted, for comparing decoded headers. */
export function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === 'object' && !Buffer.isBuffer(value)) {
    return Object.fromEntries(
      Object.entries(value as Record<string, unknown>)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, v]) => [k, sortKeys(v)]),
    );
  }
  return value;
}
