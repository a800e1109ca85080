/**
 * The call-controller manager (docs/CALLS.md): starts controllers on demand
 * for USER.PROGRAM on this host, routes calls to them by FUNCTION, restarts
 * dead ones, enforces per-call deadlines and cancellation, and answers entry
 * point queries. rexd calls `handle(message, identity)` for CALL,
 * ENTRIES_GET and CANCEL; tests and in-process callers use `call()` and
 * `entries()` directly.
 *
 * Concurrency: a controller runs one call at a time (it is a plain C process
 * calling plain C functions), so each program has a pool of up to
 * `maxControllers` controllers, started as calls arrive, with a queue in
 * front. A call that hangs holds one controller until its deadline, when that
 * controller is killed; the others keep serving, and the pool starts a
 * replacement. An rjump whose code never returns leaves the pool's count so it
 * cannot starve later callers.
 */
import leven from 'leven';
import { userInfo } from 'node:os';
import { Connection } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { Message, Reply } from '../protocol/index.js';
import type { EntryInfo as MessageEntryInfo } from '../protocol/messages.js';
import { typeName } from '../runtime/frames/plan.js';
import type { EntryPoint, EntryPointSet } from '../gen/model/entrypoint.js';
import { helper } from '../util/paths.js';
import { Controller, type ControllerLaunch } from './controller.js';
import { defineBody, type DefineBody } from './define.js';
import { fitPage, listEntries, pageBudget, queryOf, selectEntries, sortEntries, type EntriesQuery } from './entries.js';
import { formatTarget, parseTarget, type CallTarget } from './target.js';

/** What a program is, as rexd's configuration says: a shared object with definitions, or a program linked with librex that serves itself. */
export type ProgramSpec =
  | { kind: 'library'; name: string; object: string; definitions: EntryPointSet }
  | { kind: 'program'; name: string; exec: string; args?: string[] };

/** Who is calling: the authenticated identity rexd established (issue 3's keys), and the connection for CANCEL. */
export interface CallIdentity {
  /** HOST.USER of the caller's key, or the local user name for local clients. */
  name: string;
  /** Key ID, when authenticated by key. */
  id?: string;
  /** The program key's program, if any. */
  program?: string;
  address?: string;
  /** Scope of stream ids for CANCEL (rexd passes the Connection); absent: one shared scope. */
  conn?: object;
}

/** Decides whether `identity` may call `fn` of `program`: true, or false / a reason string to refuse. */
export type Authorize = (identity: CallIdentity, program: string, fn: string | undefined) => boolean | string | Promise<boolean | string>;

/** The subset of a pino logger the manager writes to. */
export interface CallLog {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
}

/** Options of {@link CallManager}. */
export interface CallManagerOptions {
  /** Finds a program by name for the caller; undefined: NO_ENTRY. */
  programs: (name: string, identity: CallIdentity) => ProgramSpec | undefined | Promise<ProgramSpec | undefined>;
  /** Whether this host offers `name` (rex.rc programs), known without reading its definitions; placement's probe asks it. */
  offers?: (name: string) => boolean;
  /** Per-identity, per-program (and per-function) authorization; default: allow (rexd passes its grants check). */
  authorize?: Authorize;
  log?: CallLog;
  /** Controllers per program at most (default 4). */
  maxControllers?: number;
  /** Deadline of a call that names none (default 30 s). */
  defaultDeadlineMs?: number;
  /** This host's REX name (RESULT.host, and targets naming another host are refused). */
  host?: string;
  /** The user controllers run as (this process's user: REX is installed per user). */
  user?: string;
  /** The generic controller (default rex_callctl in libexecDir(), src/util/paths.ts). */
  controllerPath?: string;
  /** Environment of controllers (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/** Per-call options of {@link CallManager.call}. */
export interface ManagerCallOptions {
  identity?: CallIdentity;
  deadlineMs?: number;
  signal?: AbortSignal;
  /** rjump: resolve (with an empty frame) once the controller accepted the frame. */
  async?: boolean;
  /** Stream id of the CALL, for CANCEL. */
  stream?: number;
}

/** One entry point as ENTRIES lists it. */
export type EntryInfo = MessageEntryInfo;

/** Default deadline of a call. */
export const DEFAULT_DEADLINE_MS = 30_000;
const MAX_DEADLINE_MS = 24 * 3600_000;

interface Job {
  fn: string;
  input: Uint8Array;
  async: boolean;
  deadlineMs: number;
  resolve: (out: Uint8Array) => void;
  reject: (e: Error) => void;
  timer?: NodeJS.Timeout;
  controller?: Controller;
  done: boolean;
  onAbort?: () => void;
  signal?: AbortSignal;
}

/** A library entry point prepared for the generic controller. */
interface Prepared {
  ep: EntryPoint;
  define?: DefineBody;
  /** Why it cannot be called (a plan refusal, or what libffi cannot pass). */
  problem?: { message: string; hint?: string };
}

class Pool {
  readonly idle: Controller[] = [];
  readonly busy = new Set<Controller>();
  starting = 0;
  readonly queue: Job[] = [];
  /** Library: entry points by name. Program: filled from its ENTRIES at first start. */
  readonly prepared = new Map<string, Prepared>();
  /** Program: its entry points in byte order of names (ENTRIES pages are cut from it). */
  remote: EntryInfo[] | undefined;
  /** Library: the entry points as ENTRIES lists them, in byte order of names; rebuilt when `broken` grows. */
  private listed: { broken: number; entries: EntryInfo[] } | undefined;
  /** Entry points whose DEFINE the controller refused (symbol missing in a stripped object...). */
  readonly broken = new Map<string, string>();
  /** Consecutive start failures: after 2, queued calls fail instead of restarting forever. */
  failures = 0;
  /** Replaced by a reload (retire()): it finishes the calls it admitted, then its controllers stop. */
  retired = false;

