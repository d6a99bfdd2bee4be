import { exitCodeOf, failed, formatJson, formatTable, named, passed, warned } from '../../src/doctor/report';

const results = [
  named('resolution', passed('example.com → matrix.example.com:443')),
  named('well-known server cache', warned('no Cache-Control', 'send Cache-Control: max-age=3600')),
  named('tls matrix.example.com:443', failed('the certificate expired', 'renew it')),
];

test('the table: one row per check, the fix under every WARN and FAIL, a summary', () => {
  expect(formatTable(results)).toBe(
    [
      'CHECK                       STATUS  DETAIL',
      'resolution                  PASS    example.com → matrix.example.com:443',
      'well-known server cache     WARN    no Cache-Control',
      '                                    fix: send Cache-Control: max-age=3600',
      'tls matrix.example.com:443  FAIL    the certificate expired',
      '                                    fix: renew it',
      '',
      '1 passed, 1 warning, 1 failed',
      '',
    ].join('\n'),
  );
});

test('JSON: an array of {check, status, detail, fix}, fix null for PASS', () => {
  expect(JSON.parse(formatJson(results))).toEqual([
    { check: 'resolution', status: 'PASS', detail: 'example.com → matrix.example.com:443', fix: null },
    { check: 'well-known server cache', status: 'WARN', detail: 'no Cache-Control', fix: 'send Cache-Control: max-age=3600' },
    { check: 'tls matrix.example.com:443', status: 'FAIL', detail: 'the certificate expired', fix: 'renew it' },
  ]);
});

test('exit code: 1 with any FAIL, 0 with warnings only', () => {
  expect(exitCodeOf(results)).toBe(1);
  expect(exitCodeOf(results.slice(0, 2))).toBe(0);
  expect(exitCodeOf([])).toBe(0);
});
