import { settlesWithin, TIMED_OUT, withDeadline } from '../../src/util/deadline';
import { deferred } from '../../src/util/deferred';

describe('withDeadline', () => {
  test('the value of work that settles in time', async () => {
    await expect(withDeadline(Promise.resolve(42), 1_000)).resolves.toBe(42);
  });

  test('TIMED_OUT when the time runs out first; the work goes on', async () => {
    const work = deferred<string>();
    await expect(withDeadline(work.promise, 10)).resolves.toBe(TIMED_OUT);
    work.resolve('later');
    await expect(work.promise).resolves.toBe('later');
  });

  test('a rejection in time is passed on', async () => {
    await expect(withDeadline(Promise.reject(new Error('no')), 1_000)).rejects.toThrow('no');
  });

  test('a rejection after the deadline is not', async () => {
    const work = deferred<number>();
    await expect(withDeadline(work.promise, 10)).resolves.toBe(TIMED_OUT);
    work.reject(new Error('late'));
    await expect(work.promise).rejects.toThrow('late');
  });

  test('leaves no timer that keeps the process alive, and clears it when work wins', async () => {
    const before = process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length;
    await withDeadline(Promise.resolve(1), 60_000);
    expect(process.getActiveResourcesInfo().filter((r) => r === 'Timeout').length).toBe(before);
  });
});

describe('settlesWithin', () => {
  test('true when the work resolves or rejects in time, false when it does not', async () => {
    await expect(settlesWithin(Promise.resolve('x'), 1_000)).resolves.toBe(true);
    await expect(settlesWithin(Promise.reject(new Error('closing failed')), 1_000)).resolves.toBe(true);
    await expect(settlesWithin(new Promise(() => undefined), 10)).resolves.toBe(false);
  });
});

describe('deferred', () => {
  test('resolves with what is given, from outside', async () => {
    const d = deferred<number>();
    setImmediate(() => d.resolve(7));
    await expect(d.promise).resolves.toBe(7);
  });

  test('rejects with what is given; later calls change nothing', async () => {
    const d = deferred<number>();
    d.reject(new Error('first'));
    d.resolve(1);
    await expect(d.promise).rejects.toThrow('first');
  });

  test('void by default', async () => {
    const d = deferred();
    d.resolve();
    await expect(d.promise).resolves.toBeUndefined();
  });
});
