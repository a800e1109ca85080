/**
 * Routing of remote calls between the hosts of a cluster (docs/CALLS.md,
 * "Routing"): a CALL or ENTRIES_GET whose target names another host is
 * forwarded to that host's rexd on the authenticated peer connection, and its
 * answer relayed; a target with host `*` (or none) goes to the host that
 * rexd's one placement (src/placement/, the rex.rc placement policy) puts first
 * among the reachable hosts that offer the program. Everything for this host
 * goes to its CallManager. rexd owns one router; the router owns no sockets.
 */
import { Connection } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { ProtoErrorName } from '../protocol/constants.js';
import { ProtoError } from '../protocol/constants.js';
import type { Message, Reply } from '../protocol/index.js';
import { CALL_SHARE, type Placement } from '../placement/index.js';
import type { CallIdentity, CallManager } from './manager.js';
import { checkPage, fitPage, pageBudget, queryOf } from './entries.js';
import { formatTarget, parseTarget, type CallTarget } from './target.js';

/** What the router needs to know about one peer host. */
export interface RoutePeer {
  name: string;
  reachable: boolean;
  /** The authenticated connection to it (connecting if need be); undefined with a reason when there is none. */
  connect(): Promise<Connection | { error: string }>;
}

/** Options of {@link CallRouter}. */
export interface CallRouterOptions {
  manager: CallManager;
  /** This host's REX name. */
  host: string;
  /** True when this host offers `program` (rex.rc programs). */
  offers(program: string): boolean;
  /** rexd's one placement (the policy, the figures, work placed a moment ago): `*` targets are placed by it. */
  placement: Placement;
  /** The peers in rex.rc order. */
  peers(): RoutePeer[];
  /** Longest wait for a peer's ENTRIES answer while placing a call (default 2 s). */
  probeTimeoutMs?: number;
  /** How long a peer's "offers program P" (or not) is believed (default 10 s). */
  cacheMs?: number;
}

/** Who asked: requests of local clients may be forwarded; peers' requests are served here only (one hop). */
export interface RouteCaller {
  identity: CallIdentity;
  mayForward: boolean;
}

const SLACK_MS = 5000;
/** How long a forwarded ENTRIES_GET may take (a backstop: a first read of libc's debug info takes seconds). */
const ENTRIES_DEADLINE_MS = 60_000;

/** Most (host, program) answers remembered for placement. */
const OFFERED_MAX = 4096;

/** Routes CALL, ENTRIES_GET and CANCEL to this host's CallManager or to a peer's rexd. */
export class CallRouter {
  private readonly offers = new Map<string, { has: boolean; at: number }>();
  private readonly inFlight = new Map<string, number>();
  /** Forwarded calls by the caller's connection and stream, for CANCEL. */
  private readonly forwarded = new WeakMap<object, Map<number, () => void>>();
  private readonly scope = {};
  /** The target each routed request was served as (HOST filled in), for the transaction log. */
  readonly routed = new WeakMap<Message, string>();

  constructor(private readonly opts: CallRouterOptions) {}

  /** Serves one CALL, ENTRIES_GET or CANCEL; throws ProtocolError for the ERROR answer. */
  async handle(m: Message, caller: RouteCaller): Promise<Reply> {
    if (m.type === 'CANCEL') {
      const found = this.opts.manager.cancel(m.call, caller.identity);
      if (found) return { type: 'CANCELLED', found };
      const cancel = this.forwarded.get(caller.identity.conn ?? this.scope)?.get(m.call);
      cancel?.();
      return { type: 'CANCELLED', found: cancel !== undefined };
    }
    if (m.type !== 'CALL' && m.type !== 'ENTRIES_GET') return this.opts.manager.handle(m, caller.identity);
    let t: CallTarget;
    try {
      t = parseTarget(m.target, m.type === 'CALL');
    } catch (e) {
      throw new ProtocolError('BAD_REQUEST', (e as Error).message, { fatal: false });
    }
    const self = this.opts.host;
    // Until it is answered, the request is work on its host that no load figure shows yet.
    const named = t.host === self || !caller.mayForward ? self : t.host;
    const among = m.type === 'CALL' && m.among && m.among.length > 0 ? m.among : undefined;
    const { host, release } = named !== undefined ? { host: named, release: this.opts.placement.reserve(named, CALL_SHARE) } : await this.place(t.program, caller, among);
    this.routed.set(m, formatTarget({ ...t, host }));
    try {
      if (host === self) return await this.local(m, caller, t);
      return await this.forward(m, caller, { ...t, host });
    } finally {
      release();
    }
  }

