/**
 * The data plane: owns the sockets. HTTPS listeners (HTTP/2 and HTTP/1.1 by ALPN, TLS 1.2+,
 * certificate by SNI), the plain-HTTP listener, routing, forwarding, inline well-known and ACME
 * challenge answers (HTTP-01 on the plain listener, TLS-ALPN-01 on every HTTPS listener). It
 * keeps no durable state: everything it serves arrives as plane messages.
 */
import * as http from 'node:http';
import * as http2 from 'node:http2';
import { isIPv6, type Socket } from 'node:net';
import type { BlockList } from 'node:net';
import type { Duplex } from 'node:stream';
import * as tls from 'node:tls';
import type { LimitsPlan, Plan, UpstreamPlan } from '../config/plan';
import type { Logger } from '../observe/log';
import { logSafe } from '../observe/log-safe';
import type { BoundListenerInfo, ControlToData, DataPlaneStats } from '../plane/messages';
import { AccessLog } from './access-log';
import { CLIENT_HELLO_LIMIT, inspectClientHello } from './client-hello';
import { Exchange, type Req, type Res } from './exchange';
import { parserRefusal, writeRefusal } from './handlers/client-error';
import { sendMatrixError } from './handlers/errors';
import { PlainHttpHandler } from './handlers/plain-http';
import { buildTrustList, forward } from './handlers/proxy';
import { WellKnownHandler } from './handlers/wellknown';
import { hostOf } from './paths';
import { ClientShares } from './proxy/shares';
import { UpstreamPool } from './proxy/upstream-pool';
import { checkHeaderSize, checkMethod, h1HeaderBytes, type Refusal } from './request-checks';
import { buildRouteTable, decide, type RouteTable } from './router';
import { reclaimBuffers } from './buffer-reclaim';
import { TrafficStats } from './stats';
import { CertificateTable, TLS_BASE } from './tls';

/** A listener as bound (with the actual port when 0 was asked). */
export type BoundListener = BoundListenerInfo;

/** Everything derived from one plan that the request path reads. Swapped whole, never mutated. */
interface Serving {
  readonly plan: Plan;
  readonly table: RouteTable;
  readonly wellKnown: WellKnownHandler;
  readonly upstreams: ReadonlyMap<string, UpstreamPool>;
  readonly trusted: BlockList | null;
  readonly requestIdHeader: string | null;
  readonly plain: PlainHttpHandler;
  readonly limits: LimitsPlan;
  readonly shares: ClientShares;
}

type Server = http2.Http2SecureServer | http.Server;

const NO_SUCH_ADDRESS = new Set(['EADDRNOTAVAIL', 'EAFNOSUPPORT']);

/** The ALPN protocol of ACME TLS-ALPN-01 validations (RFC 8737). */
const ACME_TLS_ALPN = 'acme-tls/1';
/**
 * While a TLS-ALPN-01 validation is pending: how long a new HTTPS connection may take to send its
 * ClientHello, and a validation connection to finish its handshake and close.
 */
const SCREEN_TIMEOUT_MS = 10_000;

class BindError extends Error {
  constructor(
    message: string,
    readonly code: string,
  ) {
    super(message);
  }
}

/**
 * HTTP/1.1 server settings from the plan's limits (Node's names). No whole-request deadline:
 * uploads and long polls are bounded by inactivity instead (request body idle, client not reading,
 * the upstream timeout).
 */
function http1Limits(l: LimitsPlan): Record<string, number> {
  return { headersTimeout: l.headerTimeoutMs, requestTimeout: 0, keepAliveTimeout: l.idleTimeoutMs, maxHeaderSize: l.maxHeaderBytes, maxHeadersCount: 0 };
}

/** How often Node checks HTTP/1.1 connections against the header timeout (its default of 30 s would double a 30 s timeout). */
function checkingInterval(l: LimitsPlan): number {
  return Math.max(250, Math.min(5000, Math.floor(l.headerTimeoutMs / 4)));
}

