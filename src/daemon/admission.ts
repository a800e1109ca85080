/**
 * Admission of connections that have not authenticated yet, the way OpenSSH
 * bounds them (LoginGraceTime, MaxStartups, PerSourceMaxStartups): a TCP
 * connection counts as a *startup* from accept until its peer's HELLO is
 * authenticated; rexd holds at most `max-startups` of them in total and
 * `per-source-max-startups` per source address, and closes any connection (TLS
 * port or Unix socket) that has not authenticated `login-grace-time` after it
 * was accepted (a `restricted` session, which may only ENROLL, never
 * authenticates, so it too ends at the deadline). Connections beyond a cap are
 * closed at accept, before any TLS work.
 *
 * {@link DenialLog} keeps denials from flooding the transaction log: the first
 * `log-denials-burst` denials per source in each `log-denials-interval` get a
 * row of their own, the rest one summary row per source and interval
 * (docs/LOG.md, "Denials").
 */
import type { Socket } from 'node:net';
import type { LogEvent } from '../log/txlog.js';
import { quote } from '../util/quote.js';

/** The rex.rc limits (docs/CONFIG.md). */
export interface AdmissionLimits {
  loginGraceTime: number;
  maxStartups: number;
  perSourceMaxStartups: number;
}

/** One connection that has not authenticated yet. */
export interface Startup {
  readonly address: string;
  /** Its peer authenticated: the connection no longer counts and has no deadline. */
  authenticated(): void;
  /** What to do at the deadline instead of destroying the socket (e.g. answer DENIED and close). */
  onExpire(fn: (reason: string) => void): void;
  /** What the connection is waiting for, said in the deadline's log row. */
  waiting(what: string): void;
}

interface Entry extends Startup {
  socket: Socket;
  timer: NodeJS.Timeout | undefined;
  counted: boolean;
  expire?: (reason: string) => void;
  what: string;
  /** Sets the deadline to login-grace-time after accept. */
  rearm?: () => void;
}

/** Seconds as people write them in a message. */
function secs(ms: number): string {
  return `${Math.round(ms / 100) / 10} s`;
}

export class Admission {
  private total = 0;
  private readonly bySource = new Map<string, number>();
  /** TCP connections by `address|port`, so that the TLS socket made of one finds its entry. */
  private readonly byPeer = new Map<string, Entry>();
  private readonly all = new Set<Entry>();

  constructor(
    private readonly limits: AdmissionLimits,
    /** Writes a denial row (rexd routes it through its DenialLog). */
    private readonly deny: (ev: LogEvent) => void,
  ) {}

  /**
   * At TCP accept, before TLS: counts the connection against the caps or, beyond
   * them, closes it and logs why. Returns false when it was refused.
   */
  admitTcp(socket: Socket, address: string): boolean {
    const n = this.bySource.get(address) ?? 0;
    let reason: string | undefined;
    if (this.total >= this.limits.maxStartups) {
      reason = `too many unauthenticated connections (max-startups ${this.limits.maxStartups} in total); refused at accept`;
    } else if (n >= this.limits.perSourceMaxStartups) {
      reason = `too many unauthenticated connections from ${address} (per-source-max-startups ${this.limits.perSourceMaxStartups}); refused at accept`;
    }
    if (reason) {
      socket.destroy();
      this.deny({ kind: 'auth', peerAddress: address, outcome: 'denied', reason });
      return false;
    }
    this.total++;
    this.bySource.set(address, n + 1);
    const key = `${address}|${socket.remotePort ?? ''}`;
    // Node's handshakeTimeout (set to login-grace-time) ends a stalled TLS handshake and onTlsError logs it;
    // this deadline is the fallback, and becomes the real one once the handshake is done (tls()).
    const e = this.entry(socket, address, true, 'the TLS handshake', this.limits.loginGraceTime + 1000);
    this.byPeer.set(key, e);
    socket.once('close', () => {
      if (this.byPeer.get(key) === e) this.byPeer.delete(key);
    });
    return true;
  }

  /** The startup of the TCP connection a TLS socket was made of (undefined once it authenticated). */
  tls(address: string, port: number | undefined): Startup | undefined {
    const e = this.byPeer.get(`${address}|${port ?? ''}`);
    if (e) {
      e.waiting('HELLO');
      e.rearm?.();
    }
    return e;
  }

  /** A Unix-socket client: not counted (the socket's directory and uid check guard it), but it has the same deadline. */
  local(socket: Socket): Startup {
    return this.entry(socket, 'local', false, 'HELLO');
  }

  /** A connection the monitor passed on (root installation): counted there, given the HELLO deadline here. */
  relayed(socket: Socket, address: string): Startup {
    return this.entry(socket, address, false, 'HELLO');
  }

  /** Counted connections now (for tests and status). */
  get pending(): number {
    return this.total;
  }

  /** Stops every deadline and drops every connection still waiting (at rexd stop). */
  close(): void {
    for (const e of this.all) {
      if (e.timer) clearTimeout(e.timer);
      e.socket.destroy();
    }
    this.all.clear();
  }

