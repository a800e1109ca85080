/**
 * The monitor: the privileged part of the root installation (docs/ROOT.md). It is the only
 * process that runs as root. It owns the listening sockets and the host key, and it starts a
 * session controller per local user (native/session/rex-session.c drops to the user). It
 * routes each connection to the controller of its user and parses no more than routing needs:
 *
 * - the local socket: SO_PEERCRED says who connected; the accepted descriptor itself is passed
 *   on (no byte of a local client's traffic is read as root);
 * - the TLS port: OpenSSL does the handshake; the peer's certificate names a host key (HOST,
 *   then a one-line route preface names the user it acts for) or a user key (HOST.USER[.P]);
 *   rex.rc user-map gives the local account; the TLS plaintext is relayed through a socket
 *   pair whose other end goes to the controller.
 *
 * A controller asks the monitor for one thing: a connection to another host of rex.rc servers
 * for its own user (the monitor writes the preface with the controller's user, never one the
 * controller names). Every header a controller sends is validated: it runs the user's code.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { watch, type FSWatcher } from 'node:fs';
import { chmodSync, chownSync, closeSync, constants as fsc, fchownSync, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readdirSync, unlinkSync, writeFileSync } from 'node:fs';
import { Socket, createServer, type Server } from 'node:net';
import { dirname, join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { normalizeAddress } from '../config/clients.js';
import { PROTO_ERRORS } from '../protocol/constants.js';
import { encodeFrame } from '../protocol/encode.js';
import { messageToFrame, type Message } from '../protocol/messages.js';
import { HOST_ROUTE, ROUTE_PREFACE, ROUTE_PREFACE_MAX, routePreface, type Route } from '../protocol/route.js';
import { hostTrustDir, userView, type RexConfig, type ServerEntry } from '../config/index.js';
import { certInfo, type CertInfo } from '../keys/certs.js';
import { HostsFile } from '../keys/hosts.js';
import { isHostKeyName, parseIdentityName } from '../keys/identity.js';
import { KeyStore, type OwnIdentity } from '../keys/store.js';
import { connectPinned, peerCert, tlsServerOptions, type PinCheck } from '../keys/tls.js';
import { ErrorCodes, RexError, isRexError } from '../util/errors.js';
import { loadAddon, type FdWatcher, type RexAddon } from '../util/native.js';
import { libexecDir } from '../util/paths.js';
import { lookupAccount, lookupAccountAsync, mapRemoteUser, type Account } from './accounts.js';
import { SessionChannel, safeClose, type ChannelMessage } from './channel.js';
import { Admission, type Startup } from './admission.js';
import { DaemonLog, type Logger } from './log.js';
import { readPid } from './paths.js';

export { HOST_ROUTE, ROUTE_PREFACE, ROUTE_PREFACE_MAX, routePreface, type Route } from '../protocol/route.js';

/** Where a user's state and runtime files live in the root installation. */
export function userDirs(config: RexConfig, user: string): { state: string; run: string } {
  return { state: userView(config, user).stateDirectory, run: join(dirname(config.socket), 'users', user) };
}

/** A running session controller. */
interface Controller {
  account: Account;
  child: ChildProcess;
  channel: SessionChannel;
  /** Dials in flight for it, by the id it gave. */
  dials: Set<number>;
  /** The host controller (rex.rc host-user), not a user's. */
  host: boolean;
}

export interface MonitorOptions {
  log: Logger;
  /** The rex.rc the monitor was started with: controllers read the same file. */
  configFile: string;
  /** The --set overrides the monitor was started with, passed on to controllers. */
  sets: Record<string, string>;
  /** How a controller is started: the node binary and the rexd program (default: this process's). */
  node?: string;
  rexd?: string;
}

/** The root rexd's privileged part. */
export class Monitor {
  private readonly addon: RexAddon;
  private readonly store: KeyStore;
  /** The host controller's store: the host keys this host knows (written by the host controller, read here). */
  private readonly trust: KeyStore;
  private own!: OwnIdentity;
  private readonly hostlog: DaemonLog;
  private readonly controllers = new Map<number, Controller>();
  private readonly starting = new Map<number, Promise<Controller>>();
  private localFd = -1;
  private localWatch: FdWatcher | undefined;
  private tcpServer: Server | undefined;
  private stopping = false;
  private admission: Admission | undefined;
  /** TLS connections and their relays, ended at stop (a server closes only once its connections are gone). */
  private readonly open = new Set<Socket | TLSSocket>();
  private readonly socketPath: string;
  private readonly pidFile: string;

