/**
 * The ARI/profiles front (test/support/acme-front.ts) in front of a real Pebble, driven with
 * acme-client directly: the directory gains renewalInfo and meta.profiles, Pebble accepts requests
 * signed for the front's URLs, newOrder payloads (profile) are recorded, and renewalInfo answers
 * come from the test.
 */
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as acme from 'acme-client';
import { startAcmeFront, type AcmeFront } from '../support/acme-front';
import { freePort, pebbleInstalled, startPebble, type RunningPebble } from '../support/pebble';

jest.setTimeout(60_000);

function get(url: string, ca: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { ca, agent: false }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', reject);
      })
      .on('error', reject);
  });
}

if (!pebbleInstalled()) console.warn('acme-front.test.ts: skipped: pebble is not installed (run scripts/test-deps.sh)');
const run = pebbleInstalled() ? describe : describe.skip;

run('ACME front (ARI + profiles) over Pebble', () => {
  let pebble: RunningPebble;
  let front: AcmeFront;
  let ca: string;
  const savedAgent = acme.axios.defaults.httpsAgent;

  beforeAll(async () => {
    // No random nonce rejections: every newOrder reaches Pebble exactly once.
    pebble = await startPebble({ httpPort: await freePort(), tlsPort: await freePort(), env: { PEBBLE_WFE_NONCEREJECT: '0' } });
    front = await startAcmeFront({
      pebble,
      ari: true,
      profiles: { classic: 'the 90-day profile', shortlived: 'six-day certificates' },
    });
    ca = fs.readFileSync(pebble.caRootsFile, 'utf8');
    acme.axios.defaults.httpsAgent = new https.Agent({ ca });
  });

  afterAll(async () => {
    acme.axios.defaults.httpsAgent = savedAgent;
    await front?.close();
    await pebble?.stop();
  });

  it('rewrites the directory: front URLs, renewalInfo and meta.profiles', async () => {
    const r = await get(front.directory, ca);
    expect(r.status).toBe(200);
    const dir = JSON.parse(r.body) as Record<string, unknown> & { meta: Record<string, unknown> };
    expect(dir['renewalInfo']).toBe(`${front.origin}/renewal-info`);
    expect(dir.meta['profiles']).toEqual({ classic: 'the 90-day profile', shortlived: 'six-day certificates' });
    // Pebble built its own URLs from the Host header: they point at the front.
    for (const name of ['newNonce', 'newAccount', 'newOrder', 'revokeCert', 'keyChange']) {
      expect(String(dir[name])).toMatch(new RegExp(`^${front.origin}/`));
    }
    expect(dir.meta['termsOfService']).toBeDefined(); // Pebble's meta kept
  });

  it('creates an account and an order with a profile through the front', async () => {
    const client = new acme.Client({ directoryUrl: front.directory, accountKey: await acme.crypto.createPrivateEcdsaKey() });
    await client.createAccount({ termsOfServiceAgreed: true });
    expect(client.getAccountUrl()).toMatch(new RegExp(`^${front.origin}/`));

    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: 'a.test' }], profile: 'shortlived' } as any);
    expect(order.status).toBe('pending');
    expect(order.url).toMatch(new RegExp(`^${front.origin}/`));

    expect(front.orders).toHaveLength(1);
    const recorded = front.orders[0]!;
    expect(recorded.identifiers).toEqual([{ type: 'dns', value: 'a.test' }]);
    expect(recorded.profile).toBe('shortlived');
    expect(recorded.replaces).toBeUndefined();
    expect(recorded.jwsUrl).toBe(`${front.origin}/order-plz`);
    expect(recorded.status).toBe(201);
    expect(recorded.location).toBe(order.url);

    // A POST-as-GET to a URL Pebble handed out (authorization) also goes through the front.
    const authzs = await client.getAuthorizations(order);
    expect(authzs).toHaveLength(1);
    expect(authzs[0]!.identifier).toEqual({ type: 'dns', value: 'a.test' });
    expect(authzs[0]!.url).toMatch(new RegExp(`^${front.origin}/`));

    // A second order with `replaces`, no profile.
    await client.createOrder({ identifiers: [{ type: 'dns', value: 'b.test' }], replaces: 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE' } as any);
    expect(front.orders).toHaveLength(2);
    expect(front.orders[1]).toMatchObject({ profile: undefined, replaces: 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE', status: 201 });
  });

  it('answers renewalInfo from the configured function and records the requests', async () => {
    const before = front.renewalInfoRequests.length;
    const missing = await get(`${front.renewalInfoUrl}/unknown.AQ`, ca);
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toMatchObject({ type: 'urn:ietf:params:acme:error:malformed' });

    const start = new Date('2030-01-02T00:00:00.000Z');
    const end = new Date('2030-01-03T00:00:00.000Z');
    front.setRenewalInfo((certId) =>
      certId === 'aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE'
        ? { status: 200, window: { start, end }, retryAfterSeconds: 21600, explanationURL: 'https://ca.test/why' }
        : { status: 404 },
    );
    const r = await get(`${front.renewalInfoUrl}/aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE`, ca);
    expect(r.status).toBe(200);
    expect(r.headers['retry-after']).toBe('21600');
    expect(r.headers['content-type']).toBe('application/json');
    expect(JSON.parse(r.body)).toEqual({
      suggestedWindow: { start: '2030-01-02T00:00:00.000Z', end: '2030-01-03T00:00:00.000Z' },
      explanationURL: 'https://ca.test/why',
    });

    front.setRenewalInfo(() => ({ status: 200, body: '{"suggestedWindow":' }));
    const broken = await get(`${front.renewalInfoUrl}/x.AQ`, ca);
    expect(broken.status).toBe(200);
    expect(broken.body).toBe('{"suggestedWindow":');

    expect(front.renewalInfoRequests.slice(before).map((q) => [q.certId, q.status])).toEqual([
      ['unknown.AQ', 404],
      ['aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE', 200],
      ['x.AQ', 200],
    ]);
  });
});

run('ACME front without ARI or profiles', () => {
  it('leaves the directory as Pebble has it (Pebble 2.4: no renewalInfo, no profiles)', async () => {
    const pebble = await startPebble({ httpPort: await freePort(), tlsPort: await freePort() });
    const front = await startAcmeFront({ pebble });
    try {
      const ca = fs.readFileSync(pebble.caRootsFile, 'utf8');
      const dir = JSON.parse((await get(front.directory, ca)).body) as Record<string, unknown> & { meta: Record<string, unknown> };
      expect(dir['renewalInfo']).toBeUndefined();
      expect(dir.meta['profiles']).toBeUndefined();
      expect(dir['newOrder']).toBe(`${front.origin}/order-plz`);
      // Without ARI, /renewal-info goes to Pebble, which does not know it.
      expect((await get(`${front.renewalInfoUrl}/x.AQ`, ca)).status).toBe(404);
    } finally {
      await front.close();
      await pebble.stop();
    }
  });
});