  constructor(
    readonly key: string,
    readonly spec: ProgramSpec,
  ) {
    if (spec.kind === 'library') {
      for (const ep of spec.definitions.entries) {
        const r = ep.refusals[0];
        if (r) {
          this.prepared.set(ep.name, { ep, problem: { message: `${ep.name}: remote call refused: ${r.message}`, hint: r.hint } });
          continue;
        }
        const d = defineBody(ep.plan);
        this.prepared.set(ep.name, 'body' in d ? { ep, define: d.body } : { ep, problem: { message: `${ep.name}: remote call refused: ${d.problem}` } });
      }
    }
  }

  /** Library: every entry point as ENTRIES lists it, in byte order of names. */
  listing(): EntryInfo[] {
    if (!this.listed || this.listed.broken !== this.broken.size) {
      this.listed = { broken: this.broken.size, entries: sortEntries([...this.prepared.values()].map((p) => entryInfo(p, this.broken.get(p.ep.name)))) };
    }
    return this.listed.entries;
  }

  get size(): number {
    let n = this.idle.length + this.starting;
    for (const c of this.busy) if (!c.jumped) n++;
    return n;
  }
}

/** The call-controller manager of one rexd (or of a test). */
export class CallManager {
  private readonly pools = new Map<string, Pool>();
  /** Pools a reload replaced that still have calls to finish. */
  private readonly retiring = new Set<Pool>();
  /** Bumped by retire(): a definitions read begun before it must not install its pool. */
  private generation = 0;
  /** Programs whose definitions are being read, by pool key. */
  private readonly loading = new Map<string, Promise<Pool | undefined>>();
  private readonly calls = new WeakMap<object, Map<number, Job>>();
  private readonly sharedScope = {};
  private readonly max: number;
  private readonly user: string;
  private closed = false;

  constructor(private readonly opts: CallManagerOptions) {
    this.max = Math.max(1, opts.maxControllers ?? 4);
    this.user = opts.user ?? userInfo().username;
  }

  /** Path of the generic controller program. */
  get controllerPath(): string {
    return this.opts.controllerPath ?? helper('rex_callctl');
  }

