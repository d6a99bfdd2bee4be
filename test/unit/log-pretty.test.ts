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

describe('log.format auto', () => {
  const { createPlanLogger } = require('../../src/observe/log') as typeof import('../../src/observe/log');
  const lineOf = (isTTY: boolean, format: 'auto' | 'json' | 'pretty'): string => {
    let out = '';
    const log = createPlanLogger({ level: 'info', format, levels: {} }, { write: (s: string) => void (out += s) }, isTTY);
    log.info({ names: ['example.org'] }, 'certificate installed');
    return out;
  };

  test('pretty text on a terminal, JSON lines otherwise; an explicit format wins', () => {
    expect(lineOf(true, 'auto')).toMatch(/INFO\s+certificate installed\s+names=\["example.org"\]/);
    expect(JSON.parse(lineOf(false, 'auto'))).toMatchObject({ level: 'info', msg: 'certificate installed' });
    expect(JSON.parse(lineOf(true, 'json'))).toMatchObject({ msg: 'certificate installed' });
    expect(lineOf(false, 'pretty')).toMatch(/INFO\s+certificate installed/);
  });
});
