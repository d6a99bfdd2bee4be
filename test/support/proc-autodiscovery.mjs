// Runs matrix-js-sdk's AutoDiscovery.findClientConfig(domain) against a local edge, as a child
// process (matrix-js-sdk is ESM-only).
//
//   node proc-autodiscovery.mjs DOMAIN EDGE_PORT CA_FILE
//
// Every request goes over real TLS (trusting only CA_FILE) to 127.0.0.1:EDGE_PORT, whatever host and
// port its URL names; SNI and Host stay those of the URL. Prints one line on stdout:
//   RESULT {"config": <client config>, "fetched": [urls], "connects": ["host:port" asked for]}
import { readFileSync } from 'node:fs';
import { AutoDiscovery } from 'matrix-js-sdk';
import { Agent, buildConnector, fetch } from 'undici';

const [domain, portText, caFile] = process.argv.slice(2);
if (domain === undefined || portText === undefined || caFile === undefined) {
  process.stderr.write('usage: proc-autodiscovery.mjs DOMAIN EDGE_PORT CA_FILE\n');
  process.exit(2);
}
const edgePort = Number(portText);
const ca = readFileSync(caFile, 'utf8');

const fetched = [];
const connects = [];
const connector = buildConnector({ ca, rejectUnauthorized: true, timeout: 5000 });
const dispatcher = new Agent({
  connect(opts, callback) {
    connects.push(`${opts.hostname}:${opts.port}`);
    connector({ ...opts, hostname: '127.0.0.1', port: String(edgePort), servername: opts.servername || opts.hostname }, callback);
  },
});

AutoDiscovery.setFetchFn((input, init) => {
  fetched.push(String(input instanceof Request ? input.url : input));
  return fetch(input, { ...init, dispatcher });
});

const config = await AutoDiscovery.findClientConfig(domain);
await dispatcher.close();
// matrix-js-sdk leaves its 5 s request-timeout timers running: exit once the result is out.
process.stdout.write(`RESULT ${JSON.stringify({ config, fetched, connects })}\n`, () => process.exit(0));
