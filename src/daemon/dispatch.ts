/**
 * rexd's request table: for every message type rexd serves, who may send it
 * (which session states, session.ts), how it is authorized before its handler
 * runs, what the handler needs of the process (its privilege), and the
 * handler. It is the one place a request is dispatched (the model is OpenSSH's
 * monitor table, monitor.c mon_dispatch_proto20, with its MON_AUTH/MON_ONCE
 * flags): a type with no entry, or sent from a state its entry does not
 * allow, gets the same protocol errors whatever the connection.
 *
 * Each feature registers its own entries from its own module (src/keys/service.ts:
 * ENROLL, JOIN, INTRODUCE; src/calls/service.ts: CALL, ENTRIES_GET, CANCEL; src/exec/executor/requests.ts:
 * EXEC; src/rfork/requests.ts: RFORK; load.ts: LOAD_GET, HOSTS_GET, PING); rexd.ts
 * only wires them. The
 * privilege column is where the root installation's privilege separation will
 * cut: today all of rexd is one process of its user.
 *
 * The rows are data known at start; the code behind the handlers of exec, rfork
 * and calls is a {@link Feature}: loaded on the first request that needs it, and
 * warmed (loaded in the background) once rexd serves, so that rexd's start-up
 * reads only what it needs to answer a first connection (docs/ARCHITECTURE.md,
 * How rexd loads).
 */
import type { Grant, Requester } from '../keys/grants.js';
import type { LogEvent } from '../log/txlog.js';
import type { Reply, ServedInfo } from '../protocol/connection.js';
import type { MsgTypeName } from '../protocol/messages.js';
import { ProtocolError } from '../protocol/frame.js';
import type { Message, MessageOf } from '../protocol/messages.js';
import type { Endpoint, Established, Role } from './session.js';

/** What a handler needs of the process that runs it (the lines privilege separation will split rexd along). */
export type Privilege =
  /** This host's key: connections to peers (forwarding, relaying, routing). */
  | 'host-key'
  /** Writes the trust store and spends enrollment tokens. */
  | 'key-store'
  /** Acts as the user: starts programs and call controllers, reads and writes the user's files. */
  | 'user';

/**
 * How a peer's request is authorized before its handler runs. The owner on the
 * local socket was authorized once, by uid at HELLO; a restricted session has no
 * grant, so only entries with `handler` admit it.
 */
export type Authorization =
  /** The requester's grant for its program; a peer rexd forwarding for one of its user's programs names it in `program`. */
  | 'grant'
  /** Any grant of the requester, whatever program it is limited to (load, membership; calls are then checked per program and function by the call manager). */
  | 'grant-any'
  /** None here: the handler proves the request itself (ENROLL: a one-time token, or the key the connection is authenticated by). */
  | 'handler';

/** What a handler is given besides its message. */
export interface Request {
  readonly from: Endpoint;
  /** The session as it was when the request arrived. */
  readonly session: Established;
  /** A peer's request: the requester its grant was checked for (a forwarded program applied) and that grant. */
  readonly access?: { who: Requester; grant: Grant };
  /** Adds to this request's transaction log row. */
  note(n: { identity?: string; reason?: string }): void;
}

export type Handler<T extends MsgTypeName> = (m: MessageOf<T>, req: Request) => Reply | Promise<Reply>;

/** One row of the table. */
export interface Entry<T extends MsgTypeName> {
  /** The session states that may send it. */
  roles: readonly Role[];
  /** For peers: the check before the handler. */
  auth: Authorization;
  /** What the handler needs beyond answering from memory (empty: nothing). */
  privilege: readonly Privilege[];
  /** New work: refused from the TLS port while the transaction log cannot be written (rex.rc log-fail-closed, docs/LOG.md). */
  newWork: boolean;
  /** Answered ok, it is a heartbeat, not a transaction row (unless rex.rc log-heartbeats). */
  heartbeat?: boolean;
  /** The kind of its log row (default `transaction`). */
  logKind?: 'enroll';
  /** What its log row names as the target (read after the handler ran). */
  target?: (m: MessageOf<T>) => string | undefined;
  /** The BAD_REQUEST message for a role not in `roles` (restricted sessions are always told their reason). */
  refuse?: Partial<Record<Role, string>>;
  handler: Handler<T>;
}

