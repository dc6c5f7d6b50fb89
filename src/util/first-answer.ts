/**
 * Tries `urls` in order (a cluster's nodes, say) and returns what `open` made of the
 * first one that answers, with that URL; `onFailure` hears of each one before it that did
 * not, as it happens. Undefined when none answered: the caller words the error from what
 * `onFailure` heard. Used by the one-shot commands; the relay and the consumer reconnect
 * in a loop of their own, one URL per try with a backoff between.
 */
export async function firstThatAnswers<T>(
  urls: readonly string[],
  open: (url: string) => Promise<T>,
  onFailure: (url: string, err: unknown) => void,
): Promise<{ readonly value: T; readonly url: string } | undefined> {
  for (const url of urls) {
    try {
      return { value: await open(url), url };
    } catch (err: unknown) {
      onFailure(url, err);
    }
  }
  return undefined;
}
