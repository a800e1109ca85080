/**
 * Load and membership: this host's load figure (rload: the 1-minute load
 * average plus the REX work that the average cannot show yet, per core), the
 * cluster view made of it and the peers' last figures, and the requests that
 * read them (LOAD_GET, HOSTS_GET, PING) in rexd's request table. See
 * docs/PROTOCOL.md 4.4-4.6 and docs/PLACEMENT.md.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import type { RexConfig } from '../config/index.js';
import type { CpuProfile } from '../cpu/profile.js';
import { advertisedCpuProfile, profileToWire } from '../cpu/wire.js';
import type { Connection, Reply } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import { fitHosts, type HostEntry, type Message, type MessageOf } from '../protocol/messages.js';
import { ErrorCodes, type RexError } from '../util/errors.js';
import { quote } from '../util/quote.js';
import type { Request, RequestTable } from './dispatch.js';

/** A load figure as LOAD messages carry it. */
export interface LoadFigure {
  host: string;
  load: number;
  loadavg: [number, number, number];
  cores: number;
  jobs: number;
  /** ms since the epoch when measured. */
  time: number;
  memAvailable?: number;
}

/** What is known about one peer (its link, peers.ts, keeps it fresh). */
export interface PeerState {
  name: string;
  address: string;
  port: number;
  reachable: boolean;
  /** The last figure received and when (local clock) it arrived. */
  figure?: LoadFigure;
  receivedAt?: number;
  error?: string;
  /** The CPU profile of its last LOAD (absent from a rexd that sends none: such a host takes no rfork image). */
  cpu?: CpuProfile;
}

/** What load and membership read of a peer's link (PeerLink, peers.ts). */
export interface PeerView {
  readonly entry: { readonly name: string };
  readonly label: string;
  readonly state: PeerState;
  readonly connection: Connection | undefined;
  connectNow(): Promise<Connection | undefined>;
}

/** The kernel's load average is a 60 s exponential average (for the 1-minute figure). */
const LOADAVG1_TAU_MS = 60_000;

/** Counts REX work running here and turns it, with the load average, into rload. */
export class LoadMeter {
  private running = new Map<number, number>(); // job id -> start time (ms)
  private nextId = 1;

  constructor(
    private readonly host: string,
    private readonly now: () => number = Date.now,
    private readonly sample: () => { loadavg: number[]; cores: number } = () => ({ loadavg: loadavg(), cores: availableParallelism() }),
  ) {}

  /** Records that REX work started here; call the returned function when it ends. */
  jobStarted(): () => void {
    const id = this.nextId++;
    this.running.set(id, this.now());
    return () => void this.running.delete(id);
  }

  /** REX work running now. */
  get jobs(): number {
    return this.running.size;
  }

  /**
   * The figure now. A job that has run for t ms already shows in the 1-minute
   * average as (1 - e^(-t/60s)) of a process; the rest, e^(-t/60s), is added so
   * that work placed a moment ago counts at once and two placements in a row do
   * not both pick the same "idle" host.
   */
  measure(): LoadFigure {
    const { loadavg: la, cores } = this.sample();
    const t = this.now();
    let unseen = 0;
    for (const start of this.running.values()) unseen += Math.exp(-(t - start) / LOADAVG1_TAU_MS);
    const c = Math.max(1, cores);
    const fig: LoadFigure = {
      host: this.host,
      load: ((la[0] ?? 0) + unseen) / c,
      loadavg: [la[0] ?? 0, la[1] ?? 0, la[2] ?? 0],
      cores: c,
      jobs: this.running.size,
      time: t,
    };
    const mem = memAvailable();
    if (mem !== undefined) fig.memAvailable = mem;
    return fig;
  }
}

