/**
 * rexd: the REX daemon of one host and user. It serves local clients on a Unix
 * socket in a private directory (checking the caller's uid), and peers and
 * remote clients on TLS 1.3 with mutual authentication: each TLS client's key is
 * pinned against this user's trust store and grants (src/keys/). This file is
 * the daemon's lifecycle, its listeners and the wiring: every request goes
 * through one request table (dispatch.ts) whose entries each feature registers
 * from its own module (src/keys/service.ts, src/calls/service.ts,
 * src/exec/executor/requests.ts, src/rfork/requests.ts, load.ts), and each
 * connection's session is one of the states of session.ts. The code of exec,
 * rfork and calls is loaded on first use and warmed once rexd serves (Feature,
 * dispatch.ts): start-up reads only what answers a first connection.
 */
import { existsSync, unlinkSync, writeFileSync } from 'node:fs';
import { Socket as NetSocket, createServer, connect as netConnect, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import type { ProgramSpec } from '../calls/manager.js';
import { registerCalls, type CallService, type ProgramsDiff } from '../calls/service.js';
import { normalizeAddress } from '../config/clients.js';
import { ConfigError, isRexName, type LoadedConfig, type RexConfig, type ServerEntry } from '../config/index.js';
import { HostsFile, mergeServers } from '../keys/hosts.js';
import { currentUser, localName } from '../keys/identity.js';
import { KeysService } from '../keys/service.js';
import { KeyStore, type OwnIdentity } from '../keys/store.js';
import { peerCert, tlsServerOptions } from '../keys/tls.js';
import { Connection } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { MessageOf } from '../protocol/messages.js';
import { ErrorCodes, RexError, isRexError } from '../util/errors.js';
import { registerExec } from '../exec/executor/requests.js';
import type { ExecService } from '../exec/executor/service.js';
import { registerRfork } from '../rfork/requests.js';
import { LoadMeter, registerLoad } from './load.js';
import { advertisedCpuProfile } from '../cpu/wire.js';
import { describeCpu } from '../cpu/profile.js';
import { DaemonLog, type Logger } from './log.js';
import { daemonPaths, ensurePrivateDir, readPid, type DaemonPaths } from './paths.js';
import { checkExecDirectories } from '../exec/executor/dirs.js';
import { initPeerCred, localPeer } from './peercred.js';
import { PeerLink } from './peers.js';
import { Admission, type Startup } from './admission.js';
import { Feature, RequestTable } from './dispatch.js';
import { Endpoint, pendingLocal, pendingTls, toClient } from './session.js';
import { safeClose, type ChannelMessage, type SessionChannel } from './channel.js';
import { certInfo, type CertInfo } from '../keys/certs.js';
import type { HostbasedFacts } from '../keys/service.js';

/** Version string sent in HELLO. */
export const SOFTWARE = 'rexd/0.2.0';

/** The default transaction log file of a state directory. */
export function defaultLogDatabase(stateDir: string): string {
  return join(stateDir, 'rex-log.sqlite');
}

/**
 * The rex.rc keys a reload (SIGHUP) applies to the running daemon: each is read from the daemon's `config`
 * where it is used (programs by the call service and EXEC limits, clients by the keys service, the start-up
 * caps by admission, log-fail-closed by the transaction log) or, for log-level, set on the logger. Every
 * other key was copied at start into listeners, peer links or services: a change to it needs a restart.
 */
export const RELOADABLE_KEYS: ReadonlySet<keyof RexConfig> = new Set<keyof RexConfig>(['programs', 'clients', 'maxStartups', 'perSourceMaxStartups', 'logFailClosed', 'logServerFailClosed', 'logLevel']);

/** What a reload did. */
export interface ReloadReport {
  /** Keys whose new values are in force. */
  applied: (keyof RexConfig)[];
  /** Keys that changed in rex.rc but keep their old values until rexd restarts. */
  needsRestart: (keyof RexConfig)[];
  programs: ProgramsDiff;
}

/** Options beyond rex.rc. */
export interface RexdOptions {
  log: Logger;
  /** Write a pidfile (default true). */
  pidFile?: boolean;
  /** Transaction log file; default rex.rc rex-log-database or <state-directory>/rex-log.sqlite. */
  logDatabase?: string;
  /**
   * Root installation: this rexd is a user's session controller (docs/ROOT.md). It has no listeners
   * of its own: the monitor passes it its connections over this channel and dials peers for it.
   */
  session?: SessionChannel;
  /**
   * Root installation: this session-mode rexd is the host controller (docs/ROOT.md section 7), run as rex.rc
   * host-user with the host's trust state as its state directory. Its identity is the host key HOST, of which it
   * holds only the certificate (TLS is the monitor's); it serves JOIN and INTRODUCE (and LOAD, which peer links
   * ask first), and runs nothing for anyone.
   */
  hostController?: { cert: CertInfo };
}

/** One running daemon. */
export class Rexd {
  readonly paths: DaemonPaths;
  readonly meter: LoadMeter;
  readonly store: KeyStore;
  readonly name: string;
  private own!: OwnIdentity;
  /** The transaction log's rows of this daemon: authentication, requests, denials. */
  private readonly txlog: DaemonLog;
  /** Deadlines and caps for connections that have not authenticated (admission.ts). */
  private admission!: Admission;
  private readonly peers = new Map<string, PeerLink>();
  /** Peer links start polling once rexd listens; links added later (a host joined) start at once. */
  private peersStarted = false;
  private unixServer: Server | undefined;
  private tcpServer: Server | undefined;
  private readonly sessions = new Set<Endpoint>();
  private readonly sockets = new Set<Socket>();
  private stopping: Promise<void> | undefined;
  /** The reload in progress: reloads run one after the other, each reading the files as they are then. */
  private reloading: Promise<unknown> = Promise.resolve();
  private readonly uid = process.getuid?.() ?? -1;
  /** Every request rexd serves, by message type (dispatch.ts). */
  readonly requests: RequestTable;
  /** Authentication, grants, enrollment (src/keys/). */
  private readonly keys: KeysService;
  /** Remote calls: the controllers of this host's programs, and the routing to peers (src/calls/). */
  /** Undefined in the host controller, which serves no calls. */
  private readonly callService: CallService | undefined;
  readonly startedAt = Date.now();
  /** Remote execution: EXEC run here or routed to the placed host (src/exec/); also RFORK's and calls' placement and containment. */
  private readonly exec: Feature<ExecService>;

  constructor(
    readonly config: RexConfig,
    private readonly opts: RexdOptions,
  ) {
    this.paths = daemonPaths(config.stateDirectory, config.socket);
    this.meter = new LoadMeter(config.hostName);
    this.store = new KeyStore(config.stateDirectory);
    this.name = opts.hostController ? config.hostName : localName(config.hostName);
    this.txlog = new DaemonLog(config, opts.log);
    this.keys = new KeysService({
      config,
      store: this.store,
      name: this.name,
      own: () => this.own,
      log: opts.log,
      txlog: this.txlog,
      sessions: this.sessions,
      members: () => this.members(),
      membersChanged: () => this.syncPeers(),
      introduce: (member, m) => this.introduce(member, m),
    });
    this.requests = new RequestTable({
      check: (who, anyProgram) => this.keys.check(who, anyProgram),
      deny: (from, reason, fatal) => this.txlog.deny(from, reason, fatal),
      logRefusal: () => this.txlog.refusal(),
      record: (ev) => void this.txlog.record(ev),
      logHeartbeats: config.logHeartbeats,
    });
    // The host controller runs no work: its exec feature is never registered, so never loaded.
    const exec = new Feature('exec', () => this.loadExec());
    this.exec = opts.hostController ? exec : this.requests.feature(exec);
    // The request table: one call per feature.
    registerLoad(this.requests, { config, meter: this.meter, peers: this.peers });
    this.keys.register(this.requests);
    if (opts.hostController) {
      // The host controller keeps the host's trust: it serves JOIN and INTRODUCE (and LOAD), no work.
      this.callService = undefined;
      return;
    }
    registerExec(this.requests, this.exec, config, this.name);
    registerRfork(this.requests, this.exec, config, this.name);
    this.callService = registerCalls(this.requests, { config, placement: async () => (await this.exec.get()).placer, peers: this.peers, program: (name) => this.program(name), check: (who, anyProgram, fn) => this.keys.check(who, anyProgram, fn), log: opts.log });
  }

  get log(): Logger {
    return this.opts.log;
  }

  /** This daemon's key ID (after start). */
  get id(): string {
    return this.own.id;
  }

  /**
   * The EXEC service, made when it is first needed: its containment (cgroups or process groups) is set up, and
   * what a crashed predecessor left running is ended, before the first job of this rexd (EXEC, RFORK or a call's
   * controller, which all wait for this) can start.
   */
  private async loadExec(): Promise<ExecService> {
    const { config, paths, opts } = this;
    const [{ ExecService }, { JobRecord }, { Containment }] = await Promise.all([import('../exec/executor/service.js'), import('../exec/executor/jobs.js'), import('../exec/executor/contain.js')]);
    const exec = new ExecService({ hostName: config.hostName, tempDirectory: config.tempDirectory, stateDirectory: paths.stateDir, record: (ev) => this.txlog.record(ev), socket: paths.socket, meter: this.meter, log: opts.log, autoTransfer: config.autoTransfer.mode, ...(config.autoTransfer.mode === 'command' ? { transferCommand: config.autoTransfer.command } : {}), jobs: new JobRecord(paths.stateDir) }, this.peers, config.placementPolicy, config.peerTimeout);
    exec.contain(new Containment(config.hostName, paths.stateDir), Math.max(10_000, 3 * Math.max(config.peerTimeout, config.loadInterval)));
    exec.reapLeftovers();
    return exec;
  }

  /**
   * Loads the code of every feature (exec, rfork, calls) in the background: called once rexd serves, so that
   * start-up does not wait for it and the first EXEC or call does not either. A feature that fails to load is
   * logged, and tried again by its first request.
   */
  async warm(): Promise<void> {
    const loaded = await this.requests.warm();
    for (const f of loaded) {
      if (f.error) this.log.error({ feature: f.feature, err: f.error }, 'feature failed to load; its first request tries again');
    }
    this.log.debug({ features: loaded }, 'features loaded');
  }

  /** Loads the key, binds the socket and the TLS port, writes the pidfile and starts polling peers. */
  async start(): Promise<void> {
    const { listen } = this.config;
    const session = this.opts.session;
    ensurePrivateDir(this.paths.stateDir, 'state directory');
    if (!session) ensurePrivateDir(this.paths.runDir, 'socket directory');
    checkExecDirectories(this.paths.stateDir, this.config.tempDirectory);
    // The CPU profile advertised with the load (docs/PLACEMENT.md): read now, so that a bad test profile stops start-up.
    this.log.info({ cpu: describeCpu(advertisedCpuProfile()), features: advertisedCpuProfile().features.join(' ') }, 'CPU profile');
    try {
      this.own = this.opts.hostController ? hostIdentity(this.name, this.opts.hostController.cert) : this.store.load(this.name);
    } catch (e) {
      // A session controller makes its user's key HOST.USER on first start: the user's own key for clients
      // that connect with it (docs/ROOT.md); connections between hosts use the monitor's host key.
      if (!(isRexError(e) && e.code === ErrorCodes.KEY_MISSING)) throw e;
      if (!session) {
        throw new RexError(ErrorCodes.KEY_MISSING, `rexd needs a key for ${this.name} and there is none in ${this.store.keysDir}`, {
          where: this.store.keyFile(this.name),
          hint: 'create it with `rex_key --create`, then enroll with the other hosts (docs/KEYS.md)',
        });
      }
      this.own = await this.store.create(this.name);
    }
    this.syncPeers(false);
    const logFile = this.opts.logDatabase ?? this.config.logDatabase ?? defaultLogDatabase(this.paths.stateDir);
    // The central log's host column is the host of this rexd's certificate (HOST of HOST.USER), not rex.rc's host-name.
    this.txlog.open(logFile, certInfo(this.own.certPem, 'own certificate').name.split('.')[0] || this.config.hostName);
    this.admission = new Admission(this.config, (ev) => {
      if (this.txlog.record(ev)) this.log.info({ peer: ev.peerAddress, reason: ev.reason }, 'connection closed before authentication');
    });
    const credCheck = initPeerCred();
    if (session) {
      session.on('message', (m: ChannelMessage) => this.fromMonitor(m));
      session.on('close', () => void this.stop('the monitor closed the session channel').then(() => process.exit(0)));
      // The host controller links to a member only to introduce a host to it (connectNow); users' controllers poll.
      if (!this.opts.hostController) this.startPeers();
      this.log.info({ identity: this.name, id: this.own.id, peers: [...this.peers.keys()], localCheck: credCheck, txlog: logFile, installation: 'root', ...(this.opts.hostController ? { role: 'host controller' } : {}) }, this.opts.hostController ? 'host controller started' : 'session controller started');
      return;
    }
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
    this.startPeers();
    this.log.info(
      { socket: this.paths.socket, listen: `${listen.address}:${listen.port}`, identity: this.name, id: this.own.id, peers: [...this.peers.keys()], localCheck: credCheck, txlog: logFile },
      'rexd started',
    );
  }

  /** Starts the peer links, and follows the trust store and the hosts file for them. */
  private startPeers(): void {
    // A newly enrolled key may be the one a peer link has been waiting for; a join adds or moves members.
    this.keys.watch(
      this.paths.stateDir,
      () => {
        for (const p of this.peers.values()) p.kick();
      },
      () => this.syncPeers(),
    );
    for (const p of this.peers.values()) p.start();
    this.peersStarted = true;
  }

  /** Says GOODBYE to everyone, closes listeners and removes the socket and pidfile. */
  stop(reason = 'rexd shutting down'): Promise<void> {
    this.stopping ??= (async () => {
      this.keys.close();
      for (const p of this.peers.values()) p.stop();
      const [exec, calls] = await Promise.all([this.exec.ifLoaded(), this.callService?.side.ifLoaded()]);
      exec?.stop();
      for (const s of this.sessions) s.conn?.close(reason);
      this.admission?.close();
      await calls?.manager.close();
      const closed = Promise.all([this.unixServer, this.tcpServer].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)));
      // Give GOODBYE frames a moment to flush, then drop whatever is left.
      setTimeout(() => {
        for (const s of this.sockets) s.destroy();
      }, 200).unref();
      await closed;
      // Rows not yet at the log server: a moment to send them (the rest wait in the local log for the next start).
      await this.txlog.drainCentral(2000);
      this.txlog.close();
      this.opts.session?.close();
      if (!this.opts.session && this.opts.pidFile !== false && readPid(this.paths.pidFile) === process.pid) safeUnlink(this.paths.pidFile);
      if (!this.opts.session) safeUnlink(this.paths.socket);
      this.log.info({ reason }, 'rexd stopped');
    })();
    return this.stopping;
  }

  /**
   * Re-reads the configuration (rexd's SIGHUP): `load` reads rex.rc and its includes as at start. A configuration
   * with errors is refused whole, its file:line diagnostics logged, and the old one kept. Otherwise the reloadable
   * keys take their new values at once and changed keys that need a restart are logged as such. Sessions, peer
   * links and calls in flight are untouched; the grants file needs nothing here, it is re-read at each request
   * once it changed (src/keys/grants.ts). Resolves with what was done, or undefined when the reload was refused.
   */
  reload(load: () => Promise<LoadedConfig>): Promise<ReloadReport | undefined> {
    const run = this.reloading.then(async () => {
      if (this.stopping) return undefined;
      let next: LoadedConfig;
      try {
        next = await load();
      } catch (e) {
        const diagnostics = e instanceof ConfigError ? e.message.split('\n') : [isRexError(e) ? e.format() : (e as Error).message];
        this.log.error({ event: 'reload-refused', diagnostics }, `reload refused, the configuration in force is unchanged: ${diagnostics.join('; ')}`);
        return undefined;
      }
      if (this.stopping) return undefined;
      return this.apply(next.config, next.files);
    });
    this.reloading = run.catch(() => undefined);
    return run;
  }

  /** The one place the running configuration changes: synchronously, so that no request sees half of a reload. */
  private apply(next: RexConfig, files: readonly string[]): ReloadReport {
    const keys = Object.keys(next) as (keyof RexConfig)[];
    const changed = keys.filter((k) => JSON.stringify(next[k]) !== JSON.stringify(this.config[k]));
    const applied = changed.filter((k) => RELOADABLE_KEYS.has(k));
    const needsRestart = changed.filter((k) => !RELOADABLE_KEYS.has(k));
    const before = this.config.programs;
    Object.assign(this.config, Object.fromEntries(applied.map((k) => [k, next[k]])));
    this.log.level = this.config.logLevel;
    const programs = this.callService?.programsReloaded(before) ?? { added: [], removed: [], changed: [], retired: [] };
    this.syncPeers();
    for (const k of needsRestart) {
      this.log.warn({ event: 'reload-needs-restart', key: k, running: this.config[k], configured: next[k] }, `reload: ${k} changed in rex.rc; it needs a restart, the running value is kept`);
    }
    this.log.info({ event: 'reloaded', files, applied, needsRestart, programs: [...this.config.programs.map((p) => p.name)], added: programs.added, removed: programs.removed, changed: programs.changed }, 'configuration reloaded');
    return { applied, needsRestart, programs };
  }

  /**
   * The cluster's hosts: rex.rc servers (as running) and the members in the hosts file, rex.rc first (src/keys/hosts.ts);
   * in a user's session controller also the hosts its host joined, as the monitor last said (docs/ROOT.md section 7).
   */
  private members(): ServerEntry[] {
    const problems: string[] = [];
    const members = new HostsFile(this.paths.stateDir).read(problems);
    for (const p of problems) this.log.warn({ problem: p }, 'hosts file line ignored');
    return mergeServers(mergeServers(this.config.servers, members), this.hostMembers);
  }

  /** The members of the host's cluster, from the monitor (root installation, users' session controllers). */
  private hostMembers: ServerEntry[] = [];

  /**
   * Makes the peer links match {@link members}: a new member gets a link, a member gone from the hosts file loses
   * its link, a member whose address changed gets a new one. rex.rc servers change only at a restart, as before.
   */
  private syncPeers(start = this.peersStarted): void {
    if (this.stopping || !this.own) return;
    const want = this.members().filter((s) => s.name !== this.config.hostName);
    for (const [name, link] of this.peers) {
      const w = want.find((s) => s.name === name);
      if (!w || w.address !== link.entry.address || w.port !== link.entry.port) {
        link.stop();
        this.peers.delete(name);
      }
    }
    for (const s of want) {
      if (this.peers.has(s.name)) continue;
      const link = new PeerLink(s, {
        selfName: this.config.hostName,
        software: SOFTWARE,
        loadInterval: this.config.loadInterval,
        peerTimeout: this.config.peerTimeout,
        log: this.opts.log,
        own: this.own,
        store: this.store,
        ...(this.opts.session ? { dial: (host: string) => this.dial(this.opts.session!, host) } : {}),
      });
      this.peers.set(s.name, link);
      if (start) {
        this.log.info({ peer: link.label }, 'linking to a new member of the cluster');
        link.start();
      }
    }
  }

  /** INTRODUCE over the peer link to `member` (a host joined through this one). */
  private async introduce(member: ServerEntry, m: Omit<MessageOf<'INTRODUCE'>, 'type' | 'stream'>): Promise<MessageOf<'INTRODUCED'>> {
    const link = this.peers.get(member.name);
    const conn = await link?.connectNow();
    if (!link || !conn) throw new Error(`not reachable${link?.state.error ? `: ${link.state.error}` : ''}`);
    const r = await conn.request({ type: 'INTRODUCE', ...m }, this.config.peerTimeout);
    if (r.type !== 'INTRODUCED') throw new Error(`answered INTRODUCE with ${r.type}`);
    return r;
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

  private track(sock: Socket): boolean {
    if (this.stopping) {
      sock.destroy();
      return false;
    }
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    return true;
  }

  // ------------------------------------------------------------ listeners

  private acceptLocal(sock: Socket): void {
    if (!this.track(sock)) return;
    const cred = localPeer(sock);
    const from = new Endpoint('local', pendingLocal(this.name, this.config.hostName, cred?.pid));
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
          this.txlog.record({ kind: 'auth', identity: `uid ${cred.uid}`, peerAddress: 'local', outcome: 'denied', reason });
          throw new ProtocolError('DENIED', reason);
        }
        if (hello.role !== 'client') throw new ProtocolError('DENIED', `role ${hello.role} is not allowed on the local socket`);
        if (from.session.state === 'pending' && from.session.transport === 'local') from.session = toClient(from.session, this.name, hello.program);
        startup.authenticated();
      },
      onRequest: (m) => this.requests.serveNow(from, m),
      onServed: (info) => this.requests.served(from, info),
    });
    this.attach(from, conn, label, startup);
  }

  private onTlsError(err: Error, sock: TLSSocket): void {
    const address = normalizeAddress(sock?.remoteAddress ?? '?');
    const reason = /wrong version number|http request|unknown protocol|packet length too long/i.test(err.message)
      ? `not a TLS client (${err.message.replace(/^.*routines:/, '')}); REX peers speak TLS 1.3`
      : /TLS handshake timeout/.test(err.message)
        ? `TLS handshake not completed within login-grace-time ${this.config.loginGraceTime / 1000} s; connection closed`
        : `TLS handshake failed: ${err.message}`;
    if (this.txlog.record({ kind: 'auth', peerAddress: address, outcome: 'denied', reason })) this.log.info({ peer: address, err: err.message }, 'TLS handshake failed');
    sock?.destroy();
  }

  private acceptTls(sock: TLSSocket): void {
    if (!this.track(sock)) return;
    const address = normalizeAddress(sock.remoteAddress ?? '?');
    this.serveTls(sock, address, sock.remotePort, peerCert(sock), this.admission.tls(address, sock.remotePort));
  }

  /** A TLS connection's session, from its certificate on; `hostbased` when the monitor vouched for a host's user. */
  private serveTls(sock: Socket, address: string, port: number | undefined, cert: CertInfo | undefined, startup: Startup | undefined, hostbased?: HostbasedFacts): void {
    const pending = pendingTls(cert);
    const from = new Endpoint(address, hostbased ? { ...pending, identity: `${hostbased.hostKey.name}.${hostbased.remoteUser}`, fromHost: hostbased.hostKey.name } : pending);
    const label = `${hostbased ? `${hostbased.hostKey.name}.${hostbased.remoteUser}` : cert?.name || 'peer'}@${address}:${port ?? '?'}`;
    const conn = new Connection(sock, {
      initiator: false,
      local: { role: 'daemon', host: this.config.hostName, software: SOFTWARE },
      label,
      timeoutMs: this.config.peerTimeout,
      onHello: (hello) => {
        if (hostbased) this.keys.authenticateHostbased(from, hello, hostbased);
        else this.keys.authenticate(from, hello);
        // A restricted session (unknown key, no grant) may ENROLL but stays a startup: it ends at the deadline.
        const s = from.session;
        if (s.state === 'restricted') startup?.waiting(`an authenticated key (${s.reason.split(';')[0]})`);
        else startup?.authenticated();
      },
      onRequest: (m) => this.requests.serveNow(from, m),
      onServed: (info) => this.requests.served(from, info),
    });
    this.attach(from, conn, label, startup);
  }

  // ------------------------------------------------------------ session controller (root installation)

  private readonly dials = new Map<number, { resolve: (s: Socket) => void; reject: (e: Error) => void }>();
  private nextDial = 1;

  /** A message from the monitor: a connection for this user, or the answer to a dial. */
  private fromMonitor(m: ChannelMessage): void {
    const h = m.header;
    const fd = m.fds[0];
    const closeAll = () => m.fds.forEach((x) => safeClose(x));
    if (h.op === 'dialed' && typeof h.id === 'number') {
      const d = this.dials.get(h.id);
      this.dials.delete(h.id);
      if (!d || fd === undefined || typeof h.error === 'string') {
        closeAll();
        d?.reject(new RexError(ErrorCodes.CONN_CLOSED, typeof h.error === 'string' ? h.error : 'the monitor gave no connection'));
        return;
      }
      d.resolve(new NetSocket({ fd, readable: true, writable: true }));
      return;
    }
    if (h.op === 'members' && Array.isArray(h.members) && m.fds.length === 0) {
      this.hostMembers = h.members.filter(
        (x): x is ServerEntry => typeof x === 'object' && x !== null && isRexName((x as ServerEntry).name) && typeof (x as ServerEntry).address === 'string' && Number.isInteger((x as ServerEntry).port) && (x as ServerEntry).port > 0 && (x as ServerEntry).port < 65536,
      );
      this.syncPeers();
      return;
    }
    if (fd === undefined || m.fds.length !== 1 || this.stopping) return closeAll();
    const sock = new NetSocket({ fd, readable: true, writable: true });
    if (h.kind === 'local') return this.acceptLocal(sock);
    if (h.kind === 'tls' && typeof h.cert === 'string' && typeof h.address === 'string') {
      if (!this.track(sock)) return;
      let cert: CertInfo;
      try {
        cert = certInfo(Buffer.from(h.cert, 'base64'), 'certificate from the monitor');
      } catch (e) {
        this.log.error({ err: (e as Error).message }, 'the monitor passed a connection with an unreadable certificate');
        return void sock.destroy();
      }
      const port = typeof h.port === 'number' ? h.port : undefined;
      const startup = this.admission.relayed(sock, h.address);
      if (h.hostbased === true && typeof h.remoteUser === 'string' && typeof h.mappedVia === 'string') {
        this.serveTls(sock, h.address, port, undefined, startup, { hostKey: cert, remoteUser: h.remoteUser, mappedVia: h.mappedVia });
      } else this.serveTls(sock, h.address, port, cert, startup);
      return;
    }
    sock.destroy();
  }

  /** Asks the monitor for a connection to `host` (its rexd, for this user), over the host key. */
  private dial(channel: SessionChannel, host: string): Promise<Socket> {
    const id = this.nextDial++;
    return new Promise<Socket>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.dials.delete(id);
        reject(new RexError(ErrorCodes.CONN_TIMEOUT, `the monitor did not connect to ${host} within ${this.config.peerTimeout * 2} ms`));
      }, this.config.peerTimeout * 2);
      this.dials.set(id, {
        resolve: (s) => (clearTimeout(timer), resolve(s)),
        reject: (e) => (clearTimeout(timer), reject(e)),
      });
      channel.send({ op: 'dial', id, host });
    });
  }

  private attach(from: Endpoint, conn: Connection, label: string, startup?: Startup): void {
    from.conn = conn;
    // At login-grace-time, a connection that has not authenticated (or may only ENROLL) is told DENIED and closed.
    startup?.onExpire((reason) => conn.abort(new ProtocolError('DENIED', reason, { fatal: true })));
    this.sessions.add(from);
    conn.on('close', (err?: Error) => {
      this.sessions.delete(from);
      if (err && !/closed/.test(err.message)) this.log.debug({ peer: label, err: err.message }, 'connection ended');
      // Garbage, a wrong preface or a stalled frame ends the session: that is an attempt worth a log line.
      if (err && isRexError(err) && /^REX_ERR_PROTO_|CONN_TIMEOUT/.test(err.code) && !(err instanceof ProtocolError && err.proto === 'DENIED')) {
        const { identity, identityId, peerAddress } = from.facts();
        this.txlog.record({ kind: 'session', identity, ...(identityId ? { identityId } : {}), peerAddress, outcome: 'error', reason: err.message });
      }
    });
    conn.on('handler-error', (e: Error) => this.log.error({ peer: label, err: e.stack ?? e.message }, 'request handler failed'));
    conn.handshake().catch((e: Error) => this.log.info({ peer: label, err: e.message }, 'handshake failed'));
  }

  // ------------------------------------------------------------ programs

  /**
   * The rex.rc `programs` entry called `name`, with its definitions read (once per program: the manager keeps it),
   * in a worker thread: libc's debug info takes seconds, during which sessions and peer links are still served.
   */
  private async program(name: string): Promise<ProgramSpec | undefined> {
    const entry = this.config.programs.find((p) => p.name === name);
    if (!entry) return undefined;
    try {
      const { loadProgramOffThread } = await import('../calls/programs.js');
      const { spec, warnings } = await loadProgramOffThread(entry);
      for (const w of warnings) this.log.warn({ program: name, warning: w }, 'program definitions do not match its object');
      return spec;
    } catch (e) {
      throw new ProtocolError('NO_ENTRY', `program '${name}' (rex.rc programs) cannot be loaded on ${this.config.hostName}: ${(e as Error).message}`, {
        fatal: false,
        hint: 'check the paths of its rex.rc programs entry (repdb -gx writes the XML)',
      });
    }
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

/**
 * The host controller's identity: the host key's certificate without its private key, which stays root's (the
 * monitor does TLS). Its name must be the host's.
 */
function hostIdentity(name: string, cert: CertInfo): OwnIdentity {
  if (cert.name !== name) throw new RexError(ErrorCodes.KEY_INVALID, `the host certificate the monitor passed names "${cert.name}", expected "${name}"`);
  return { name, id: cert.id, keyPem: '', certPem: cert.pem, keyFile: '(root\'s, held by the monitor)', certFile: '(passed by the monitor)' };
}