/** An HTTP/2 session's open streams, and the timer that closes it once none has been open for the idle timeout. */
interface SessionIdle {
  streams: number;
  readonly timer: NodeJS.Timeout;
}

/** A refused-connections log line at most this often (with the count since the last). */
const DROP_LOG_INTERVAL_MS = 10_000;

export class DataPlane {
  private serving: Serving | null = null;
  private certificates: CertificateTable | null = null;
  private readonly challenges = new Map<string, string>();
  /** TLS-ALPN-01 answers: name (lower case) → the context with its challenge certificate. */
  private readonly alpnChallenges = new Map<string, tls.SecureContext>();
  /** Session ticket keys shared by every worker (null: each listener's own random keys). */
  private ticketKeys: Buffer | null = null;
  /** HTTPS connections whose ClientHello is being read, and validation handshakes in progress. */
  private readonly screening = new Set<Socket>();
  /** Bound listeners by "kind address port" (the plan's port). */
  private readonly servers = new Map<string, { readonly server: Server; readonly info: BoundListener }>();
  /** "kind:port" of each bound listener, for the traffic figures. */
  private readonly listenerLabels = new WeakMap<Server, string>();
  /** Listeners a new plan removed, closing as their last connections end. */
  private readonly retired = new Set<Server>();
  private readonly sockets = new Set<Socket>();
  private readonly sessions = new Set<http2.ServerHttp2Session>();
  private readonly log: Logger;
  private readonly tlsLog: Logger;
  private readonly access: AccessLog;
  private readonly stats: TrafficStats;
  /** In-flight shares per client; kept across plans (requests in flight hold theirs). */
  private shares: ClientShares | null = null;
  /** HTTP/2 sessions → their open streams and idle timer. */
  private readonly idle = new WeakMap<http2.ServerHttp2Session, SessionIdle>();
  private dropped = { count: 0, loggedAt: 0, unlogged: 0 };
  private readonly stopReclaiming: () => void;
  private closing = false;

  /**
   * @param root the logger the data plane makes its component loggers from (data, tls, access)
   * @param options.reusePort bind with SO_REUSEPORT (each worker process of a pool binds its own
   *        socket on the same port and the kernel spreads connections among them)
   * @param options.worker the worker's number in its pool, for the traffic figures (0: no pool)
   */
  constructor(
    root: Logger,
    private readonly options: { readonly reusePort?: boolean; readonly worker?: number } = {},
  ) {
    this.log = root.child({ component: 'data' });
    this.tlsLog = root.child({ component: 'tls' });
    this.stats = new TrafficStats(options.worker ?? 0);
    this.access = new AccessLog(root.child({ component: 'access' }), this.stats);
    this.stopReclaiming = reclaimBuffers();
  }

  /** Traffic figures since the previous call (see DataPlaneStats). */
  takeStats(): DataPlaneStats {
    const now = performance.now();
    const upstreams = [...(this.serving?.upstreams.values() ?? [])].map((pool) => pool.take(now));
    const dropped = this.dropped.count;
    this.dropped.count = 0;
    return this.stats.take(upstreams, dropped);
  }

  /** The same, shaped like a worker pool's answer (one data plane). */
  async statsReport(): Promise<DataPlaneStats[]> {
    return [this.takeStats()];
  }

  /** Apply one message from the control plane. */
  receive(message: ControlToData): void {
    switch (message.type) {
      case 'plan':
        this.applyPlan(message.plan);
        return;
      case 'certificate':
        this.certificateTable().install(message.material);
        this.tlsLog.info({ names: message.material.names, notAfter: message.material.notAfter }, 'certificate installed');
        return;
      case 'challenge-add':
        this.challenges.set(message.token, message.keyAuthorization);
        return;
      case 'challenge-remove':
        this.challenges.delete(message.token);
        return;
      case 'alpn-challenge-add':
        this.alpnChallenges.set(
          message.name.toLowerCase(),
          tls.createSecureContext({ ...TLS_BASE, cert: message.certPem, key: message.keyPem }),
        );
        return;
      case 'alpn-challenge-remove':
        this.alpnChallenges.delete(message.name.toLowerCase());
        return;
      case 'ticket-keys':
        this.ticketKeys = Buffer.from(message.keys, 'base64');
        for (const { server } of this.servers.values()) if (server instanceof tls.Server) server.setTicketKeys(this.ticketKeys);
        return;
    }
  }