  /** Numbers for tests and rtop: calls forwarded and not yet answered, per host. */
  stats(): Record<string, number> {
    return Object.fromEntries(this.inFlight);
  }

  private async local(m: Message, caller: RouteCaller, t: CallTarget): Promise<Reply> {
    if (t.host !== undefined && t.host !== this.opts.host) {
      throw new ProtocolError('BAD_REQUEST', `${formatTarget(t)}: names host ${t.host}, but a peer's request is served where it arrives (${this.opts.host}); peers may not ask for forwarding`, { fatal: false });
    }
    this.count(this.opts.host, +1);
    try {
      return await this.opts.manager.handle(m, caller.identity);
    } finally {
      this.count(this.opts.host, -1);
    }
  }

  private count(host: string, d: number): void {
    const n = (this.inFlight.get(host) ?? 0) + d;
    if (n <= 0) this.inFlight.delete(host);
    else this.inFlight.set(host, n);
  }

  /**
   * The host the placement puts first among those offering `program` (this
   * one, or reachable peers whose ENTRIES list it), with its place reserved
   * at once, before a call decided in the same turn is placed.
   */
  private async place(program: string, caller: RouteCaller, among?: readonly string[]): Promise<{ host: string; release: () => void }> {
    const self = this.opts.host;
    const peers = new Map(this.opts.peers().map((p) => [p.name, p]));
    const offering = new Set<string>(this.opts.offers(program) ? [self] : []);
    await Promise.all(
      this.opts.placement
        .candidates()
        .filter((c) => !c.self && (!among || among.includes(c.name)))
        .map(async (c) => {
          const p = peers.get(c.name);
          if (p?.reachable && (await this.offered(p, program, caller))) offering.add(c.name);
        }),
    );
    const host = this.opts.placement.plan({ offers: (c) => offering.has(c.name), ...(among ? { among } : {}) }).order[0];
    if (host === undefined) {
      const asked = among ? `only ${among.join(', ')} (REX_PLACE_HOSTS), of ${[self, ...peers.keys()].join(', ')}` : [self, ...peers.keys()].join(', ');
      throw new ProtocolError('NO_ENTRY', `no reachable host offers program '${program}' (asked ${asked})`, {
        fatal: false,
        hint: `add it to rex.rc programs on a host (programs : ${program}=/path/lib${program}.so:/path/lib${program}.xml) and restart that rexd`,
      });
    }
    return { host, release: this.opts.placement.reserve(host, CALL_SHARE) };
  }

  /** Whether peer `p` offers `program`: its answer to a one-entry ENTRIES_GET, believed for cacheMs. */
  private async offered(p: RoutePeer, program: string, caller: RouteCaller): Promise<boolean> {
    const key = `${p.name}\0${program}`;
    const c = this.offers.get(key);
    if (c && Date.now() - c.at < (this.opts.cacheMs ?? 10_000)) return c.has;
    const has = await this.probe(p, program, caller);
    // Keyed by program names callers choose: a bounded map (oldest entries first out), so no caller can grow it without end.
    if (this.offers.size >= OFFERED_MAX) this.offers.delete(this.offers.keys().next().value!);
    this.offers.delete(key);
    this.offers.set(key, { has, at: Date.now() });
    return has;
  }

  private async probe(p: RoutePeer, program: string, caller: RouteCaller): Promise<boolean> {
    const conn = await p.connect();
    if (!(conn && 'request' in conn)) return false;
    try {
      // limit 0: "is it offered to me?", answered from the peer's rex.rc and grants without reading the definitions.
      const r = await conn.request({ type: 'ENTRIES_GET', target: `${p.name}.${program}`, limit: 0 }, this.opts.probeTimeoutMs ?? 2000);
      return r.type === 'ENTRIES';
    } catch {
      void caller;
      return false; // NO_ENTRY, DENIED or no answer: not a candidate
    }
  }

