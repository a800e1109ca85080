/**
 * TypeScript callers of remote entry points: transports for the stubs that
 * repdb generates (`setTransport` of rex/runtime/codegen-v1), and the raw
 * `rcall(target, frame)`. Two ways in:
 *   - through the local rexd (RexClient), the normal way: many calls in flight
 *     on one connection, each on its own stream, answers matched by stream id;
 *   - straight into a CallManager in this process (tests, and rexd itself).
 */
import type { Connection } from '../protocol/connection.js';
import { ProtoError, type ProtoErrorName } from '../protocol/constants.js';
import type { CallOptions, EntryTarget, Transport } from '../runtime/codegen-v1.js';
import { ErrorCodes, RexError, type ErrorCode } from '../util/errors.js';
import type { CallIdentity, CallManager } from './manager.js';
import { formatTarget, type CallTarget } from './target.js';
import { listEntries, lookupEntry } from './entries.js';
import type { EntryInfo } from '../protocol/messages.js';

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

function stubTarget(t: EntryTarget & { name: string }, opts: CallOptions, keepOwner: boolean): CallTarget {
  const host = opts.host ?? (keepOwner ? t.host : undefined);
  return { program: programOf(t), function: t.name, ...(host ? { host } : {}), ...(keepOwner && t.user ? { user: t.user } : {}) };
}

/**
 * A transport straight into a CallManager of this process. The stub's owner
 * host and user (from the XML) are ignored: the manager serves this host as
 * its own user; `opts.host` still applies.
 */
export function managerTransport(manager: CallManager, identity?: CallIdentity): Transport {
  return async (target, input, opts) => {
    try {
      return await manager.call(stubTarget(target, opts, false), input, {
        ...(identity ? { identity } : {}),
        ...(opts.timeoutMs !== undefined ? { deadlineMs: opts.timeoutMs } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } catch (e) {
      throw toCallError(e);
    }
  };
}

/** Calls in flight per connection at most; more wait here (rexd answers BUSY above 1024 open streams). */
export const MAX_IN_FLIGHT = 512;

/** Remote calls over one protocol connection to rexd (RexClient.conn): raw frames in, frames out. */
export class CallChannel {
  private inFlight = 0;
  private readonly waiting: (() => void)[] = [];

  constructor(private readonly conn: Connection) {}

  /** Sends an input frame to `target` and resolves with the output frame. */
  async call(target: string, input: Uint8Array, opts: CallOptions & { async?: boolean } = {}): Promise<Uint8Array> {
    if (this.inFlight >= MAX_IN_FLIGHT) await new Promise<void>((r) => this.waiting.push(r));
    this.inFlight++;
    try {
      const deadlineMs = opts.timeoutMs ?? 30_000;
      const req = this.conn.request(
        { type: 'CALL', target, input, deadlineMs, ...(opts.async ? { async: true } : {}) },
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