  /**
   * Serves one request of a client or peer: CALL, ENTRIES_GET or CANCEL.
   * Throws ProtocolError for the ERROR answer (rexd's Connection sends it).
   */
  async handle(m: Message, identity: CallIdentity): Promise<Reply> {
    switch (m.type) {
      case 'CALL': {
        const output = await this.call(m.target, m.input, {
          identity,
          stream: m.stream,
          ...(m.deadlineMs !== undefined ? { deadlineMs: m.deadlineMs } : {}),
          ...(m.async ? { async: true } : {}),
        });
        if (m.async) return { type: 'RESULT', accepted: true, ...(this.opts.host ? { host: this.opts.host } : {}) };
        return { type: 'RESULT', output, ...(this.opts.host ? { host: this.opts.host } : {}) };
      }
      case 'ENTRIES_GET': {
        // One entry by name, or one page of the list cut to what the asking connection accepts (docs/PROTOCOL.md 4.7).
        const q = queryOf(m);
        if (q.limit === 0 && q.name === undefined) return this.offeredAnswer(m.target, identity);
        const budget = pageBudget(identity.conn instanceof Connection ? identity.conn.peer?.maxPayload : undefined);
        const one = q.name !== undefined ? await this.entry(m.target, q.name, identity) : undefined;
        const r = one ? { program: one.program, entries: [one.entry] } : await this.entries(m.target, identity, q);
        const page = fitPage(r.entries, q.name !== undefined ? undefined : q.limit, budget, m.target);
        return { type: 'ENTRIES', entries: page.entries, program: r.program, ...(page.next !== undefined ? { next: page.next } : {}), ...(this.opts.host ? { host: this.opts.host } : {}) };
      }
      case 'CANCEL':
        return { type: 'CANCELLED', found: this.cancel(m.call, identity) };
      default:
        throw new ProtocolError('UNSUPPORTED', `the call manager does not serve ${m.type}`, { fatal: false });
    }
  }

  /** Calls a function: resolves with its output frame, rejects with a ProtocolError (its `proto` says which ERROR). */
  async call(target: string | CallTarget, input: Uint8Array, o: ManagerCallOptions = {}): Promise<Uint8Array> {
    const identity = o.identity ?? { name: this.user };
    const t = this.parse(target, true);
    const fn = t.function!;
    const pool = await this.admit(t, identity, fn);
    const deadlineMs = o.deadlineMs ?? this.opts.defaultDeadlineMs ?? DEFAULT_DEADLINE_MS;
    if (!Number.isInteger(deadlineMs) || deadlineMs <= 0 || deadlineMs > MAX_DEADLINE_MS) {
      throw new ProtocolError('BAD_REQUEST', `deadline ${deadlineMs} ms: expected 1..${MAX_DEADLINE_MS}`, { fatal: false });
    }
    this.checkEntry(pool, fn);
    return new Promise<Uint8Array>((resolve, reject) => {
      const scope = identity.conn ?? this.sharedScope;
      let byStream = this.calls.get(scope);
      if (o.stream !== undefined) {
        if (!byStream) this.calls.set(scope, (byStream = new Map()));
      }
      const job: Job = {
        fn,
        input,
        async: !!o.async,
        deadlineMs,
        done: false,
        resolve: (out) => finish(() => resolve(out)),
        reject: (e) => finish(() => reject(e)),
      };
      const finish = (settle: () => void): void => {
        if (job.done) return;
        job.done = true;
        clearTimeout(job.timer);
        if (o.stream !== undefined) byStream?.delete(o.stream);
        if (job.signal && job.onAbort) job.signal.removeEventListener('abort', job.onAbort);
        settle();
      };
      if (o.stream !== undefined) byStream!.set(o.stream, job);
      job.timer = setTimeout(() => this.expire(pool, job), deadlineMs);
      if (o.signal) {
        if (o.signal.aborted) return this.abort(pool, job, 'the caller cancelled it before it started');
        job.signal = o.signal;
        job.onAbort = () => this.abort(pool, job, 'the caller cancelled it');
        o.signal.addEventListener('abort', job.onAbort, { once: true });
      }
      pool.queue.push(job);
      this.pump(pool);
    });
  }

  /**
   * The entry points of `[HOST.][USER.]PROGRAM` the caller may call, with
   * definitions for callers that encode frames, in byte order of names; `q`
   * selects names after its cursor that match its glob (paging is the caller's).
   */
  async entries(target: string | CallTarget, identity: CallIdentity = { name: this.user }, q: EntriesQuery = {}): Promise<{ program: string; entries: EntryInfo[] }> {
    const t = this.parse(target, false);
    const pool = await this.admit(t, identity, undefined);
    const all = pool.spec.kind === 'library' ? pool.listing() : await this.programEntries(pool, t, identity);
    return { program: t.program, entries: await this.granted(identity, t.program, selectEntries(all, q, formatTarget(t))) };
  }

