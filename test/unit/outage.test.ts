import { OutboxError } from '../../src/errors';
import {
  amqpReplyFault,
  databaseFault,
  isBrokerSetupRefusal,
  isClosedForWhatItReceived,
  isDatabaseAway,
  isDatabaseConnectionGone,
  isOutage,
  sqlStateFault,
} from '../../src/util/outage';

/** An error as node-postgres reports the server's answer. */
const serverError = (code: string): Error => Object.assign(new Error(`server said ${code}`), { code, severity: 'ERROR' });
const socketError = (code: string): Error => Object.assign(new Error(`connect ${code} 127.0.0.1:5432`), { code });

describe('the SQLSTATE table', () => {
  test.each([
    ['08006', 'away'], // connection_failure
    ['08001', 'away'],
    ['57P01', 'away'], // admin_shutdown
    ['57P02', 'away'],
    ['57P03', 'away'], // cannot_connect_now
    ['57014', 'away'], // query_canceled (statement timeout)
    ['53300', 'away'], // too_many_connections
    ['53100', 'away'], // disk_full
    ['58030', 'away'], // io_error
    ['40001', 'away'], // serialization_failure
    ['40P01', 'away'], // deadlock_detected
    ['25006', 'away'], // read_only_sql_transaction
    ['25P03', 'away'], // idle_in_transaction_session_timeout
    ['55P03', 'away'], // lock_not_available
    ['22021', 'value'], // character_not_in_repertoire
    ['22001', 'value'], // string_data_right_truncation
    ['23505', 'value'], // unique_violation
    ['54000', 'value'], // program_limit_exceeded
    ['42P01', 'setup'], // undefined_table
    ['42501', 'setup'], // insufficient_privilege
    ['25P02', 'setup'], // in_failed_sql_transaction
    ['P0001', 'setup'], // raise_exception (a trigger)
  ] as const)('%s is %s', (state, kind) => {
    expect(sqlStateFault(state)).toBe(kind);
    expect(databaseFault(serverError(state))).toBe(kind);
    expect(isDatabaseAway(serverError(state))).toBe(kind === 'away');
  });

  test('a failure without a server SQLSTATE is the database away for the consumer statements', () => {
    expect(databaseFault(socketError('ECONNRESET'))).toBe('away');
    expect(databaseFault(socketError('EPIPE'))).toBe('away'); // SQLSTATE-shaped, but no severity
    expect(databaseFault(new Error('timeout exceeded when trying to connect'))).toBe('away');
  });
});

describe('isDatabaseAway (the relay: an error without a SQLSTATE may be a bug)', () => {
  test.each(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED'])(
    'socket error %s',
    (code) => expect(isDatabaseAway(socketError(code))).toBe(true),
  );

  test("node-postgres's words for a lost connection", () => {
    for (const text of [
      'Connection terminated unexpectedly',
      'connection timeout',
      'timeout exceeded when trying to connect',
      'Client has encountered a connection error and is not queryable',
      'Client was closed and is not queryable',
      'terminating connection due to administrator command',
      'the database system is starting up',
    ])
      expect(isDatabaseAway(new Error(text))).toBe(true);
  });

  test('a SQLSTATE made by the relay itself (no severity) counts by its class', () => {
    expect(isDatabaseAway(Object.assign(new Error('no host is writable'), { code: '08001' }))).toBe(true);
  });

  test('bugs, bad values and non-errors are not outages', () => {
    expect(isDatabaseAway(new TypeError('cannot read properties of undefined'))).toBe(false);
    expect(isDatabaseAway(serverError('23505'))).toBe(false);
    expect(isDatabaseAway(undefined)).toBe(false);
    expect(isDatabaseAway('ECONNRESET')).toBe(false);
    expect(isDatabaseAway({ code: 42 })).toBe(false);
  });
});

describe('isDatabaseConnectionGone: the connection, not a statement on it', () => {
  test('gone: socket errors, class 08, the server ending the session', () => {
    for (const err of [
      socketError('ECONNRESET'),
      serverError('08006'),
      serverError('57P01'),
      serverError('57P03'),
      new Error('Connection terminated'),
    ])
      expect(isDatabaseConnectionGone(err)).toBe(true);
  });

  test('not gone: a statement that failed on a healthy connection', () => {
    for (const err of [
      serverError('57014'),
      serverError('40001'),
      serverError('55P03'),
      serverError('25006'),
      new Error('Client was closed'),
    ])
      expect(isDatabaseConnectionGone(err)).toBe(false);
  });
});

test('isOutage: the broker unavailable, or the database away', () => {
  expect(isOutage(new OutboxError('BROKER_UNAVAILABLE', 'no broker answers'))).toBe(true);
  expect(isOutage(socketError('ECONNREFUSED'))).toBe(true);
  expect(isOutage(new OutboxError('INVALID_ARGUMENT', 'bad'))).toBe(false);
  expect(isOutage(serverError('22021'))).toBe(false);
});

describe('AMQP reply codes', () => {
  test('the table', () => {
    expect(amqpReplyFault(320)).toBe('away');
    for (const code of [403, 404, 406, 530]) expect(amqpReplyFault(code)).toBe('setup');
    for (const code of [501, 505, 541]) expect(amqpReplyFault(code)).toBe('value');
  });

  test('a server close other than CONNECTION_FORCED is about what the broker received', () => {
    expect(isClosedForWhatItReceived('Connection closed: 501 (FRAME-ERROR) with message "FRAME_ERROR"')).toBe(true);
    expect(isClosedForWhatItReceived('Channel closed by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED"')).toBe(true);
    expect(isClosedForWhatItReceived('Connection closed: 320 (CONNECTION-FORCED) with message "shutdown"')).toBe(false);
    expect(isClosedForWhatItReceived('read ECONNRESET')).toBe(false);
  });

  test('refusals that waiting does not mend, by code or in the text', () => {
    expect(isBrokerSetupRefusal(Object.assign(new Error('x'), { code: 406 }))).toBe(true);
    expect(isBrokerSetupRefusal(new Error('Operation failed: ExchangeDeclare; 406 (PRECONDITION-FAILED) with message "…"'))).toBe(true);
    expect(isBrokerSetupRefusal(new Error('Handshake terminated by server: 530 (NOT-ALLOWED)'))).toBe(true);
    expect(isBrokerSetupRefusal(new Error('after 200 (OK) came 404 (NOT-FOUND)'))).toBe(true);
    expect(isBrokerSetupRefusal(Object.assign(new Error('x'), { code: 320 }))).toBe(false);
    expect(isBrokerSetupRefusal(new Error('Connection closed: 541 (INTERNAL-ERROR)'))).toBe(false);
    expect(isBrokerSetupRefusal(undefined)).toBe(false);
  });
});
