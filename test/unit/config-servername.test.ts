import {
  dnsNameProblem,
  formatServerName,
  isDnsName,
  isMatrixUserId,
  parseHostname,
  parseServerName,
} from '../../src/config/servername';

describe('parseServerName', () => {
  test.each([
    ['example.com', { host: 'example.com', kind: 'dns' }],
    ['example.com:8448', { host: 'example.com', kind: 'dns', port: 8448 }],
    ['localhost', { host: 'localhost', kind: 'dns' }],
    ['Matrix.Example.COM', { host: 'Matrix.Example.COM', kind: 'dns' }],
    ['1.2.3.4', { host: '1.2.3.4', kind: 'ipv4' }],
    ['1.2.3.4:1234', { host: '1.2.3.4', kind: 'ipv4', port: 1234 }],
    ['[1234:5678::abcd]', { host: '1234:5678::abcd', kind: 'ipv6' }],
    ['[1234:5678::abcd]:5678', { host: '1234:5678::abcd', kind: 'ipv6', port: 5678 }],
    ['[::ffff:1.2.3.4]:8448', { host: '::ffff:1.2.3.4', kind: 'ipv6', port: 8448 }],
    ['a.b-c.example', { host: 'a.b-c.example', kind: 'dns' }],
  ])('%s parses', (text, parsed) => {
    expect(parseServerName(text)).toEqual({ ok: true, value: parsed });
    expect(formatServerName(parsed as Parameters<typeof formatServerName>[0])).toBe(text);
  });

  test.each([
    ['', 'the server name is empty'],
    ['example.com:', "the port in 'example.com:' is not a port (1–65535)"],
    ['example.com:0', "the port 0 in 'example.com:0' is not a port (1–65535)"],
    ['example.com:70000', "the port 70000 in 'example.com:70000' is not a port (1–65535)"],
    ['example.com:123456', "the port in 'example.com:123456' is not a port (1–65535)"],
    ['example.com:http', "the port in 'example.com:http' is not a port (1–65535)"],
    ['2001:db8::1', "'2001:db8::1': an IPv6 address must be written in brackets, e.g. [2001:db8::1]:8448"],
    ['[2001:db8::1', "'[2001:db8::1' opens '[' for an IPv6 address but never closes it"],
    ['[not:v6]', "'[not:v6]' does not hold a valid IPv6 address between the brackets"],
    ['[::1]8448', "'[::1]8448': only ':<port>' may follow the IPv6 address"],
    ['300.1.1.1', "'300.1.1.1' is not a valid IPv4 address"],
    ['exa_mple.com', "'exa_mple.com' is not a valid host name: '_' is not allowed in a DNS name (letters, digits, '-' and '.' only)"],
    ['example..com', "'example..com' is not a valid host name: a DNS name cannot have an empty label (leading, trailing or doubled dot)"],
    ['-example.com', "'-example.com' is not a valid host name: the label '-example' starts or ends with '-'"],
    ['example .com', "'example .com' contains whitespace"],
  ])('%p is rejected', (text, error) => {
    expect(parseServerName(text)).toEqual({ ok: false, error });
  });

  test('a DNS name is at most 255 characters, each label at most 63', () => {
    const label = 'a'.repeat(63);
    const long = [label, label, label, label].join('.'); // 255 characters
    expect(long).toHaveLength(255);
    expect(parseServerName(long).ok).toBe(true);
    expect(parseServerName(`${long}a`)).toEqual({
      ok: false,
      error: expect.stringContaining('a DNS name has at most 255 characters; this one has 256'),
    });
    expect(dnsNameProblem(`${'b'.repeat(64)}.com`)).toMatch(/longer than 63 characters/);
  });
});

describe('parseHostname', () => {
  test.each([
    ['matrix.example.com', { host: 'matrix.example.com', kind: 'dns' }],
    ['192.0.2.1', { host: '192.0.2.1', kind: 'ipv4' }],
    ['::1', { host: '::1', kind: 'ipv6' }],
    ['[2001:db8::1]', { host: '2001:db8::1', kind: 'ipv6' }],
  ])('%s parses', (text, parsed) => {
    expect(parseHostname(text)).toEqual({ ok: true, value: parsed });
  });

  test('a port is rejected', () => {
    expect(parseHostname('matrix.example.com:443')).toEqual({
      ok: false,
      error: "'matrix.example.com:443' carries a port; give the host name alone (ports belong in listen.https and well_known.server)",
    });
  });
});

describe('helpers', () => {
  test('isDnsName', () => {
    expect(isDnsName('matrix.example.com')).toBe(true);
    expect(isDnsName('localhost')).toBe(true);
    expect(isDnsName('example.com.')).toBe(false);
    expect(isDnsName('*.example.com')).toBe(false);
    expect(isDnsName('')).toBe(false);
  });

  test('isMatrixUserId', () => {
    expect(isMatrixUserId('@admin:example.com')).toBe(true);
    expect(isMatrixUserId('@admin:example.com:8448')).toBe(true);
    expect(isMatrixUserId('@admin:[::1]:8448')).toBe(true);
    expect(isMatrixUserId('admin:example.com')).toBe(false);
    expect(isMatrixUserId('@admin')).toBe(false);
    expect(isMatrixUserId('@:example.com')).toBe(false);
    expect(isMatrixUserId('@ad min:example.com')).toBe(false);
    expect(isMatrixUserId('@admin:exa_mple.com')).toBe(false);
  });
});
