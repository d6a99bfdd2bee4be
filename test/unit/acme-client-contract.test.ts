/**
 * The contract between src/control/issuers/acme/client.ts and the real acme-client: every internal
 * it reaches into is there (and a moved one fails loudly), its settings took effect, the version
 * is pinned, and a protocol step's failure carries its category, problem and Retry-After.
 */
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import * as acme from 'acme-client';
import { ACME_CLIENT_VERSION, AcmeCalls, LIBRARY_RETRIES, REQUEST_TIMEOUT_MS, acmeLibrary, checkLibrary } from '../../src/control/issuers/acme/client';
import { EdgeError, ME_ACME_ANSWER, ME_ACME_LIBRARY, ME_ACME_STEP, hasCode } from '../../src/errors';

const ROOT = path.resolve(__dirname, '../..');

describe('acme-client, as client.ts relies on it', () => {
  it('is the version package.json pins exactly, the one client.ts was checked against', () => {
    const pinned = (require(path.join(ROOT, 'package.json')) as { dependencies: Record<string, string> }).dependencies['acme-client'];
    const installed = (require('acme-client/package.json') as { version: string }).version;
    expect({ pinned, installed }).toEqual({ pinned: ACME_CLIENT_VERSION, installed: ACME_CLIENT_VERSION });
  });

  it('has every internal client.ts reaches into, and loading it applies the settings', () => {
    expect(() => checkLibrary(acme)).not.toThrow();
    const lib = acmeLibrary();
    expect(lib.axios).toBe(acme.axios);
    expect((lib.axios.defaults as unknown as { acmeSettings: Record<string, number> }).acmeSettings).toMatchObject(LIBRARY_RETRIES);
    expect(lib.axios.defaults.timeout).toBe(REQUEST_TIMEOUT_MS);
    // Our rejection handler runs before the library's retry handler.
    const handlers = (lib.axios.interceptors.response as unknown as { handlers: Array<{ fulfilled: unknown; rejected: unknown } | null> }).handlers;
    expect(handlers[0]).toMatchObject({ fulfilled: null, rejected: expect.any(Function) });
    expect(acmeLibrary()).toBe(lib); // set up once
  });

  it.each([
    ['axios.defaults.acmeSettings', (lib: Record<string, any>) => ({ ...lib, axios: { ...lib.axios, defaults: { ...lib.axios.defaults, acmeSettings: undefined } } })],
    ['axios.defaults.acmeSettings.retryMaxAttempts', (lib: Record<string, any>) => ({ ...lib, axios: { ...lib.axios, defaults: { ...lib.axios.defaults, acmeSettings: { retryDefaultDelay: 5 } } } })],
    ['axios.interceptors.response.handlers', (lib: Record<string, any>) => ({ ...lib, axios: { ...lib.axios, interceptors: { ...lib.axios.interceptors, response: {} } } })],
    ['client.api.http.getDirectory()', (lib: Record<string, any>) => ({ ...lib, Client: class { api = {}; } })],
  ])('fails loudly, naming it, when %s moved', (what, move) => {
    let thrown: unknown = null;
    try {
      checkLibrary(move(acme as unknown as Record<string, any>) as unknown as typeof acme, '9.9.9');
    } catch (err) {
      thrown = err;
    }
    expect(hasCode(thrown, ME_ACME_LIBRARY)).toBe(true);
    expect((thrown as Error).message).toContain(`acme-client 9.9.9 no longer has ${what}`);
    expect((thrown as Error).message).toContain(`install acme-client ${ACME_CLIENT_VERSION}`);
  });
});

describe('AcmeCalls.step', () => {
  let server: http.Server;
  let port: number;
  beforeAll(async () => {
    server = http.createServer((req, res) => {
      res.writeHead(429, { 'content-type': 'application/problem+json', 'retry-after': '3600' });
      res.end(JSON.stringify({ type: 'urn:ietf:params:acme:error:rateLimited', detail: 'too many certificates' }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('a rate limit: not slept through, the problem, its Retry-After and category rateLimited on the error', async () => {
    const calls = new AcmeCalls('http://ca.test/dir', undefined, () => undefined);
    const started = Date.now();
    const err = await calls
      .step('new order for a.example', async () => {
        const r = await calls.get(`http://127.0.0.1:${port}/new-order`);
        if (r.status !== 200) throw new ME_ACME_ANSWER(r.status);
      })
      .then(() => null, (e: unknown) => e);
    expect(Date.now() - started).toBeLessThan(5000);
    expect(hasCode(err, ME_ACME_STEP)).toBe(true);
    const e = err as EdgeError;
    expect(e.detail).toBe('ACME new order for a.example at http://ca.test/dir failed: the CA answered 429');
    expect(e.problem).toEqual({ type: 'urn:ietf:params:acme:error:rateLimited', detail: 'too many certificates' });
    expect(e.category).toBe('rateLimited');
    expect(e.retryAfterMs).toBe(3600_000);
  });

  it('no answer at all: the network error is the cause named, and the category is network (by its code)', async () => {
    const closed = await new Promise<number>((resolve) => {
      const s = http.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const observed: number[] = [];
    const calls = new AcmeCalls('http://ca.test/dir', undefined, () => (seconds) => observed.push(seconds));
    // The library's own retries are skipped for this request (it counts attempts on the config).
    const err = await calls
      .step('reading the directory', () => acmeLibrary().axios.get(`http://127.0.0.1:${closed}/dir`, { retryAttempt: Number.MAX_SAFE_INTEGER - 1 } as object))
      .then(() => null, (e: unknown) => e);
    const e = err as EdgeError;
    expect(e.code).toBe(ME_ACME_STEP.code);
    expect(e.message).toMatch(/^ACME reading the directory at http:\/\/ca\.test\/dir failed: connect ECONNREFUSED 127\.0\.0\.1:\d+$/);
    expect(e.category).toBe('network');
    expect(e.problem).toBeNull();
    expect(observed).toHaveLength(1);
  });

  it('anything else is category other', async () => {
    const calls = new AcmeCalls('http://ca.test/dir', undefined, () => undefined);
    const err = (await calls.step('x', () => Promise.reject(new Error('boom'))).catch((e: unknown) => e)) as EdgeError;
    expect([err.message, err.category]).toEqual(['ACME x at http://ca.test/dir failed: boom', 'other']);
  });
});
