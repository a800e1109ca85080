/**
 * The local client: talks to this user's rexd over its Unix socket. The CLI,
 * the TypeScript runtime and tests use it; librex's C client speaks the same
 * protocol (native/src/client.c).
 */
import { connect } from 'node:net';
import type { OwnIdentity } from '../keys/store.js';
// TLS (X.509 on WebCrypto) and the config loader (ajv) are loaded when first needed: together they
// are most of a client command's start-up (about 0.4 s of `rex run` on a busy 2-core host).
import type { PinCheck } from '../keys/tls.js';
import { callAmong } from '../calls/target.js';
import type { LoadOptions } from '../config/index.js';
import { Connection } from '../protocol/connection.js';
import type { EntryInfo, HostEntry, MessageOf } from '../protocol/messages.js';
import { cpuSummary, profileFromWire, type CpuSummary } from '../cpu/wire.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { CallChannel, toCallError } from './transport.js';

/** A host of the cluster view: its HOSTS entry with the CPU profile decoded (docs/PROTOCOL.md 4.6). */
export type HostView = Omit<HostEntry, 'cpu'> & { cpu?: CpuSummary; cpuError?: string };

/** Software string sent in HELLO by TypeScript clients. */
export const CLIENT_SOFTWARE = 'rex-ts/0.1.0';

/** Where to find the daemon. */
export interface ClientOptions {
  /** The daemon's socket; default $REX_SOCKET, else rex.rc `socket`. */
  socket?: string;
  /** How to load rex.rc when the socket is not given. */
  config?: LoadOptions;
  timeoutMs?: number;
  /** The PROGRAM this client speaks for (HOST.USER.PROGRAM in the log and in grants). */
  program?: string;
}

/** The socket path a client would use with these options. */
export async function resolveSocket(opts: ClientOptions = {}): Promise<string> {
  if (opts.socket) return opts.socket;
  if (process.env.REX_SOCKET) return process.env.REX_SOCKET;
  const { loadConfig } = await import('../config/index.js');
  return (await loadConfig(opts.config ?? {})).config.socket;
}

/** A connection to the local rexd with typed helpers for its requests. */
/** How long a local client waits for rexd's HELLO by default: a root installation may be starting the caller's session controller. */
export const LOCAL_HELLO_TIMEOUT_MS = 30_000;

export class RexClient {
  // Nonces need only be unique per connection: a random prefix once, then a counter
  // (a getRandomValues call per ping cost more than the rest of the client's work).
  private readonly nonce = Buffer.alloc(16);
  private pings = 0n;
  private sock: import('node:net').Socket | undefined;
  private calls: CallChannel | undefined;

  private constructor(
    readonly conn: Connection,
    readonly socket: string,
  ) {
    crypto.getRandomValues(this.nonce.subarray(0, 8));
  }