  private certificateTable(): CertificateTable {
    if (this.certificates === null) throw new Error('data plane: certificate received before a plan');
    return this.certificates;
  }

  /**
   * Install a plan: the first one, or a replacement (live reload). A replacement swaps routes,
   * well-known answers, trusted proxies and the served names at once for new requests; an upstream
   * whose settings did not change keeps its pool (and its open connections); a changed or removed
   * one gets a new pool while the old one finishes what it carries. Listeners change with the
   * next listen().
   */
  private applyPlan(plan: Plan): void {
    const previous = this.serving;
    const upstreams = new Map<string, UpstreamPool>();
    for (const u of plan.upstreams) {
      const kept = previous?.upstreams.get(u.name);
      upstreams.set(u.name, kept !== undefined && sameSettings(kept.plan, u) ? kept : new UpstreamPool(u));
    }
    const table = buildRouteTable(plan.names, plan.routes);
    const httpsPorts = plan.listen.https.map((l) => l.port);
    const redirectPort = httpsPorts.includes(443) ? 443 : httpsPorts[0]!;
    if (this.shares === null) this.shares = new ClientShares(plan.limits);
    else this.shares.setLimits(plan.limits);
    this.serving = {
      plan,
      table,
      wellKnown: new WellKnownHandler(plan.wellKnown),
      upstreams,
      trusted: buildTrustList(plan.trustedProxies),
      requestIdHeader: plan.requestIdHeader,
      plain: new PlainHttpHandler(table.names, redirectPort, this.challenges),
      limits: plan.limits,
      shares: this.shares,
    };
    if (this.certificates === null) this.certificates = new CertificateTable(plan.names[0]!);
    else this.certificates.serveOnly(plan.names);
    for (const [name, pool] of previous?.upstreams ?? []) {
      if (upstreams.get(name) !== pool) void pool.close().catch(() => undefined);
    }
  }

  /**
   * Bind every listener of the current plan that is not bound yet, and stop accepting on those the
   * plan no longer has (their open connections carry on to their end). Resolves with every listener
   * of the plan. On the first call a failure closes everything; on a later one, only what this call
   * bound, and the listeners that were serving keep serving.
   */
  async listen(): Promise<BoundListener[]> {
    const serving = this.serving;
    if (serving === null) throw new Error('data plane: listen() before a plan');
    const first = this.servers.size === 0;
    const bound: BoundListener[] = [];
    const added: Server[] = [];
    const wanted = new Set<string>();
    const groups: Array<{ kind: 'https' | 'http'; port: number; addresses: readonly string[] }> = [
      ...serving.plan.listen.https.map((l) => ({ kind: 'https' as const, port: l.port, addresses: l.addresses })),
      ...(serving.plan.listen.http === null ? [] : [{ kind: 'http' as const, port: serving.plan.listen.http.port, addresses: serving.plan.listen.http.addresses }]),
    ];
    try {
      for (const [index, group] of groups.entries()) {
        const missingIPv6: string[] = [];
        let boundHere = 0;
        for (const address of group.addresses) {
          // Port 0 (any free port, in tests) may appear more than once: such entries go by position.
          const key = `${group.kind} ${address} ${group.port === 0 ? `0#${index}` : group.port}`;
          wanted.add(key);
          const existing = this.servers.get(key);
          if (existing !== undefined) {
            bound.push(existing.info);
            boundHere++;
            continue;
          }
          const server = group.kind === 'https' ? this.createHttps() : this.createHttp();
          try {
            const info = await this.bind(server, group.kind, address, group.port);
            this.servers.set(key, { server, info });
            added.push(server);
            bound.push(info);
            boundHere++;
          } catch (err) {
            // A machine without IPv6 should not stop an IPv4 service; the warning says so.
            if (!isIPv6(address) || !(err instanceof BindError) || !NO_SUCH_ADDRESS.has(err.code)) throw err;
            missingIPv6.push(address);
            server.close();
          }
        }
        if (missingIPv6.length > 0) {
          if (boundHere === 0) throw new Error(`cannot listen for ${group.kind} on port ${group.port}: this machine has none of the addresses ${missingIPv6.join(', ')}`);
          this.log.warn({ kind: group.kind, port: group.port, addresses: missingIPv6 }, 'IPv6 is not available on this machine: serving IPv4 only on this port');
        }
      }
    } catch (err) {
      if (first) await this.close(0);
      else for (const [key, { server }] of this.servers) if (added.includes(server)) this.retire(key, server);
      throw err;
    }
    for (const [key, { server, info }] of this.servers) {
      if (wanted.has(key)) continue;
      this.log.info({ kind: info.kind, address: info.address, port: info.port }, 'listener removed by the new plan: no new connections; open ones carry on');
      this.retire(key, server);
    }
    return bound;
  }

