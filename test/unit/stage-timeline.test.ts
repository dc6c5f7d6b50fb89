import { StageTimeline, type Stage } from '../../src/relay/stage-timeline';
import { fakeMessage } from './fake-message';

test('a published message gets one time per stage, from its available_at to the commit of its marks', () => {
  let now = 10_000;
  const seen: [Stage, number][] = [];
  const timeline = new StageTimeline(
    (stage, seconds) => seen.push([stage, seconds]),
    () => now,
  );
  const first = fakeMessage({ availableAt: new Date(9_990) });
  const retried = fakeMessage({ availableAt: new Date(1_000), attempts: 2 });
  const unconfirmed = fakeMessage({ availableAt: new Date(9_000) });
  timeline.claimed();
  now += 2;
  timeline.wrote(first);
  timeline.wrote(retried);
  timeline.wrote(unconfirmed);
  now += 5;
  timeline.settled(first);
  timeline.settled(retried);
  now += 1;
  timeline.marked([first, retried, unconfirmed]);
  expect(seen).toEqual([
    ['due_to_claimed', 0.01],
    ['claimed_to_written', 0.002],
    ['written_to_confirmed', 0.005],
    ['confirmed_to_marked', 0.001],
    // A retry's due time is its next attempt, which the message does not carry: no first stage.
    ['claimed_to_written', 0.002],
    ['written_to_confirmed', 0.005],
    ['confirmed_to_marked', 0.001],
  ]);
});
