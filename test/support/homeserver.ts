/**
 * A homeserver stand-in for the doctor's tests, on loopback: signing keys with a real ed25519
 * signature over canonical JSON, the federation version, the client versions, and a router that,
 * as Synapse and Dendrite do, matches the room-state route on the raw path split on '/' before
 * any decoding (401 M_MISSING_TOKEN without a token, 404 M_UNRECOGNIZED for anything else).
 * `faults` breaks the keys answer on demand.
 */
import { generateKeyPairSync, sign } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface HomeserverFaults {
  /** server_name in the keys answer (default: the real one). */
  keyServerName?: string;
  /** valid_until_ts in the keys answer (default: an hour and a day from now). */
  validUntilTs?: number;
  /** Sign something else than the answer. */
  badSignature?: boolean;
}

export interface Homeserver {
  readonly url: string;
  readonly port: number;
  /** Every request-target as it arrived. */
  readonly targets: string[];
  faults: HomeserverFaults;
  close(): Promise<void>;
}

/** The stand-in's own canonical JSON (sorted keys, no whitespace), independent of the doctor's. */
function sortedJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => (a < b ? -1 : 1))) : v,
  );
}

const KEY_ID = 'ed25519:standin';

/** Synapse's and Dendrite's state route, matched on raw segments: rooms/{room}/state/{type}[/{stateKey}]. */
function isStateRoute(path: string): boolean {
  const s = path.split('/');
  const head = s.slice(0, 5).join('/') === '/_matrix/client/v3/rooms' && s[6] === 'state';
  return head && (s.length === 8 || s.length === 9) && s[5] !== '' && s[7] !== '';
}

export async function startHomeserver(serverName: string): Promise<Homeserver> {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const rawPublic = Buffer.from(publicKey.export({ format: 'jwk' }).x!, 'base64url').toString('base64').replace(/=+$/, '');
  const targets: string[] = [];
  const sockets = new Set<Socket>();

  const keys = (faults: HomeserverFaults): unknown => {
    const body = {
      server_name: faults.keyServerName ?? serverName,
      valid_until_ts: faults.validUntilTs ?? Date.now() + 25 * 3600_000,
      verify_keys: { [KEY_ID]: { key: rawPublic } },
      old_verify_keys: {},
    };
    const signed = faults.badSignature ? { ...body, tampered: true } : body;
    const signature = sign(null, Buffer.from(sortedJson(signed)), privateKey).toString('base64').replace(/=+$/, '');
    return { ...body, signatures: { [body.server_name]: { [KEY_ID]: signature } } };
  };

  const hs: Homeserver = {
    url: '',
    port: 0,
    targets,
    faults: {},
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
  const server = http.createServer((req, res) => {
    const target = req.url ?? '';
    targets.push(target);
    const path = target.split('?')[0]!;
    const answer = (status: number, body: unknown): void => {
      const text = JSON.stringify(body);
      res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (path === '/_matrix/key/v2/server') answer(200, keys(hs.faults));
    else if (path === '/_matrix/federation/v1/version') answer(200, { server: { name: 'stand-in', version: '1.0' } });
    else if (path === '/_matrix/client/versions') answer(200, { versions: ['v1.11', 'v1.12'] });
    else if (isStateRoute(path)) answer(401, { errcode: 'M_MISSING_TOKEN', error: 'Missing access token' });
    else answer(404, { errcode: 'M_UNRECOGNIZED', error: 'Unrecognized request' });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return Object.assign(hs, { port, url: `http://127.0.0.1:${port}` });
}
