/**
 * rexd: the REX daemon of one host and user. It serves local clients on a Unix
 * socket in a private directory (checking the caller's uid), and peers and
 * remote clients on TLS 1.3 with mutual authentication: each TLS client's key is
 * pinned against this user's trust store and grants (src/keys/). It measures
 * this host's load, keeps a fresh view of its peers' loads (PeerLink), logs
 * every authentication attempt and transaction (src/log/), and closes the
 * sessions of an identity as soon as its grant is revoked.
 */
import { X509Certificate } from 'node:crypto';
import { existsSync, unlinkSync, watch, writeFileSync, type FSWatcher } from 'node:fs';
import { createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { CallManager, type CallIdentity, type ProgramSpec } from '../calls/manager.js';
import { CallRouter } from '../calls/router.js';
import { loadProgram } from '../calls/programs.js';
import { clientAllowed, normalizeAddress } from '../config/clients.js';
import type { RexConfig } from '../config/index.js';
import { certInfo, type CertInfo } from '../keys/certs.js';
import { decide, GrantsFile, type Grant, type Requester } from '../keys/grants.js';
import { currentUser, localName, parseIdentityName } from '../keys/identity.js';
import { KeyStore, type KnownKey, type OwnIdentity } from '../keys/store.js';
import { peerCert, tlsServerOptions } from '../keys/tls.js';
import { proofMatches, TokenStore } from '../keys/tokens.js';
import { TransactionLog, type LogEvent } from '../log/txlog.js';
import { Connection, type PeerHello, type Reply, type ServedInfo } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { Message, MessageOf, HostEntry } from '../protocol/messages.js';
import { fitHosts } from '../protocol/messages.js';
import { ErrorCodes, RexError, isRexError } from '../util/errors.js';
import { JobRecord } from '../exec/jobs.js';
import { Containment } from '../exec/contain.js';
import { ExecService } from '../exec/service.js';
import type { ExecLimit } from '../exec/limit.js';
import { LoadMeter } from './load.js';
import { advertisedCpuProfile, profileToWire } from '../cpu/wire.js';
import { describeCpu } from '../cpu/profile.js';
import type { Logger } from './log.js';
import { daemonPaths, ensurePrivateDir, readPid, type DaemonPaths } from './paths.js';
import { checkExecDirectories } from '../exec/dirs.js';
import { initPeerCred, localPeer } from './peercred.js';
import { PeerLink } from './peers.js';
import { Admission, DenialLog, type Startup } from './admission.js';
import { quote } from '../util/quote.js';

/** Version string sent in HELLO. */
export const SOFTWARE = 'rexd/0.2.0';

/** The default transaction log file of a state directory. */
export function defaultLogDatabase(stateDir: string): string {
  return join(stateDir, 'rex-log.sqlite');
}

/** Options beyond rex.rc. */
export interface RexdOptions {
  log: Logger;
  /** Write a pidfile (default true). */
  pidFile?: boolean;
  /** Transaction log file; default rex.rc rex-log-database or <state-directory>/rex-log.sqlite. */
  logDatabase?: string;
}

/** What rexd knows about the other end of one connection. */
interface Session {
  kind: 'local' | 'tls';
  address: string;
  conn?: Connection;
  /** TLS: the certificate presented. */
  cert?: CertInfo;
  /** TLS: the trust-store entry of that key, if it is known. */
  known?: KnownKey;
  /** HOST.USER[.PROGRAM] of the requester. */
  identity: string;
  identityId?: string;
  requester?: Requester;
  fromHost?: string;
  /** Set when the session may do nothing but ENROLL; the reason is what others are told. */
  restricted?: string;
  /** Local clients: the pid SO_PEERCRED gave (rfork images are read from that process only). */
  pid?: number;
  /** Local clients: the program named in HELLO, passed on with forwarded requests. */
  program?: string;
  /** TLS: the requester's key is a program key (its program cannot be overridden per request). */
  programKey?: boolean;
}

/** One running daemon. */
export class Rexd {
  readonly paths: DaemonPaths;
  readonly meter: LoadMeter;
  readonly store: KeyStore;
  readonly name: string;
  private own!: OwnIdentity;
  private grants: GrantsFile;
  private tokens: TokenStore;
  private txlog: TransactionLog | undefined;
  /** Deadlines and caps for connections that have not authenticated, and the rate limit of denial rows. */
  private admission!: Admission;
  private denials: DenialLog | undefined;
  private readonly peers = new Map<string, PeerLink>();
  private unixServer: Server | undefined;
  private tcpServer: Server | undefined;
  private readonly sessions = new Set<Session>();
  private readonly sockets = new Set<Socket>();
  private watcher: FSWatcher | undefined;
  private knownWatcher: FSWatcher | undefined;
  private stopping: Promise<void> | undefined;
  private readonly uid = process.getuid?.() ?? -1;
  /** Remote calls: the controllers of this host's programs, and the routing to peers (src/calls/). */
  readonly calls: CallManager;
  private readonly router: CallRouter;
  private readonly callSessions = new WeakMap<object, Session>();
  /** Requests a peer forwarded for one of its user's programs: the identity to log them under. */
  private readonly onBehalf = new WeakMap<Message, string>();
  /** ENROLLs that rotated or replaced a key: what the log row says about it. */
  private readonly enrollNotes = new WeakMap<Message, string>();
  /** EXECs of requesters granted only one program: what they may run (src/exec/limit.ts). */
  private readonly execLimits = new WeakMap<Message, ExecLimit>();
  readonly startedAt = Date.now();
  /** Remote execution: EXEC run here or routed to the placed host (src/exec/). */
  private readonly exec: ExecService;

  constructor(
    readonly config: RexConfig,
    private readonly opts: RexdOptions,
  ) {
    this.paths = daemonPaths(config.stateDirectory, config.socket);
    this.meter = new LoadMeter(config.hostName);
    this.store = new KeyStore(config.stateDirectory);
    this.name = localName(config.hostName);
    this.grants = new GrantsFile(this.store.grantsFile);
    this.tokens = new TokenStore(this.store.tokensFile);
    this.exec = new ExecService({ hostName: config.hostName, tempDirectory: config.tempDirectory, stateDirectory: this.paths.stateDir, record: (ev) => this.record(ev), socket: this.paths.socket, meter: this.meter, log: opts.log, autoTransfer: config.autoTransfer.mode, ...(config.autoTransfer.mode === 'command' ? { transferCommand: config.autoTransfer.command } : {}), jobs: new JobRecord(this.paths.stateDir) }, this.peers, config.placementPolicy, config.peerTimeout);
    this.exec.contain(new Containment(config.hostName, this.paths.stateDir), Math.max(10_000, 3 * Math.max(config.peerTimeout, config.loadInterval)));
    this.calls = new CallManager({
      host: config.hostName,
      programs: (name) => this.program(name),
      authorize: (who, program, fn) => this.authorizeCall(who, program, fn),
      log: opts.log,
    });
    this.router = new CallRouter({
      manager: this.calls,
      host: config.hostName,
      offers: (program) => config.programs.some((p) => p.name === program),
      placement: this.exec.placer,
      peers: () =>
        [...this.peers.values()].map((p) => ({
          name: p.entry.name,
          reachable: p.state.reachable,
          connect: async () => (p.connection ?? (await p.connectNow())) ?? { error: p.state.error ?? 'not connected yet' },
        })),
    });
  }

  get log(): Logger {
    return this.opts.log;
  }

  /** This daemon's key ID (after start). */
  get id(): string {
    return this.own.id;
  }

  /** Loads the key, binds the socket and the TLS port, writes the pidfile and starts polling peers. */
  async start(): Promise<void> {
    const { listen } = this.config;
    ensurePrivateDir(this.paths.stateDir, 'state directory');
    ensurePrivateDir(this.paths.runDir, 'socket directory');
    checkExecDirectories(this.paths.stateDir, this.config.tempDirectory);
    // The CPU profile advertised with the load (docs/PLACEMENT.md): read now, so that a bad test profile stops start-up.
    this.log.info({ cpu: describeCpu(advertisedCpuProfile()), features: advertisedCpuProfile().features.join(' ') }, 'CPU profile');
    try {
      this.own = this.store.load(this.name);
    } catch (e) {
      if (isRexError(e) && e.code === ErrorCodes.KEY_MISSING) {
        throw new RexError(ErrorCodes.KEY_MISSING, `rexd needs a key for ${this.name} and there is none in ${this.store.keysDir}`, {
          where: this.store.keyFile(this.name),
          hint: 'create it with `rex_key --create`, then enroll with the other hosts (docs/KEYS.md)',
        });
      }
      throw e;
    }
    for (const s of this.config.servers) {
      if (s.name === this.config.hostName) continue;
      this.peers.set(
        s.name,
        new PeerLink(s, {
          selfName: this.config.hostName,
          software: SOFTWARE,
          loadInterval: this.config.loadInterval,
          peerTimeout: this.config.peerTimeout,
          log: this.opts.log,
          own: this.own,
          store: this.store,
        }),
      );
    }
    const logFile = this.opts.logDatabase ?? this.config.logDatabase ?? defaultLogDatabase(this.paths.stateDir);
    this.txlog = new TransactionLog(logFile, this.config.hostName, { logger: this.log, retentionDays: this.config.logRetentionDays, maxBytes: this.config.logMaxSize });
    this.denials = new DenialLog({ burst: this.config.logDenialsBurst, intervalMs: this.config.logDenialsInterval }, (ev, summary) => {
      this.txlog?.record(ev);
      if (summary) this.log.warn({ peer: ev.peerAddress }, ev.reason!);
    });
    this.admission = new Admission(this.config, (ev) => {
      if (this.record(ev)) this.log.info({ peer: ev.peerAddress, reason: ev.reason }, 'connection closed before authentication');
    });
    const credCheck = initPeerCred();
    await this.claimSocket();
    this.unixServer = await listenOn(createServer((s) => this.acceptLocal(s)), { path: this.paths.socket }, `socket ${this.paths.socket}`);
    try {
      const tls = createTlsServer({ ...tlsServerOptions(this.own), handshakeTimeout: this.config.loginGraceTime }, (s) => this.acceptTls(s));
      tls.on('tlsClientError', (err, s) => this.onTlsError(err, s));
      // TCP is accepted here and handed to TLS only within the caps on unauthenticated connections (admission.ts).
      const tcp = createServer((raw) => {
        if (this.stopping) raw.destroy();
        else if (this.admission.admitTcp(raw, normalizeAddress(raw.remoteAddress ?? '?'))) tls.emit('connection', raw);
      });
      this.tcpServer = await listenOn(tcp, { host: listen.address, port: listen.port }, `${listen.address}:${listen.port}`);
    } catch (e) {
      this.unixServer.close();
      safeUnlink(this.paths.socket);
      throw e;
    }
    if (this.opts.pidFile !== false) writeFileSync(this.paths.pidFile, `${process.pid}\n`, { mode: 0o644 });
    this.watchGrants();
    this.exec.reapLeftovers();
    for (const p of this.peers.values()) p.start();
    this.log.info(
      { socket: this.paths.socket, listen: `${listen.address}:${listen.port}`, identity: this.name, id: this.own.id, peers: [...this.peers.keys()], localCheck: credCheck, txlog: logFile },
      'rexd started',
    );
  }

  /** Says GOODBYE to everyone, closes listeners and removes the socket and pidfile. */
  stop(reason = 'rexd shutting down'): Promise<void> {
    this.stopping ??= (async () => {
      this.watcher?.close();
      this.knownWatcher?.close();
      for (const p of this.peers.values()) p.stop();
      this.exec.stop();
      for (const s of this.sessions) s.conn?.close(reason);
      this.admission?.close();
      await this.calls.close();
      const closed = Promise.all([this.unixServer, this.tcpServer].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)));
      // Give GOODBYE frames a moment to flush, then drop whatever is left.
      setTimeout(() => {
        for (const s of this.sockets) s.destroy();
      }, 200).unref();
      await closed;
      this.denials?.close();
      this.txlog?.close();
      if (this.opts.pidFile !== false && readPid(this.paths.pidFile) === process.pid) safeUnlink(this.paths.pidFile);
      safeUnlink(this.paths.socket);
      this.log.info({ reason }, 'rexd stopped');
    })();
    return this.stopping;
  }

  /**
   * A socket file left by a crashed daemon is removed; one that a live daemon
   * answers on is not ours to take.
   */
  private async claimSocket(): Promise<void> {
    if (!existsSync(this.paths.socket)) return;
    const alive = await new Promise<boolean>((resolve) => {
      const s = netConnect({ path: this.paths.socket });
      const t = setTimeout(() => {
        s.destroy();
        resolve(true); // something holds it open but does not answer: do not steal it
      }, 1000);
      s.once('connect', () => {
        clearTimeout(t);
        s.destroy();
        resolve(true);
      });
      s.once('error', () => {
        clearTimeout(t);
        resolve(false);
      });
    });
    if (alive) {
      const pid = readPid(this.paths.pidFile);
      throw new RexError(ErrorCodes.DAEMON_ADDRESS_IN_USE, `another rexd${pid ? ` (pid ${pid})` : ''} is already serving ${this.paths.socket}`, {
        where: this.paths.socket,
        hint: 'stop it first (kill -TERM the pid, or `rex cluster down`), or give this one another state-directory/socket',
      });
    }
    this.log.warn({ socket: this.paths.socket }, 'removing stale socket left by a daemon that is gone');
    safeUnlink(this.paths.socket);
  }

  /** Logs one event; false when it was a denial counted for a summary row instead (then rexd's own log skips it too). */
  private record(ev: LogEvent): boolean {
    try {
      // Denials are rate-limited per source and summed up (admission.ts, docs/LOG.md): a flood cannot flood the log.
      if (ev.outcome === 'denied' && this.denials) return this.denials.record(ev);
      this.txlog?.record(ev);
    } catch {
      /* never let logging break serving */
    }
    return true;
  }

  private track(sock: Socket): boolean {
    if (this.stopping) {
      sock.destroy();
      return false;
    }
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    return true;
  }

  // ------------------------------------------------------------ local clients

  private acceptLocal(sock: Socket): void {
    if (!this.track(sock)) return;
    const cred = localPeer(sock);
    const session: Session = { kind: 'local', address: 'local', identity: this.name, identityId: '', fromHost: this.config.hostName, ...(cred ? { pid: cred.pid } : {}) };
    const label = cred ? `local client pid ${cred.pid} uid ${cred.uid}` : 'local client';
    const startup = this.admission.local(sock);
    const conn = new Connection(sock, {
      initiator: false,
      local: { role: 'daemon', host: this.config.hostName, software: SOFTWARE },
      label,
      timeoutMs: this.config.peerTimeout,
      onHello: (hello) => {
        if (cred && cred.uid !== this.uid) {
          const reason = `uid ${cred.uid} may not use this rexd: it acts only for its owner, uid ${this.uid} (${currentUser()})`;
          this.record({ kind: 'auth', identity: `uid ${cred.uid}`, peerAddress: 'local', outcome: 'denied', reason });
          throw new ProtocolError('DENIED', reason);
        }
        if (hello.role !== 'client') throw new ProtocolError('DENIED', `role ${hello.role} is not allowed on the local socket`);
        if (hello.program) {
          session.identity = `${this.name}.${hello.program}`;
          session.program = hello.program;
        }
        startup.authenticated();
      },
      onRequest: (m) => this.serve(m, session),
      onServed: (info) => this.served(session, info),
    });
    this.attach(session, conn, label, startup);
  }

  private attach(session: Session, conn: Connection, label: string, startup?: Startup): void {
    session.conn = conn;
    // At login-grace-time, a connection that has not authenticated (or may only ENROLL) is told DENIED and closed.
    startup?.onExpire((reason) => conn.abort(new ProtocolError('DENIED', reason, { fatal: true })));
    this.sessions.add(session);
    conn.on('close', (err?: Error) => {
      this.sessions.delete(session);
      if (err && !/closed/.test(err.message)) this.log.debug({ peer: label, err: err.message }, 'connection ended');
      // Garbage, a wrong preface or a stalled frame ends the session: that is an attempt worth a log line.
      if (err && isRexError(err) && /^REX_ERR_PROTO_|CONN_TIMEOUT/.test(err.code) && !(err instanceof ProtocolError && err.proto === 'DENIED')) {
        this.record({ kind: 'session', identity: session.identity, ...(session.identityId ? { identityId: session.identityId } : {}), peerAddress: session.address, outcome: 'error', reason: err.message });
      }
    });
    conn.on('handler-error', (e: Error) => this.log.error({ peer: label, err: e.stack ?? e.message }, 'request handler failed'));
    conn.handshake().catch((e: Error) => this.log.info({ peer: label, err: e.message }, 'handshake failed'));
  }

  private served(session: Session, info: ServedInfo): void {
    const m = info.msg;
    // Heartbeats (peers' load polls, status views) answered ok are not transactions (rex.rc log-heartbeats).
    if ((m.type === 'LOAD_GET' || m.type === 'HOSTS_GET') && !info.error && !this.config.logHeartbeats) return;
    const target =
      m.type === 'PING' ? m.target
      : m.type === 'CALL' || m.type === 'ENTRIES_GET' ? (this.router.routed.get(m) ?? m.target)
      // An rfork image's path is a /proc descriptor: the row says what it was (bytes_in counts an image sent inline).
      : m.type === 'EXEC' ? (m.image ? 'rfork image' : m.path)
      : undefined;
    this.record({
      kind: m.type === 'ENROLL' ? 'enroll' : 'transaction',
      identity: this.onBehalf.get(m) ?? session.identity,
      ...(session.identityId ? { identityId: session.identityId } : {}),
      ...(session.fromHost ? { fromHost: session.fromHost } : {}),
      peerAddress: session.address,
      messageType: m.type,
      ...(target ? { target } : {}),
      outcome: info.error ? (info.error.proto === 'DENIED' ? 'denied' : 'error') : 'ok',
      ...(info.error ? { reason: info.error.message } : this.enrollNotes.has(m) ? { reason: this.enrollNotes.get(m)! } : {}),
      bytesIn: info.requestBytes,
      bytesOut: info.responseBytes,
      durationMs: info.ms,
    });
  }

  // ------------------------------------------------------------ TLS peers and remote clients

  private onTlsError(err: Error, sock: TLSSocket): void {
    const address = normalizeAddress(sock?.remoteAddress ?? '?');
    const reason = /wrong version number|http request|unknown protocol|packet length too long/i.test(err.message)
      ? `not a TLS client (${err.message.replace(/^.*routines:/, '')}); REX peers speak TLS 1.3`
      : /TLS handshake timeout/.test(err.message)
        ? `TLS handshake not completed within login-grace-time ${this.config.loginGraceTime / 1000} s; connection closed`
        : `TLS handshake failed: ${err.message}`;
    if (this.record({ kind: 'auth', peerAddress: address, outcome: 'denied', reason })) this.log.info({ peer: address, err: err.message }, 'TLS handshake failed');
    sock?.destroy();
  }

  private acceptTls(sock: TLSSocket): void {
    if (!this.track(sock)) return;
    const address = normalizeAddress(sock.remoteAddress ?? '?');
    const cert = peerCert(sock);
    const session: Session = { kind: 'tls', address, identity: cert?.name || '(no certificate)', ...(cert ? { cert, identityId: cert.id } : {}) };
    const label = `${cert?.name || 'peer'}@${address}:${sock.remotePort}`;
    const startup = this.admission.tls(address, sock.remotePort);
    const conn = new Connection(sock, {
      initiator: false,
      local: { role: 'daemon', host: this.config.hostName, software: SOFTWARE },
      label,
      timeoutMs: this.config.peerTimeout,
      onHello: (hello) => {
        this.authenticate(session, hello);
        // A restricted session (unknown key, no grant) may ENROLL but stays a startup: it ends at the deadline.
        if (session.restricted) startup?.waiting(`an authenticated key (${session.restricted.split(';')[0]})`);
        else startup?.authenticated();
      },
      onRequest: (m) => this.serveTls(m, session),
      onServed: (info) => this.served(session, info),
    });
    this.attach(session, conn, label, startup);
  }

  private deny(session: Session, reason: string, fatal = true): ProtocolError {
    const written = this.record({
      kind: 'auth',
      identity: session.identity,
      ...(session.identityId ? { identityId: session.identityId } : {}),
      ...(session.fromHost ? { fromHost: session.fromHost } : {}),
      peerAddress: session.address,
      outcome: 'denied',
      reason,
    });
    if (written) this.log.info({ peer: session.address, identity: session.identity, id: session.identityId, reason }, 'access denied');
    return new ProtocolError('DENIED', reason, { fatal });
  }

  /** The grants check for a requester; a voided grants file refuses with its own error. */
  private check(who: Requester, anyProgram: boolean, fn?: string): { ok: true; grant: Grant } | { ok: false; reason: string } {
    const cur = this.grantsNow();
    if (cur.error) return { ok: false, reason: `access to ${this.name} is refused: ${cur.error.where ? `${cur.error.where}: ` : ''}${cur.error.message}` };
    const d = decide(cur.grants, who, {
      anyProgram,
      self: this.name,
      ...(fn !== undefined ? { function: fn } : {}),
      hostAddress: (n) => this.config.servers.find((s) => s.name === n)?.address,
    });
    return d;
  }

  /** Runs at the peer's HELLO: everything that can be decided about who this is. */
  private authenticate(session: Session, hello: PeerHello): void {
    const { cert } = session;
    // The host a request comes from is the certificate's, never what HELLO says (a HELLO cannot move it).
    const certName = cert ? parseIdentityName(cert.name) : undefined;
    if (certName && typeof certName !== 'string') session.fromHost = certName.host;
    if (this.config.clients.length > 0 && !clientAllowed(this.config.clients, session.address, this.config.servers.filter((s) => s.address === session.address).map((s) => s.name))) {
      throw this.deny(session, `address ${session.address} is not in the clients list of ${this.config.hostName} (rex.rc clients: ${this.config.clients.join(', ')})`);
    }
    if (!cert) throw this.deny(session, 'no client certificate: REX peers authenticate with their key (rex_key --create)');
    const claimed = parseIdentityName(cert.name);
    if (typeof claimed === 'string') throw this.deny(session, `the certificate's name is not an identity: ${claimed}`);
    if (hello.role === 'daemon') throw this.deny(session, 'role daemon is for answers only');
    const known = this.store.knownById(cert.id);
    if (known && known.name !== cert.name) {
      throw this.deny(session, `key ${cert.id} is known here as ${known.name}, but its certificate claims to be ${cert.name}; refusing the impostor`);
    }
    if (hello.host !== undefined || hello.role === 'peer') {
      if (hello.host !== claimed.host) throw this.deny(session, `HELLO says host "${hello.host ?? ''}", but key ${cert.id} belongs to ${cert.name}`);
    }
    // A peer rexd is HOST.USER of this user exactly: a program key or another user's key is not a peer.
    const self = parseIdentityName(this.name);
    if (hello.role === 'peer' && (claimed.program !== undefined || typeof self === 'string' || claimed.user !== self.user)) {
      throw this.deny(session, `role peer is for the rexd of another host of ${typeof self === 'string' ? 'this user' : `user ${self.user}`} (HOST.${typeof self === 'string' ? 'USER' : self.user}), not for ${cert.name}; connect as a client`);
    }
    session.identity = cert.name;
    session.programKey = claimed.program !== undefined;
    const requester: Requester = { id: cert.id, name: `${claimed.host}.${claimed.user}`, address: session.address, ...(claimed.program ? { program: claimed.program } : {}) };
    if (!claimed.program && hello.program) {
      requester.program = hello.program;
      session.identity = `${cert.name}.${hello.program}`;
    }
    session.requester = requester;
    if (!known) {
      session.restricted = `unknown key ${cert.id} (claims to be ${cert.name}); ${this.name} has never enrolled it. Ask the owner of ${this.config.hostName} to run \`rex_key --invite --for ${cert.name}\` there, then run \`rex_key --distribute --token TOKEN\``;
      return; // it may still ENROLL with a token
    }
    session.known = known;
    const d = this.check(requester, true);
    if (!d.ok) {
      session.restricted = d.reason;
      return; // it may still re-send its key (ENROLL); everything else is refused
    }
    this.record({ kind: 'auth', identity: session.identity, identityId: cert.id, fromHost: session.fromHost, peerAddress: session.address, outcome: 'ok' });
  }

  private async serveTls(m: Message, session: Session): Promise<Reply> {
    const logDown = this.logRefusal(m);
    if (m.type === 'ENROLL') {
      if (logDown) throw logDown;
      return this.enroll(m, session);
    }
    if (session.restricted) throw this.deny(session, session.restricted, true);
    let who = session.requester!;
    // A peer rexd forwarding for one of its user's programs names it; that user owns all its programs, so
    // the claim grants nothing the user's own key does not, and lets grants limited to programs apply.
    if ((m.type === 'PING' || m.type === 'EXEC') && m.program && !session.programKey) {
      who = { ...who, program: m.program };
      this.onBehalf.set(m, `${who.name}.${m.program}`);
    }
    // Load and membership queries keep the cluster view working whatever programs a grant is limited to;
    // calls are checked for the program they call, by the call manager's authorize (authorizeCall).
    const callish = m.type === 'CALL' || m.type === 'ENTRIES_GET' || m.type === 'CANCEL';
    const d = this.check(who, m.type === 'LOAD_GET' || m.type === 'HOSTS_GET' || callish);
    if (!d.ok) throw this.deny(session, d.reason, false);
    if (m.type === 'EXEC') {
      const limit = this.execLimit(session, who, d.grant);
      if (limit) this.execLimits.set(m, limit);
    }
    if (logDown) throw logDown;
    return this.serve(m, session);
  }

  /**
   * What a requester may run by EXEC: anything its user may, unless it is
   * authorized only for one program (a program key, or a grant with
   * program=P): then only P's executables from this host's rex.rc.
   */
  private execLimit(session: Session, who: Requester, grant: Grant): ExecLimit | undefined {
    const program = session.programKey ? who.program : grant.program;
    if (program === undefined) return undefined;
    const entry = this.config.programs.find((p) => p.name === program);
    return {
      program,
      who: `${who.name}.${program} (key ${who.id})`,
      name: who.name,
      host: this.name,
      hasEntry: entry !== undefined,
      ...(entry?.executables ? { executables: entry.executables } : {}),
      ...(grant.functions && grant.program === program ? { functions: grant.functions } : {}),
    };
  }

  /**
   * rex.rc log-fail-closed: while the transaction log cannot be written, new
   * work from the TLS port is refused; heartbeats, membership and CANCEL are
   * not new work (docs/LOG.md).
   */
  private logRefusal(m: Message): ProtocolError | undefined {
    if (!this.config.logFailClosed || m.type === 'LOAD_GET' || m.type === 'HOSTS_GET' || m.type === 'CANCEL') return undefined;
    if (this.txlog?.writableNow()) return undefined;
    return new ProtocolError('DENIED', `${this.config.hostName} refuses new work while its transaction log cannot be written (rex.rc log-fail-closed yes); try again later or on another host`, { fatal: false });
  }

  /** Serves ENROLL: a new key with a one-time token, a re-sent known key, or a rotated key. */
  private enroll(m: MessageOf<'ENROLL'>, session: Session): Reply {
    const cert = session.cert!;
    const answer = (name: string, id: string, already: boolean): Reply => ({ type: 'ENROLLED', server: this.name, serverId: this.own.id, name, id, already });
    if (m.secret === undefined) {
      if (!session.known) throw this.deny(session, session.restricted ?? `unknown key ${cert.id}`, true);
      if (m.cert === undefined) return answer(cert.name, cert.id, true);
      // Rotation: a granted identity sends its new certificate over a connection authenticated by the old key.
      if (session.restricted) throw this.deny(session, `cannot replace the key of ${cert.name}: ${session.restricted}`, true);
      let info: CertInfo;
      try {
        info = certInfo(m.cert, 'new certificate');
      } catch (e) {
        throw this.deny(session, `key rotation refused: ${(e as Error).message}`, true);
      }
      if (info.name !== cert.name) throw this.deny(session, `key rotation refused: a rotated key must keep its name, but ${cert.name} sent a certificate for ${info.name}`, true);
      const clash = this.store.knownById(info.id);
      if (clash && clash.name !== cert.name) throw this.deny(session, `key rotation refused: key ${info.id} already belongs to ${clash.name}`, true);
      // The self-signature shows that whoever made the certificate holds the new key.
      if (!new X509Certificate(info.der).verify(new X509Certificate(info.der).publicKey)) {
        throw this.deny(session, 'key rotation refused: the new certificate is not signed by its own key', true);
      }
      const next = this.store.addKnown(info.pem, 'rotation', 'new certificate');
      if (next.id !== cert.id) this.store.removeKnown(cert.id);
      this.enrollNotes.set(m, `rotated ${cert.name}: key ${cert.id} replaced by ${next.id} over a connection authenticated by the old key`);
      this.log.info({ identity: cert.name, old: cert.id, id: next.id }, 'key rotated');
      return answer(next.name, next.id, false);
    }
    if (!m.proof || !proofMatches(m.secret, cert.id, this.own.id, m.proof)) {
      throw this.deny(session, 'enrollment proof does not match the token and this key; the token was not used', true);
    }
    // Every check that can refuse comes before the token is spent: a refused enrollment leaves it usable.
    let binding;
    try {
      ({ binding } = this.tokens.check(m.secret));
    } catch (e) {
      throw this.deny(session, `enrollment refused: ${(e as Error).message}`, true);
    }
    if (binding.subject !== cert.name) {
      throw this.deny(session, `enrollment refused: the token was issued for ${binding.subject}, not for ${cert.name}; the token was not used`, true);
    }
    if (binding.keyId !== undefined && binding.keyId !== cert.id) {
      throw this.deny(session, `enrollment refused: the token was issued for key ${binding.keyId} of ${binding.subject}, not for key ${cert.id}; the token was not used`, true);
    }
    if (cert.name === this.name) throw this.deny(session, `enrollment refused: ${cert.name} is this host's own identity; the token was not used`, true);
    const old = this.store.known().filter((k) => k.name === cert.name && k.id !== cert.id);
    if (old.length > 0 && !binding.replace) {
      throw this.deny(
        session,
        `enrollment refused: ${cert.name} already has a known key (${old.map((k) => k.id).join(', ')}), and enrollment never replaces a known key; the token was not used. ` +
          `To rotate, the holder of that key runs \`rex_key --create --force\` and \`rex_key --distribute\` (the new key is announced over a connection authenticated by the old one); ` +
          `if that key is lost or compromised, the owner of ${this.name} runs \`rex_key --invite --for ${cert.name} --replace\``,
        true,
      );
    }
    try {
      this.tokens.consume(m.secret, cert.id);
    } catch (e) {
      throw this.deny(session, `enrollment refused: ${(e as Error).message}`, true);
    }
    for (const k of old) this.store.removeKnown(k.id);
    const k = this.store.addKnown(cert.pem, 'token', 'peer certificate');
    session.known = k;
    if (old.length > 0) {
      const note = `replaced key ${old.map((x) => x.id).join(', ')} of ${k.name} by ${k.id} (a token issued with --replace)`;
      this.enrollNotes.set(m, note);
      this.log.warn({ identity: k.name, old: old.map((x) => x.id), id: k.id, peer: session.address }, 'replaced a known key with a --replace token');
      this.closeSessionsOf(new Set(old.map((x) => x.id)), `key replaced: ${note}`);
    } else this.log.info({ identity: k.name, id: k.id, peer: session.address }, 'enrolled a key with a token');
    return answer(k.name, k.id, false);
  }

  /** Ends the open sessions of these keys at once (their key was replaced by the host's owner). */
  private closeSessionsOf(ids: Set<string>, reason: string): void {
    for (const s of this.sessions) {
      if (s.kind !== 'tls' || !s.identityId || !ids.has(s.identityId) || !s.conn?.isOpen) continue;
      this.record({ kind: 'session', identity: s.identity, identityId: s.identityId, ...(s.fromHost ? { fromHost: s.fromHost } : {}), peerAddress: s.address, outcome: 'denied', reason });
      s.restricted = reason;
      s.conn.abort(new ProtocolError('DENIED', reason, { fatal: true }));
    }
  }

  // ------------------------------------------------------------ revocation

  private watchGrants(): void {
    this.grants.current();
    try {
      this.watcher = watch(this.paths.stateDir, (_ev, file) => {
        if (file === 'grants' || file === null) this.grantsNow();
      });
      this.watcher.on('error', () => {});
      this.store.ensureDirs();
      // A newly enrolled key may be the one a peer link has been waiting for.
      this.knownWatcher = watch(this.store.knownDir, () => {
        for (const p of this.peers.values()) p.kick();
      });
      this.knownWatcher.on('error', () => {});
    } catch (e) {
      this.log.warn({ err: (e as Error).message }, 'cannot watch the grants file; revocations apply at the next request only');
    }
  }

  /**
   * The grants in force. Whoever notices a change first (the directory watch or
   * a request's stat) triggers the session check, so no change goes unacted on.
   */
  private grantsNow(): ReturnType<GrantsFile['current']> {
    const cur = this.grants.current();
    if (cur.changed) queueMicrotask(() => this.closeRevokedSessions());
    return cur;
  }

  /** After a grants change: closes every session whose identity no longer has a grant. */
  private closeRevokedSessions(): void {
    for (const s of this.sessions) {
      if (s.kind !== 'tls' || !s.requester || s.restricted || !s.conn?.isOpen) continue;
      const d = this.check(s.requester, true);
      if (d.ok) continue;
      const reason = `access revoked: ${d.reason}`;
      this.record({ kind: 'session', identity: s.identity, ...(s.identityId ? { identityId: s.identityId } : {}), ...(s.fromHost ? { fromHost: s.fromHost } : {}), peerAddress: s.address, outcome: 'denied', reason });
      this.log.info({ identity: s.identity, peer: s.address }, 'closing session: grant revoked');
      s.restricted = reason;
      s.conn.abort(new ProtocolError('DENIED', reason, { fatal: true }));
    }
  }

  // ------------------------------------------------------------ requests

  private async serve(m: Message, session: Session): Promise<Reply> {
    switch (m.type) {
      case 'PING':
        return this.ping(m, session);
      case 'LOAD_GET':
        return { type: 'LOAD', ...this.meter.measure(), cpu: profileToWire(advertisedCpuProfile()) };
      case 'HOSTS_GET':
        return { type: 'HOSTS', hosts: fitHosts(this.hosts(), session.conn?.peer?.maxPayload).hosts }; // bounded, docs/PROTOCOL.md 4.6
      case 'CALL':
      case 'ENTRIES_GET':
      case 'CANCEL':
        return this.call(m, session);
      case 'EXEC':
        return this.exec.serve(m, { local: session.kind === 'local', ...(session.program ? { program: session.program } : {}), ...(session.pid ? { pid: session.pid } : {}), ...(this.execLimits.has(m) ? { limit: this.execLimits.get(m)! } : {}) }, session.conn!);
      case 'ENROLL':
        throw new ProtocolError('BAD_REQUEST', 'ENROLL is served on the TLS port only (rex_key --distribute)', { fatal: false });
      default:
        throw new ProtocolError('UNSUPPORTED', `${m.type} is not a request rexd serves`, { fatal: false });
    }
  }

  private async ping(m: MessageOf<'PING'>, session: Session): Promise<Reply> {
    const kind = session.kind;
    const echo = { ...(m.nonce ? { nonce: m.nonce } : {}), ...(m.data ? { data: m.data } : {}) };
    if (!m.target || m.target === this.config.hostName) return { type: 'PONG', ...echo, host: this.config.hostName, hops: 0 };
    // Only local clients' pings are forwarded, and only once: peers never ask us to relay further.
    if (kind !== 'local') throw new ProtocolError('BAD_REQUEST', 'peers may not ask for forwarding', { fatal: false });
    const peer = this.peers.get(m.target);
    if (!peer) {
      throw new ProtocolError('NO_HOST', `no host "${quote(m.target)}" in this cluster (known: ${[this.config.hostName, ...this.peers.keys()].join(', ')})`, { fatal: false });
    }
    const conn = peer.connection ?? (await peer.connectNow());
    if (!conn) {
      const why = peer.state.error ?? 'not connected yet';
      if (/DENIED/.test(why)) throw new ProtocolError('DENIED', `${peer.entry.name} refuses this host: ${why}`, { fatal: false });
      throw new ProtocolError('UNREACHABLE', `host ${peer.label} is unreachable: ${why}`, { fatal: false });
    }
    let r: Message;
    try {
      r = await conn.request({ type: 'PING', ...echo, ...(session.program ? { program: session.program } : {}) }, this.config.peerTimeout);
    } catch (e) {
      const err = e as RexError & { proto?: string };
      if (err.proto === 'DENIED') throw new ProtocolError('DENIED', err.message, { fatal: false });
      throw new ProtocolError(err.code === ErrorCodes.CONN_TIMEOUT ? 'TIMEOUT' : 'UNREACHABLE', `forwarding to ${peer.label}: ${err.message}`, { fatal: false });
    }
    if (r.type !== 'PONG') throw new ProtocolError('INTERNAL', `${peer.label} answered PING with ${r.type}`, { fatal: false });
    return { type: 'PONG', ...(r.nonce ? { nonce: r.nonce } : {}), ...(r.data ? { data: r.data } : {}), host: r.host ?? peer.entry.name, hops: 1 };
  }

  // ------------------------------------------------------------ remote calls (docs/CALLS.md)

  /** CALL, ENTRIES_GET, CANCEL: local clients' requests may be routed to peers, peers' are served here. */
  private call(m: Message, session: Session): Promise<Reply> {
    const conn = session.conn ?? session;
    this.callSessions.set(conn, session);
    const identity: CallIdentity = {
      name: session.identity,
      conn,
      ...(session.identityId ? { id: session.identityId } : {}),
      ...(session.program ?? session.requester?.program ? { program: session.program ?? session.requester?.program } : {}),
      address: session.address,
    };
    return this.router.handle(m, { identity, mayForward: session.kind === 'local' });
  }

  /**
   * The grants decide calls, with the called program as the requester's program and the called function
   * checked against functions=/deny= (docs/CALLS.md, Security). `fn` is undefined (or the manager's internal
   * "\0entries") for ENTRIES_GET: the program must be granted, and ENTRIES lists only the granted functions.
   */
  private authorizeCall(who: CallIdentity, program: string, fn?: string): true | string {
    const session = who.conn ? this.callSessions.get(who.conn) : undefined;
    if (session?.kind === 'local') return true; // the owner, checked by uid at HELLO
    if (!session?.requester) return `${who.name} is not authenticated`;
    const r = session.requester;
    if (session.programKey && r.program !== program) {
      return `${r.name}.${r.program} (key ${r.id}) is a program key: it may call program ${r.program} only, not ${program}`;
    }
    const d = this.check({ ...r, program }, false, fn === undefined || fn === '\0entries' ? undefined : fn);
    return d.ok ? true : d.reason;
  }

  /** The rex.rc `programs` entry called `name`, with its definitions read (once per program: the manager keeps it). */
  private program(name: string): ProgramSpec | undefined {
    const entry = this.config.programs.find((p) => p.name === name);
    if (!entry) return undefined;
    try {
      const { spec, warnings } = loadProgram(entry);
      for (const w of warnings) this.log.warn({ program: name, warning: w }, 'program definitions do not match its object');
      return spec;
    } catch (e) {
      throw new ProtocolError('NO_ENTRY', `program '${name}' (rex.rc programs) cannot be loaded on ${this.config.hostName}: ${(e as Error).message}`, {
        fatal: false,
        hint: 'check the paths of its rex.rc programs entry (repdb -gx writes the XML)',
      });
    }
  }

  /** The cluster as this host sees it: itself, then its peers in rex.rc order. */
  hosts(): HostEntry[] {
    const now = Date.now();
    const self = this.meter.measure();
    const out: HostEntry[] = [
      {
        name: this.config.hostName,
        address: this.config.listen.address,
        port: this.config.listen.port,
        load: self.load,
        loadavg1: self.loadavg[0],
        cores: self.cores,
        jobs: self.jobs,
        reachable: true,
        ageMs: 0,
        self: true,
        cpu: profileToWire(advertisedCpuProfile()),
      },
    ];
    for (const p of this.peers.values()) {
      const s = p.state;
      const e: HostEntry = { name: s.name, address: s.address, port: s.port, reachable: s.reachable, self: false };
      if (s.figure && s.receivedAt !== undefined) {
        Object.assign(e, { load: s.figure.load, loadavg1: s.figure.loadavg[0], cores: s.figure.cores, jobs: s.figure.jobs, ageMs: Math.max(0, now - s.receivedAt) });
      }
      if (s.cpu) e.cpu = profileToWire(s.cpu);
      if (s.error) e.error = s.error;
      out.push(e);
    }
    return out;
  }
}

function listenOn(server: Server, opts: { path: string } | { host: string; port: number }, what: string): Promise<Server> {
  return new Promise<Server>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EADDRINUSE') {
        reject(
          new RexError(ErrorCodes.DAEMON_ADDRESS_IN_USE, `${what} is already in use`, {
            where: 'rex.rc listen',
            hint: 'another rexd or program holds it (`ss -ltnp` shows which); stop it or choose another port in rex.rc',
          }),
        );
      } else if (e.code === 'EADDRNOTAVAIL') {
        reject(new RexError(ErrorCodes.DAEMON_BIND_REFUSED, `${what}: no such local address`, { where: 'rex.rc listen', hint: 'listen must name an address of this host' }));
      } else reject(new RexError(ErrorCodes.DAEMON_BIND_REFUSED, `cannot listen on ${what}: ${e.message}`, { cause: e }));
    });
    server.listen(opts, () => resolve(server));
  });
}

function safeUnlink(p: string): void {
  try {
    unlinkSync(p);
  } catch {
    /* already gone */
  }
}
