import { parseArgs } from '../../src/cli';

test('doctor options: values (repeatable, with a space or =), --json, and whether --config was given', () => {
  const args = parseArgs(['doctor', '--server-name', 'example.com', '--resolve', 'a.example:443:127.0.0.1', '--resolve=b.example:8448:::1', '--ca-file', 'ca.pem', '--json']);
  expect(args).toMatchObject({
    command: 'doctor',
    json: true,
    configGiven: false,
    values: { '--server-name': ['example.com'], '--resolve': ['a.example:443:127.0.0.1', 'b.example:8448:::1'], '--ca-file': ['ca.pem'] },
  });
  expect(args.problem).toBeUndefined();
  expect(parseArgs(['doctor', '--config', 'edge.yaml'])).toMatchObject({ config: 'edge.yaml', configGiven: true });
  expect(parseArgs(['doctor', '--config=edge.yaml'])).toMatchObject({ config: 'edge.yaml', configGiven: true });
});

test('a doctor option without its value, or on another command, is a usage error', () => {
  expect(parseArgs(['doctor', '--resolve']).problem).toBe('--resolve needs a value');
  expect(parseArgs(['certs', '--server-name', 'example.com']).problem).toBe('unknown option --server-name');
  expect(parseArgs(['renew', '--force', 'Example.com'])).toMatchObject({ force: true, rest: ['example.com'], values: {} });
});
