/**
 * A homeserver stand-in that takes header sections of any size (Node's HTTP server refuses more
 * than 16 KiB by default, the stand-in in upstream.ts included): for tests of the edge's own header
 * limit, where whatever the edge lets through must reach the homeserver and be answered 200.
 */
import * as http from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface RoomySeen {
  readonly method: string;
  readonly target: string;
  readonly rawHeaders: readonly string[];
}

export interface RoomyUpstream {
  readonly url: string;
  readonly requests: RoomySeen[];
  close(): Promise<void>;
}

export async function startRoomyUpstream(): Promise<RoomyUpstream> {
  const requests: RoomySeen[] = [];
  const sockets = new Set<Socket>();
  const server = http.createServer({ maxHeaderSize: 1024 * 1024, requestTimeout: 0 }, (req, res) => {
    req.resume();
    req.on('end', () => {
      requests.push({ method: req.method!, target: req.url!, rawHeaders: req.rawHeaders });
      const body = JSON.stringify({ fields: req.rawHeaders.length / 2 });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