/**
 * The code of a feature's handlers, loaded once, on first use: by its first
 * request, or by {@link RequestTable.warm} once rexd serves, whichever comes
 * first. `load` imports the feature's modules (`import()`) and makes its
 * service; a request waits for it, so whatever `load` does (e.g. EXEC ending
 * the jobs a crashed predecessor left) precedes the feature's first request.
 */
export class Feature<S> {
  private loading: Promise<S> | undefined;
  private value: S | undefined;

  constructor(
    readonly name: string,
    private readonly load: () => Promise<S>,
  ) {}

  /** The feature, loaded if it is not yet. A failed load is tried again by the next caller. */
  get(): Promise<S> {
    this.loading ??= this.load().then(
      (v) => (this.value = v),
      (e: unknown) => {
        this.loading = undefined;
        throw e;
      },
    );
    return this.loading;
  }

  /** The feature if it is loaded, without loading it. */
  get loaded(): S | undefined {
    return this.value;
  }

  /** The feature if it is loaded (or being loaded: then once it is), else undefined without loading it. */
  async ifLoaded(): Promise<S | undefined> {
    return this.value ?? (this.loading ? this.loading.catch(() => undefined) : undefined);
  }
}

/** One row as {@link RequestTable.describe} shows it. */
export interface EntrySummary {
  type: MsgTypeName;
  roles: readonly Role[];
  auth: Authorization;
  privilege: readonly Privilege[];
  newWork: boolean;
}

/** What the table needs of the daemon. */
export interface TableOptions {
  /** The grants check (src/keys/service.ts). */
  check(who: Requester, anyProgram: boolean): { ok: true; grant: Grant } | { ok: false; reason: string };
  /** Logs a denial of `from` and returns the error to answer with. */
  deny(from: Endpoint, reason: string, fatal: boolean): ProtocolError;
  /** The refusal of new work while the transaction log cannot be written, if that is the case now. */
  logRefusal(): ProtocolError | undefined;
  /** Writes a transaction log row. */
  record(ev: LogEvent): void;
  /** rex.rc log-heartbeats. */
  logHeartbeats: boolean;
}

const ROLE_NAMES: Record<Role, string> = { client: 'local clients', peer: 'peers and remote clients', restricted: 'sessions that may only ENROLL' };

/** An entry of any type (its handler is called with the message of its own type only). */
type AnyEntry = Entry<never>;

export class RequestTable {
  private readonly entries = new Map<MsgTypeName, AnyEntry>();
  private readonly features: Feature<unknown>[] = [];
  /** What handlers and the authorization added to a request's log row. */
  private readonly notes = new WeakMap<Message, { identity?: string; reason?: string }>();

  constructor(private readonly opts: TableOptions) {}

  /** Adds the entry of `type`; each type has one. */
  register<T extends MsgTypeName>(type: T, entry: Entry<T>): void {
    if (this.entries.has(type)) throw new Error(`request table: ${type} is registered twice`);
    this.entries.set(type, entry as unknown as AnyEntry);
  }

  /** Adds a feature whose handlers are loaded on first use, to be warmed by {@link warm}. */
  feature<S>(f: Feature<S>): Feature<S> {
    this.features.push(f as Feature<unknown>);
    return f;
  }

  /**
   * Loads every feature now (rexd calls it once it serves: the first EXEC or call then finds its code read).
   * Resolves with each feature's name and load time, or its error (it is loaded again at its first request).
   */
  async warm(): Promise<{ feature: string; ms: number; error?: string }[]> {
    const out: { feature: string; ms: number; error?: string }[] = [];
    for (const f of this.features) {
      const t0 = performance.now();
      try {
        await f.get();
        out.push({ feature: f.name, ms: Math.round(performance.now() - t0) });
      } catch (e) {
        out.push({ feature: f.name, ms: Math.round(performance.now() - t0), error: (e as Error).message });
      }
    }
    return out;
  }

