// A storage writer as a child process, for the crash-consistency test of certificate replacement
// (test/integration/certs-store-crash.test.ts).
//
//   node proc-save.js <storage> <issuer> <name> <pairs.json>
//
// pairs.json is [{ certPem, keyPem, serial }, …]. The child saves them over each other in a loop
// (printing "SAVING" once) until it is killed. src/store/certificate-store.ts is compiled on require
// by swc-register.js.
'use strict';
const fs = require('node:fs');

require('./swc-register');

const { CertificateStore } = require('../../src/store/certificate-store.ts');
const { FileStorage } = require('../../src/store/file-storage.ts');

const [storage, issuer, name, pairsFile] = process.argv.slice(2);
const pairs = JSON.parse(fs.readFileSync(pairsFile, 'utf8'));
const store = new CertificateStore(new FileStorage(storage));

async function main() {
  process.stdout.write('SAVING\n');
  for (let i = 0; ; i++) {
    const pair = pairs[i % pairs.length];
    await store.saveCertificate(issuer, name, {
      certPem: pair.certPem,
      keyPem: pair.keyPem,
      meta: { names: [name], issuer, serial: pair.serial, notBefore: '', notAfter: '' },
    });
  }
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