  /** One entry point by name, without the list: DENIED when the caller may not call it, NO_ENTRY (with near names) when there is none. */
  async entry(target: string | CallTarget, name: string, identity: CallIdentity = { name: this.user }): Promise<{ program: string; entry: EntryInfo }> {
    const t = this.parse(target, false);
    const pool = await this.admit(t, identity, name);
    if (pool.spec.kind === 'library') {
      const p = pool.prepared.get(name);
      if (!p) throw noEntry(pool, name, [...pool.prepared.keys()]);
      return { program: t.program, entry: entryInfo(p, pool.broken.get(name)) };
    }
    const all = await this.programEntries(pool, t, identity);
    const e = all.find((x) => x.name === name);
    if (!e) throw noEntry(pool, name, all.map((x) => x.name));
    return { program: t.program, entry: e };
  }

  /** A self-serving program's entry points: it registers them at start-up, so a controller is started (or borrowed) first. */
  private async programEntries(pool: Pool, t: CallTarget, identity: CallIdentity): Promise<EntryInfo[]> {
    if (!pool.remote) {
      await this.call({ ...t, function: '\0entries' }, new Uint8Array(0), { identity }).catch((e: unknown) => {
        if (!pool.remote) throw e;
      });
    }
    return pool.remote ?? [];
  }

  /** The entries `identity` may call: a caller sees only the functions its grants allow (docs/CALLS.md, Security). */
  private async granted(identity: CallIdentity, program: string, entries: EntryInfo[]): Promise<EntryInfo[]> {
    const authorize = this.opts.authorize;
    if (!authorize) return entries;
    const verdicts = await Promise.all(entries.map((e) => authorize(identity, program, e.name)));
    return entries.filter((_, i) => verdicts[i] === true);
  }

  /** Cancels the call of stream `stream` (scope: the identity's connection); true if it was found. */
  cancel(stream: number, identity: CallIdentity): boolean {
    const job = this.calls.get(identity.conn ?? this.sharedScope)?.get(stream);
    if (!job) return false;
    const pool = [...this.pools.values(), ...this.retiring].find((p) => p.queue.includes(job) || (job.controller && p.busy.has(job.controller)));
    if (pool) this.abort(pool, job, 'the caller cancelled it');
    else job.reject(new ProtocolError('CANCELLED', `${job.fn}: cancelled`, { fatal: false }));
    return true;
  }

  /** Stops every controller; calls in flight fail. */
  async close(): Promise<void> {
    this.closed = true;
    const all: Controller[] = [];
    for (const p of [...this.pools.values(), ...this.retiring]) {
      for (const j of p.queue.splice(0)) j.reject(new ProtocolError('UNREACHABLE', `${j.fn}: the call manager is shutting down`, { fatal: false }));
      all.push(...p.idle, ...p.busy);
    }
    for (const c of all) c.kill('the call manager is shutting down');
    await Promise.all(all.map((c) => c.exited()));
    this.pools.clear();
    this.retiring.clear();
  }

  /**
   * After a reload of the program set (rexd SIGHUP): the pools of the programs
   * `which` selects (all by default) are taken out, so the next call reads its
   * program's rex.rc entry and definitions again. A retired pool finishes the
   * calls it admitted (queued ones included) and then stops its controllers;
   * idle ones stop at once. Returns the programs retired.
   */
  retire(which: (program: string) => boolean = () => true): string[] {
    this.generation++;
    const names: string[] = [];
    for (const [key, pool] of this.pools) {
      if (!which(pool.spec.name)) continue;
      this.pools.delete(key);
      this.loading.delete(key);
      pool.retired = true;
      this.retiring.add(pool);
      names.push(pool.spec.name);
      for (const c of pool.idle.splice(0)) c.kill('its program was reloaded');
      this.drained(pool);
    }
    for (const key of [...this.loading.keys()]) if (which(key.slice(this.user.length + 1))) this.loading.delete(key);
    return names;
  }

  /** A retired pool with nothing left to run is forgotten. */
  private drained(pool: Pool): void {
    if (pool.retired && pool.queue.length === 0 && pool.busy.size === 0 && pool.starting === 0 && pool.idle.length === 0) this.retiring.delete(pool);
  }

  /** Numbers for tests and rtop: controllers per program. */
  stats(): Record<string, { idle: number; busy: number; starting: number; queued: number }> {
    const out: Record<string, { idle: number; busy: number; starting: number; queued: number }> = {};
    for (const [k, p] of this.pools) out[k] = { idle: p.idle.length, busy: p.busy.size, starting: p.starting, queued: p.queue.length };
    return out;
  }

  // ------------------------------------------------------------ internals