function memAvailable(): number | undefined {
  try {
    const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** What the load requests need of the daemon. */
export interface LoadContext {
  config: Pick<RexConfig, 'hostName' | 'listen' | 'peerTimeout'>;
  meter: LoadMeter;
  peers: ReadonlyMap<string, PeerView>;
}

/** The cluster as this host sees it: itself, then its peers in rex.rc order. */
export function clusterView({ config, meter, peers }: LoadContext): HostEntry[] {
  const now = Date.now();
  const self = meter.measure();
  const out: HostEntry[] = [
    {
      name: config.hostName,
      address: config.listen.address,
      port: config.listen.port,
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
  for (const p of peers.values()) {
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

/**
 * LOAD_GET, HOSTS_GET and PING in the request table. Load and membership queries are heartbeats, allowed by any
 * grant whatever programs it is limited to, so that the cluster view keeps working; PING is checked like new work.
 */
export function registerLoad(table: RequestTable, ctx: LoadContext): void {
  table.register('LOAD_GET', {
    roles: ['client', 'peer'],
    auth: 'grant-any',
    privilege: [],
    newWork: false,
    heartbeat: true,
    handler: () => ({ type: 'LOAD', ...ctx.meter.measure(), cpu: profileToWire(advertisedCpuProfile()) }),
  });
  table.register('HOSTS_GET', {
    roles: ['client', 'peer'],
    auth: 'grant-any',
    privilege: [],
    newWork: false,
    heartbeat: true,
    // Bounded to what the receiver takes (docs/PROTOCOL.md 4.6).
    handler: (_m, req) => ({ type: 'HOSTS', hosts: fitHosts(clusterView(ctx), req.from.conn.peer?.maxPayload).hosts }),
  });
  table.register('PING', {
    roles: ['client', 'peer'],
    auth: 'grant',
    privilege: ['host-key'],
    newWork: true,
    target: (m) => m.target,
    handler: (m, req) => ping(m, req, ctx),
  });
}

/** PONG here (at once: no promise), or (local clients only, and only once) the answer of the target host. */
function ping(m: MessageOf<'PING'>, req: Request, ctx: LoadContext): Reply | Promise<Reply> {
  const echo = { ...(m.nonce ? { nonce: m.nonce } : {}), ...(m.data ? { data: m.data } : {}) };
  if (!m.target || m.target === ctx.config.hostName) return { type: 'PONG', ...echo, host: ctx.config.hostName, hops: 0 };
  return forwardPing(m.target, req, ctx, echo);
}

async function forwardPing(target: string, req: Request, { config, peers }: LoadContext, echo: { nonce?: Uint8Array; data?: Uint8Array }): Promise<Reply> {
  // Only local clients' pings are forwarded, and only once: peers never ask us to relay further.
  const s = req.session;
  if (s.state !== 'client') throw new ProtocolError('BAD_REQUEST', 'peers may not ask for forwarding', { fatal: false });
  const peer = peers.get(target);
  if (!peer) {
    throw new ProtocolError('NO_HOST', `no host "${quote(target)}" in this cluster (known: ${[config.hostName, ...peers.keys()].join(', ')})`, { fatal: false });
  }
  const conn = peer.connection ?? (await peer.connectNow());
  if (!conn) {
    const why = peer.state.error ?? 'not connected yet';
    if (/DENIED/.test(why)) throw new ProtocolError('DENIED', `${peer.entry.name} refuses this host: ${why}`, { fatal: false });
    throw new ProtocolError('UNREACHABLE', `host ${peer.label} is unreachable: ${why}`, { fatal: false });
  }
  let r: Message;
  try {
    r = await conn.request({ type: 'PING', ...echo, ...(s.program ? { program: s.program } : {}) }, config.peerTimeout);
  } catch (e) {
    const err = e as RexError & { proto?: string };
    if (err.proto === 'DENIED') throw new ProtocolError('DENIED', err.message, { fatal: false });
    throw new ProtocolError(err.code === ErrorCodes.CONN_TIMEOUT ? 'TIMEOUT' : 'UNREACHABLE', `forwarding to ${peer.label}: ${err.message}`, { fatal: false });
  }
  if (r.type !== 'PONG') throw new ProtocolError('INTERNAL', `${peer.label} answered PING with ${r.type}`, { fatal: false });
  return { type: 'PONG', ...(r.nonce ? { nonce: r.nonce } : {}), ...(r.data ? { data: r.data } : {}), host: r.host ?? peer.entry.name, hops: 1 };
}
