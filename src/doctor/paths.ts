/**
 * The path-integrity check: do escaped paths reach the homeserver byte for byte through the public
 * federation address? Federation signatures cover the exact request-target, and room IDs, event
 * types and state keys travel percent-encoded in single path segments, so a hop that decodes %2F,
 * cuts at a decoded %23, decodes %25 twice or merges `//` breaks federation in ways public testers
 * never see. Pure: the probes and the judgement; checks.ts sends them.
 *
 * No route is added to the edge for this (nothing new to abuse from outside). The probes use a
 * real homeserver route that is matched on the raw, still-encoded path and answers an
 * unauthenticated request with 401 M_MISSING_TOKEN before looking at the room:
 *
 *   GET /_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}
 *
 * - Synapse matches its servlet regexes against `request.path` — Twisted's raw path, not decoded —
 *   with `/rooms/(?P<room_id>[^/]*)/state/(?P<event_type>[^/]*)/(?P<state_key>[^/]*)$`, and only
 *   URL-decodes the captured groups afterwards; the servlet authenticates first (401
 *   M_MISSING_TOKEN). No match → 404 M_UNRECOGNIZED (400 in old versions).
 * - Dendrite routes with gorilla/mux configured `SkipClean(true).UseEncodedPath()` (no cleaning,
 *   matching on the encoded path) on `/rooms/{roomID}/state/{type}/{stateKey}`, each variable
 *   `[^/]+`, decodes the variables inside the handler, and wraps it in MakeAuthAPI (401
 *   M_MISSING_TOKEN first). No match → 404 M_UNRECOGNIZED.
 *
 * So, with R = !doctor-<nonce>:<server> encoded:
 *   control  …/rooms/R/state/m.room.name/doctor           → route (401); else the check cannot tell
 *   %2F      …/state/m.room.name/doctor%2Fslash            → decoded, the state key becomes two
 *                                                            segments: no route
 *   %23      …/rooms/R-with-%23hash/state/m.room.name/doctor → decoded to '#', everything after it
 *                                                            is a fragment and dropped: no route
 *   %25      …/state/m.room.name/doctor%252Fpct            → decoded twice, %252F becomes '/': no
 *                                                            route (decoded once it still routes)
 *   //       …/rooms/R/state//m.room.name/doctor           → intact, the empty event type and the
 *                                                            extra segment match nothing (404); merged
 *                                                            to '/', it is the control path (401)
 * Neither homeserver matches a path with an empty segment there, so `//` is the one probe whose
 * intact answer is 404 M_UNRECOGNIZED and whose broken answer is the 401.
 *
 * What routing cannot show: a hop that decodes %23 and forwards a literal '#' (both homeservers
 * keep it in the segment and still route), or decodes %25 exactly once (%252F arrives as %2F,
 * still one segment). The answers never echo the path, so those stay invisible; the common
 * failures — %2F decoded, a decoded '#' taken as a fragment by the next parse, recursive decoding,
 * merged slashes — are all caught.
 */
import { failed, passed, warned, type Verdict } from './report';

export type ProbeId = 'control' | '%2F' | '%23' | '%25' | '//';

export interface Probe {
  readonly id: ProbeId;
  /** The request-target, sent byte for byte. */
  readonly path: string;
  /** What the homeserver answers when the path arrives intact. */
  readonly intact: 'route' | 'miss';
  /** What it means when it does not. */
  readonly broken: string;
}

export function pathProbes(serverName: string, nonce: string): Probe[] {
  // encodeURIComponent leaves '!' alone; clients send it as %21.
  const encode = (roomId: string): string => encodeURIComponent(roomId).replace(/!/g, '%21');
  const room = encode(`!doctor-${nonce}:${serverName}`);
  const hashRoom = encode(`!doctor-${nonce}#hash:${serverName}`);
  const rooms = '/_matrix/client/v3/rooms';
  return [
    { id: 'control', path: `${rooms}/${room}/state/m.room.name/doctor`, intact: 'route', broken: '' },
    { id: '%2F', path: `${rooms}/${room}/state/m.room.name/doctor%2Fslash`, intact: 'route', broken: '%2F was decoded to /' },
    { id: '%23', path: `${rooms}/${hashRoom}/state/m.room.name/doctor`, intact: 'route', broken: '%23 was decoded to # and the rest of the path was lost' },
    { id: '%25', path: `${rooms}/${room}/state/m.room.name/doctor%252Fpct`, intact: 'route', broken: '%25 was decoded twice (%252F arrived as /)' },
    { id: '//', path: `${rooms}/${room}/state//m.room.name/doctor`, intact: 'miss', broken: '// was merged into /' },
  ];
}

export interface ProbeAnswer {
  readonly status: number;
  readonly body: Buffer;
}

/** route: the state route answered (401 M_MISSING_TOKEN); miss: the homeserver has no such route (404/400 M_UNRECOGNIZED). */
export function classify(answer: ProbeAnswer): 'route' | 'miss' | 'other' {
  let errcode: unknown;
  try {
    errcode = (JSON.parse(answer.body.toString('utf8')) as { errcode?: unknown }).errcode;
  } catch {
    return 'other';
  }
  if (answer.status === 401 && errcode === 'M_MISSING_TOKEN') return 'route';
  if ((answer.status === 404 || answer.status === 400) && errcode === 'M_UNRECOGNIZED') return 'miss';
  return 'other';
}

const FIX =
  'forward the request-target byte for byte, with no decoding or normalisation (nginx: proxy_pass without a URI part, merge_slashes off; ' +
  'Apache: AllowEncodedSlashes NoDecode and ProxyPass … nocanon); matrix-edge forwards it unchanged, so look at every hop between it and the homeserver';

export function judgePaths(answers: ReadonlyArray<{ readonly probe: Probe; readonly answer: ProbeAnswer }>): Verdict {
  const control = answers.find((a) => a.probe.id === 'control');
  if (control === undefined || classify(control.answer) !== 'route') {
    return warned(
      `inconclusive: the control probe got ${control?.answer.status ?? 'no answer'}, not the homeserver's 401 M_MISSING_TOKEN`,
      'make /_matrix/client/ reach the homeserver on this address, then run doctor again',
    );
  }
  const causes: string[] = [];
  for (const { probe, answer } of answers) {
    if (probe.id === 'control') continue;
    const got = classify(answer);
    if (got === probe.intact) continue;
    causes.push(got === 'other' ? `the path with ${probe.id} was refused (${answer.status}, not the homeserver's answer)` : probe.broken);
  }
  if (causes.length > 0) return failed(`a hop between the client and the homeserver rewrites escaped paths: ${causes.join('; ')}`, FIX);
  return passed('%2F, %23, %25 and // reached the homeserver unchanged');
}
