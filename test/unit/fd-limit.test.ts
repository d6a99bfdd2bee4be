/** The open-files limit against what the plan's limits need (src/observe/fd-limit.ts). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { loadConfigText } from '../../src/config/load';
import type { Plan } from '../../src/config/plan';
import { descriptorsNeeded, descriptorWarning, openFilesLimit } from '../../src/observe/fd-limit';

function plan(yaml: string): Plan {
  const result = loadConfigText(yaml, '/etc/edge.yaml', '/etc');
  if (!result.ok) throw new Error(JSON.stringify(result.errors));
  return result.plan;
}

test('descriptors needed: client connections, upstream connections and a margin', () => {
  expect(descriptorsNeeded(plan('server_name: example.com'))).toBe(10_000 + 4096 + 64);
  expect(descriptorsNeeded(plan('server_name: example.com\nlimits: { max_connections: 100 }\nproxy: { connections: 50 }'))).toBe(214);
});

test("a soft limit below the need warns with the numbers and the fix; enough, unlimited or unknown does not", () => {
  const p = plan('server_name: example.com');
  expect(descriptorWarning(p, 1024)).toBe(
    'the open-files limit is 1024, but limits.max_connections (10000) and proxy.connections allow 14160 descriptors per process: ' +
      'past 1024 new connections fail. Raise it (LimitNOFILE=14160 in the systemd unit, `ulimit -n`, or `ulimits: nofile` in compose) or lower those limits',
  );
  expect(descriptorWarning(p, 14_160)).toBeNull();
  expect(descriptorWarning(p, Number.POSITIVE_INFINITY)).toBeNull();
  expect(descriptorWarning(p, null)).toBeNull();
});

test('the soft limit is read from a limits file', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'matrix-edge-limits-'));
  try {
    const file = path.join(dir, 'limits');
    fs.writeFileSync(file, 'Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n');
    expect(openFilesLimit(file)).toBe(1024);
    fs.writeFileSync(file, 'Max open files            unlimited            unlimited            files\n');
    expect(openFilesLimit(file)).toBe(Number.POSITIVE_INFINITY);
    expect(openFilesLimit(path.join(dir, 'none'))).toBeNull();
    // This machine's own, as the edge reads it.
    expect(openFilesLimit()).toBeGreaterThan(0);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