  constructor(
    readonly config: RexConfig,
    private readonly opts: MonitorOptions,
  ) {
    this.addon = loadAddon();
    this.store = new KeyStore(config.stateDirectory);
    this.trust = new KeyStore(hostTrustDir(config));
    this.hostlog = new DaemonLog(config, opts.log);
    this.socketPath = config.socket;
    this.pidFile = join(dirname(config.socket), 'rexd.pid');
  }

  private get log(): Logger {
    return this.opts.log;
  }

  /** Loads the host key, makes the directories, binds the local socket and the TLS port. */
  async start(): Promise<void> {
    if (process.getuid?.() !== 0) {
      throw new RexError(ErrorCodes.USAGE, 'rex.rc installation is root, but rexd does not run as root', { where: 'rex.rc installation', hint: 'start it as root (systemctl start rexd), or set installation : user for a rexd of your own' });
    }
    // 0755: users reach their own directories under users/; the host's keys/ and known/ are 0700 (KeyStore).
    rootDir(this.config.stateDirectory, 0o755);
    rootDir(join(this.config.stateDirectory, 'users'), 0o755);
    const runDir = dirname(this.socketPath);
    rootDir(runDir, 0o755);
    rootDir(join(runDir, 'users'), 0o755);
    try {
      this.own = this.store.load(this.config.hostName);
    } catch (e) {
      if (isRexError(e) && e.code === ErrorCodes.KEY_MISSING) {
        throw new RexError(ErrorCodes.KEY_MISSING, `the root rexd needs the host key of ${this.config.hostName} and there is none in ${this.store.keysDir}`, {
          where: this.store.keyFile(this.config.hostName),
          hint: 'create it as root with `rex_key --create --host-key`, then join the cluster (`rex_key --join`, docs/KEYS.md)',
        });
      }
      throw e;
    }
    this.hostlog.open(this.config.logDatabase ?? join(this.config.stateDirectory, 'rex-log.sqlite'), certInfo(this.own.certPem, 'host certificate').name.split('.')[0] || this.config.hostName);
    // The host controller's directory (docs/ROOT.md section 7), made for rex.rc host-user; its hosts file is followed.
    const hostAccount = lookupAccount(this.config.hostUser);
    if (hostAccount && hostAccount.uid !== 0) {
      userDir(this.trust.stateDir, hostAccount);
      this.membersSent = JSON.stringify(this.hostMembers());
      this.membersWatch = watch(this.trust.stateDir, (_ev, file) => {
        if (file === 'hosts' || file === null) this.membersChanged();
      });
      this.membersWatch.on('error', () => {});
      userDir(this.trust.knownDir, hostAccount);
      this.knownWatch = watch(this.trust.knownDir, () => this.knownChanged());
      this.knownWatch.on('error', () => {});
    } else {
      this.log.warn({ hostUser: this.config.hostUser }, `rex.rc host-user ${this.config.hostUser} ${hostAccount ? 'is root' : 'has no account'}: this host cannot join a cluster or admit hosts (rex_key --join); known hosts still work`);
    }
    // The local socket: every local user may connect (0666); SO_PEERCRED says who did.
    try {
      unlinkSync(this.socketPath);
    } catch {
      /* none left */
    }
    this.localFd = this.addon.listenUnix(this.socketPath, 128);
    chmodSync(this.socketPath, 0o666);
    this.localWatch = this.addon.watchFd(this.localFd, { readable: true }, () => this.acceptLocal());
    const tls = createTlsServer({ ...tlsServerOptions(this.own), handshakeTimeout: this.config.loginGraceTime }, (s) => this.acceptTls(s));
    tls.on('tlsClientError', (err, s) => {
      this.hostlog.record({ kind: 'auth', peerAddress: normalizeAddress(s?.remoteAddress ?? '?'), outcome: 'denied', reason: `TLS handshake failed: ${err.message}` });
      s?.destroy();
    });
    // The caps on unauthenticated connections (max-startups, per-source-max-startups, login-grace-time) hold here,
    // where connections arrive: a connection counts until it is routed to a controller (admission.ts).
    this.admission = new Admission(this.config, (ev) => void this.hostlog.record(ev));
    const tcp = createServer((raw) => {
      if (this.stopping) raw.destroy();
      else if (this.admission!.admitTcp(raw, normalizeAddress(raw.remoteAddress ?? '?'))) tls.emit('connection', raw);
    });
    const { listen } = this.config;
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', (e) => reject(new RexError(ErrorCodes.DAEMON_BIND_REFUSED, `cannot listen on ${listen.address}:${listen.port}: ${e.message}`, { where: 'rex.rc listen', cause: e })));
      tcp.listen({ host: listen.address, port: listen.port }, () => resolve());
    });
    this.tcpServer = tcp;
    writeFileSync(this.pidFile, `${process.pid}\n`, { mode: 0o644 });
    this.log.info({ socket: this.socketPath, listen: `${listen.address}:${listen.port}`, hostKey: this.own.name, id: this.own.id, installation: 'root' }, 'rexd (root installation) started');
  }

  /**
   * SIGHUP: re-reads rex.rc (`load` reads it as at start). The monitor's own keys that a reload can change
   * (user-map, permit-root, servers for dials, log-level) take effect at once; a refused configuration keeps the
   * old one. Then every session controller gets SIGHUP and reloads its own view (programs, grants...) without
   * dropping its sessions, as a per-user rexd does.
   */
  async reload(load: () => Promise<RexConfig>): Promise<boolean> {
    let next: RexConfig;
    try {
      next = await load();
    } catch (e) {
      this.log.error({ event: 'reload-refused', err: (e as Error).message }, `reload refused, the configuration in force is unchanged: ${(e as Error).message}`);
      return false;
    }
    const mutable = this.config as { -readonly [K in keyof RexConfig]: RexConfig[K] };
    mutable.userMap = next.userMap;
    mutable.userLimits = next.userLimits; // for controllers started from now on
    mutable.permitRoot = next.permitRoot;
    mutable.servers = next.servers;
    mutable.logLevel = next.logLevel;
    this.log.level = next.logLevel;
    for (const c of this.controllers.values()) c.child.kill('SIGHUP');
    this.log.info({ event: 'reloaded', controllers: [...this.controllers.values()].map((c) => c.account.name) }, 'configuration reloaded; session controllers told to reload');
    return true;
  }

  /** Closes the listeners and stops every controller (each says GOODBYE to its sessions). */
  async stop(reason = 'rexd shutting down'): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    this.localWatch?.close();
    this.membersWatch?.close();
    this.knownWatch?.close();
    clearTimeout(this.membersTimer);
    clearTimeout(this.knownTimer);
    this.admission?.close();
    if (this.localFd >= 0) safeClose(this.localFd);
    try {
      unlinkSync(this.socketPath);
    } catch {
      /* gone */
    }
    const closed = new Promise<void>((r) => (this.tcpServer ? this.tcpServer.close(() => r()) : r()));
    const exits = [...this.controllers.values()].map(
      (c) =>
        new Promise<void>((r) => {
          if (c.child.exitCode !== null || c.child.signalCode !== null) return r();
          c.child.once('exit', () => r());
          c.child.kill('SIGTERM');
          setTimeout(() => c.child.kill('SIGKILL'), 10_000).unref();
        }),
    );
    await Promise.all(exits);
    for (const s of this.open) s.destroy();
    await closed;
    await this.hostlog.drainCentral(2000);
    this.hostlog.close();
    if (readPid(this.pidFile) === process.pid) {
      try {
        unlinkSync(this.pidFile);
      } catch {
        /* gone */
      }
    }
    this.log.info({ reason }, 'rexd stopped');
  }

  // ------------------------------------------------------------ local clients

  private acceptLocal(): void {
    for (;;) {
      let c;
      try {
        c = this.addon.acceptUnix(this.localFd);
      } catch (e) {
        this.log.warn({ err: (e as Error).message }, 'accept on the local socket failed');
        return;
      }
      if (!c) return;
      if (this.stopping) {
        safeClose(c.fd);
        continue;
      }
      void this.routeLocal(c);
    }
  }

  /** A local client, by the uid SO_PEERCRED gave: to that user's controller, or refused with the reason. */
  private async routeLocal(c: { fd: number; uid: number; gid: number; pid: number }): Promise<void> {
    const refuse = (reason: string) => {
      this.hostlog.record({ kind: 'auth', identity: `uid ${c.uid}`, peerAddress: 'local', outcome: 'denied', reason });
      refuseWithError(c.fd, `${this.config.hostName}: ${reason}`);
    };
    const account = await lookupAccountAsync(c.uid);
    if (this.stopping) return safeClose(c.fd);
    if (!account) return refuse(`uid ${c.uid} has no account in the name service`);
    if (account.uid === 0 && !this.config.permitRoot) return refuse('root is not served (rex.rc permit-root is no)');
    if (account.name === this.config.hostUser) return refuse(`${account.name} is the host controller's account (rex.rc host-user), not a user of REX`);
    this.controller(account).then(
      (ctl) => ctl.channel.send({ kind: 'local', uid: c.uid, gid: c.gid, pid: c.pid }, [c.fd], true),
      (e: Error) => refuse(`cannot start the session controller of ${account.name}: ${e.message}`),
    );
  }

  // ------------------------------------------------------------ TLS

  private acceptTls(sock: TLSSocket): void {
    if (this.stopping) return void sock.destroy();
    this.keep(sock);
    const address = normalizeAddress(sock.remoteAddress ?? '?');
    const cert = peerCert(sock);
    const startup = this.admission?.tls(address, sock.remotePort);
    startup?.waiting('its route (the preface of a host key)');
    const refuse = (reason: string, identity?: string) => {
      this.hostlog.record({ kind: 'auth', ...(identity ? { identity } : {}), ...(cert ? { identityId: cert.id } : {}), peerAddress: address, outcome: 'denied', reason });
      sock.destroy();
    };
    startup?.onExpire((reason) => refuse(reason, cert?.name));
    if (!cert) return refuse('no client certificate: REX peers authenticate with their key');
    if (isHostKeyName(cert.name)) {
      // Another host's rexd: to act for a user, its key must be the one known for that host name (the preface names
      // the user); to its host controller, any host key may come, and one not known may only JOIN there.
      const known = this.trust.knownById(cert.id);
      if (known && known.name !== cert.name) return refuse(`host key ${cert.id} claims to be host ${cert.name}, but it is known as ${known.name}`, cert.name);
      if (known) this.trackHostKey(sock, cert.id);
      readPreface(sock, this.config.loginGraceTime).then(
        ({ route, rest }) => {
          if ('host' in route) return void this.routeHost(sock, address, cert, rest, refuse, startup);
          if (!known) return refuse(`host key ${cert.id} claims to be host ${cert.name}, but it is not a known host key here (rex_key --join)`, cert.name);
          void this.routeTls(sock, address, cert, { host: cert.name, user: route.user, hostbased: true }, rest, refuse, startup);
        },
        (e: Error) => refuse(`route preface: ${e.message}`, cert.name),
      );
      return;
    }
    const claimed = parseIdentityName(cert.name);
    if (typeof claimed === 'string') return refuse(`the certificate's name is not an identity: ${claimed}`);
    void this.routeTls(sock, address, cert, { host: claimed.host, user: claimed.user, hostbased: false }, Buffer.alloc(0), refuse, startup);
  }

  private async routeTls(sock: TLSSocket, address: string, cert: CertInfo, who: { host: string; user: string; hostbased: boolean }, rest: Buffer, refuse: (reason: string, identity?: string) => void, startup: Startup | undefined): Promise<void> {
    const identity = `${who.host}.${who.user}`;
    const mapped = mapRemoteUser(this.config.userMap, who.host, who.user);
    if ('refused' in mapped) return refuse(mapped.refused, identity);
    const account = await lookupAccountAsync(mapped.local);
    if (sock.destroyed || this.stopping) return;
    if (!account) return refuse(`${identity} maps to the local account ${mapped.local} (${mapped.via}), which does not exist on ${this.config.hostName}`, identity);
    if (account.uid === 0 && !this.config.permitRoot) return refuse(`${identity} maps to root, which is not served (rex.rc permit-root is no)`, identity);
    if (account.name === this.config.hostUser) return refuse(`${identity} maps to ${account.name}, the host controller's account (rex.rc host-user), which is not a user of REX`, identity);
    this.controller(account).then(
      (ctl) => this.handOver(ctl, sock, rest, startup, { address, port: sock.remotePort ?? 0, cert: Buffer.from(cert.der).toString('base64'), hostbased: who.hostbased, remoteHost: who.host, remoteUser: who.user, mappedVia: mapped.via }),
      (e: Error) => refuse(`cannot start the session controller of ${account.name}: ${e.message}`, identity),
    );
  }

  /**
   * A host key's connection to the host controller (`REX-ROUTE host`): a member's (INTRODUCE), or a host's that is
   * not known here and may only JOIN with a token bound to its name; the host controller decides which.
   */
  private async routeHost(sock: TLSSocket, address: string, cert: CertInfo, rest: Buffer, refuse: (reason: string, identity?: string) => void, startup: Startup | undefined): Promise<void> {
    const account = await lookupAccountAsync(this.config.hostUser);
    if (sock.destroyed || this.stopping) return;
    if (!account || account.uid === 0) {
      return refuse(`host ${cert.name} asked for the host controller, but its account ${this.config.hostUser} (rex.rc host-user) ${account ? 'is root' : 'does not exist'} on ${this.config.hostName}; create it (systemd-sysusers rex.conf, docs/ROOT.md)`, cert.name);
    }
    this.controller(account, true).then(
      (ctl) => this.handOver(ctl, sock, rest, startup, { address, port: sock.remotePort ?? 0, cert: Buffer.from(cert.der).toString('base64'), hostbased: false }),
      (e: Error) => refuse(`cannot start the host controller: ${e.message}`, cert.name),
    );
  }

  /** Passes a routed TLS connection's plaintext to a controller, through a socket pair whose other end the monitor relays. */
  private handOver(ctl: Controller, sock: TLSSocket, rest: Buffer, startup: Startup | undefined, header: Record<string, unknown>): void {
    if (sock.destroyed) return;
    // Routed: the controller gives it its own HELLO deadline (Admission.relayed), and grants decide from there.
    startup?.authenticated();
    const [mine, theirs] = this.addon.socketPair(false);
    const plain = this.keep(new Socket({ fd: mine, readable: true, writable: true }));
    relay(sock, plain, rest);
    ctl.channel.send({ kind: 'tls', ...header }, [theirs], true);
  }

  // ------------------------------------------------------------ controllers

  /** The running controller of `account` (the host controller with `host`), started if there is none. */
  private controller(account: Account, host = false): Promise<Controller> {
    const running = this.controllers.get(account.uid);
    if (running) return Promise.resolve(running);
    let p = this.starting.get(account.uid);
    if (!p) {
      p = this.startController(account, host).finally(() => this.starting.delete(account.uid));
      this.starting.set(account.uid, p);
    }
    return p;
  }

  private async startController(account: Account, host = false): Promise<Controller> {
    const dirs = host ? { state: hostTrustDir(this.config), run: join(dirname(this.socketPath), 'host') } : userDirs(this.config, account.name);
    userDir(dirs.state, account);
    userDir(dirs.run, account);
    const [mine, theirs] = this.addon.socketPair(true);
    const launcher = join(libexecDir(), 'rex-session');
    const node = this.opts.node ?? process.execPath;
    const rexd = this.opts.rexd ?? process.argv[1]!;
    // rex-log-server none: a session controller runs as its user, who could read the host's credentials for the log
    // server out of it and write rows as the host; only the monitor (root) sends to the server (docs/LOG.md).
    const sets = { ...this.opts.sets, 'state-directory': dirs.state, 'rex-log-database': host ? join(dirs.state, 'rex-log.sqlite') : userView(this.config, account.name).logDatabase, installation: 'user', 'rex-log-server': 'none' };
    const logFd = openUserLog(join(dirs.state, 'session.log'), account);
    const limits = this.config.userLimits.flatMap((l) => ['--rlimit', `${l.name}=${l.soft}:${l.hard}`]);
    // The host controller gets the host key's certificate, never the key (docs/ROOT.md section 7).
    const hostArgs = host ? { env: ['--env', `REX_HOST_CERT=${certInfo(this.own.certPem, this.own.certFile).der.toString('base64')}`], rexd: ['--host-controller'] } : { env: [], rexd: [] };
    const argv = ['--user', account.name, ...(account.uid === 0 ? ['--allow-root'] : []), ...limits, '--keep-fd', '3', '--env', 'REX_SESSION_FD=3', ...hostArgs.env, '--', node, rexd, '--session', ...hostArgs.rexd, '--config', this.opts.configFile, ...Object.entries(sets).flatMap(([k, v]) => ['--set', `${k}=${v}`])];
    const child = spawn(launcher, argv, { stdio: ['ignore', logFd, logFd, theirs], detached: false });
    closeSync(logFd);
    safeClose(theirs);
    const channel = new SessionChannel(mine);
    const ctl: Controller = { account, child, channel, dials: new Set(), host };
    this.controllers.set(account.uid, ctl);
    child.once('exit', (code, signal) => {
      if (this.controllers.get(account.uid) === ctl) this.controllers.delete(account.uid);
      channel.close();
      this.log.info({ user: account.name, code, signal }, 'session controller ended');
    });
    channel.on('message', (m: ChannelMessage) => this.fromController(ctl, m));
    channel.on('close', (err?: Error) => {
      if (err) this.log.warn({ user: account.name, err: err.message }, 'session controller broke the channel; stopping it');
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
    });
    this.log.info({ user: account.name, uid: account.uid, pid: child.pid }, host ? 'host controller started' : 'session controller started');
    // A user's controller learns the hosts this host joined (they are its peers too), and again when they change.
    if (!host) channel.send({ op: 'members', members: this.hostMembers() });
    return ctl;
  }

  /** A controller's request: only `dial` exists. Anything else ends the controller (it is not talking REX's channel). */
  private fromController(ctl: Controller, m: ChannelMessage): void {
    for (const fd of m.fds) safeClose(fd); // a controller never sends descriptors
    const h = m.header;
    const id = h.id;
    if (h.op !== 'dial' || typeof id !== 'number' || !Number.isSafeInteger(id) || typeof h.host !== 'string' || ctl.dials.size >= 64 || ctl.dials.has(id)) {
      this.log.warn({ user: ctl.account.name, header: JSON.stringify(h).slice(0, 200) }, 'session controller sent an invalid request; stopping it');
      ctl.child.kill('SIGTERM');
      return;
    }
    const host = h.host;
    const server = [...this.config.servers, ...this.hostMembers()].find((s) => s.name === host && s.name !== this.config.hostName);
    const answer = (fields: Record<string, unknown>, fds: number[] = []) => {
      ctl.dials.delete(id);
      ctl.channel.send({ op: 'dialed', id, ...fields }, fds, true);
    };
    if (!server) return answer({ error: `${host} is not a host of rex.rc servers on ${this.config.hostName}` });
    ctl.dials.add(id);
    connectPinned({ host: server.address, port: server.port, own: this.own, pin: this.pinHost(host), timeoutMs: this.config.peerTimeout, label: `host ${host} (${server.address}:${server.port})` }).then(
      ({ sock, cert }) => {
        if (ctl.channel.listenerCount('message') === 0 || this.stopping) return void sock.destroy();
        this.keep(sock);
        this.trackHostKey(sock, cert.id);
        sock.write(ctl.host ? HOST_ROUTE : routePreface(ctl.account.name));
        const [mine, theirs] = this.addon.socketPair(false);
        relay(sock, this.keep(new Socket({ fd: mine, readable: true, writable: true })), Buffer.alloc(0));
        answer({ cert: Buffer.from(cert.der).toString('base64') }, [theirs]);
      },
      (e: Error) => answer({ error: e.message }),
    );
  }

  /** Tracks a socket until it closes. */
  private keep<S extends Socket | TLSSocket>(s: S): S {
    this.open.add(s);
    s.once('close', () => this.open.delete(s));
    return s;
  }

  /**
   * The hosts file of the host controller changed (a host joined, or was introduced, or rex_key --join ran here):
   * every user's session controller is told the members, which are its peers too.
   */
  private membersChanged(): void {
    clearTimeout(this.membersTimer);
    this.membersTimer = setTimeout(() => {
      const members = this.hostMembers();
      const text = JSON.stringify(members);
      if (text === this.membersSent || this.stopping) return;
      this.membersSent = text;
      for (const c of this.controllers.values()) if (!c.host) c.channel.send({ op: 'members', members });
      this.log.info({ members: members.map((x) => x.name) }, "the cluster's members changed; users' session controllers told");
    }, 100);
  }

  /** Connections made with a host key (accepted or dialled), by socket: ended when that key is no longer known. */
  private readonly hostKeyConns = new Map<TLSSocket, string>();
  private knownWatch: FSWatcher | undefined;
  private knownTimer: NodeJS.Timeout | undefined;

  /** A host key left known/ (rex_key --revoke HOST): its open connections end now, not at their next reconnect. */
  private knownChanged(): void {
    clearTimeout(this.knownTimer);
    this.knownTimer = setTimeout(() => {
      for (const [sock, id] of this.hostKeyConns) {
        if (this.trust.knownById(id)) continue;
        this.hostlog.record({ kind: 'session', identityId: id, peerAddress: normalizeAddress(sock.remoteAddress ?? '?'), outcome: 'denied', reason: `host key ${id} is no longer known here (revoked); connection ended` });
        this.log.warn({ id }, 'a host key is no longer known; its connection ends');
        this.hostKeyConns.delete(sock);
        sock.destroy();
      }
    }, 100);
  }

  /** Follows a connection made with a host key until it closes. */
  private trackHostKey(sock: TLSSocket, id: string): void {
    this.hostKeyConns.set(sock, id);
    sock.once('close', () => this.hostKeyConns.delete(sock));
  }

  private membersTimer: NodeJS.Timeout | undefined;
  private membersSent = '';
  private membersWatch: FSWatcher | undefined;

  /** The hosts this host learnt by joining (the host controller's hosts file), as rex.rc servers entries. */
  private hostMembers(): ServerEntry[] {
    const problems: string[] = [];
    const members = new HostsFile(this.trust.stateDir).read(problems);
    for (const p of problems) this.log.warn({ problem: p }, 'host controller\'s hosts file: line ignored');
    // Only the members: a name rex.rc servers has keeps its rex.rc entry (mergeServers), and dials read that one first.
    return members.filter((m) => !this.config.servers.some((s) => s.name === m.name)).map(({ name, address, port }) => ({ name, address, port }));
  }

  /** A host's key: exactly the one known under its name. */
  private pinHost(host: string): PinCheck {
    return (cert) => {
      if (!cert) return 'presented no certificate';
      const known = this.trust.known().filter((k) => k.name === host);
      if (known.length !== 1) return known.length === 0 ? `no host key is known for ${host} (rex_key --join)` : `${known.length} host keys are known for ${host}; remove the stale one from ${this.trust.knownDir}`;
      if (cert.id !== known[0]!.id || cert.name !== host) return `host ${host} presented key ${cert.id} (${cert.name}), but its known host key is ${known[0]!.id}; NOT trusting it`;
      return undefined;
    };
  }
}

