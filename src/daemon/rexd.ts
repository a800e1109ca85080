/**
 * rexd: the REX daemon of one host. It serves local clients on a Unix socket in
 * a private directory and peers on TCP, measures this host's load, and keeps a
 * fresh view of its peers' loads (PeerLink). Later issues add authentication,
 * remote execution, rfork and rcall on top of the same connections.
 */
import { existsSync, unlinkSync, writeFileSync } from 'node:fs';
import { createServer, connect as netConnect, isIP, type Server, type Socket } from 'node:net';
import type { RexConfig } from '../config/index.js';
import { Connection, type Reply } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { Message, MessageOf, HostEntry } from '../protocol/messages.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { LoadMeter } from './load.js';
import type { Logger } from './log.js';
import { daemonPaths, ensurePrivateDir, readPid, type DaemonPaths } from './paths.js';
import { PeerLink } from './peers.js';

/** Version string sent in HELLO. */
export const SOFTWARE = 'rexd/0.1.0';

/** True for addresses that stay on this machine: 127.0.0.0/8, ::1, localhost. */
export function isLoopback(address: string): boolean {
  if (address === 'localhost') return true;
  const v = isIP(address);
  if (v === 4) return address.startsWith('127.');
  if (v === 6) return address === '::1' || /^::ffff:127\./i.test(address);
  return false;
}

/** Options beyond rex.rc. */
export interface RexdOptions {
  log: Logger;
  /** Write a pidfile (default true). */
  pidFile?: boolean;
}

/** One running daemon. */
export class Rexd {
  readonly paths: DaemonPaths;
  readonly meter: LoadMeter;
  private readonly peers = new Map<string, PeerLink>();
  private unixServer: Server | undefined;
  private tcpServer: Server | undefined;
  private readonly conns = new Set<Connection>();
  private readonly sockets = new Set<Socket>();
  private stopping: Promise<void> | undefined;
  readonly startedAt = Date.now();

  constructor(
    readonly config: RexConfig,
    private readonly opts: RexdOptions,
  ) {
    this.paths = daemonPaths(config.stateDirectory, config.socket);
    this.meter = new LoadMeter(config.hostName);
    for (const s of config.servers) {
      if (s.name === config.hostName) continue;
      this.peers.set(
        s.name,
        new PeerLink(s, { selfName: config.hostName, software: SOFTWARE, loadInterval: config.loadInterval, peerTimeout: config.peerTimeout, log: opts.log }),
      );
    }
  }

  get log(): Logger {
    return this.opts.log;
  }

  /** Binds the socket and the peer port, writes the pidfile and starts polling peers. */
  async start(): Promise<void> {
    const { listen } = this.config;
    if (!isLoopback(listen.address)) {
      throw new RexError(ErrorCodes.DAEMON_BIND_REFUSED, `refusing to listen on ${listen.address}:${listen.port}: protocol v1 has no authentication yet, so rexd accepts peers only on loopback addresses (127.0.0.0/8, ::1)`, {
        where: 'rex.rc listen',
        hint: 'use a 127.x.y.z address until keys and TLS are set up (rex_key)',
      });
    }
    ensurePrivateDir(this.paths.stateDir, 'state directory');
    ensurePrivateDir(this.paths.runDir, 'socket directory');
    await this.claimSocket();
    this.unixServer = await listenOn(createServer((s) => this.accept(s, 'local')), { path: this.paths.socket }, `socket ${this.paths.socket}`);
    try {
      this.tcpServer = await listenOn(createServer((s) => this.accept(s, 'peer')), { host: listen.address, port: listen.port }, `${listen.address}:${listen.port}`);
    } catch (e) {
      this.unixServer.close();
      safeUnlink(this.paths.socket);
      throw e;
    }
    if (this.opts.pidFile !== false) writeFileSync(this.paths.pidFile, `${process.pid}\n`, { mode: 0o644 });
    for (const p of this.peers.values()) p.start();
    this.log.info({ socket: this.paths.socket, listen: `${listen.address}:${listen.port}`, peers: [...this.peers.keys()] }, 'rexd started');
  }