  /** The table as data, in registration order (for tests and docs). */
  describe(): EntrySummary[] {
    return [...this.entries].map(([type, e]) => ({ type, roles: e.roles, auth: e.auth, privilege: e.privilege, newWork: e.newWork }));
  }

  /**
   * Serves one request of `from`. Always a promise: an answer, a refusal, or a
   * handler's error, in the order the requests arrived.
   */
  async serve(from: Endpoint, m: Message): Promise<Reply> {
    return this.serveNow(from, m);
  }

  /**
   * {@link serve} without the promise where none is needed: a handler that
   * answers at once (a local PING, LOAD_GET) is answered in the same tick, and
   * a refusal is thrown. What a Connection's onRequest takes.
   */
  serveNow(from: Endpoint, m: Message): Reply | Promise<Reply> {
    const s = from.session;
    if (s.state === 'pending') throw new ProtocolError('UNEXPECTED', `${m.type} before HELLO`);
    const entry = this.entries.get(m.type);
    // A session that may only ENROLL is told why, and closed, whatever else it sends.
    if (s.state === 'restricted' && !entry?.roles.includes('restricted')) throw this.opts.deny(from, s.reason, true);
    if (!entry) throw new ProtocolError('UNSUPPORTED', `${m.type} is not a request rexd serves`, { fatal: false });
    if (!entry.roles.includes(s.state)) {
      throw new ProtocolError('BAD_REQUEST', entry.refuse?.[s.state] ?? `${m.type} is not served to ${ROLE_NAMES[s.state]}`, { fatal: false });
    }
    let access: Request['access'];
    if (s.state === 'peer' && entry.auth !== 'handler') {
      let who = s.requester;
      // A peer rexd forwarding for one of its user's programs names it; that user owns all its programs, so
      // the claim grants nothing the user's own key does not, and lets grants limited to programs apply.
      const claim = entry.auth === 'grant' ? (m as { program?: string }).program : undefined;
      if (claim && !s.programKey) {
        who = { ...who, program: claim };
        this.note(m, { identity: `${who.name}.${claim}` });
      }
      const d = this.opts.check(who, entry.auth === 'grant-any');
      if (!d.ok) throw this.opts.deny(from, d.reason, false);
      access = { who, grant: d.grant };
    }
    if (s.transport === 'tls' && entry.newWork) {
      const down = this.opts.logRefusal();
      if (down) throw down;
    }
    return entry.handler(m as never, { from, session: s, access, note: (n) => this.note(m, n) });
  }

  /** Writes the transaction log row of one answered request. */
  served(from: Endpoint, info: ServedInfo): void {
    const m = info.msg;
    const entry = this.entries.get(m.type);
    if (entry?.heartbeat && !info.error && !this.opts.logHeartbeats) return;
    const note = this.notes.get(m);
    const target = entry?.target?.(m as never);
    const facts = from.facts();
    // Built field by field, not with spreads: this runs once per request.
    const ev: LogEvent = {
      kind: entry?.logKind ?? 'transaction',
      identity: note?.identity ?? facts.identity,
      peerAddress: facts.peerAddress,
      messageType: m.type,
      outcome: info.error ? (info.error.proto === 'DENIED' ? 'denied' : 'error') : 'ok',
      bytesIn: info.requestBytes,
      bytesOut: info.responseBytes,
      durationMs: info.ms,
    };
    if (facts.identityId) ev.identityId = facts.identityId;
    if (facts.fromHost) ev.fromHost = facts.fromHost;
    if (target) ev.target = target;
    if (info.error) ev.reason = info.error.message;
    else if (note?.reason !== undefined) ev.reason = note.reason;
    this.opts.record(ev);
  }

  private note(m: Message, n: { identity?: string; reason?: string }): void {
    this.notes.set(m, { ...this.notes.get(m), ...n });
  }
}
