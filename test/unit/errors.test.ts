import {
  EdgeError,
  ME_ACME_CHALLENGE,
  ME_ACME_STEP,
  ME_KEY_MISMATCH,
  errorCategory,
  errorMessage,
  hasCode,
  isNetworkCode,
  problemCategory,
} from '../../src/errors';

describe('the error registry', () => {
  it('formats the template, carries the code, and defaults the category to other', () => {
    const err = new ME_KEY_MISMATCH('/k.key', '/c.crt');
    expect(err).toBeInstanceOf(EdgeError);
    expect(err).toBeInstanceOf(Error);
    expect(err.message).toBe('the private key in /k.key does not match the certificate in /c.crt');
    expect(err.code).toBe('ME_KEY_MISMATCH');
    expect(err.category).toBe('other');
    expect(hasCode(err, ME_KEY_MISMATCH)).toBe(true);
    expect(hasCode(err, ME_ACME_STEP)).toBe(false);
    expect(hasCode(new Error('x'), ME_KEY_MISMATCH)).toBe(false);
  });

  it('carries the problem document, Retry-After and category as fields; the message ends with the problem for the logs', () => {
    const problem = { type: 'urn:ietf:params:acme:error:rateLimited', detail: 'too many' };
    const err = new ME_ACME_STEP('new order for a.example', 'https://ca/dir', 'the CA said no', {
      problem,
      retryAfterMs: 60_000,
      category: problemCategory(problem),
    });
    expect(err.name).toBe('AcmeError');
    expect(err.detail).toBe('ACME new order for a.example at https://ca/dir failed: the CA said no');
    expect(err.message).toBe(`${err.detail}; problem document: ${JSON.stringify(problem)}`);
    expect(err.problem).toBe(problem);
    expect(err.problemType).toBe('rateLimited');
    expect(err.retryAfterMs).toBe(60_000);
    expect(errorCategory(err)).toBe('rateLimited');
  });

  it('gives a definition its own category (a failed challenge), which an instance may override', () => {
    expect(new ME_ACME_CHALLENGE('validation failed').category).toBe('challenge');
    expect(new ME_ACME_CHALLENGE('validation failed', { category: 'rateLimited' }).category).toBe('rateLimited');
  });

  it.each([
    ['rateLimited', 'rateLimited'],
    ['unauthorized', 'challenge'],
    ['connection', 'challenge'],
    ['dns', 'challenge'],
    ['incorrectResponse', 'challenge'],
    ['badNonce', 'badNonce'],
    ['externalAccountRequired', 'other'],
  ])('a CA problem of type %s is counted as %s', (type, category) => {
    expect(problemCategory({ type: `urn:ietf:params:acme:error:${type}` })).toBe(category);
  });

  it('classifies network failures by their code, and reads no category from errors that carry none', () => {
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EAI_AGAIN', 'ECONNABORTED']) expect(isNetworkCode(code)).toBe(true);
    for (const code of ['EACCES', 'ERR_BAD_REQUEST', undefined, 42]) expect(isNetworkCode(code)).toBe(false);
    expect(errorCategory(new Error('connect ECONNREFUSED 127.0.0.1:1'))).toBe('other');
    expect(errorCategory(null)).toBe('other');
    expect(errorCategory({ category: 'network' })).toBe('network');
    expect(errorCategory({ category: 'bogus' })).toBe('other');
  });

  it('errorMessage drops the path detail Node appends', () => {
    expect(errorMessage(new Error("ENOENT: no such file or directory, open '/x/y'"))).toBe('ENOENT: no such file or directory');
    expect(errorMessage('plain')).toBe('plain');
  });
});
