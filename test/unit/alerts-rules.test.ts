import { AlertRules, timeInWords, type AlertRulesConfig, type Decision } from '../../src/observe/alert-rules';
import type { CertificateFacts } from '../../src/observe/readiness';

const DAY = 86_400_000;
const HOUR = 3_600_000;
const START = Date.UTC(2030, 0, 1);

let now = START;
const rules = (config: Partial<AlertRulesConfig> = {}): AlertRules => new AlertRules({ afterFailures: 3, daysLeft: [14, 7, 2], ...config }, () => now);

/** A 90-day certificate issued at `from`. */
const cert = (serial: string, from = START, lifetime = 90 * DAY): CertificateFacts => ({ serial, notBefore: from, notAfter: from + lifetime });
const fail = (r: AlertRules, failures: number, notAfter: number | null = START + 90 * DAY, name = 'a.example'): Decision[] =>
  r.renewalFailed({ name, failures, error: 'connect ECONNREFUSED 127.0.0.1:14000', notAfter });
const sent = (ds: readonly Decision[]): string[] => ds.filter((d) => d.send).map((d) => `${d.alert.event} ${d.alert.name} ${d.alert.severity}`);

beforeEach(() => {
  now = START;
});

describe('renewal failures', () => {
  test('alert once after N failures in a row, not before, not again in the same incident', () => {
    const r = rules();
    r.certificateInstalled('a.example', cert('01'));
    expect(fail(r, 1)).toEqual([]);
    expect(fail(r, 2)).toEqual([]);
    const third = fail(r, 3);
    expect(sent(third)).toEqual(['renewal-failing a.example warning']);
    const alert = third[0]!.alert;
    expect(alert.message).toMatch(/^Renewing the certificate for a\.example has failed 3 times in a row; the certificate still served expires in 90 days/);
    expect(alert.message).toContain('ECONNREFUSED');
    expect(alert.details).toEqual({ failures: 3, error: 'connect ECONNREFUSED 127.0.0.1:14000', notAfter: new Date(START + 90 * DAY).toISOString() });
    expect(alert.at).toBe(new Date(START).toISOString());
    now += 2 * HOUR; // past the rate limit: still the same incident
    expect(fail(r, 4)).toEqual([]);
    expect(fail(r, 12)).toEqual([]);
  });

  test('no certificate at all: "obtaining", critical', () => {
    const r = rules({ afterFailures: 1 });
    const [d] = fail(r, 1, null);
    expect(d!.alert.severity).toBe('critical');
    expect(d!.alert.message).toMatch(/^Obtaining the certificate for a\.example has failed 1 time in a row; nothing is served for this name yet/);
  });

  test('one recovery when a new certificate arrives after an alerted incident; a new incident alerts again', () => {
    const r = rules();
    r.certificateInstalled('a.example', cert('01'));
    fail(r, 3);
    now += 2 * HOUR;
    const recovered = r.certificateInstalled('a.example', cert('02', now));
    expect(sent(recovered)).toEqual(['recovered a.example info']);
    expect(recovered[0]!.alert.details).toEqual({ serial: '02', notAfter: new Date(now + 90 * DAY).toISOString(), resolved: ['renewal-failing'] });
    // The same certificate again (re-read from storage): nothing.
    expect(r.certificateInstalled('a.example', cert('02', now))).toEqual([]);
    // Another certificate without an incident: no recovery.
    expect(r.certificateInstalled('a.example', cert('03', now))).toEqual([]);
    now += 2 * HOUR;
    expect(sent(fail(r, 3))).toEqual(['renewal-failing a.example warning']);
  });

  test('no recovery for an incident that never reached the threshold', () => {
    const r = rules();
    r.certificateInstalled('a.example', cert('01'));
    fail(r, 2);
    expect(r.certificateInstalled('a.example', cert('02'))).toEqual([]);
  });

  test('names are independent', () => {
    const r = rules({ afterFailures: 1 });
    expect(sent([...fail(r, 1, null, 'a.example'), ...fail(r, 1, null, 'b.example')])).toEqual([
      'renewal-failing a.example critical',
      'renewal-failing b.example critical',
    ]);
  });
});

