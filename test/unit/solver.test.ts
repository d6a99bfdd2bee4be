import { http01Solver, planeSolvers, tlsAlpn01Solver, type Challenge } from '../../src/control/solver';
import type { ControlToData } from '../../src/plane/messages';

const challenge = (type: Challenge['type']): Challenge => ({ type, name: 'a.example', token: 'tok', keyAuthorization: 'tok.thumb' });

describe('challenge solvers', () => {
  it('HTTP-01 publishes the key authorization under its token through the plane, and withdraws it', async () => {
    const sent: ControlToData[] = [];
    const solver = http01Solver((m) => sent.push(m));
    await solver.present(challenge('http-01'));
    await solver.cleanUp(challenge('http-01'));
    expect(sent).toEqual([
      { type: 'challenge-add', token: 'tok', keyAuthorization: 'tok.thumb' },
      { type: 'challenge-remove', token: 'tok' },
    ]);
  });

  it('TLS-ALPN-01 publishes the validation certificate for the name, and withdraws it', async () => {
    const sent: ControlToData[] = [];
    const made: Array<[string, string]> = [];
    const solver = tlsAlpn01Solver(
      (m) => sent.push(m),
      async (name, keyAuthorization) => {
        made.push([name, keyAuthorization]);
        return { certPem: 'CERT', keyPem: 'KEY' };
      },
    );
    await solver.present(challenge('tls-alpn-01'));
    await solver.cleanUp(challenge('tls-alpn-01'));
    expect(made).toEqual([['a.example', 'tok.thumb']]);
    expect(sent).toEqual([
      { type: 'alpn-challenge-add', name: 'a.example', certPem: 'CERT', keyPem: 'KEY' },
      { type: 'alpn-challenge-remove', name: 'a.example' },
    ]);
  });

  it('has one solver per challenge type', () => {
    expect([...planeSolvers(() => undefined, async () => ({ certPem: '', keyPem: '' })).keys()]).toEqual(['http-01', 'tls-alpn-01']);
  });
});