  /** Says GOODBYE to everyone, closes listeners and removes the socket and pidfile. */
  stop(reason = 'rexd shutting down'): Promise<void> {
    this.stopping ??= (async () => {
      for (const p of this.peers.values()) p.stop();
      for (const c of this.conns) c.close(reason);
      const closed = Promise.all([this.unixServer, this.tcpServer].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)));
      // Give GOODBYE frames a moment to flush, then drop whatever is left.
      setTimeout(() => {
        for (const s of this.sockets) s.destroy();
      }, 200).unref();
      await closed;
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

  private accept(sock: Socket, kind: 'local' | 'peer'): void {
    if (this.stopping) {
      sock.destroy();
      return;
    }
    this.sockets.add(sock);
    sock.on('close', () => this.sockets.delete(sock));
    const label = kind === 'local' ? 'local client' : `peer ${sock.remoteAddress}:${sock.remotePort}`;
    const conn = new Connection(sock, {
      initiator: false,
      local: { role: 'daemon', host: this.config.hostName, software: SOFTWARE },
      label,
      timeoutMs: this.config.peerTimeout,
      onHello: (hello) => {
        if (kind === 'local' && hello.role !== 'client') throw new ProtocolError('DENIED', `role ${hello.role} is not allowed on the local socket`);
        if (kind === 'peer' && hello.role !== 'peer') throw new ProtocolError('DENIED', 'only rexd peers may use the TCP port; local clients use the Unix socket');
      },
      onRequest: (m) => this.serve(m, kind),
    });
    this.conns.add(conn);
    conn.on('close', (err?: Error) => {
      this.conns.delete(conn);
      if (err && !/closed/.test(err.message)) this.log.debug({ peer: label, err: err.message }, 'connection ended');
    });
    conn.on('handler-error', (e: Error) => this.log.error({ peer: label, err: e.stack ?? e.message }, 'request handler failed'));
    conn.handshake().catch((e: Error) => this.log.info({ peer: label, err: e.message }, 'handshake failed'));
  }

  private async serve(m: Message, kind: 'local' | 'peer'): Promise<Reply> {
    switch (m.type) {
      case 'PING':
        return this.ping(m, kind);
      case 'LOAD_GET':
        return { type: 'LOAD', ...this.meter.measure() };
      case 'HOSTS_GET':
        return { type: 'HOSTS', hosts: this.hosts() };
      default:
        throw new ProtocolError('UNSUPPORTED', `${m.type} is not a request rexd serves`, { fatal: false });
    }
  }

  private async ping(m: MessageOf<'PING'>, kind: 'local' | 'peer'): Promise<Reply> {
    const echo = { ...(m.nonce ? { nonce: m.nonce } : {}), ...(m.data ? { data: m.data } : {}) };
    if (!m.target || m.target === this.config.hostName) return { type: 'PONG', ...echo, host: this.config.hostName, hops: 0 };
    // Only local clients' pings are forwarded, and only once: peers never ask us to relay further.
    if (kind !== 'local') throw new ProtocolError('BAD_REQUEST', 'peers may not ask for forwarding', { fatal: false });
    const peer = this.peers.get(m.target);
    if (!peer) {
      throw new ProtocolError('NO_HOST', `no host "${m.target}" in this cluster (known: ${[this.config.hostName, ...this.peers.keys()].join(', ')})`, { fatal: false });
    }
    const conn = peer.connection;
    if (!conn) throw new ProtocolError('UNREACHABLE', `host ${peer.label} is unreachable: ${peer.state.error ?? 'not connected yet'}`, { fatal: false });
    let r: Message;
    try {
      r = await conn.request({ type: 'PING', ...echo }, this.config.peerTimeout);
    } catch (e) {
      const err = e as RexError;
      throw new ProtocolError(err.code === ErrorCodes.CONN_TIMEOUT ? 'TIMEOUT' : 'UNREACHABLE', `forwarding to ${peer.label}: ${err.message}`, { fatal: false });
    }
    if (r.type !== 'PONG') throw new ProtocolError('INTERNAL', `${peer.label} answered PING with ${r.type}`, { fatal: false });
    return { type: 'PONG', ...(r.nonce ? { nonce: r.nonce } : {}), ...(r.data ? { data: r.data } : {}), host: r.host ?? peer.entry.name, hops: 1 };
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
      },
    ];
    for (const p of this.peers.values()) {
      const s = p.state;
      const e: HostEntry = { name: s.name, address: s.address, port: s.port, reachable: s.reachable, self: false };
      if (s.figure && s.receivedAt !== undefined) {
        Object.assign(e, { load: s.figure.load, loadavg1: s.figure.loadavg[0], cores: s.figure.cores, jobs: s.figure.jobs, ageMs: Math.max(0, now - s.receivedAt) });
      }
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
