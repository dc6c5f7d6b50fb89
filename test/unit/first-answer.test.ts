import { firstThatAnswers } from '../../src/util/first-answer';

describe('firstThatAnswers', () => {
  test('the first URL that answers wins; the ones before it are reported in order; the rest are not tried', async () => {
    const tried: string[] = [];
    const failed: string[] = [];
    const first = await firstThatAnswers(
      ['a', 'b', 'c', 'd'],
      async (url) => {
        tried.push(url);
        if (url === 'a' || url === 'b') throw new Error(`${url} refused`);
        return `connection to ${url}`;
      },
      (url, err) => failed.push(`${url}: ${(err as Error).message}`),
    );
    expect(first).toEqual({ value: 'connection to c', url: 'c' });
    expect(tried).toEqual(['a', 'b', 'c']);
    expect(failed).toEqual(['a: a refused', 'b: b refused']);
  });

  test('undefined when none answers, each failure reported', async () => {
    const failed: string[] = [];
    const first = await firstThatAnswers(
      ['a', 'b'],
      () => Promise.reject(new Error('down')),
      (url) => failed.push(url),
    );
    expect(first).toBeUndefined();
    expect(failed).toEqual(['a', 'b']);
  });

  test('no URLs: undefined, nothing tried', async () => {
    const open = jest.fn();
    expect(await firstThatAnswers([], open, () => undefined)).toBeUndefined();
    expect(open).not.toHaveBeenCalled();
  });
});
