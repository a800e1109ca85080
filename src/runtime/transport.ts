/**
 * The call transport of TypeScript callers (docs/CALLS.md): what generated
 * stubs (`setTransport` of @rex-cluster/rex/runtime/codegen-v1), the raw
 * `rcall(target, frame)` and RexClient call through. Many calls in flight on
 * one connection to the local rexd, each on its own stream, answers matched by
 * stream id. This is the runtime's side of calls; the daemon's side
 * (src/calls/) imports it, never the other way round.
 */
import type { Connection } from '../protocol/connection.js';
import { ProtoError, type ProtoErrorName } from '../protocol/constants.js';
import type { EntryInfo } from '../protocol/messages.js';
import { ErrorCodes, RexError, type ErrorCode } from '../util/errors.js';
import { callAmong, formatTarget, type CallTarget } from '../calls/target.js';
import { listEntries, lookupEntry } from '../calls/entries.js';

/** Where and how to run a call; stubs pass it through unchanged. */
export interface CallOptions {
  /** Run on this host instead of the one rexd's placement picks. */
  host?: string;
  /** Give up after this many milliseconds. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Identity of the entry point a generated stub calls (the seed's HOST.USER.PROGRAM.FUNCTION). */
export interface EntryTarget {
  elfFile: string;
  host?: string;
  user?: string;
  program?: string;
}

/** A function that ships an input frame to the entry point and returns its output frame. */
export type Transport = (target: EntryTarget & { name: string }, input: Uint8Array, opts: CallOptions) => Promise<Uint8Array>;

const CODE_OF: Partial<Record<ProtoErrorName, ErrorCode>> = {
  CRASHED: ErrorCodes.CALL_CRASHED,
  TIMEOUT: ErrorCodes.CALL_TIMEOUT,
  CANCELLED: ErrorCodes.CALL_CANCELLED,
  DENIED: ErrorCodes.CALL_DENIED,
  NO_ENTRY: ErrorCodes.CALL_NO_ENTRY,
  BAD_REQUEST: ErrorCodes.CALL_BAD_FRAME,
};

/** A failed remote call: a RexError with a CALL_* code and the protocol's ERROR name in `proto`. */
export class CallError extends RexError {
  constructor(
    code: ErrorCode,
    message: string,
    readonly proto: string,
    details: { hint?: string; cause?: unknown } = {},
  ) {
    super(code, message, details);
    this.name = 'CallError';
  }
}

/** Converts what a manager or rexd threw into a CallError (other errors pass through). */
export function toCallError(e: unknown): unknown {
  const proto = (e as { proto?: string } | undefined)?.proto;
  if (!(e instanceof Error) || typeof proto !== 'string' || !(proto in ProtoError)) return e;
  const code = CODE_OF[proto as ProtoErrorName] ?? (e as RexError).code ?? ErrorCodes.PROTO_REMOTE;
  // rexd's remoteError prefixes "HOST: NAME: "; the message after it is the manager's.
  const hint = (e as RexError).hint;
  return new CallError(code, e.message, proto, { cause: e, ...(hint ? { hint } : {}) });
}

/** The program a stub's target names: its `program`, else the object's base name without lib/.so. */
export function programOf(t: EntryTarget): string {
  if (t.program) return t.program;
  const base = t.elfFile.split('/').pop()!.replace(/\.so(\.[0-9.]+)?$/, '');
  return base.replace(/^lib/, '') || base;
}

/** The call target of a stub's entry point; `keepOwner` keeps the owner host and user its XML names. */
export function stubTarget(t: EntryTarget & { name: string }, opts: CallOptions, keepOwner: boolean): CallTarget {
  const host = opts.host ?? (keepOwner ? t.host : undefined);
  return { program: programOf(t), function: t.name, ...(host ? { host } : {}), ...(keepOwner && t.user ? { user: t.user } : {}) };
}

/** Calls in flight per connection at most; more wait here (rexd answers BUSY above 1024 open streams). */
export const MAX_IN_FLIGHT = 512;

/** What a {@link CallChannel} needs of a connection: requests, and the label its messages name the peer by. */
export type CallConnection = Pick<Connection, 'request' | 'label'>;

/**
 * Remote calls over one protocol connection to rexd (RexClient.conn): raw frames in, frames out. rexd
 * serving the native front end's CALL_CLI gives it its own request table as the connection (src/calls/cli.ts).
 */
export class CallChannel {
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly conn: CallConnection) {}

  /** Sends an input frame to `target` and resolves with the output frame. */
  async call(target: string, input: Uint8Array, opts: CallOptions & { async?: boolean } = {}): Promise<Uint8Array> {
    if (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => this.waiting.push(r));
    this.inFlight++;
    try {
      const deadlineMs = opts.timeoutMs ?? 30_000;
      const among = callAmong(target);
      const req = this.conn.request(
        { type: 'CALL', target, input, deadlineMs, ...(opts.async ? { async: true } : {}), ...(among ? { among } : {}) },
        // rexd reports TIMEOUT itself at the deadline; wait a little longer for that answer.
        deadlineMs + 5000,
      );
      const m = await (opts.signal ? abortable(req, opts.signal, target) : req);
      if (m.type !== 'RESULT') throw new RexError(ErrorCodes.PROTO_UNEXPECTED, `rexd answered CALL with ${m.type}`);
      return m.output ?? new Uint8Array(0);
    } catch (e) {
      throw toCallError(e);
    } finally {
      this.inFlight--;
      this.waiting.shift()?.();
    }
  }

  /** The entry points of `[HOST.][USER.]PROGRAM` as rexd lists them: every page, or those `match` (a glob) selects. */
  async entries(target: string, opts: { match?: string; timeoutMs?: number } = {}): Promise<EntryInfo[]> {
    const { timeoutMs, ...query } = opts;
    try {
      return await listEntries((m) => this.conn.request(m, timeoutMs), target, { ...query, from: `rexd at ${this.conn.label}` });
    } catch (e) {
      throw toCallError(e);
    }
  }

  /**
   * One entry point by name, without fetching the list (what a call needs). The first request for a
   * program may wait while its host reads the definitions (seconds for libc's debug info): `timeoutMs`.
   */
  async entry(target: string, name: string, opts: { timeoutMs?: number } = {}): Promise<EntryInfo> {
    try {
      return await lookupEntry((m) => this.conn.request(m, opts.timeoutMs), target, name, `rexd at ${this.conn.label}`);
    } catch (e) {
      throw toCallError(e);
    }
  }

  /** A transport for generated stubs over this channel (the stub's owner host and user are kept in the target). */
  transport(): Transport {
    return (target, input, opts) => this.call(formatTarget(stubTarget(target, opts, true)), input, opts);
  }
}

function abortable<T>(p: Promise<T>, signal: AbortSignal, target: string): Promise<T> {
  // The abandoned answer is dropped by the Connection when it arrives (late answers are counted, not errors).
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new CallError(ErrorCodes.CALL_CANCELLED, `${target}: cancelled by the caller`, 'CANCELLED'));
    if (signal.aborted) return onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    p.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}