  private async forward(m: Message & { type: 'CALL' | 'ENTRIES_GET' }, caller: RouteCaller, t: CallTarget & { host: string }): Promise<Reply> {
    const peer = this.opts.peers().find((p) => p.name === t.host);
    if (!peer) {
      const known = [this.opts.host, ...this.opts.peers().map((p) => p.name)].join(', ');
      throw new ProtocolError('NO_HOST', `${formatTarget(t)}: no host "${t.host}" in this cluster (known: ${known})`, { fatal: false });
    }
    const conn = await peer.connect();
    if (!('request' in conn)) {
      if (/DENIED/.test(conn.error)) throw new ProtocolError('DENIED', `${peer.name} refuses this host: ${conn.error}`, { fatal: false });
      throw new ProtocolError('UNREACHABLE', `${formatTarget(t)}: host ${peer.name} is unreachable: ${conn.error}`, { fatal: false });
    }
    const target = formatTarget(t);
    // An ENTRIES_GET may wait while the peer reads the program's definitions (libc's DWARF: seconds, more on a
    // loaded host); the peer link's PINGs, not this deadline, notice a dead peer.
    const deadlineMs = m.type === 'CALL' ? (m.deadlineMs ?? 30_000) : ENTRIES_DEADLINE_MS;
    const request =
      m.type === 'CALL'
        ? conn.request(
            { type: 'CALL', target, input: m.input, deadlineMs, ...(m.async ? { async: true } : {}), ...(m.outMax !== undefined ? { outMax: m.outMax } : {}) },
            deadlineMs + SLACK_MS,
          )
        : conn.request({ type: 'ENTRIES_GET', target, ...queryOf(m) }, deadlineMs);
    const scope = caller.identity.conn ?? this.scope;
    let byStream = this.forwarded.get(scope);
    if (!byStream) this.forwarded.set(scope, (byStream = new Map()));
    const stream = m.stream;
    this.count(peer.name, +1);
    try {
      const r = await new Promise<Message>((resolve, reject) => {
        // The peer's controller keeps running until its deadline: the peer stream cannot be named in a CANCEL from here.
        byStream.set(stream, () => reject(new ProtocolError('CANCELLED', `${target}: cancelled by the caller`, { fatal: false })));
        request.then(resolve, reject);
      });
      if (m.type === 'CALL' && r.type === 'RESULT') {
        return { type: 'RESULT', host: r.host ?? peer.name, ...(r.output ? { output: r.output } : {}), ...(r.accepted ? { accepted: true } : {}) };
      }
      if (m.type === 'ENTRIES_GET' && r.type === 'ENTRIES') {
        // The peer's page is checked as any client checks it, then cut again to what the caller's connection accepts:
        // the cursor is the last name sent, so a shorter page only moves `next` back.
        const q = queryOf(m);
        checkPage(q, r, peer.name);
        const entries = r.entries ?? [];
        const budget = pageBudget(caller.identity.conn instanceof Connection ? caller.identity.conn.peer?.maxPayload : undefined);
        const paged = q.limit !== undefined && q.name === undefined;
        const fit = paged && entries.length === 0 ? { entries } : fitPage(entries, paged ? entries.length : undefined, budget, target);
        const next = fit.next ?? r.next;
        return { type: 'ENTRIES', host: r.host ?? peer.name, entries: fit.entries, ...(r.program ? { program: r.program } : {}), ...(next !== undefined ? { next } : {}) };
      }
      throw new ProtocolError('INTERNAL', `${peer.name} answered ${m.type} with ${r.type}`, { fatal: false });
    } catch (e) {
      throw relayed(e, peer.name, target);
    } finally {
      byStream.delete(stream);
      this.count(peer.name, -1);
    }
  }
}

/** The peer's ERROR as this host's answer: same name, the peer's own message, prefixed with the peer. */
function relayed(e: unknown, peer: string, target: string): ProtocolError {
  if (e instanceof ProtocolError) return e;
  const err = e as Error & { proto?: string; code?: string; hint?: string };
  const proto = err.proto;
  if (typeof proto === 'string' && proto in ProtoError) {
    const marker = `: ${proto}: `;
    const at = err.message.indexOf(marker);
    const msg = at >= 0 ? err.message.slice(at + marker.length) : err.message;
    return new ProtocolError(proto as ProtoErrorName, `${peer}: ${msg}`, { fatal: false, ...(err.hint ? { hint: err.hint } : {}) });
  }
  const timeout = err.code === 'REX_ERR_CONN_TIMEOUT';
  return new ProtocolError(timeout ? 'TIMEOUT' : 'UNREACHABLE', `${target}: forwarding to ${peer}: ${err.message}`, { fatal: false });
}