  private entry(socket: Socket, address: string, counted: boolean, what: string, delay = this.limits.loginGraceTime): Entry {
    const started = Date.now();
    const e: Entry = {
      address,
      socket,
      counted,
      what,
      timer: undefined,
      authenticated: () => this.release(e),
      onExpire: (fn) => {
        e.expire = fn;
      },
      waiting: (w) => {
        e.what = w;
      },
    };
    const expire = (): void => {
      e.timer = undefined;
      if (!this.all.has(e)) return;
      const reason = `not authenticated within login-grace-time ${secs(this.limits.loginGraceTime)} (waiting for ${e.what} ${secs(Date.now() - started)} after accept); connection closed`;
      this.deny({ kind: 'session', peerAddress: address, outcome: 'denied', reason });
      this.release(e);
      if (e.expire) e.expire(reason);
      else socket.destroy();
    };
    e.rearm = () => {
      if (e.timer) clearTimeout(e.timer);
      e.timer = setTimeout(expire, Math.max(0, started + this.limits.loginGraceTime - Date.now()));
      e.timer.unref();
    };
    e.timer = setTimeout(expire, delay);
    e.timer.unref();
    this.all.add(e);
    socket.once('close', () => this.release(e));
    return e;
  }

  private release(e: Entry): void {
    if (!this.all.delete(e)) return;
    if (e.timer) clearTimeout(e.timer);
    e.timer = undefined;
    if (!e.counted) return;
    this.total--;
    const n = (this.bySource.get(e.address) ?? 1) - 1;
    if (n <= 0) this.bySource.delete(e.address);
    else this.bySource.set(e.address, n);
  }
}

/** Settings of {@link DenialLog}. */
export interface DenialLimits {
  /** Rows of their own per source and interval. */
  burst: number;
  intervalMs: number;
}

interface SourceCount {
  rows: number;
  more: number;
  reasons: Map<string, number>;
}

/** At most this many sources are tracked per interval; denials from further ones are summed up together. */
const MAX_SOURCES = 10_000;
/** At most this many distinct reasons are counted per source; the summary names the most frequent. */
const MAX_REASONS = 16;

/**
 * Rate-limits and aggregates denial rows: per source (peer address, or the uid
 * of a local client) the first `burst` denials of each interval are written as
 * they are; the others are counted and written as one row per source at the
 * end of the interval: "N more denied connections from ADDR in the last T s:
 * REASON".
 */
export class DenialLog {
  private sources = new Map<string, SourceCount>();
  private overflow = { more: 0 };
  private windowStart = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(
    private readonly limits: DenialLimits,
    /** Writes a row; `summary` is set for the summary rows. */
    private readonly write: (ev: LogEvent, summary: boolean) => void,
  ) {
    this.timer = setInterval(() => this.flush(), limits.intervalMs);
    this.timer.unref();
  }

  /** Records one denial: a row now (true), or a count for the interval's summary (false). */
  record(ev: LogEvent): boolean {
    const source = ev.peerAddress === 'local' || ev.peerAddress === undefined ? `${ev.peerAddress ?? '?'} ${ev.identity ?? ''}`.trim() : ev.peerAddress;
    let c = this.sources.get(source);
    if (!c) {
      if (this.sources.size >= MAX_SOURCES) {
        this.overflow.more++;
        return false;
      }
      c = { rows: 0, more: 0, reasons: new Map() };
      this.sources.set(source, c);
    }
    if (c.rows < this.limits.burst) {
      c.rows++;
      this.write(ev, false);
      return true;
    }
    c.more++;
    const r = summaryReason(ev.reason ?? '');
    if (c.reasons.has(r) || c.reasons.size < MAX_REASONS) c.reasons.set(r, (c.reasons.get(r) ?? 0) + 1);
    return false;
  }

  /** Writes the summaries of the interval that ends now and starts a new one. */
  flush(): void {
    const now = Date.now();
    const t = Math.max(1, Math.round((now - this.windowStart) / 1000));
    for (const [source, c] of this.sources) {
      if (c.more === 0) continue;
      const sorted = [...c.reasons].sort((a, b) => b[1] - a[1]);
      const [top] = sorted;
      const others = c.more - (top?.[1] ?? 0);
      const reason = `${c.more} more denied connections from ${source} in the last ${t} s: ${top?.[0] ?? 'denied'}${others > 0 ? ` (and ${others} for other reasons)` : ''}`;
      const local = source.startsWith('local');
      this.write({ kind: 'auth', peerAddress: local ? 'local' : source, ...(local && source.length > 6 ? { identity: source.slice(6) } : {}), outcome: 'denied', reason, time: now }, true);
    }
    if (this.overflow.more > 0) {
      this.write({ kind: 'auth', outcome: 'denied', reason: `${this.overflow.more} more denied connections from further sources (over ${MAX_SOURCES} sources) in the last ${t} s`, time: now }, true);
    }
    this.sources = new Map();
    this.overflow = { more: 0 };
    this.windowStart = now;
  }

  /** Writes the pending summaries and stops the interval timer. */
  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

/** A reason as a summary shows it: bounded, with the per-connection detail (ports, key IDs) kept. */
function summaryReason(r: string): string {
  return quote(r, 200);
}