/** Reads the route preface: one line of at most ROUTE_PREFACE_MAX bytes; resolves with the user and the bytes after it. */
export function readPreface(sock: TLSSocket | Socket, timeoutMs: number): Promise<{ route: Route; rest: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const timer = setTimeout(() => done(new Error(`no route preface within ${timeoutMs} ms`)), timeoutMs);
    const done = (err?: Error, v?: { route: Route; rest: Buffer }) => {
      clearTimeout(timer);
      sock.off('data', onData);
      sock.off('close', onClose);
      sock.pause();
      if (err) reject(err);
      else resolve(v!);
    };
    const onClose = () => done(new Error('connection closed before the route preface'));
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const nl = buf.indexOf(0x0a);
      if (nl < 0) {
        if (buf.length >= ROUTE_PREFACE_MAX) done(new Error(`no newline in the first ${ROUTE_PREFACE_MAX} bytes`));
        return;
      }
      if (nl + 1 > ROUTE_PREFACE_MAX) return done(new Error(`the preface line is longer than ${ROUTE_PREFACE_MAX} bytes`));
      const m = ROUTE_PREFACE.exec(buf.subarray(0, nl + 1).toString('latin1'));
      if (!m) return done(new Error('the first line is not "REX-ROUTE user=NAME" nor "REX-ROUTE host"'));
      done(undefined, { route: m[2] ? { host: true } : { user: m[1]! }, rest: buf.subarray(nl + 1) });
    };
    sock.on('data', onData);
    sock.on('close', onClose);
  });
}