  /** Stop accepting on a listener; its connections stay until they end (or the edge stops). */
  private retire(key: string, server: Server): void {
    this.servers.delete(key);
    this.retired.add(server);
    server.close(() => this.retired.delete(server));
  }

  private bind(server: Server, kind: 'https' | 'http', address: string, port: number): Promise<BoundListener> {
    return new Promise((resolve, reject) => {
      const onError = (err: NodeJS.ErrnoException): void => {
        const where = isIPv6(address) ? `[${address}]:${port}` : `${address}:${port}`;
        const why =
          err.code === 'EADDRINUSE'
            ? 'the address is already in use (is another server running there?)'
            : err.code === 'EACCES'
              ? 'permission denied (ports below 1024 need root or CAP_NET_BIND_SERVICE)'
              : err.code === 'EADDRNOTAVAIL' || err.code === 'EAFNOSUPPORT'
                ? 'this machine has no such address (remove it from listen.address)'
                : err.message;
        reject(new BindError(`cannot listen for ${kind} on ${where}: ${why}`, err.code ?? ''));
      };
      server.once('error', onError);
      const shared = this.options.reusePort === true ? { reusePort: true, exclusive: true } : {};
      server.listen({ host: address, port, ipv6Only: isIPv6(address), ...shared }, () => {
        server.off('error', onError);
        server.on('error', (err) => this.log.error({ err, kind, address, port }, 'listener error'));
        const actual = server.address();
        const bound = typeof actual === 'object' && actual !== null ? actual.port : port;
        this.listenerLabels.set(server, `${kind}:${bound}`);
        resolve({ kind, address, port: bound });
      });
    });
  }

