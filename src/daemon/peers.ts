/**
 * The daemon's view of the other hosts: one outgoing TLS connection per peer,
 * kept open and re-established with backoff, over which the peer's load figure
 * is fetched every load-interval. Placement reads this table, so choosing a host
 * costs no round trip. The peer's key is pinned against the trust store before
 * any REX byte is sent: only a key this user enrolled with for that host name
 * is accepted.
 */
import type { ServerEntry } from '../config/index.js';
import type { Socket } from 'node:net';
import type { KeyStore, OwnIdentity } from '../keys/store.js';
import { connectPinned, pinKnownHost } from '../keys/tls.js';
import { Connection } from '../protocol/connection.js';
import type { MessageOf } from '../protocol/messages.js';
import { ErrorCodes, type RexError } from '../util/errors.js';
import type { Logger } from './log.js';
import type { PeerState } from './load.js';
import { profileFromWire } from '../cpu/wire.js';

export type { PeerState };

const MAX_BACKOFF_MS = 5_000;

/** One peer: connects, handshakes as role "peer", polls LOAD, reconnects on failure. */
export class PeerLink {
  readonly state: PeerState;
  private conn: Connection | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private failures = 0;
  private polling = false;

  constructor(
    readonly entry: ServerEntry,
    private readonly opts: {
      selfName: string;
      software: string;
      loadInterval: number;
      peerTimeout: number;
      log: Logger;
      own: OwnIdentity;
      store: KeyStore;
      /** Root installation: the monitor connects with the host key and hands back the plaintext (docs/ROOT.md). */
      dial?: (host: string) => Promise<Socket>;
    },
  ) {
    this.state = { name: entry.name, address: entry.address, port: entry.port, reachable: false };
  }

  get label(): string {
    return `${this.entry.name}@${this.entry.address}:${this.entry.port}`;
  }

  /** The open connection, if any (for forwarding requests). */
  get connection(): Connection | undefined {
    return this.conn?.isOpen ? this.conn : undefined;
  }

  start(): void {
    this.schedule(0);
  }

  /** Tries again now if the peer is down (called when the trust store changes). */
  kick(): void {
    if (!this.state.reachable && !this.polling) {
      this.failures = 0;
      this.schedule(0);
    }
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.conn?.close('rexd shutting down');
  }

  private schedule(ms: number): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.tick(), ms);
  }

  /**
   * The connection, opening it now if the link is down (for a request that
   * cannot wait for the next poll, e.g. right after a grant was added there).
   */
  async connectNow(): Promise<Connection | undefined> {
    if (this.connection || this.stopped) return this.connection;
    if (this.current) await this.current;
    else {
      if (this.timer) clearTimeout(this.timer);
      await this.tick();
    }
    return this.connection;
  }

  private current: Promise<void> | undefined;

  private tick(): Promise<void> {
    if (this.stopped || this.polling) return this.current ?? Promise.resolve();
    this.current = this.poll().finally(() => (this.current = undefined));
    return this.current;
  }

  private async poll(): Promise<void> {
    this.polling = true;
    let asked: number | undefined;
    try {
      if (!this.connection) await this.connect();
      asked = performance.now();
      const m = (await this.connection!.request({ type: 'LOAD_GET' }, this.opts.peerTimeout)) as MessageOf<'LOAD'>;
      if (m.type !== 'LOAD') throw new Error(`answered LOAD_GET with ${m.type}`);
      if (m.host !== this.entry.name) throw new Error(`answered as host "${m.host}", but rex.rc says ${this.entry.address}:${this.entry.port} is "${this.entry.name}"`);
      // A malformed profile is a protocol error naming the field: the link is refused like any malformed frame.
      let cpu;
      try {
        cpu = m.cpu ? profileFromWire(m.cpu, `LOAD from ${this.entry.name} cpu`) : undefined;
      } catch (e) {
        delete this.state.cpu; // what it said before is no longer to be believed
        throw e;
      }
      const la = m.loadavg ?? [];
      this.state.figure = {
        host: m.host,
        load: m.load,
        loadavg: [la[0] ?? 0, la[1] ?? 0, la[2] ?? 0],
        cores: m.cores ?? 1,
        jobs: m.jobs ?? 0,
        time: m.time ?? Date.now(),
        ...(m.memAvailable !== undefined ? { memAvailable: m.memAvailable } : {}),
      };
      this.state.receivedAt = Date.now();
      if (cpu) this.state.cpu = cpu;
      else delete this.state.cpu;
      if (!this.state.reachable) this.opts.log.info({ peer: this.label }, 'peer reachable');
      this.state.reachable = true;
      delete this.state.error;
      this.failures = 0;
      this.polling = false;
      this.schedule(this.opts.loadInterval);
    } catch (e) {
      this.polling = false;
      const msg = (e as Error).message;
      if ((e as RexError).code === ErrorCodes.CONN_TIMEOUT && this.conn?.isOpen && asked !== undefined && this.conn.lastReceivedAt > asked) {
        // The answer is late, but the peer sent other frames since it was asked (a large transfer queued ahead
        // of it on this link, say): busy, not gone. The link stays; the load figure ages until an answer comes.
        this.opts.log.debug({ peer: this.label, err: msg }, 'LOAD answer late on a busy link; the peer is alive');
        this.schedule(this.opts.loadInterval);
        return;
      }
      // Logged when the peer becomes unreachable, and again whenever the reason changes (a peer that was down and now
      // answers with a malformed frame, or with another key, is news); the same reason again and again is not.
      if (this.state.reachable || this.failures === 0 || this.state.error !== msg) this.opts.log.warn({ peer: this.label, err: msg }, 'peer unreachable');
      this.state.reachable = false;
      this.state.error = msg;
      this.failures++;
      this.conn?.destroy();
      this.conn = undefined;
      this.schedule(Math.min(MAX_BACKOFF_MS, this.opts.loadInterval * 2 ** Math.min(this.failures - 1, 6)));
    }
  }

  private async connect(): Promise<void> {
    const sock = this.opts.dial ? await this.opts.dial(this.entry.name) : (await connectPinned({
      host: this.entry.address,
      port: this.entry.port,
      own: this.opts.own,
      // Exactly HOST.USER of the servers entry, this rexd's user: a key enrolled as beta.someone-else is not beta's rexd.
      pin: pinKnownHost(this.opts.store, this.entry.name, this.opts.own.name.split('.')[1]),
      timeoutMs: this.opts.peerTimeout,
      label: this.label,
    })).sock;
    const conn = new Connection(sock, {
      initiator: true,
      local: { role: 'peer', host: this.opts.selfName, software: this.opts.software },
      label: this.label,
      timeoutMs: this.opts.peerTimeout,
      // Through the monitor, the other host may first have to start this user's session controller (docs/ROOT.md).
      ...(this.opts.dial ? { helloTimeoutMs: Math.max(this.opts.peerTimeout, 30_000) } : {}),
    });
    conn.on('close', (err?: Error) => {
      if (this.conn !== conn) return;
      this.conn = undefined;
      // A peer that revokes our grant closes the session with DENIED: say so at once, not at the next poll.
      if (err && /DENIED/.test(err.message)) {
        this.state.reachable = false;
        this.state.error = err.message;
      }
    });
    const hello = await conn.handshake();
    if (hello.host !== this.entry.name) {
      conn.close('wrong host');
      throw new Error(`answered as host "${hello.host ?? '(none)'}", but rex.rc says ${this.entry.address}:${this.entry.port} is "${this.entry.name}"`);
    }
    this.conn = conn;
  }
}
