import { parseDatabaseUrl, type DatabaseHost } from '../../src/config/database-url';
import { HostPicker, NoHostError, qualifies, type HostState } from '../../src/db/host-picker';
import { isDatabaseAway } from '../../src/util/outage';
import { createLogger } from '../../src/observability/logger';

const PRIMARY: HostState = { inRecovery: false, readOnly: false };
const STANDBY: HostState = { inRecovery: true, readOnly: true };
const READ_ONLY: HostState = { inRecovery: false, readOnly: true };
const silent = createLogger({ level: 'silent', secrets: [] });

function refused(label: string): Error {
  return Object.assign(new Error(`connect ECONNREFUSED ${label}`), { code: 'ECONNREFUSED' });
}

/** A picker over `url` whose probe answers from `states` (a host missing there refuses), counting probes. */
function pickerFor(url: string, states: Map<string, HostState | Error | (() => Promise<HostState>)>) {
  const probes: string[] = [];
  const probe = async (host: DatabaseHost): Promise<HostState> => {
    probes.push(host.label);
    const state = states.get(host.label) ?? refused(host.label);
    if (state instanceof Error) throw state;
    return typeof state === 'function' ? state() : state;
  };
  return { picker: new HostPicker(parseDatabaseUrl(url), probe, silent), probes };
}

describe('qualifies', () => {
  test('read-write wants a writable primary, primary any primary, any whatever answers', () => {
    expect([PRIMARY, READ_ONLY, STANDBY].map((s) => qualifies('read-write', s))).toEqual([true, false, false]);
    expect([PRIMARY, READ_ONLY, STANDBY].map((s) => qualifies('primary', s))).toEqual([true, true, false]);
    expect([PRIMARY, READ_ONLY, STANDBY].map((s) => qualifies('any', s))).toEqual([true, true, true]);
  });
});

describe('HostPicker', () => {
  const URL = 'postgres://u@h1:5432,h2:5433,h3:5434/db?target_session_attrs=read-write';

  test('skips a standby and a dead host and keeps the writable one', async () => {
    const { picker, probes } = pickerFor(
      URL,
      new Map([
        ['h1:5432', STANDBY],
        ['h3:5434', PRIMARY],
      ]),
    );
    expect((await picker.pick()).label).toBe('h3:5434');
    expect(probes.sort()).toEqual(['h1:5432', 'h2:5433', 'h3:5434']);
    // Kept: no second probe round.
    expect((await picker.pick()).label).toBe('h3:5434');
    expect(probes).toHaveLength(3);
  });

  test('concurrent connects share one probe round', async () => {
    const { picker, probes } = pickerFor(URL, new Map([['h2:5433', PRIMARY]]));
    const picked = await Promise.all([picker.pick(), picker.pick(), picker.pick()]);
    expect(picked.map((h) => h.label)).toEqual(['h2:5433', 'h2:5433', 'h2:5433']);
    expect(probes).toHaveLength(3);
  });

  test('a host that does not answer delays nothing: the first one that serves is taken', async () => {
    const never = (): Promise<HostState> => new Promise<HostState>(() => undefined);
    const { picker } = pickerFor(
      URL,
      new Map<string, HostState | (() => Promise<HostState>)>([
        ['h1:5432', never],
        ['h2:5433', PRIMARY],
      ]),
    );
    expect((await picker.pick()).label).toBe('h2:5433');
  });

  test('no host serves: a transient 08001 error naming each host and why', async () => {
    const { picker } = pickerFor(
      URL,
      new Map([
        ['h1:5432', STANDBY],
        ['h2:5433', READ_ONLY],
      ]),
    );
    const err = await picker.pick().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NoHostError);
    expect(isDatabaseAway(err)).toBe(true);
    expect((err as Error).message).toBe(
      'no database host serves target_session_attrs=read-write: h1:5432 is a standby (in recovery); h2:5433 is read-only;' +
        ' h3:5434 cannot be reached (connect ECONNREFUSED h3:5434)',
    );
  });

  test('every host refusing the login the same way: that error, as with one host', async () => {
    const auth = (): Error => Object.assign(new Error('password authentication failed for user "u"'), { code: '28P01' });
    const { picker } = pickerFor(
      URL,
      new Map([
        ['h1:5432', auth()],
        ['h2:5433', auth()],
        ['h3:5434', auth()],
      ]),
    );
    await expect(picker.pick()).rejects.toMatchObject({ code: '28P01' });
  });

  test('after a failover: the lost host is forgotten and the promoted standby found', async () => {
    const states = new Map<string, HostState | Error>([
      ['h1:5432', PRIMARY],
      ['h2:5433', STANDBY],
    ]);
    const { picker } = pickerFor(URL, states);
    const first = await picker.pick();
    expect(first.label).toBe('h1:5432');
    states.delete('h1:5432'); // killed
    states.set('h2:5433', PRIMARY); // promoted
    expect((await picker.pick()).label).toBe('h1:5432'); // not known to be lost yet
    picker.forget(first);
    expect((await picker.pick()).label).toBe('h2:5433');
  });

  test('forgetting a host that is not the choice changes nothing', async () => {
    const { picker, probes } = pickerFor(URL, new Map([['h2:5433', PRIMARY]]));
    const chosen = await picker.pick();
    picker.forget(parseDatabaseUrl(URL).hosts[0]!);
    expect(await picker.pick()).toBe(chosen);
    expect(probes).toHaveLength(3);
  });

  test('leaving a host drops every connection open to it, and only those', async () => {
    const states = new Map<string, HostState | Error>([['h1:5432', PRIMARY]]);
    const { picker } = pickerFor(URL, states);
    const h1 = await picker.pick();
    const h2 = parseDatabaseUrl(URL).hosts[1]!;
    const dropped: string[] = [];
    picker.track(h1, { drop: () => dropped.push('a') });
    const untrackB = picker.track(h1, { drop: () => dropped.push('b') });
    picker.track(h1, { drop: () => dropped.push('c') });
    picker.track(h2, { drop: () => dropped.push('other host') });
    untrackB();
    states.set('h1:5432', READ_ONLY);
    states.set('h3:5434', PRIMARY);
    picker.leave(h1, 'read-only');
    expect(dropped).toEqual(['a', 'c']);
    expect((await picker.pick()).label).toBe('h3:5434');
  });

  test('primary takes a read-only primary; any takes whatever answers', async () => {
    const primary = pickerFor(
      URL.replace('read-write', 'primary'),
      new Map([
        ['h1:5432', STANDBY],
        ['h2:5433', READ_ONLY],
      ]),
    );
    expect((await primary.picker.pick()).label).toBe('h2:5433');
    const any = pickerFor('postgres://u@h1:5432,h2:5433/db', new Map([['h2:5433', STANDBY]]));
    expect((await any.picker.pick()).label).toBe('h2:5433');
  });
});
