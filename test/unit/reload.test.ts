import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfigFile } from '../../src/config/load';
import type { Plan } from '../../src/config/plan';
import { decideReload } from '../../src/control/reload';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'edge-reload-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const BASE = `server_name: example.org
hostname: matrix.example.org
listen:
  https: [8443, 8448]
  http: 8080
  address: ["127.0.0.1"]
upstream: http://127.0.0.1:8008
tls:
  issuer: internal
storage: ./storage
`;

let n = 0;
function plan(yaml: string): Plan {
  const file = path.join(dir, `c${++n}.yaml`);
  fs.writeFileSync(file, yaml);
  const result = loadConfigFile(file);
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.plan;
}

test('the same config changes nothing', () => {
  const d = decideReload(plan(BASE), plan(BASE));
  expect(d.changes).toEqual([]);
  expect(d.deferred).toEqual([]);
  expect(d.certificates).toBe(false);
  expect(d.listeners).toBe(false);
});

test('a new well-known body and upstream apply live, without new certificates or listeners', () => {
  const running = plan(BASE);
  const d = decideReload(running, plan(BASE.replace('http://127.0.0.1:8008', 'http://127.0.0.1:9008') + 'well_known:\n  server: matrix.example.org:443\n'));
  expect(d.changes).toEqual(['upstream homeserver: http://127.0.0.1:8008 → http://127.0.0.1:9008', '/.well-known/matrix/server']);
  expect(d.certificates).toBe(false);
  expect(d.listeners).toBe(false);
  expect(d.plan.upstreams[0]!.url).toBe('http://127.0.0.1:9008');
});

test('an added port is a listener change; a changed issuer replaces the certificate source', () => {
  const running = plan(BASE);
  const d = decideReload(running, plan(BASE.replace('https: [8443, 8448]', 'https: [8443, 8448, 9443]')));
  expect(d.listeners).toBe(true);
  expect(d.certificates).toBe(false);
  expect(d.changes).toEqual(['listeners: https 8443, 8448, 9443; http 8080']);
  const lifetime = decideReload(running, plan(BASE.replace('issuer: internal', 'issuer: internal\n  internal_lifetime: 2d')));
  expect(lifetime.certificates).toBe(true);
  expect(lifetime.changes).toEqual(['tls: issuer internal']);
});

test('storage and workers keep their running values until a restart, and say so', () => {
  const running = plan(BASE);
  const d = decideReload(running, plan(BASE.replace('storage: ./storage', 'storage: ./elsewhere') + 'workers: 3\n'));
  expect(d.deferred).toEqual(['storage (takes effect at the next restart)', 'workers (takes effect at the next restart)']);
  expect(d.plan.storage).toBe(running.storage);
  expect(d.plan.workers).toBe(running.workers);
  expect(d.changes).toEqual([]);
});
