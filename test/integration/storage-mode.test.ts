/**
 * The storage directory holds private keys: a new one is made 0700, and one that already exists
 * with a looser mode (an admin's `mkdir`, a git checkout's certs/ at 0755) is narrowed to 0700 at
 * start with a warning that says so.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { startTestEdge, teardownAfterEach } from '../support/edge';

const t = teardownAfterEach('matrix-edge-storage-mode-');

const config = `server_name: localhost
listen: { https: [8443], http: null }
tls: { issuer: internal }
storage: ./certs
`;

test('an existing storage directory with mode 0755 is narrowed to 0700, loudly', async () => {
  const dir = t.newDir();
  const storage = path.join(dir, 'certs');
  fs.mkdirSync(storage, { mode: 0o755 });
  fs.chmodSync(storage, 0o755);
  const edge = t.keep(await startTestEdge(config, { dir }));
  expect(fs.statSync(storage).mode & 0o777).toBe(0o700);
  const warning = edge.logs.find((l) => l.msg === 'the storage directory could be read by other users (it holds private keys): its mode is now 0700');
  expect(warning).toMatchObject({ level: 'warn', storage, mode: '0755', now: '0700' });
});

test('a new storage directory is 0700 and nothing is said', async () => {
  const dir = t.newDir();
  const edge = t.keep(await startTestEdge(config, { dir }));
  expect(fs.statSync(path.join(dir, 'certs')).mode & 0o777).toBe(0o700);
  expect(edge.logs.some((l) => String(l.msg).startsWith('the storage directory'))).toBe(false);
});
