import { parseServerName, type ParsedServerName } from '../../src/config/servername';
import { afterSrv, afterWellKnown, authority, firstStep, parseOverride, targetLabel, type SrvRecord } from '../../src/doctor/resolve';

function name(text: string): ParsedServerName {
  const parsed = parseServerName(text);
  if (!parsed.ok) throw new Error(parsed.error);
  return parsed.value;
}

describe('firstStep (spec steps 1–3)', () => {
  test.each([
    ['192.0.2.1', { host: '192.0.2.1', port: 8448, sni: null, certName: '192.0.2.1', hostHeader: '192.0.2.1' }, 'IP literal'],
    ['192.0.2.1:1234', { host: '192.0.2.1', port: 1234, sni: null, certName: '192.0.2.1', hostHeader: '192.0.2.1:1234' }, 'IP literal'],
    ['[2001:db8::1]', { host: '2001:db8::1', port: 8448, sni: null, certName: '2001:db8::1', hostHeader: '[2001:db8::1]' }, 'IP literal'],
    ['example.com:1234', { host: 'example.com', port: 1234, sni: 'example.com', certName: 'example.com', hostHeader: 'example.com:1234' }, 'explicit port'],
  ])('%s connects directly', (text, target, via) => {
    expect(firstStep(name(text))).toEqual({ kind: 'targets', targets: [target], via });
  });

  test('a DNS name without a port asks its well-known', () => {
    expect(firstStep(name('example.com'))).toEqual({ kind: 'well-known', hostname: 'example.com' });
  });
});

describe('afterWellKnown (step 3)', () => {
  test('no valid answer: SRV and 8448 on the server name itself', () => {
    expect(afterWellKnown('example.com', null)).toEqual({ kind: 'srv', hostname: 'example.com' });
  });

  test('a delegated name with a port: that name and port; SNI, certificate and Host follow the delegated name', () => {
    expect(afterWellKnown('example.com', name('matrix.example.com:443'))).toEqual({
      kind: 'targets',
      targets: [{ host: 'matrix.example.com', port: 443, sni: 'matrix.example.com', certName: 'matrix.example.com', hostHeader: 'matrix.example.com:443' }],
      via: 'well-known m.server matrix.example.com:443',
    });
  });

  test('a delegated name without a port: SRV on the delegated name', () => {
    expect(afterWellKnown('example.com', name('matrix.example.com'))).toEqual({ kind: 'srv', hostname: 'matrix.example.com' });
  });

  test('a delegated IP literal: no SNI, certificate for the IP, Host with the port only when given', () => {
    const bare = afterWellKnown('example.com', name('192.0.2.7'));
    expect(bare).toMatchObject({ targets: [{ host: '192.0.2.7', port: 8448, sni: null, certName: '192.0.2.7', hostHeader: '192.0.2.7' }] });
    const withPort = afterWellKnown('example.com', name('192.0.2.7:443'));
    expect(withPort).toMatchObject({ targets: [{ port: 443, hostHeader: '192.0.2.7:443' }] });
  });
});

describe('afterSrv (steps 4–6)', () => {
  const srv = (name: string, port: number, priority = 10, weight = 0): SrvRecord => ({ name, port, priority, weight });

  test('_matrix-fed._tcp records, by priority then weight; SNI, certificate and Host stay the looked-up name', () => {
    const out = afterSrv('example.com', [srv('b.example', 8449, 10, 1), srv('a.example.', 443, 5), srv('c.example', 8450, 10, 5)], [srv('old.example', 1)]);
    expect(out.deprecated).toBe(false);
    expect(out.via).toBe('SRV _matrix-fed._tcp.example.com');
    expect(out.targets.map((t) => `${t.host}:${t.port}`)).toEqual(['a.example:443', 'c.example:8450', 'b.example:8449']);
    expect(new Set(out.targets.map((t) => `${t.sni}|${t.certName}|${t.hostHeader}`))).toEqual(new Set(['example.com|example.com|example.com']));
  });

  test('only the deprecated _matrix._tcp record: used, and flagged', () => {
    const out = afterSrv('example.com', null, [srv('hs.example', 8448)]);
    expect(out).toEqual({
      targets: [{ host: 'hs.example', port: 8448, sni: 'example.com', certName: 'example.com', hostHeader: 'example.com' }],
      via: 'SRV _matrix._tcp.example.com (deprecated)',
      deprecated: true,
    });
  });

  test('no record (or only "." = no service): the name itself on 8448', () => {
    const fallback = { host: 'example.com', port: 8448, sni: 'example.com', certName: 'example.com', hostHeader: 'example.com' };
    expect(afterSrv('example.com', null, null)).toEqual({ targets: [fallback], via: 'no SRV record: example.com port 8448', deprecated: false });
    expect(afterSrv('example.com', [srv('.', 0)], []).targets).toEqual([fallback]);
  });
});

describe('parseOverride (--resolve)', () => {
  test.each([
    ['example.com:443:127.0.0.1', { host: 'example.com', port: 443, address: '127.0.0.1', connectPort: 443 }],
    ['Example.COM:443:127.0.0.1:8443', { host: 'example.com', port: 443, address: '127.0.0.1', connectPort: 8443 }],
    ['example.com:8448:::1', { host: 'example.com', port: 8448, address: '::1', connectPort: 8448 }],
    ['example.com:8448:[::1]', { host: 'example.com', port: 8448, address: '::1', connectPort: 8448 }],
    ['example.com:8448:[2001:db8::1]:9000', { host: 'example.com', port: 8448, address: '2001:db8::1', connectPort: 9000 }],
  ])('%s', (text, value) => {
    expect(parseOverride(text)).toEqual({ ok: true, value });
  });

  test.each(['example.com:443', 'example.com:443:matrix.example.com', 'example.com:70000:127.0.0.1', 'exa_mple.com:443:127.0.0.1', 'example.com:443:127.0.0.1:0', ':443:127.0.0.1'])(
    '%s is refused with the expected form',
    (text) => {
      expect(parseOverride(text)).toEqual({ ok: false, error: `--resolve ${text}: expected HOST:PORT:ADDRESS, e.g. example.com:443:192.0.2.1 (ADDRESS may carry a port: 127.0.0.1:8443)` });
    },
  );
});

test('authority and targetLabel bracket IPv6 and drop :443 from URLs only', () => {
  expect(authority('example.com', 443)).toBe('example.com');
  expect(authority('example.com', 8448)).toBe('example.com:8448');
  expect(authority('::1', 8448)).toBe('[::1]:8448');
  expect(targetLabel({ host: 'example.com', port: 443 })).toBe('example.com:443');
  expect(targetLabel({ host: '2001:db8::1', port: 8448 })).toBe('[2001:db8::1]:8448');
});
