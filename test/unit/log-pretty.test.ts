import { formatPretty, prettyStream } from '../../src/observe/pretty';

const line = JSON.stringify({
  level: 'warn',
  time: '2026-11-27T14:38:29.716Z',
  pid: 4242,
  component: 'certs',
  worker: 2,
  names: ['example.org'],
  error: 'the CA answered 503',
  msg: 'renewal failed; retrying',
});

test('a JSON line becomes time, level, component and worker, message, then the other fields', () => {
  expect(formatPretty(line, false)).toBe(
    '14:38:29.716 WARN  certs w2  renewal failed; retrying  names=["example.org"] error="the CA answered 503"\n',
  );
});

test('the level is coloured only for a terminal', () => {
  expect(formatPretty(line, true)).toContain('\x1b[33mWARN \x1b[0m');
  expect(formatPretty(line, false)).not.toContain('\x1b[');
});

test('what is not a JSON object passes through unchanged, line by line', () => {
  const written: string[] = [];
  const stream = prettyStream({ write: (s: string) => void written.push(s) }, false);
  stream.write(`not json\n${line}\n[1,2]\n`);
  expect(written).toEqual(['not json\n', formatPretty(line, false), '[1,2]\n']);
});