  private createHttps(): http2.Http2SecureServer {
    const certificates = this.certificateTable();
    const initial = certificates.defaultMaterial();
    const limits = this.serving!.limits;
    const server = http2.createSecureServer({
      ...TLS_BASE,
      allowHTTP1: true,
      SNICallback: certificates.sniCallback,
      ...(initial === undefined ? {} : { cert: initial.certPem, key: initial.keyPem }),
      handshakeTimeout: limits.handshakeTimeoutMs,
      // nghttp2 refuses (with a stream reset) only far beyond the limit; up to twice the limit the
      // request reaches onRequest and gets the same 431 as over HTTP/1.1.
      maxHeaderListPairs: Math.ceil((2 * limits.maxHeaderBytes) / 4),
      settings: { maxConcurrentStreams: limits.maxStreams, maxHeaderListSize: 2 * limits.maxHeaderBytes },
      connectionsCheckingInterval: checkingInterval(limits),
    } as http2.SecureServerOptions);
    Object.assign(server, http1Limits(limits));
    server.maxConnections = limits.maxConnections;
    server.on('drop', () => this.droppedConnection());
    this.screenConnections(server);
    if (this.ticketKeys !== null) server.setTicketKeys(this.ticketKeys);
    const stopWatching = certificates.onDefaultChange((m) => {
      server.setSecureContext({ ...TLS_BASE, cert: m.certPem, key: m.keyPem });
      // A new context comes with keys of its own: keep the shared ones.
      if (this.ticketKeys !== null) server.setTicketKeys(this.ticketKeys);
    });
    server.once('close', stopWatching);
    server.on('secureConnection', (socket: Socket) => this.track(socket, server));
    server.on('session', (session: http2.ServerHttp2Session) => this.onSession(session, limits.idleTimeoutMs));
    server.on('stream', (stream: http2.ServerHttp2Stream) => this.countStream(stream));
    server.on('request', (req: Req, res: Res) => this.onRequest(req, res, false));
    server.on('checkContinue', (req: Req, res: Res) => this.onRequest(req, res, true));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket, 'https'));
    server.on('connect', (req: Req, resOrSocket: Res | Duplex) => {
      // HTTP/2 CONNECT arrives as a request with a response; HTTP/1.1 CONNECT as a bare socket.
      if (req.httpVersionMajor === 2) this.onRequest(req, resOrSocket as Res, false);
      else refuseConnect(req as http.IncomingMessage, resOrSocket as Duplex);
    });
    return server;
  }

  /**
   * An HTTP/2 session: closed (GOAWAY, graceful) once it has had no open stream for the idle
   * timeout. A stream waiting on a long poll keeps it open however quiet it is: the session's one
   * timer is restarted each time its last stream closes, and does nothing when it fires while a
   * stream is open (Node's own session timeout fires once, on socket silence, and not again).
   */
  private onSession(session: http2.ServerHttp2Session, idleMs: number): void {
    this.sessions.add(session);
    if (this.closing) {
      session.close();
      return;
    }
    const idle: SessionIdle = {
      streams: 0,
      timer: setTimeout(() => {
        if (idle.streams === 0 && !session.closed) session.close();
      }, idleMs),
    };
    idle.timer.unref();
    this.idle.set(session, idle);
    session.once('close', () => {
      this.sessions.delete(session);
      clearTimeout(idle.timer);
    });
  }

  private countStream(stream: http2.ServerHttp2Stream): void {
    const idle = this.idle.get(stream.session as http2.ServerHttp2Session);
    if (idle === undefined) return;
    idle.streams++;
    stream.once('close', () => {
      if (--idle.streams === 0) idle.timer.refresh();
    });
  }

  /** limits.max_connections was reached and a connection refused: counted, and logged at most every 10 s. */
  private droppedConnection(): void {
    this.dropped.count++;
    this.dropped.unlogged++;
    const now = performance.now();
    if (now - this.dropped.loggedAt < DROP_LOG_INTERVAL_MS) return;
    this.log.warn(
      { refused: this.dropped.unlogged, maxConnections: this.serving?.limits.maxConnections },
      'connection limit reached: new connections are refused (limits.max_connections, per worker)',
    );
    this.dropped.loggedAt = now;
    this.dropped.unlogged = 0;
  }

  /** An HTTP/1.1 request the parser refused: the same Matrix JSON error a handler would give, an access line, a count. */
  private onClientError(err: NodeJS.ErrnoException, socket: Duplex, scheme: 'https' | 'http'): void {
    // The client reset, or closed its side mid-request (HPE_INVALID_EOF_STATE: a cut upload, already
    // answered and logged as 499 by its exchange), or never finished its handshake: nobody to answer.
    if (err.code === 'ECONNRESET' || err.code === 'HPE_INVALID_EOF_STATE' || err.code === 'ERR_TLS_HANDSHAKE_TIMEOUT' || (socket as Socket).destroyed) {
      socket.destroy();
      return;
    }
    const refusal = parserRefusal(err.code, this.serving!.limits.maxHeaderBytes);
    const ex = new Exchange(performance.now(), { socket: socket as Socket });
    ex.route = 'reject';
    ex.failure = `${err.code ?? 'parse error'}: ${err.message}`;
    if (!writeRefusal(socket, refusal, scheme === 'https' ? this.serving!.plan.hsts : null)) return;
    this.access.write(ex, { method: undefined, host: undefined, path: undefined, status: refusal.status, proto: `${scheme}/1.1` });
  }

  /**
   * Puts a look at the ClientHello in front of the server's own TLS handshake, used only while a
   * TLS-ALPN-01 validation is pending: otherwise each connection goes to the server's handshake
   * at once, exactly as if nothing stood in front.
   */
  private screenConnections(server: http2.Http2SecureServer): void {
    const listeners = server.listeners('connection');
    if (listeners.length !== 1) throw new Error(`data plane: expected one TLS connection listener on the HTTPS server, found ${listeners.length}`);
    const handshake = listeners[0] as (this: http2.Http2SecureServer, socket: Socket) => void;
    server.removeListener('connection', handshake);
    const normal = (socket: Socket): void => handshake.call(server, socket);
    server.on('connection', (socket: Socket) => {
      if (this.alpnChallenges.size === 0) normal(socket);
      else this.screen(socket, normal);
    });
  }

  /**
   * Read the ClientHello without consuming it, then hand the connection on: offers of
   * `acme-tls/1` to the validation answer, everything else (other protocols, malformed or
   * oversized hellos included) to the normal handshake with the bytes put back in front.
   */
  private screen(socket: Socket, normal: (socket: Socket) => void): void {
    this.screening.add(socket);
    // Stays for the socket's life: an error on a connection concerns only that connection.
    socket.on('error', ignore);
    const chunks: Buffer[] = [];
    let received = 0;
    /** The first bytes in one piece, as far as the ClientHello reader looks; only when they came in several chunks. */
    let window: Buffer | null = null;
    let windowed = 0;
    let windowedChunks = 0;
    let verdict = inspectClientHello(Buffer.alloc(0));
    const timer = setTimeout(() => socket.destroy(), SCREEN_TIMEOUT_MS);
    const stop = (): void => {
      clearTimeout(timer);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.off('close', stop);
      this.screening.delete(socket);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      received += chunk.length;
      if (verdict.kind !== 'need-more' || received < verdict.atLeast) return;
      let seen = chunk;
      if (chunks.length > 1) {
        window ??= Buffer.allocUnsafe(CLIENT_HELLO_LIMIT);
        for (; windowedChunks < chunks.length && windowed < window.length; windowedChunks++) windowed += chunks[windowedChunks]!.copy(window, windowed);
        seen = window.subarray(0, windowed);
      }
      verdict = inspectClientHello(seen, { from: verdict.progress });
      if (verdict.kind === 'need-more') return;
      stop();
      socket.pause();
      socket.unshift(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received));
      if (verdict.kind === 'hello' && verdict.alpn.includes(ACME_TLS_ALPN)) this.answerValidation(socket, verdict.serverName);
      else normal(socket);
    };
    // The peer gave up before its ClientHello was complete.
    const onEnd = (): void => {
      socket.destroy();
    };
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.once('close', stop);
  }

  /**
   * RFC 8737: negotiate `acme-tls/1` with the challenge certificate for the name, then close
   * without application data. With no challenge pending for the name there is no handshake at
   * all: `acme-tls/1` is never negotiated with the served certificate.
   */
  private answerValidation(socket: Socket, name: string | null): void {
    const context = name === null ? undefined : this.alpnChallenges.get(name);
    if (this.closing || context === undefined) {
      this.tlsLog.debug({ name, challenge: 'tls-alpn-01' }, 'refused an acme-tls/1 handshake: no challenge pending for the name');
      socket.destroy();
      return;
    }
    const secure = new tls.TLSSocket(socket, { isServer: true, secureContext: context, ALPNProtocols: [ACME_TLS_ALPN] });
    this.screening.add(secure);
    const timer = setTimeout(() => secure.destroy(), SCREEN_TIMEOUT_MS);
    secure.on('error', () => secure.destroy());
    secure.once('secure', () => {
      if (secure.alpnProtocol !== ACME_TLS_ALPN) {
        secure.destroy();
        return;
      }
      this.tlsLog.info({ name, challenge: 'tls-alpn-01' }, 'answered a TLS-ALPN-01 validation');
      secure.resume(); // anything the peer still sends is dropped
      secure.end();
    });
    secure.once('close', () => {
      clearTimeout(timer);
      this.screening.delete(secure);
    });
  }

  private createHttp(): http.Server {
    const limits = this.serving!.limits;
    const server = http.createServer({ ...http1Limits(limits), connectionsCheckingInterval: checkingInterval(limits) }, (req, res) => {
      const serving = this.serving!;
      const ex = new Exchange(performance.now(), req);
      res.once('close', () => this.access.request(req, res, ex, 'http'));
      serving.plain.handle(req, res, ex);
    });
    server.maxConnections = limits.maxConnections;
    server.on('drop', () => this.droppedConnection());
    server.on('connection', (socket: Socket) => this.track(socket, server));
    server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => this.onClientError(err, socket, 'http'));
    server.on('connect', refuseConnect);
    return server;
  }

  private track(socket: Socket, server: Server): void {
    this.sockets.add(socket);
    this.stats.opened(socket, this.listenerLabels.get(server) ?? 'unbound');
    socket.once('close', () => {
      this.sockets.delete(socket);
      this.stats.closed(socket);
    });
  }

  private onRequest(req: Req, res: Res, expectContinue: boolean): void {
    const serving = this.serving!;
    const ex = new Exchange(performance.now(), req);
    res.once('close', () => this.access.request(req, res, ex, 'https'));
    if (req.httpVersionMajor === 2) stopUploadWhenAnswered(req as http2.Http2ServerRequest);
    if (serving.plan.hsts !== null) res.setHeader('strict-transport-security', serving.plan.hsts);
    const method = req.method ?? '';
    const authority = req.headers.host ?? (req.headers[':authority'] as string | undefined);
    const refusal = this.screenRequest(req, method, authority);
    if (refusal !== null) {
      ex.route = 'reject';
      sendMatrixError(req, res, ex, refusal.status, refusal.errcode, refusal.error, refusal.headers);
      return;
    }
    const decision = decide(serving.table, method, req.url ?? '', authority);
    if (decision.kind === 'reject') {
      ex.route = 'reject';
      sendMatrixError(req, res, ex, decision.status, decision.errcode, decision.error);
      return;
    }
    const route = decision.route;
    ex.route = route.id;
    const action = route.action;
    switch (action.type) {
      case 'proxy':
        ex.upstream = action.upstream;
        forward(req, res, ex, serving.upstreams.get(action.upstream)!, action.maxBodyBytes, serving, expectContinue);
        return;
      case 'well-known':
        serving.wellKnown.handle(req, res, ex, action.which);
        return;
      case 'status':
        sendMatrixError(req, res, ex, action.status, action.errcode, action.error);
        return;
    }
  }

  /**
   * What must hold before routing: a method HTTP/1.1 can carry, headers within the limit (HTTP/2;
   * HTTP/1.1's parser enforces the same limit), and with tls.strict_sni_host a Host the
   * connection's certificate covers — a request for another served name on a connection made for
   * this one gets 421 (RFC 9110 §15.5.20), so the client opens a connection for that name.
   */
  private screenRequest(req: Req, method: string, authority: string | undefined): Refusal | null {
    const methodRefusal = checkMethod(method);
    if (methodRefusal !== null) return methodRefusal;
    if (req.httpVersionMajor === 2) {
      const sizeRefusal = checkHeaderSize(h1HeaderBytes(req.rawHeaders, method, req.url ?? '', authority), this.serving!.limits.maxHeaderBytes);
      if (sizeRefusal !== null) return sizeRefusal;
    }
    if (!this.serving!.plan.strictSniHost) return null;
    const sni = (req.socket as tls.TLSSocket | undefined)?.servername;
    if (typeof sni !== 'string' || sni === '' || authority === undefined) return null;
    const host = hostOf(authority);
    if (host === null || host === sni.toLowerCase() || this.certificates === null || this.certificates.sameCertificate(sni, host)) return null;
    return { status: 421, errcode: 'M_UNRECOGNIZED', error: `This connection was made for '${logSafe(sni)}'; open one for '${host}'` };
  }

  /**
   * Stop accepting, let in-flight requests finish for up to `drainMs`, then cut what is left.
   * Upstream pools are closed last.
   */
  async close(drainMs: number, onStopAccepting?: () => void): Promise<void> {
    this.closing = true;
    const servers = [...[...this.servers.values()].map((s) => s.server), ...this.retired];
    const closed = servers.map((s) => new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : s.once('close', () => resolve()))));
    onStopAccepting?.();
    // Connections still showing their ClientHello, and validation handshakes, are not requests to drain.
    for (const socket of this.screening) socket.destroy();
    for (const session of this.sessions) session.close();
    const idleSweep = setInterval(() => {
      for (const s of servers) if ('closeIdleConnections' in s) s.closeIdleConnections();
    }, 50);
    for (const s of servers) if ('closeIdleConnections' in s) s.closeIdleConnections();
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), drainMs);
    });
    const outcome = await Promise.race([Promise.all(closed).then(() => 'drained' as const), deadline]);
    clearInterval(idleSweep);
    clearTimeout(timer);
    if (outcome === 'timeout') {
      this.log.warn({ open: this.sockets.size }, 'drain time is up: closing the connections still open');
      for (const session of this.sessions) session.destroy();
      for (const socket of this.sockets) socket.destroy();
      await Promise.all(closed);
    }
    this.servers.clear();
    this.retired.clear();
    this.stopReclaiming();
    const pools = this.serving === null ? [] : [...this.serving.upstreams.values()];
    await Promise.all(pools.map((p) => p.destroy()));
  }
}

/** Whether two upstream settings would make the same pool. */
function sameSettings(a: UpstreamPlan, b: UpstreamPlan): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

const CONNECT_REFUSAL = (() => {
  const body = JSON.stringify({ errcode: 'M_UNRECOGNIZED', error: 'CONNECT is not supported: this is not a forward proxy' });
  return `HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
})();

function ignore(): void {}

/**
 * An HTTP/2 response is complete while the client may still send its request body (an early
 * answer: 413, 429, 408, or the homeserver's own): RST_STREAM NO_ERROR tells the client to stop
 * sending (RFC 9113 §8.1) instead of uploading the rest into a stream nobody reads. Sent a turn
 * after the response's last frame was handed to the session, as Node does for its own early
 * close, so the reset never overtakes the response; never for requests that had no body.
 */
function stopUploadWhenAnswered(req: http2.Http2ServerRequest): void {
  const stream = req.stream;
  if (stream.endAfterHeaders) return;
  stream.once('finish', () => {
    if (stream.destroyed || stream.readableEnded) return;
    setImmediate(() => {
      if (!stream.destroyed && !stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR);
    });
  });
}

function refuseConnect(_req: http.IncomingMessage, socket: Duplex): void {
  socket.end(CONNECT_REFUSAL);
}