/**
 * Tells a local client why it is refused and closes: one fatal ERROR DENIED frame, written without reading a byte
 * of what the client sent (a client reads an ERROR in place of the HELLO answer, as for VERSION).
 */
function refuseWithError(fd: number, reason: string): void {
  const s = new Socket({ fd, readable: true, writable: true });
  s.on('error', () => s.destroy());
  // What the client sends meanwhile is discarded unread; closing at once would make its write fail before it reads the ERROR.
  s.resume();
  s.end(encodeFrame(messageToFrame({ type: 'ERROR', stream: 0, code: PROTO_ERRORS.DENIED.code, message: reason, fatal: true } as Message)));
  setTimeout(() => s.destroy(), 2000).unref();
}

/** Relays two streams both ways (with `first` written to `b` before the rest of `a`); each side's end or error ends the other. */
function relay(a: Socket | TLSSocket, b: Socket, first: Buffer): void {
  if (first.length) b.write(first);
  a.pipe(b);
  b.pipe(a);
  a.resume();
  const kill = () => {
    a.destroy();
    b.destroy();
  };
  a.on('error', kill);
  b.on('error', kill);
  a.on('close', () => b.end());
  b.on('close', () => a.end());
}

/** A root-owned directory with `mode` (created if missing); refuses one that is a symlink or another's. */
function rootDir(dir: string, mode: number): void {
  mkdirSync(dir, { recursive: true, mode });
  const st = lstatSync(dir);
  if (!st.isDirectory() || st.uid !== 0) throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${dir} must be a directory owned by root`, { where: dir, hint: 'remove it; rexd recreates it' });
  if ((st.mode & 0o7777) !== mode) chmodSync(dir, mode);
}

/**
 * The controller's log file, opened by root in a directory the user owns: so never through a symbolic link
 * (O_NOFOLLOW; libuv adds O_CLOEXEC), never a FIFO or device (O_NONBLOCK, then a regular file only), never a hard link to someone
 * else's file (one link, owned by the user or just created), and handed to the user by descriptor (fchown), not
 * by path, so that nothing the user swaps in meanwhile is touched.
 */
function openUserLog(file: string, account: Account): number {
  let fd: number;
  try {
    fd = openSync(file, fsc.O_WRONLY | fsc.O_APPEND | fsc.O_CREAT | fsc.O_NOFOLLOW | fsc.O_NONBLOCK, 0o600);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new RexError(ErrorCodes.DAEMON_STATE_DIR, code === 'ELOOP' ? `${file} is a symbolic link; refusing to open it as root` : `cannot open ${file}: ${(e as Error).message}`, { where: file, hint: `remove it; rexd makes it again for ${account.name}` });
  }
  const st = fstatSync(fd);
  if (!st.isFile() || st.nlink !== 1 || (st.uid !== account.uid && st.uid !== 0) || (st.uid === 0 && st.size !== 0)) {
    closeSync(fd);
    throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${file} is not a log file of ${account.name}'s (${st.isFile() ? `owner uid ${st.uid}, ${st.nlink} links` : 'not a regular file'}); refusing to write to it as root`, { where: file, hint: `remove it; rexd makes it again for ${account.name}` });
  }
  if (st.uid !== account.uid || st.gid !== account.gid) fchownSync(fd, account.uid, account.gid);
  return fd;
}

/** A user's own directory (0700), created as root and handed to the user; refuses a symlink. */
function userDir(dir: string, account: Account): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new RexError(ErrorCodes.DAEMON_STATE_DIR, `${dir} is not a directory`, { where: dir, hint: 'remove it; rexd recreates it' });
  if (st.uid !== account.uid || st.gid !== account.gid) chownSync(dir, account.uid, account.gid);
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);
}


/** The session controllers a monitor (pid) runs, from /proc: its children started with --session, and their users. */
export function sessionControllers(monitorPid: number): { user: string; pid: number }[] {
  const out: { user: string; pid: number }[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const stat = readFileSync(`/proc/${e}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid !== monitorPid || !readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0').includes('--session')) continue;
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${e}/status`, 'utf8'))?.[1]);
      out.push({ user: lookupAccount(uid)?.name ?? `uid ${uid}`, pid: Number(e) });
    } catch {
      /* gone meanwhile */
    }
  }
  return out.sort((a, b) => a.user.localeCompare(b.user));
}
