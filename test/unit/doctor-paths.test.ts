/**
 * The path probes against the two routers they were designed for, as data: Synapse's servlet regexes
 * matched on the raw path, Dendrite's gorilla/mux patterns on the encoded path (`[^/]+` variables,
 * no cleaning). Each broken hop must be named; an intact path must pass.
 */
import { classify, judgePaths, pathProbes, type ProbeAnswer } from '../../src/doctor/paths';

const CLIENT = '^/_matrix/client/(?:api/v1|r0|v3|unstable)';
const routers: Record<string, RegExp[]> = {
  synapse: [
    new RegExp(`${CLIENT}/rooms/(?<room_id>[^/]*)/state/(?<event_type>[^/]*)/(?<state_key>[^/]*)$`),
    new RegExp(`${CLIENT}/rooms/(?<room_id>[^/]*)/state/(?<event_type>[^/]*)$`),
  ],
  dendrite: [new RegExp('^/_matrix/client/v3/rooms/[^/]+/state/[^/]+/[^/]+$'), new RegExp('^/_matrix/client/v3/rooms/[^/]+/state/[^/]+/?$')],
};

const json = (status: number, errcode: string): ProbeAnswer => ({ status, body: Buffer.from(JSON.stringify({ errcode, error: '' })) });

function homeserver(router: RegExp[]): (target: string) => ProbeAnswer {
  // Twisted and Go split the request-target at '?' only: a literal '#' stays in the path.
  return (target) => (router.some((r) => r.test(target.split('?')[0]!)) ? json(401, 'M_MISSING_TOKEN') : json(404, 'M_UNRECOGNIZED'));
}

/** Decoding, then parsing the result as a URL again: a decoded '#' starts a fragment, which is dropped. */
const reparse = (p: string): string => p.split('#')[0]!;
const untilStable = (p: string): string => {
  for (let prev = ''; prev !== p; ) [prev, p] = [p, decodeURIComponent(p)];
  return p;
};
const hops: Record<string, (path: string) => string> = {
  'changes nothing': (p) => p,
  'decodes %2F': (p) => p.replace(/%2F/gi, '/'),
  'decodes once and re-parses': (p) => reparse(decodeURIComponent(p)),
  'decodes until stable and re-parses': (p) => reparse(untilStable(p)),
  'merges //': (p) => p.replace(/\/{2,}/g, '/'),
  // The limit of a routing probe: a literal '#' in a segment still routes on both homeservers.
  'decodes once and forwards a literal #': (p) => decodeURIComponent(p),
};

const SLASH = '%2F was decoded to /';
const HASH = '%23 was decoded to # and the rest of the path was lost';
const expected: Record<string, string[]> = {
  'changes nothing': [],
  'decodes %2F': [SLASH],
  'decodes once and re-parses': [SLASH, HASH],
  'decodes until stable and re-parses': [SLASH, HASH, '%25 was decoded twice (%252F arrived as /)'],
  'merges //': ['// was merged into /'],
  'decodes once and forwards a literal #': [SLASH],
};

describe.each(Object.keys(routers))('%s', (server) => {
  test.each(Object.keys(hops))('a hop that %s', (hop) => {
    const answer = homeserver(routers[server]!);
    const verdict = judgePaths(pathProbes('example.com:8448', 'abc123').map((probe) => ({ probe, answer: answer(hops[hop]!(probe.path)) })));
    const causes = expected[hop]!;
    if (causes.length === 0) expect(verdict).toEqual({ status: 'PASS', detail: '%2F, %23, %25 and // reached the homeserver unchanged', fix: null });
    else expect(verdict).toMatchObject({ status: 'FAIL', detail: `a hop between the client and the homeserver rewrites escaped paths: ${causes.join('; ')}` });
  });
});

test('the probes: one escape each, the room ID percent-encoded', () => {
  expect(pathProbes('example.com', 'n1').map((p) => [p.id, p.path])).toEqual([
    ['control', '/_matrix/client/v3/rooms/%21doctor-n1%3Aexample.com/state/m.room.name/doctor'],
    ['%2F', '/_matrix/client/v3/rooms/%21doctor-n1%3Aexample.com/state/m.room.name/doctor%2Fslash'],
    ['%23', '/_matrix/client/v3/rooms/%21doctor-n1%23hash%3Aexample.com/state/m.room.name/doctor'],
    ['%25', '/_matrix/client/v3/rooms/%21doctor-n1%3Aexample.com/state/m.room.name/doctor%252Fpct'],
    ['//', '/_matrix/client/v3/rooms/%21doctor-n1%3Aexample.com/state//m.room.name/doctor'],
  ]);
});

test('classify: only the homeserver\'s JSON answers count', () => {
  expect(classify(json(401, 'M_MISSING_TOKEN'))).toBe('route');
  expect(classify(json(404, 'M_UNRECOGNIZED'))).toBe('miss');
  expect(classify(json(400, 'M_UNRECOGNIZED'))).toBe('miss');
  expect(classify(json(403, 'M_FORBIDDEN'))).toBe('other');
  expect(classify({ status: 404, body: Buffer.from('<html>Not Found</html>') })).toBe('other');
});

test('a control probe that does not reach the route makes the check inconclusive, a refused probe fails', () => {
  const probes = pathProbes('example.com', 'n');
  expect(judgePaths(probes.map((probe) => ({ probe, answer: json(404, 'M_UNRECOGNIZED') })))).toMatchObject({
    status: 'WARN',
    detail: "inconclusive: the control probe got 404, not the homeserver's 401 M_MISSING_TOKEN",
  });
  const html = { status: 404, body: Buffer.from('<html>') };
  const answers = probes.map((probe) => ({ probe, answer: probe.id === '%2F' ? html : probe.id === '//' ? json(404, 'M_UNRECOGNIZED') : json(401, 'M_MISSING_TOKEN') }));
  expect(judgePaths(answers)).toMatchObject({
    status: 'FAIL',
    detail: "a hop between the client and the homeserver rewrites escaped paths: the path with %2F was refused (404, not the homeserver's answer)",
  });
});
