import { isClosedForWhatItReceived } from '../../src/util/outage';
import { Suspects } from '../../src/broker/suspects';
import type { PublishOutcome } from '../../src/domain/outcome';
import { fakeMessage } from './fake-message';

const FRAME_ERROR =
  'Connection closed: 501 (FRAME-ERROR) with message "FRAME_ERROR - type 2, all octets = <<>>: {frame_too_large,9000,8184}"';
const FORCED =
  'Connection closed: 320 (CONNECTION-FORCED) with message "CONNECTION_FORCED - broker forced connection closure with reason \'shutdown\'"';
const unconfirmed: PublishOutcome = { kind: 'unconfirmed', error: 'channel closed' };
const confirmed: PublishOutcome = { kind: 'confirmed' };

describe('which closes are the broker refusing what it received', () => {
  test('a server close with a reply code is a refusal; a shutdown or a network loss is not', () => {
    expect(isClosedForWhatItReceived(FRAME_ERROR)).toBe(true);
    expect(
      isClosedForWhatItReceived(
        'Channel closed by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - write access to exchange \'x\' refused"',
      ),
    ).toBe(true);
    expect(isClosedForWhatItReceived(FORCED)).toBe(false);
    expect(isClosedForWhatItReceived('read ECONNRESET')).toBe(false);
    expect(isClosedForWhatItReceived('Heartbeat timeout')).toBe(false);
  });
});

describe('suspects: a message the broker closes the connection for', () => {
  test('messages in flight at a refusal become suspects; a suspect alone in flight at the next refusal fails', () => {
    const suspects = new Suspects();
    const [good, bad] = [fakeMessage(), fakeMessage()];
    expect(suspects.judge([good!, bad!], [unconfirmed, unconfirmed], FRAME_ERROR)).toEqual([unconfirmed, unconfirmed]);
    expect(suspects.has(good!) && suspects.has(bad!)).toBe(true);
    expect(suspects.judge([good!], [confirmed], undefined)).toEqual([confirmed]);
    expect(suspects.has(good!)).toBe(false);
    expect(suspects.judge([bad!], [unconfirmed], FRAME_ERROR)).toEqual([
      {
        kind: 'failed',
        reason: 'invalid_message',
        error: `the broker closed the connection each time this message was sent (${FRAME_ERROR})`,
      },
    ]);
  });

  test('a network loss or a broker shutdown makes no suspect, and a close that names its message neither', () => {
    const suspects = new Suspects();
    const message = fakeMessage();
    suspects.judge([message], [unconfirmed], 'read ECONNRESET');
    suspects.judge([message], [unconfirmed], FORCED);
    suspects.judge(
      [message],
      [unconfirmed],
      "Channel closed by server: 404 (NOT-FOUND) with message \"NOT_FOUND - no exchange 'x' in vhost '/'\"",
    );
    expect(suspects.has(message)).toBe(false);
  });
});