  private parse(target: string | CallTarget, withFunction: boolean): CallTarget {
    let t: CallTarget;
    try {
      t = typeof target === 'string' ? parseTarget(target, withFunction) : target;
    } catch (e) {
      throw new ProtocolError('BAD_REQUEST', (e as Error).message, { fatal: false });
    }
    if (t.host !== undefined && this.opts.host !== undefined && t.host !== this.opts.host) {
      throw new ProtocolError('NO_HOST', `${formatTarget(t)}: this call manager serves host ${this.opts.host}; rexd routes calls for ${t.host}`, { fatal: false });
    }
    if (t.user !== undefined && t.user !== this.user) {
      throw new ProtocolError('DENIED', `${formatTarget(t)}: controllers on this host run as ${this.user}, not ${t.user}`, { fatal: false });
    }
    return t;
  }

  /**
   * ENTRIES_GET with limit 0, placement's probe (docs/PROTOCOL.md 4.7): an empty ENTRIES when the program is
   * offered here to this caller, NO_ENTRY or DENIED otherwise; answered from rex.rc and the grants, without
   * reading the program's definitions (seconds for a large library), so a probe's short timeout holds.
   */
  private async offeredAnswer(target: string, identity: CallIdentity): Promise<Reply> {
    const t = this.parse(target, false);
    if (this.opts.offers) {
      await this.authorize(t, identity, undefined);
      if (!this.opts.offers(t.program)) throw new ProtocolError('NO_ENTRY', `${formatTarget(t)}: no program '${t.program}' is offered for remote calls on this host`, { fatal: false });
    } else {
      await this.admit(t, identity, undefined);
    }
    return { type: 'ENTRIES', entries: [], program: t.program, ...(this.opts.host ? { host: this.opts.host } : {}) };
  }

  /** Authorization, then the program's pool. */
  private async admit(t: CallTarget, identity: CallIdentity, fn: string | undefined): Promise<Pool> {
    await this.authorize(t, identity, fn);
    return this.poolOf(t, identity, `${this.user}.${t.program}`);
  }

  /** The caller's grants for the program (and function): DENIED, logged, when they do not cover it. */
  private async authorize(t: CallTarget, identity: CallIdentity, fn: string | undefined): Promise<void> {
    if (this.closed) throw new ProtocolError('UNREACHABLE', 'the call manager is shut down', { fatal: false });
    if (this.opts.authorize) {
      const verdict = await this.opts.authorize(identity, t.program, fn);
      if (verdict !== true) {
        const reason = typeof verdict === 'string' ? verdict : `${identity.name} is not granted program ${t.program}`;
        this.opts.log?.warn({ event: 'call-denied', caller: identity.name, id: identity.id, address: identity.address, program: t.program, function: fn, reason }, `call denied: ${reason}`);
        throw new ProtocolError('DENIED', `${formatTarget(t)}: ${reason}`, { fatal: false });
      }
    }
  }

  /** The program's pool, its definitions read on first use (once, however many calls wait for them). */
  private async poolOf(t: CallTarget, identity: CallIdentity, key: string): Promise<Pool> {
    const pool = this.pools.get(key);
    if (pool) return pool;
    // Calls that arrive while the definitions are read wait for the same read.
    let loading = this.loading.get(key);
    if (!loading) {
      const generation = this.generation;
      const read = (async (): Promise<Pool | undefined> => {
        const spec = await this.opts.programs(t.program, identity);
        if (!spec) return undefined;
        const made = new Pool(key, spec);
        // A reload during the read: this caller gets what it asked for, later ones read the new entry.
        if (!this.closed && generation === this.generation) this.pools.set(key, made);
        else if (!this.closed) {
          made.retired = true;
          this.retiring.add(made);
        }
        return made;
      })();
      // Registered before any caller awaits it, so the entry is gone when they resume; a newer read is left alone.
      read.then(
        () => this.loading.get(key) === read && this.loading.delete(key),
        () => this.loading.get(key) === read && this.loading.delete(key),
      );
      loading = read;
      this.loading.set(key, loading);
    }
    const made = await loading;
    if (!made) throw new ProtocolError('NO_ENTRY', `${formatTarget(t)}: no program '${t.program}' is offered for remote calls on this host`, { fatal: false });
    if (this.closed) throw new ProtocolError('UNREACHABLE', 'the call manager is shut down', { fatal: false });
    return made;
  }

