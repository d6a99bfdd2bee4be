/**
 * Holds N idle long polls open through a server (a child process of the harness, so that its
 * sockets all go at once when it is killed):
 *   node bench/child.js bench/idle-client.ts PORT NAME CA_FILE COUNT
 * Opens COUNT TLS connections (HTTP/1.1 by ALPN, at most 64 handshakes at a time), sends
 * `GET /_matrix/client/v3/sync?timeout=30000` on each and keeps them open. Reports over IPC
 * { opened, failed, ms } once every connection has sent its request, then
 * { closedEarly } whenever a held connection ends before the harness kills this process.
 */
import * as fs from 'node:fs';
import * as tls from 'node:tls';

const [port, name, caFile, countText] = process.argv.slice(3);
const count = Number(countText);
const ca = fs.readFileSync(caFile!);
const request = Buffer.from(
  `GET /_matrix/client/v3/sync?timeout=30000&since=s0 HTTP/1.1\r\nHost: ${name}:${port}\r\nAuthorization: Bearer bench\r\nAccept: application/json\r\n\r\n`,
);
const sockets: tls.TLSSocket[] = [];
const t0 = performance.now();
let started = 0;
let opened = 0;
let failed = 0;
let reported = false;
let closedEarly = 0;

function openOne(): void {
  started++;
  let sent = false;
  const socket = tls.connect({ host: '127.0.0.1', port: Number(port), servername: name, ca, ALPNProtocols: ['http/1.1'] }, () => {
    socket.write(request);
    sent = true;
    opened++;
    next();
  });
  socket.on('data', () => undefined); // a held poll answers nothing; anything else is ignored
  socket.on('error', () => undefined);
  socket.on('close', () => {
    if (!sent) {
      failed++;
      next();
    } else if (reported) {
      closedEarly++;
      process.send?.({ closedEarly });
    }
  });
  sockets.push(socket);
}

function next(): void {
  if (started < count) openOne();
  else if (!reported && opened + failed === count) {
    reported = true;
    process.send?.({ opened, failed, ms: performance.now() - t0 });
  }
}

for (let i = 0; i < Math.min(64, count); i++) openOne();
// Stay alive until killed.
setInterval(() => undefined, 60_000);