describe('days-left thresholds', () => {
  test('each threshold once per serial, at the time it is crossed, the last one critical', () => {
    const r = rules();
    expect(r.certificateInstalled('a.example', cert('01'))).toEqual([]);
    const notAfter = START + 90 * DAY;
    expect(r.nextCheck()).toBe(notAfter - 14 * DAY);
    now = notAfter - 14 * DAY - 1;
    expect(r.checkExpiry()).toEqual([]);
    now = notAfter - 14 * DAY;
    const at14 = r.checkExpiry();
    expect(sent(at14)).toEqual(['certificate-expiring a.example warning']);
    expect(at14[0]!.alert.message).toBe(`The certificate for a.example expires in 14 days (${new Date(notAfter).toISOString()}) and has not been renewed yet.`);
    expect(at14[0]!.alert.details).toEqual({ serial: '01', notAfter: new Date(notAfter).toISOString(), daysLeft: 14, threshold: 14 });
    expect(r.checkExpiry()).toEqual([]);
    expect(r.nextCheck()).toBe(notAfter - 7 * DAY);
    now = notAfter - 7 * DAY;
    expect(sent(r.checkExpiry())).toEqual(['certificate-expiring a.example warning']);
    now = notAfter - 2 * DAY - HOUR;
    expect(r.checkExpiry()).toEqual([]);
    now = notAfter - 2 * DAY;
    const last = r.checkExpiry();
    expect(sent(last)).toEqual(['certificate-expiring a.example critical']);
    expect(last[0]!.alert.message).toContain('expires in 2 days');
    expect(r.nextCheck()).toBeNull();
    now = notAfter + 1;
    expect(r.checkExpiry()).toEqual([]);
  });

  test('thresholds crossed together give one alert, for the smallest; an expired certificate says so', () => {
    const r = rules();
    now = START + 89 * DAY; // 1 day left when first seen
    const ds = r.certificateInstalled('a.example', cert('01'));
    expect(sent(ds)).toEqual(['certificate-expiring a.example critical']);
    expect(ds[0]!.alert.details).toMatchObject({ threshold: 2, daysLeft: 1 });
    expect(r.nextCheck()).toBeNull();

    const other = rules();
    now = START + 91 * DAY;
    const expired = other.certificateInstalled('a.example', cert('01'));
    expect(expired[0]!.alert.message).toMatch(/^The certificate for a\.example expired at .* and has not been replaced/);
    expect(expired[0]!.alert.severity).toBe('critical');
  });

  test('a new serial re-arms every threshold and recovers the expiry incident', () => {
    const r = rules();
    r.certificateInstalled('a.example', cert('01'));
    now = START + 80 * DAY;
    expect(sent(r.checkExpiry())).toEqual(['certificate-expiring a.example warning']);
    now += 2 * HOUR;
    const renewed = r.certificateInstalled('a.example', cert('02', now));
    expect(sent(renewed)).toEqual(['recovered a.example info']);
    expect(renewed[0]!.alert.details).toMatchObject({ resolved: ['certificate-expiring'] });
    expect(r.nextCheck()).toBe(now + 90 * DAY - 14 * DAY);
  });

  test('thresholds at or above a third of the lifetime are skipped (short-lived certificates)', () => {
    const r = rules();
    // 6-day certificate: renewal is due with 2 days left, so 14, 7 and 2 never alert.
    expect(r.certificateInstalled('short.example', cert('01', START, 6 * DAY))).toEqual([]);
    expect(r.nextCheck()).toBeNull();
    // 7-day certificate: 2 days is inside the last third (2.33 days), so it alerts.
    expect(r.certificateInstalled('week.example', cert('02', START, 7 * DAY))).toEqual([]);
    expect(r.nextCheck()).toBe(START + 5 * DAY);
  });
});

describe('rate limits', () => {
  test('at most one alert per name and kind per interval; suppressed ones say why', () => {
    const r = rules({ afterFailures: 1 });
    r.certificateInstalled('a.example', cert('01'));
    expect(sent(fail(r, 1))).toHaveLength(1);
    now += 10 * 60_000;
    r.certificateInstalled('a.example', cert('02', now)); // recovery (sent: other kind)
    now += 10 * 60_000;
    const again = fail(r, 1);
    expect(again).toHaveLength(1);
    expect(again[0]!.send).toBe(false);
    expect(again[0]!.suppressed).toBe('one renewal-failing alert for a.example was sent 20 minutes ago');
    // The incident was not alerted: no recovery owed for it.
    now += 10 * 60_000;
    expect(r.certificateInstalled('a.example', cert('03', now))).toEqual([]);
    now += HOUR;
    expect(sent(fail(r, 1))).toHaveLength(1);
  });

  test('a global cap per hour', () => {
    const r = rules({ afterFailures: 1, maxPerHour: 3 });
    const names = ['a', 'b', 'c', 'd', 'e'].map((n) => `${n}.example`);
    const ds = names.flatMap((name) => fail(r, 1, null, name));
    expect(ds.map((d) => d.send)).toEqual([true, true, true, false, false]);
    expect(ds[3]!.suppressed).toBe('3 alerts were sent in the last hour');
    now += HOUR;
    expect(sent(fail(r, 1, null, 'f.example'))).toHaveLength(1);
  });
});

test('timeInWords', () => {
  expect(timeInWords(3 * DAY + 5 * HOUR)).toBe('3 days');
  expect(timeInWords(47 * HOUR)).toBe('47 hours');
  expect(timeInWords(HOUR)).toBe('1 hour');
  expect(timeInWords(90_000)).toBe('1 minute');
  expect(timeInWords(0)).toBe('1 minute');
});