  /** Connects and handshakes (HELLO within LOCAL_HELLO_TIMEOUT_MS unless `timeoutMs`); DAEMON_NOT_RUNNING when nobody serves the socket. */
  static async connect(opts: ClientOptions = {}): Promise<RexClient> {
    const socket = await resolveSocket(opts);
    const timeoutMs = opts.timeoutMs ?? 5000;
    const sock = await new Promise<import('node:net').Socket>((resolve, reject) => {
      const s = connect({ path: socket });
      s.once('connect', () => resolve(s));
      s.once('error', (e: NodeJS.ErrnoException) => {
        if (e.code === 'ENOENT' || e.code === 'ECONNREFUSED') {
          reject(
            new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `no rexd is running for this user (${e.code === 'ENOENT' ? 'no socket at' : 'nobody answers on'} ${socket})`, {
              hint: 'start one with `rexd` (or `rex cluster up` for a local test cluster), or set REX_SOCKET',
            }),
          );
        } else reject(new RexError(ErrorCodes.CONN_CLOSED, `cannot connect to rexd at ${socket}: ${e.message}`, { cause: e }));
      });
    });
    // A root installation's rexd answers once the caller's session controller runs: the first connection may start it.
    const helloTimeoutMs = opts.timeoutMs ?? LOCAL_HELLO_TIMEOUT_MS;
    const conn = new Connection(sock, { initiator: true, local: { role: 'client', software: CLIENT_SOFTWARE, ...(opts.program ? { program: opts.program } : {}) }, label: `rexd at ${socket}`, timeoutMs, helloTimeoutMs });
    await conn.handshake();
    const client = new RexClient(conn, socket);
    client.sock = sock;
    return client;
  }

  /**
   * Connects straight to a remote rexd over TLS 1.3 with `own`'s key (a
   * HOST.USER or HOST.USER.PROGRAM identity); `pin` decides whether the server's
   * key is the expected one (e.g. pinKnownHost(store, 'beta')) before anything
   * is sent. The server checks our key against its trust store and grants.
   */
  static async connectRemote(opts: { host: string; port: number; own: OwnIdentity; pin: PinCheck; program?: string; timeoutMs?: number; label?: string }): Promise<RexClient> {
    const timeoutMs = opts.timeoutMs ?? 5000;
    const label = opts.label ?? `rexd at ${opts.host}:${opts.port}`;
    const { connectPinned } = await import('../keys/tls.js');
    const { sock } = await connectPinned({ host: opts.host, port: opts.port, own: opts.own, pin: opts.pin, timeoutMs, label });
    const host = opts.own.name.split('.')[0];
    const conn = new Connection(sock, {
      initiator: true,
      local: { role: 'client', software: CLIENT_SOFTWARE, ...(host ? { host } : {}), ...(opts.program ? { program: opts.program } : {}) },
      label,
      timeoutMs,
    });
    await conn.handshake();
    return new RexClient(conn, label);
  }

  /** The host name the daemon answered HELLO with. */
  get host(): string | undefined {
    return this.conn.peer?.host;
  }

  /** The cluster view of the daemon: itself first, then its peers, each with its CPU (model, class) when known. */
  async hosts(): Promise<HostView[]> {
    const m = await this.conn.request({ type: 'HOSTS_GET' });
    if (m.type !== 'HOSTS') throw unexpected('HOSTS_GET', m.type);
    return (m.hosts ?? []).map(({ cpu, ...h }) => {
      if (!cpu) return h;
      try {
        return { ...h, cpu: cpuSummary(profileFromWire(cpu, `HOSTS ${h.name} cpu`)) };
      } catch (e) {
        return { ...h, cpuError: (e as Error).message };
      }
    });
  }

  /** This host's load figure (rload and its parts). */
  async load(): Promise<MessageOf<'LOAD'>> {
    const m = await this.conn.request({ type: 'LOAD_GET' });
    if (m.type !== 'LOAD') throw unexpected('LOAD_GET', m.type);
    return m;
  }

  /** Round trip to the local daemon, or through it to `target`; resolves with the time taken. */
  async ping(target?: string, data?: Uint8Array): Promise<{ rttMs: number; host: string; hops: number }> {
    this.nonce.writeBigUInt64BE(++this.pings, 8);
    const nonce = Uint8Array.prototype.slice.call(this.nonce);
    const t0 = process.hrtime.bigint();
    const m = await this.conn.request({ type: 'PING', nonce, ...(target ? { target } : {}), ...(data ? { data } : {}) });
    const rttMs = Number(process.hrtime.bigint() - t0) / 1e6;
    if (m.type !== 'PONG') throw unexpected('PING', m.type);
    if (!m.nonce || Buffer.compare(Buffer.from(m.nonce), Buffer.from(nonce)) !== 0) {
      throw new RexError(ErrorCodes.PROTO_MALFORMED, `PONG from ${m.host ?? '?'} did not echo the nonce`);
    }
    return { rttMs, host: m.host ?? '?', hops: m.hops ?? 0 };
  }

  /**
   * Calls HOST.USER.PROGRAM.FUNCTION (HOST `*` or none: the host rexd's
   * placement picks among those offering the program) with an input frame; resolves with the output frame
   * and the host that ran it. Failures are CallErrors (CALL_* codes).
   */
  async call(target: string, input: Uint8Array, opts: { timeoutMs?: number; async?: boolean } = {}): Promise<{ output: Uint8Array; host?: string; accepted?: boolean }> {
    const deadlineMs = opts.timeoutMs ?? 30_000;
    let m;
    try {
      // rexd reports TIMEOUT itself at the deadline; wait a little longer for that answer.
      const among = callAmong(target);
      m = await this.conn.request({ type: 'CALL', target, input, deadlineMs, ...(opts.async ? { async: true } : {}), ...(among ? { among } : {}) }, deadlineMs + 5000);
    } catch (e) {
      throw toCallError(e);
    }
    if (m.type !== 'RESULT') throw unexpected('CALL', m.type);
    return { output: m.output ?? new Uint8Array(0), ...(m.host ? { host: m.host } : {}), ...(m.accepted ? { accepted: true } : {}) };
  }

  /**
   * The entry points `[HOST.][USER.]PROGRAM` offers (names, frame sizes,
   * signatures, refusals), all pages of them in byte order of names;
   * `match` (a glob such as 'str*') is evaluated by the serving rexd.
   */
  entries(target: string, opts: { match?: string } = {}): Promise<EntryInfo[]> {
    return this.channel().entries(target, opts);
  }

  /** One entry point of `[HOST.][USER.]PROGRAM` by name, without fetching the list. */
  entry(target: string, name: string): Promise<EntryInfo> {
    return this.channel().entry(target, name);
  }

  /** The call channel on this connection (entries and entry are its, one implementation for every caller). */
  private channel(): CallChannel {
    return (this.calls ??= new CallChannel(this.conn));
  }

  /** Lets the process exit while this connection is idle (a request in flight still holds it through its timer). */
  unref(): this {
    this.sock?.unref();
    return this;
  }

  close(): void {
    this.conn.close('client done');
  }
}

function unexpected(req: string, got: string): RexError {
  return new RexError(ErrorCodes.PROTO_UNEXPECTED, `rexd answered ${req} with ${got}`);
}