  private checkEntry(pool: Pool, fn: string): void {
    if (fn === '\0entries') return;
    if (pool.spec.kind === 'program') {
      if (pool.remote && !pool.remote.some((e) => e.name === fn)) throw noEntry(pool, fn, pool.remote.map((e) => e.name));
      return;
    }
    const p = pool.prepared.get(fn);
    if (!p) throw noEntry(pool, fn, [...pool.prepared.keys()]);
    if (p.problem) throw new ProtocolError('BAD_REQUEST', p.problem.message, { fatal: false, ...(p.problem.hint ? { hint: p.problem.hint } : {}) });
    const broken = pool.broken.get(fn);
    if (broken) throw new ProtocolError('NO_ENTRY', broken, { fatal: false });
  }

  /** Runs queued calls on idle controllers, starting controllers while the pool has room. */
  private pump(pool: Pool): void {
    while (pool.queue.length > 0 && pool.idle.length > 0) {
      const c = pool.idle.pop()!;
      if (c.dead) continue;
      this.run(pool, c, pool.queue.shift()!);
    }
    if (pool.queue.length > pool.starting && pool.size < this.max && !this.closed) this.start(pool);
    if (pool.retired && pool.queue.length === 0) {
      for (const c of pool.idle.splice(0)) c.kill('its program was reloaded');
      this.drained(pool);
    }
  }

  private start(pool: Pool): void {
    pool.starting++;
    const spec = pool.spec;
    const launch: ControllerLaunch =
      spec.kind === 'library'
        ? { kind: 'library', controllerPath: this.controllerPath, object: spec.object }
        : { kind: 'program', exec: spec.exec, ...(spec.args ? { args: spec.args } : {}) };
    const c = new Controller(pool.key, launch, this.opts.env);
    this.opts.log?.info({ event: 'controller-start', program: pool.key, pid: c.pid }, `call controller for ${pool.key} started`);
    const setup = async (): Promise<void> => {
      if (spec.kind === 'library') {
        const defs = [...pool.prepared.values()].filter((p) => p.define);
        await Promise.all(
          defs.map((p) =>
            c.request({ type: 'DEFINE', ...p.define! }).catch((e: ProtocolError) => {
              if (c.dead) throw e;
              pool.broken.set(p.ep.name, e.message); // e.g. stripped object without that symbol
            }),
          ),
        );
      } else {
        // Page by page: a program may register more entry points than one frame holds.
        const list = await listEntries((m) => c.request({ type: 'ENTRIES_GET', target: m.target, ...queryOf(m) }), spec.name, { from: `the controller of ${pool.key}` });
        pool.remote = sortEntries(list);
      }
    };
    setup().then(
      () => {
        pool.starting--;
        pool.failures = 0;
        // Calls queued before the program's entry points were known are checked now.
        for (const j of [...pool.queue]) {
          try {
            this.checkEntry(pool, j.fn);
          } catch (e) {
            pool.queue.splice(pool.queue.indexOf(j), 1);
            j.reject(e as Error);
          }
        }
        this.settleEntriesProbe(pool);
        if (this.closed) c.kill('the call manager is shutting down');
        else this.release(pool, c);
      },
      (e: Error) => {
        pool.starting--;
        pool.failures++;
        c.kill('start-up failed');
        this.opts.log?.warn({ event: 'controller-failed', program: pool.key, pid: c.pid, error: e.message }, `call controller for ${pool.key} failed to start`);
        if (pool.failures >= 2 || pool.size === 0) {
          // Starting again would fail the same way (missing object, bad program): fail what waits.
          for (const j of pool.queue.splice(0)) j.reject(new ProtocolError('NO_ENTRY', `${j.fn === '\0entries' ? pool.spec.name : j.fn}: ${e.message}`, { fatal: false }));
        }
        this.pump(pool);
      },
    );
  }

  /** The internal ENTRIES probe of entries() needs no call: answer it as soon as a controller is up. */
  private settleEntriesProbe(pool: Pool): void {
    for (const j of [...pool.queue]) {
      if (j.fn !== '\0entries') continue;
      pool.queue.splice(pool.queue.indexOf(j), 1);
      j.resolve(new Uint8Array(0));
    }
  }

  /** Puts a controller back to work (or to rest). */
  private release(pool: Pool, c: Controller): void {
    pool.busy.delete(c);
    c.jumped = false;
    if (c.dead) {
      this.pump(pool);
      return;
    }
    if (pool.size >= this.max && pool.queue.length === 0) {
      c.kill('the pool is full'); // an rjump came back while replacements run
      return;
    }
    pool.idle.push(c);
    this.pump(pool);
  }

