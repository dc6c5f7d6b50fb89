import { SharedExclusive } from '../../src/util/exclusive';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('an exclusive holder runs alone: after the shared ones in flight, before shared ones that came later', async () => {
  const gate = new SharedExclusive();
  const log: string[] = [];
  let releaseFirst: () => void = () => undefined;
  const first = gate.run(false, () => new Promise<void>((resolve) => (releaseFirst = () => (log.push('shared 1 done'), resolve()))));
  const exclusive = gate.run(true, async () => {
    log.push('exclusive');
    await tick();
    log.push('exclusive done');
  });
  const later = gate.run(false, async () => {
    log.push('shared 2');
  });
  await tick();
  expect(log).toEqual([]);
  releaseFirst();
  await Promise.all([first, exclusive, later]);
  expect(log).toEqual(['shared 1 done', 'exclusive', 'exclusive done', 'shared 2']);
});

test('shared holders run together, and a failure releases the gate', async () => {
  const gate = new SharedExclusive();
  let running = 0;
  let most = 0;
  const work = async (): Promise<void> => {
    running += 1;
    most = Math.max(most, running);
    await tick();
    running -= 1;
  };
  await Promise.all([gate.run(false, work), gate.run(false, work), gate.run(false, work)]);
  expect(most).toBe(3);
  await expect(gate.run(true, () => Promise.reject(new Error('boom')))).rejects.toThrow('boom');
  await expect(gate.run(false, () => Promise.resolve('ok'))).resolves.toBe('ok');
});