  private run(pool: Pool, c: Controller, job: Job): void {
    if (job.fn === '\0entries') {
      job.resolve(new Uint8Array(0));
      pool.idle.push(c);
      return;
    }
    job.controller = c;
    pool.busy.add(c);
    c.request(
      { type: 'CALL', target: job.fn, input: job.input, ...(job.async ? { async: true } : {}) },
      {
        fn: job.fn,
        onAccepted: () => {
          // rjump: the code may never return; the controller leaves the pool's count.
          c.jumped = true;
          job.resolve(new Uint8Array(0));
          this.pump(pool);
        },
      },
    ).then(
      (m) => {
        if (m.type !== 'RESULT') job.reject(new ProtocolError('INTERNAL', `${job.fn}: the controller answered CALL with ${m.type}`, { fatal: false }));
        else job.resolve(m.output ?? new Uint8Array(0));
        this.release(pool, c);
      },
      (e: Error) => {
        job.reject(e);
        if (c.dead) {
          pool.busy.delete(c);
          this.opts.log?.warn({ event: 'controller-died', program: pool.key, pid: c.pid, function: job.fn, error: e.message }, e.message);
          this.pump(pool);
        } else this.release(pool, c);
      },
    );
  }

  private expire(pool: Pool, job: Job): void {
    const where = job.controller ? `its controller (pid ${job.controller.pid}) was killed` : 'it was still waiting for a free controller';
    job.reject(new ProtocolError('TIMEOUT', `${job.fn}: no answer within ${job.deadlineMs} ms; ${where}`, { fatal: false }));
    this.stop(pool, job, 'a call overran its deadline');
  }

  private abort(pool: Pool, job: Job, why: string): void {
    job.reject(new ProtocolError('CANCELLED', `${job.fn}: ${why}`, { fatal: false }));
    this.stop(pool, job, 'its call was cancelled');
  }

  /** Takes a finished-by-force job out: from the queue, or by killing the controller stuck in it. */
  private stop(pool: Pool, job: Job, why: string): void {
    const i = pool.queue.indexOf(job);
    if (i >= 0) pool.queue.splice(i, 1);
    const c = job.controller;
    if (c && !c.dead && pool.busy.has(c) && !c.jumped) {
      pool.busy.delete(c);
      c.kill(why);
      this.pump(pool);
    } else if (c && c.jumped) {
      c.kill(why);
    }
  }
}

function noEntry(pool: Pool, fn: string, names: string[]): ProtocolError {
  const near = names
    .map((n) => [n, leven(n, fn)] as const)
    .filter(([, d]) => d <= Math.max(1, Math.floor(fn.length / 3)))
    .sort((a, b) => a[1] - b[1])
    .slice(0, 3)
    .map(([n]) => n);
  return new ProtocolError('NO_ENTRY', `${pool.spec.name}.${fn}: program ${pool.spec.name} has no entry point '${fn}'`, {
    fatal: false,
    hint: near.length ? `did you mean ${near.join(', ')}? (rex entries ${pool.spec.name})` : `list them with: rex entries ${pool.spec.name}`,
  });
}

/** A C-like signature with pointer marks, for listings. */
export function signature(ep: EntryPoint): string {
  const ps = ep.params.map((p) => {
    const marks = [p.direction, p.sizeIs !== undefined ? `size-is=${p.sizeIs}` : undefined, p.string ? 'string' : undefined, p.into !== undefined ? `into=${p.into}` : undefined].filter(Boolean);
    return `${typeName(p.type)} ${p.name}${marks.length ? ` [${marks.join(' ')}]` : ''}`;
  });
  if (ep.variadic) ps.push('...');
  return `${typeName(ep.returns)} ${ep.name}(${ps.join(', ')})`;
}

function entryInfo(p: Prepared, broken: string | undefined): EntryInfo {
  const problem = broken ?? p.problem?.message;
  return {
    name: p.ep.name,
    inputSize: p.ep.input.fixedSize,
    outputSize: p.ep.output.fixedSize,
    callable: problem === undefined,
    ...(problem !== undefined ? { refusal: problem } : {}),
    signature: signature(p.ep),
    definition: JSON.stringify(p.ep.plan.desc),
    variable: p.ep.input.buffers.length + p.ep.output.buffers.length > 0,
  };
}
