/**
 * spawn(), exec() and execFile() for TypeScript programs: node:child_process's
 * API, running the program on the host rexd's placement picks (or `host`).
 * The returned object is a ChildProcess-compatible EventEmitter ('spawn',
 * 'exit', 'close', 'error' in node's order; pid, exitCode, signalCode, killed,
 * kill(), stdin/stdout/stderr/stdio), every `stdio` form is honoured, and
 * exec/execFile follow node's lib/child_process.js (timeout, signal,
 * killSignal, maxBuffer, encoding, util.promisify.custom). The differences that
 * cannot be removed are in docs/EXEC.md, "The child_process API".
 */
import type { ExecException, StdioOptions } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { createReadStream, write as fsWrite } from 'node:fs';
import { constants } from 'node:os';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { envList } from '../exec/executor/env.js';
import { RELAYED_SIGNALS } from '../exec/protocol.js';
import { localProgram, RemoteProcess, type ExitStatus } from '../exec/origin/stub.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { signalName } from '../util/signals.js';
import { RexClient, type ClientOptions } from './client.js';

/** REX's own options, beyond node's: where to run, the client, the terminal. */
export interface RexSpawnOptions extends ClientOptions {
  /** Host to run on; default: the local rexd places it. */
  host?: string;
  /**
   * Run the program on a pseudo-terminal of its own, as `rex run` does when
   * stdin is a terminal: isatty() is true for it, job control and line
   * discipline apply, and stdout and stderr arrive together on `stdout` (with
   * the terminal's \r\n); `stderr` ends without data. Change the size with
   * {@link RemoteChildProcess.resize}. Needs native/build/bin/rex_pty on the executor.
   */
  pty?: boolean;
  /** Rows of the pseudo-terminal (default 24; with `pty`). */
  rows?: number;
  /** Columns of the pseudo-terminal (default 80; with `pty`). */
  cols?: number;
}

/** node:child_process's options that REX honours (or, for uid/gid, refuses), plus {@link RexSpawnOptions}. */
export interface CommonOptions extends RexSpawnOptions {
  /** Working directory on the executor (default: this process's, when it exists there). */
  cwd?: string | URL;
  /** Environment (default process.env); the executor removes the deny list of docs/EXEC.md. */
  env?: NodeJS.ProcessEnv;
  /** Kill the program with `killSignal` after this many milliseconds (0: never). */
  timeout?: number;
  /** The signal of `timeout`, of an aborted `signal` and of maxBuffer (default SIGTERM). */
  killSignal?: NodeJS.Signals | number;
  /** Aborting it kills the program with `killSignal` and emits an AbortError. */
  signal?: AbortSignal;
  /** Not supported: the program runs as the executor's rexd user; a value throws REX_ERR_USAGE. */
  uid?: number;
  /** Not supported, as `uid`. */
  gid?: number;
  /** Accepted and ignored (Windows only in node). */
  windowsHide?: boolean;
}

/** Options of {@link spawn}: node's SpawnOptions that apply, plus REX's. */
export interface SpawnOptions extends CommonOptions {
  /** argv[0] (default: the command). */
  argv0?: string;
  /** Every form of node's: 'pipe', 'ignore', 'inherit', or an array of those, streams and fd numbers (fds 0-2 only). */
  stdio?: StdioOptions;
  /** Run `command args...` through /bin/sh -c (true) or this shell. */
  shell?: boolean | string;
  /** Accepted; the remote program always runs in a session of its own. */
  detached?: boolean;
  /** Accepted and ignored (Windows only in node). */
  windowsVerbatimArguments?: boolean;
}

type PipeOnly = 'pipe' | 'overlapped' | undefined | null;
/** Spawn options whose stdio is all pipes: the child's stdin, stdout and stderr are not null. */
export type SpawnOptionsWithoutStdio = SpawnOptions & { stdio?: 'pipe' | 'overlapped' | PipeOnly[] };

/** Options of {@link execFile}. */
export interface ExecFileOptions extends CommonOptions {
  /** 'buffer' (or null) for Buffers; default 'utf8'. */
  encoding?: BufferEncoding | 'buffer' | null;
  /** Bytes of stdout or of stderr beyond which the program is killed (default 1 MiB). */
  maxBuffer?: number;
  shell?: boolean | string;
  argv0?: string;
}

/** Options of {@link exec}: a shell always runs the command (`shell` names which). */
export interface ExecOptions extends ExecFileOptions {
  shell?: string;
}

/** The errno-style error node's spawn gives for a program that cannot start. */
export interface SpawnError extends Error {
  code: string;
  errno?: number;
  syscall: string;
  path: string;
  spawnargs: string[];
}

/** What exec()'s and execFile()'s callback gets as error, as node's (ExecException, with cmd). */
export interface ExecError extends Omit<ExecException, 'stdout' | 'stderr'> {
  cmd?: string;
  stdout?: string | Buffer;
  stderr?: string | Buffer;
}

/** What exec()'s callback receives. */
export type ExecCallback = (error: ExecError | null, stdout: string, stderr: string) => void;
/** exec()'s callback with `encoding: 'buffer'`. */
export type ExecBufferCallback = (error: ExecError | null, stdout: Buffer, stderr: Buffer) => void;

/** A promise of exec()/execFile() through util.promisify, with the child, as node's PromiseWithChild. */
export type PromiseWithChild<T> = Promise<T> & { child: RemoteChildProcess };

const ERRNO: Record<string, [string, number]> = { NO_ENTRY: ['ENOENT', -2], DENIED: ['EACCES', -13] };
const MAX_BUFFER = 1024 * 1024;

/** node's ERR_INVALID_ARG_VALUE. */
function invalidArg(name: string, value: unknown, reason = 'is invalid'): TypeError {
  return Object.assign(new TypeError(`The argument '${name}' ${reason}. Received ${JSON.stringify(value) ?? String(value)}`), { code: 'ERR_INVALID_ARG_VALUE' });
}

/** node's convertToValidSignal: a signal name ('SIGTERM') from a name or number; throws ERR_UNKNOWN_SIGNAL. */
function validSignal(sig: NodeJS.Signals | number | string): NodeJS.Signals {
  const name = typeof sig === 'number' ? signalName(sig) : Object.hasOwn(constants.signals, sig) ? (sig as NodeJS.Signals) : undefined;
  if (!name) throw Object.assign(new TypeError(`Unknown signal: ${String(sig)}`), { code: 'ERR_UNKNOWN_SIGNAL' });
  return name;
}

/** node's AbortError (the one its child_process emits when `signal` aborts). */
class AbortError extends Error {
  readonly code = 'ABORT_ERR';
  constructor(message = 'The operation was aborted', options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'AbortError';
  }
}

/** Where one of the program's fds 0-2 comes from or goes to. */
type Slot = { kind: 'pipe' } | { kind: 'ignore' } | { kind: 'fd'; fd: number } | { kind: 'stream'; stream: NodeJS.ReadableStream | NodeJS.WritableStream };

/** node's getValidStdio, for a program that has fds 0-2 only (EXEC relays no others). */
function stdioSlots(stdio: StdioOptions | undefined): Slot[] {
  const list: unknown[] =
    stdio === undefined || stdio === null
      ? ['pipe', 'pipe', 'pipe']
      : typeof stdio === 'string'
        ? stdio === 'inherit'
          ? [0, 1, 2]
          : stdio === 'pipe' || stdio === 'overlapped' || stdio === 'ignore'
            ? [stdio, stdio, stdio]
            : (() => {
                throw invalidArg('stdio', stdio);
              })()
        : Array.isArray(stdio)
          ? [...(stdio as unknown[])]
          : (() => {
              throw invalidArg('stdio', stdio);
            })();
  while (list.length < 3) list.push(undefined);
  return list.map((s, i): Slot => {
    if (s === null || s === undefined) s = i < 3 ? 'pipe' : 'ignore';
    if (s === 'ignore') return { kind: 'ignore' };
    if (i >= 3) throw new RexError(ErrorCodes.USAGE, `spawn(): stdio[${i}] ${JSON.stringify(typeof s === 'object' ? 'a stream' : s)}: a remote program has only fds 0, 1 and 2 relayed; give 'ignore' (or nothing) beyond them`);
    if (s === 'pipe' || s === 'overlapped' || (typeof s === 'number' && s < 0)) return { kind: 'pipe' };
    if (s === 'ipc') throw new RexError(ErrorCodes.USAGE, `spawn(): stdio 'ipc': a remote program has no IPC channel to this process`);
    if (s === 'inherit') return { kind: 'fd', fd: i };
    if (typeof s === 'number') return { kind: 'fd', fd: s };
    if (typeof s === 'object' && typeof (s as { fd?: unknown }).fd === 'number') return { kind: 'fd', fd: (s as { fd: number }).fd };
    if (typeof s === 'object' && (typeof (s as { write?: unknown }).write === 'function' || typeof (s as { on?: unknown }).on === 'function'))
      return { kind: 'stream', stream: s as NodeJS.ReadableStream };
    throw invalidArg('stdio', s);
  });
}

/** Writes every byte of `data` at the fd's position, then calls `done` (errors drop the rest, as a closed reader would). */
function fdWriter(fd: number): (data: Buffer, done: () => void) => void {
  let chain = Promise.resolve();
  const writeAll = (data: Buffer): Promise<void> =>
    new Promise<void>((resolve) => {
      const step = (off: number): void => {
        if (off >= data.length) return resolve();
        fsWrite(fd, data, off, data.length - off, null, (err, n) => (err ? resolve() : step(off + n)));
      };
      step(0);
    });
  return (data, done) => {
    chain = chain.then(() => writeAll(data)).then(done);
  };
}

/** The normalized request of one spawn: node's normalizeSpawnArguments. */
interface Normalized {
  file: string;
  /** argv, argv[0] included. */
  args: string[];
  opts: SpawnOptions;
}

function normalizeSpawn(file: string, args: readonly string[] | undefined, options: SpawnOptions | undefined): Normalized {
  if (typeof file !== 'string') throw Object.assign(new TypeError(`The "file" argument must be of type string. Received ${typeof file}`), { code: 'ERR_INVALID_ARG_TYPE' });
  if (file.length === 0) throw invalidArg('file', file, 'cannot be empty');
  const opts: SpawnOptions = { ...options };
  if (opts.uid != null || opts.gid != null) throw new RexError(ErrorCodes.USAGE, `spawn(): uid and gid cannot be set: the program runs as the user of the executor's rexd`);
  if (opts.shell != null && typeof opts.shell !== 'boolean' && typeof opts.shell !== 'string') throw Object.assign(new TypeError(`The "options.shell" property must be of type boolean or string`), { code: 'ERR_INVALID_ARG_TYPE' });
  if (opts.timeout != null && (!Number.isInteger(opts.timeout) || opts.timeout < 0)) throw Object.assign(new RangeError(`The value of "timeout" is out of range. It must be an unsigned integer. Received ${opts.timeout}`), { code: 'ERR_OUT_OF_RANGE' });
  if (opts.signal != null && !(opts.signal instanceof AbortSignal)) throw Object.assign(new TypeError(`The "options.signal" property must be an instance of AbortSignal`), { code: 'ERR_INVALID_ARG_TYPE' });
  let argv = [...(args ?? [])];
  if (opts.shell) {
    const command = [file, ...argv].join(' ');
    file = typeof opts.shell === 'string' ? opts.shell : '/bin/sh';
    argv = ['-c', command];
  }
  argv.unshift(typeof opts.argv0 === 'string' ? opts.argv0 : file);
  return { file, args: argv, opts };
}

/** A program running on a cluster host: node's ChildProcess, with `host` and {@link resize} besides. */
export class RemoteChildProcess extends EventEmitter {
  /** The program's stdin when stdio[0] is 'pipe', else null. */
  stdin: Writable | null = null;
  /** Its stdout when stdio[1] is 'pipe', else null. */
  stdout: Readable | null = null;
  /** Its stderr when stdio[2] is 'pipe', else null. */
  stderr: Readable | null = null;
  /** The three (or more: null beyond fd 2) as node's child.stdio. */
  readonly stdio: (Readable | Writable | null)[];
  /** The pid on the executor host (undefined until 'spawn'). */
  pid: number | undefined;
  /** The host it runs on (undefined until 'spawn'). */
  host: string | undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  killed = false;
  /** Always false: there is no IPC channel. */
  readonly connected = false;
  readonly spawnfile: string;
  readonly spawnargs: string[];
  private rp: RemoteProcess | undefined;
  private client: RexClient | undefined;
  private early: string[] = [];
  /** A resize asked before the program started: sent once it runs. */
  private earlySize: { rows: number; cols: number } | undefined;
  /** The pseudo-terminal's size asked for, when spawned with `pty`. */
  private readonly size: { rows: number; cols: number } | undefined;
  /** Set once it failed to start or has ended: nothing more can reach it. */
  private over = false;
  private spawned = false;
  /** Output `done` callbacks held back while a consumer does not read (backpressure to the executor). */
  private held = new Map<number, (() => void)[]>();
  /** Where each of fds 1 and 2 goes (data undefined: EOF). */
  private readonly outputs = new Map<number, (data: Buffer | undefined, done: () => void) => void>();
  /** Undoes the feeding of stdin from a local source once the program has ended. */
  private readonly cleanups: (() => void)[] = [];
  /** node's _closesNeeded/_closesGot: 'close' after 'exit' and the end of every output pipe. */
  private closesNeeded = 1;
  private closesGot = 0;

  /** Use {@link spawn}: `file` and `args` (argv[0] first) as node's normalizeSpawnArguments leaves them. */
  constructor(file: string, args: readonly string[], opts: SpawnOptions) {
    super();
    this.spawnfile = file;
    this.spawnargs = [...args];
    this.size = opts.pty ? { rows: terminalSide(opts.rows, 24, 'rows'), cols: terminalSide(opts.cols, 80, 'cols') } : undefined;
    const slots = stdioSlots(opts.stdio);
    this.stdio = slots.map(() => null);
    const writers = new Map<number, (data: Buffer, done: () => void) => void>(); // one per target fd: stdout and stderr into one file keep their order
    for (const fd of [1, 2]) {
      const slot = slots[fd]!;
      if (slot.kind === 'pipe') {
        const stream = new Readable({
          read: () => {
            for (const done of this.held.get(fd)?.splice(0) ?? []) done();
          },
        });
        stream.once('close', () => {
          for (const done of this.held.get(fd)?.splice(0) ?? []) done();
          this.maybeClose();
        });
        this.closesNeeded++;
        this.stdio[fd] = stream;
        this.outputs.set(fd, (data, done) => {
          if (!data) return void stream.push(null);
          if (stream.destroyed || stream.push(data)) done();
          else this.held.set(fd, [...(this.held.get(fd) ?? []), done]);
        });
      } else if (slot.kind === 'ignore') this.outputs.set(fd, (_data, done) => done());
      else {
        const target: NodeJS.WritableStream | number = slot.kind === 'stream' ? (slot.stream as NodeJS.WritableStream) : slot.fd === 1 ? process.stdout : slot.fd === 2 ? process.stderr : slot.fd;
        if (typeof target === 'number' && !writers.has(target)) writers.set(target, fdWriter(target));
        const write = typeof target === 'number' ? writers.get(target)! : (data: Buffer, done: () => void) => void target.write(data, () => done());
        this.outputs.set(fd, (data, done) => (data ? write(data, done) : done()));
      }
    }
    this.stdout = this.stdio[1] as Readable | null;
    this.stderr = this.stdio[2] as Readable | null;
    const input = slots[0]!;
    if (input.kind === 'pipe') {
      this.stdin = new Writable({
        write: (chunk: Buffer, _enc, cb) => {
          const go = (): void => {
            if (!this.rp || this.over) return void cb(Object.assign(new Error('write EPIPE'), { code: 'EPIPE' }));
            if (this.rp.write(chunk)) cb();
            else this.rp.once('drain', () => cb());
          };
          if (this.rp) go();
          else this.once('spawn', go);
        },
        final: (cb) => {
          const end = (): void => {
            if (!this.over) this.rp?.end();
            cb();
          };
          if (this.rp) end();
          else this.once('spawn', end);
        },
      });
      this.stdin.on('error', () => {}); // like node's: a program that is gone cannot be written to; 'error' on the child says why
      this.stdio[0] = this.stdin;
    }
    void this.start(opts, input);
  }

  /** Feeds the program's stdin from a local source (an fd, a stream, this process's stdin), with backpressure. */
  private feed(rp: RemoteProcess, slot: Slot): void {
    if (slot.kind === 'pipe') return;
    if (slot.kind === 'ignore') return void rp.end();
    const src: NodeJS.ReadableStream = slot.kind === 'stream' ? (slot.stream as NodeJS.ReadableStream) : slot.fd === 0 ? process.stdin : createReadStream('', { fd: slot.fd, autoClose: false });
    let ended = false;
    const onData = (d: Buffer | string): void => {
      if (ended || this.over) return;
      if (!rp.write(typeof d === 'string' ? Buffer.from(d) : d)) {
        src.pause();
        rp.once('drain', () => src.resume());
      }
    };
    const onEnd = (): void => {
      if (ended || this.over) return;
      ended = true;
      rp.end();
    };
    src.on('data', onData);
    src.once('end', onEnd);
    src.resume();
    this.cleanups.push(() => {
      ended = true;
      src.off('data', onData);
      src.off('end', onEnd);
      src.pause(); // stop reading this process's stdin (or the fd) for a program that is gone
    });
  }

  private async start(opts: SpawnOptions, input: Slot): Promise<void> {
    try {
      this.client = await RexClient.connect(opts);
      // A resize() asked before now goes in the EXEC itself: the terminal has that size before the program runs.
      const size = this.size && (this.earlySize ?? this.size);
      this.earlySize = undefined;
      const envObj = opts.env ?? process.env;
      const env = envList(envObj);
      const cwd = opts.cwd === undefined || opts.cwd === null ? process.cwd() : opts.cwd instanceof URL ? fileURLToPath(opts.cwd) : opts.cwd;
      const local = localProgram(this.spawnfile, cwd, envObj.PATH);
      this.rp = await RemoteProcess.start(
        this.client.conn,
        { path: local?.path ?? this.spawnfile, argv: this.spawnargs, env, cwd, ...(opts.host ? { host: opts.host } : {}), ...(local ? { sha256: local.sha256 } : {}), ...(size ? { pty: size } : {}) },
        (fd, data, done) => {
          const out = this.outputs.get(fd === 2 ? 2 : 1)!;
          out(data, done);
        },
      );
    } catch (e) {
      this.fail(e as Error & { proto?: string });
      return;
    }
    const rp = this.rp;
    this.pid = rp.pid;
    this.host = rp.host;
    this.spawned = true;
    this.closesNeeded++; // and 'close' waits until every byte was handed on (written into a file, a stream, this process's stdout)
    // A resize() that came while the EXEC was on its way: sent before anything a 'spawn' listener writes.
    const late = this.earlySize as { rows: number; cols: number } | undefined; // set by resize() during the awaits above
    if (late) rp.winsize(late.rows, late.cols);
    this.emit('spawn');
    for (const s of this.early.splice(0)) rp.signal(s);
    this.feed(rp, input);
    // EXIT may have come with STARTED, before this function resumed: then it is handled now, after 'spawn'.
    const onStatus = (s: ExitStatus): void => this.onExit(s.code ?? null, s.signal ? (`SIG${s.signal}` as NodeJS.Signals) : null);
    if (rp.ended) onStatus(rp.ended);
    else rp.once('status', onStatus);
    try {
      await rp.exited;
    } catch (e) {
      this.client.close();
      if (!this.over) {
        for (const fd of [1, 2]) this.outputs.get(fd)!(undefined, () => {});
        this.emit('error', e);
        this.onExit(null, 'SIGKILL');
      }
      this.maybeClose();
      return;
    }
    this.client.close();
    for (const fd of [1, 2]) this.outputs.get(fd)!(undefined, () => {}); // EOF even for a stream the executor sent none for (a pty's stderr)
    this.maybeClose();
  }

  private fail(e: Error & { proto?: string }): void {
    this.over = true;
    this.client?.close();
    const [code, errno] = ERRNO[e.proto ?? ''] ?? ['EHOSTUNREACH', -113];
    const err = Object.assign(new Error(`spawn ${this.spawnfile} ${code}: ${e.message}`), { errno, code, syscall: `spawn ${this.spawnfile}`, path: this.spawnfile, spawnargs: this.spawnargs.slice(1) }) as SpawnError;
    this.exitCode = errno;
    this.stdin?.destroy();
    this.stdout?.push(null);
    this.stderr?.push(null);
    this.emit('error', err);
    // As node after a failed start (pid 0): 'close' needs no stream's end.
    this.closesNeeded = 1;
    this.maybeClose();
  }

  /** node's onexit: the status, stdin destroyed, 'exit', unread output drained, then 'close' once the pipes have ended. */
  private onExit(code: number | null, signal: NodeJS.Signals | null): void {
    if (this.over) return;
    this.over = true;
    if (signal) this.signalCode = signal;
    else this.exitCode = code;
    this.stdin?.destroy();
    for (const c of this.cleanups.splice(0)) c();
    this.emit('exit', this.exitCode, this.signalCode);
    // As node's flushStdio: output nobody reads is drained so that 'close' can come.
    process.nextTick(() => {
      for (const s of [this.stdout, this.stderr]) if (s && s.readable && !s.destroyed) s.resume();
    });
    this.maybeClose();
  }

  private maybeClose(): void {
    if (++this.closesGot === this.closesNeeded) this.emit('close', this.exitCode, this.signalCode);
  }

  /**
   * Changes the size of the program's pseudo-terminal (spawned with `pty: true`):
   * the program sees the new size and gets SIGWINCH, as after resizing a local
   * terminal window. Returns false when it has no terminal, did not start or
   * has ended; throws REX_ERR_USAGE for a size that is not 1..65535.
   */
  resize(rows: number, cols: number): boolean {
    if (!this.size || this.over) return false;
    const size = { rows: terminalSide(rows, 24, 'rows'), cols: terminalSide(cols, 80, 'cols') };
    if (this.rp) this.rp.winsize(size.rows, size.cols);
    else this.earlySize = size;
    return true;
  }

  /**
   * Sends `signal` (default SIGTERM) to the remote program, as node's kill():
   * true when it was sent, false when the program has ended (or never
   * started) or the signal is not one EXEC relays (docs/EXEC.md); an unknown
   * signal throws ERR_UNKNOWN_SIGNAL. Signal 0 only asks whether it runs.
   */
  kill(signal?: NodeJS.Signals | number): boolean {
    const name = signal === 0 ? 0 : validSignal(signal ?? 'SIGTERM');
    if (this.over) return false;
    if (name !== 0) {
      const bare = name.slice(3);
      if (!RELAYED_SIGNALS.includes(bare)) return false;
      if (this.rp) this.rp.signal(bare);
      else this.early.push(bare);
    }
    this.killed = true;
    return true;
  }

  /** As node's: nothing to keep alive or release separately (the connection to rexd holds the loop while the program runs). */
  ref(): void {}
  unref(): void {}

  /** Whether 'spawn' has been emitted (the program runs or ran). */
  get started(): boolean {
    return this.spawned;
  }
}

/** A child whose stdin, stdout and stderr are pipes (stdio left at 'pipe'). */
export interface RemoteChildProcessWithoutNullStreams extends RemoteChildProcess {
  stdin: Writable;
  stdout: Readable;
  stderr: Readable;
}

/** A terminal dimension from spawn()'s options, checked: a bad one is thrown at once, as node does for bad options. */
function terminalSide(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw new RexError(ErrorCodes.USAGE, `spawn(): ${name} ${v}: expected an integer from 1 to 65535`);
  return v;
}

/** node's abortChildProcess: the kill, and an AbortError when it was sent. */
function abortChild(child: RemoteChildProcess, killSignal: NodeJS.Signals, reason: unknown): void {
  try {
    if (child.kill(killSignal)) child.emit('error', new AbortError(undefined, { cause: reason }));
  } catch (err) {
    child.emit('error', err);
  }
}

/** spawn() with its arguments normalized and REX's defaults merged in. */
function spawnNormalized(file: string, args: readonly string[] | undefined, options: SpawnOptions | undefined): RemoteChildProcess {
  const n = normalizeSpawn(file, args, options);
  const killSignal = validSignal(n.opts.killSignal ?? 'SIGTERM');
  const child = new RemoteChildProcess(n.file, n.args, n.opts);
  if (n.opts.timeout && n.opts.timeout > 0) {
    const t = setTimeout(() => {
      try {
        child.kill(killSignal);
      } catch (err) {
        child.emit('error', err);
      }
    }, n.opts.timeout);
    child.once('exit', () => clearTimeout(t));
    child.once('error', () => child.exitCode !== null && clearTimeout(t));
  }
  const signal = n.opts.signal;
  if (signal) {
    // node's child is running when its abort listener first can run; a REX one may still be on its way: the abort waits for 'spawn'.
    const onAbort = (): void => {
      if (child.started) abortChild(child, killSignal, signal.reason);
      else child.once('spawn', () => abortChild(child, killSignal, signal.reason));
    };
    if (signal.aborted) process.nextTick(onAbort);
    else {
      signal.addEventListener('abort', onAbort, { once: true });
      child.once('exit', () => signal.removeEventListener('abort', onAbort));
    }
  }
  return child;
}

/** Splits spawn()'s optional `args` from `options`, as node does. */
function spawnArgs(args: unknown, options: unknown): [readonly string[] | undefined, SpawnOptions | undefined] {
  if (Array.isArray(args)) return [args as string[], options as SpawnOptions | undefined];
  if (args == null) return [undefined, options as SpawnOptions | undefined];
  if (typeof args === 'object') return [undefined, args as SpawnOptions];
  throw Object.assign(new TypeError(`The "args" argument must be of type object. Received type ${typeof args}`), { code: 'ERR_INVALID_ARG_TYPE' });
}

/** node's normalizeExecFileArgs. */
function execFileArgs(args: unknown, options: unknown, callback: unknown): { args: string[]; options: ExecFileOptions; callback: ((e: ExecError | null, o: string | Buffer, r: string | Buffer) => void) | undefined } {
  let a: string[] | null = null;
  if (Array.isArray(args)) a = [...(args as string[])];
  else if (args != null && typeof args === 'object') {
    callback = options;
    options = args;
  } else if (typeof args === 'function') {
    callback = args;
    options = null;
  }
  if (typeof options === 'function') {
    callback = options;
    options = null;
  }
  if (callback != null && typeof callback !== 'function') throw Object.assign(new TypeError('The "callback" argument must be of type function'), { code: 'ERR_INVALID_ARG_TYPE' });
  return { args: a ?? [], options: (options ?? {}) as ExecFileOptions, callback: callback as never };
}

/** node's execFile, over {@link spawnNormalized}: buffering, timeout, maxBuffer, the Error of a failed command. */
function execFileImpl(file: string, args: string[], options: ExecFileOptions, callback: ((e: ExecError | null, o: string | Buffer, r: string | Buffer) => void) | undefined): RemoteChildProcess {
  const o = { encoding: 'utf8' as BufferEncoding | 'buffer' | null, timeout: 0, maxBuffer: MAX_BUFFER, killSignal: 'SIGTERM' as NodeJS.Signals | number, shell: false as boolean | string, ...options };
  if (!Number.isInteger(o.timeout) || o.timeout < 0) throw Object.assign(new RangeError(`The value of "timeout" is out of range. It must be an unsigned integer. Received ${o.timeout}`), { code: 'ERR_OUT_OF_RANGE' });
  if (typeof o.maxBuffer !== 'number' || Number.isNaN(o.maxBuffer) || o.maxBuffer < 0) throw Object.assign(new RangeError(`The value of "options.maxBuffer" is out of range. It must be a positive number. Received ${o.maxBuffer}`), { code: 'ERR_OUT_OF_RANGE' });
  const killSignal = validSignal(o.killSignal);
  // As node's execFile: its own timeout and killSignal, no argv0; the rest (cwd, env, shell, signal, REX's) goes to spawn.
  const { encoding: _e, maxBuffer: _m, timeout: _t, killSignal: _k, argv0: _a, ...spawnOpts } = o;
  const child = spawnNormalized(file, args, { ...spawnOpts, stdio: 'pipe' });
  const encoding = o.encoding && o.encoding !== 'buffer' && Buffer.isEncoding(o.encoding) ? o.encoding : null;
  const out: (string | Buffer)[] = [];
  const err: (string | Buffer)[] = [];
  let outLen = 0;
  let errLen = 0;
  let killed = false;
  let exited = false;
  let timer: NodeJS.Timeout | undefined;
  let ex: ExecError | null = null;
  let cmd = file;

  const exithandler = (code?: number | null, signal?: NodeJS.Signals | null): void => {
    if (exited) return;
    exited = true;
    if (timer) clearTimeout(timer);
    timer = undefined;
    if (!callback) return;
    const stdout = encoding || child.stdout?.readableEncoding ? out.join('') : Buffer.concat(out as Buffer[]);
    const stderr = encoding || child.stderr?.readableEncoding ? err.join('') : Buffer.concat(err as Buffer[]);
    if (!ex && code === 0 && signal === null) return callback(null, stdout, stderr);
    if (args.length) cmd += ` ${args.join(' ')}`;
    if (!ex) ex = Object.assign(new Error(`Command failed: ${cmd}\n${String(stderr)}`), { code: code !== undefined && code !== null && code < 0 ? (ERRNO_NAMES[code] ?? code) : code, killed: child.killed || killed, signal }) as ExecError;
    ex.cmd = cmd;
    callback(ex, stdout, stderr);
  };
  const kill = (): void => {
    child.stdout?.destroy();
    child.stderr?.destroy();
    killed = true;
    try {
      child.kill(killSignal);
    } catch (e) {
      ex = e as ExecError;
      exithandler();
    }
  };
  if (o.timeout > 0)
    timer = setTimeout(() => {
      kill();
      timer = undefined;
    }, o.timeout);
  const collect = (stream: Readable | null, chunks: (string | Buffer)[], which: 'stdout' | 'stderr'): void => {
    if (!stream) return;
    if (encoding) stream.setEncoding(encoding);
    stream.on('data', (chunk: string | Buffer) => {
      if (o.maxBuffer === Infinity) return void chunks.push(chunk);
      const enc = stream.readableEncoding;
      const length = enc ? Buffer.byteLength(chunk as string, enc) : chunk.length;
      const total = (which === 'stdout' ? (outLen += length) : (errLen += length));
      if (total > o.maxBuffer) {
        const truncated = o.maxBuffer - (total - length);
        chunks.push(chunk.slice(0, truncated));
        ex = Object.assign(new RangeError(`${which} maxBuffer length exceeded`), { code: 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER' }) as unknown as ExecError;
        kill();
      } else chunks.push(chunk);
    });
  };
  collect(child.stdout, out, 'stdout');
  collect(child.stderr, err, 'stderr');
  child.addListener('close', exithandler);
  child.addListener('error', (e: ExecError) => {
    ex = e;
    child.stdout?.destroy();
    child.stderr?.destroy();
    exithandler();
  });
  return child;
}

const ERRNO_NAMES: Record<number, string> = { [-2]: 'ENOENT', [-13]: 'EACCES', [-113]: 'EHOSTUNREACH' };

/** node's customPromiseExecFunction: resolves { stdout, stderr }, rejects with the error carrying them, `.child` the child. */
function promised<A extends unknown[]>(orig: (...args: [...A, (e: ExecError | null, o: string | Buffer, r: string | Buffer) => void]) => RemoteChildProcess) {
  return (...args: A): PromiseWithChild<{ stdout: string | Buffer; stderr: string | Buffer }> => {
    let child!: RemoteChildProcess;
    const promise = new Promise<{ stdout: string | Buffer; stderr: string | Buffer }>((resolve, reject) => {
      child = orig(...args, (err, stdout, stderr) => {
        if (err !== null) {
          err.stdout = stdout;
          err.stderr = stderr;
          reject(err);
        } else resolve({ stdout, stderr });
      });
    }) as PromiseWithChild<{ stdout: string | Buffer; stderr: string | Buffer }>;
    promise.child = child;
    return promise;
  };
}

/** node:child_process's shape: what {@link childProcess} returns, and what this module exports. */
export interface ChildProcessModule {
  spawn: typeof spawn;
  exec: typeof exec;
  execFile: typeof execFile;
}

/**
 * A node:child_process-shaped module whose every call carries `defaults`
 * (REX's `host`, `socket`, ..., or any node option) under its own options:
 * `const cp = childProcess({ host: 'beta' }); await promisify(cp.exec)('uname -n')`.
 */
export function childProcess(defaults: SpawnOptions & ExecFileOptions): ChildProcessModule {
  const merge = <T extends object>(o: T | null | undefined): T => ({ ...defaults, ...o }) as T;
  const boundSpawn = (file: string, args?: unknown, options?: unknown): RemoteChildProcess => {
    const [a, o] = spawnArgs(args, options);
    return spawnNormalized(file, a, merge(o));
  };
  const boundExecFile = (file: string, args?: unknown, options?: unknown, callback?: unknown): RemoteChildProcess => {
    const n = execFileArgs(args, options, callback);
    return execFileImpl(file, n.args, merge(n.options), n.callback);
  };
  const boundExec = (command: string, options?: unknown, callback?: unknown): RemoteChildProcess => {
    if (typeof command !== 'string') throw Object.assign(new TypeError(`The "command" argument must be of type string. Received ${typeof command}`), { code: 'ERR_INVALID_ARG_TYPE' });
    if (typeof options === 'function') {
      callback = options;
      options = undefined;
    }
    const o = { ...(options as ExecOptions | undefined) };
    o.shell = typeof o.shell === 'string' ? o.shell : (true as unknown as string);
    return boundExecFile(command, o, callback);
  };
  Object.defineProperty(boundExec, promisify.custom, { enumerable: false, value: promised(boundExec as (...a: unknown[]) => RemoteChildProcess) });
  Object.defineProperty(boundExecFile, promisify.custom, { enumerable: false, value: promised(boundExecFile as (...a: unknown[]) => RemoteChildProcess) });
  return { spawn: boundSpawn as typeof spawn, exec: boundExec as unknown as typeof exec, execFile: boundExecFile as unknown as typeof execFile };
}

const plain = childProcess({});

/** Runs `command` with `args` on the cluster, as child_process.spawn does locally. */
export function spawn(command: string, options?: SpawnOptionsWithoutStdio): RemoteChildProcessWithoutNullStreams;
export function spawn(command: string, options: SpawnOptions): RemoteChildProcess;
export function spawn(command: string, args?: readonly string[], options?: SpawnOptionsWithoutStdio): RemoteChildProcessWithoutNullStreams;
export function spawn(command: string, args: readonly string[], options: SpawnOptions): RemoteChildProcess;
export function spawn(command: string, args?: readonly string[] | SpawnOptions, options?: SpawnOptions): RemoteChildProcess {
  return (plain.spawn as (c: string, a?: unknown, o?: unknown) => RemoteChildProcess)(command, args, options);
}

/**
 * Runs `command` through /bin/sh -c (or `shell`) on the cluster and buffers its
 * output, as child_process.exec does: the callback gets an Error when the
 * command failed (code, killed, signal, cmd), and stdout and stderr.
 * util.promisify(exec) resolves { stdout, stderr }.
 */
export function exec(command: string, callback?: ExecCallback): RemoteChildProcessWithoutNullStreams;
export function exec(command: string, options: ExecOptions & { encoding: 'buffer' | null }, callback?: ExecBufferCallback): RemoteChildProcessWithoutNullStreams;
export function exec(command: string, options: ExecOptions | undefined | null, callback?: ExecCallback): RemoteChildProcessWithoutNullStreams;
export function exec(command: string, options?: unknown, callback?: unknown): RemoteChildProcessWithoutNullStreams {
  return (plain.exec as unknown as (c: string, o?: unknown, cb?: unknown) => RemoteChildProcessWithoutNullStreams)(command, options, callback);
}
Object.defineProperty(exec, promisify.custom, { enumerable: false, value: (plain.exec as unknown as Record<symbol, unknown>)[promisify.custom] });
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace exec {
  /** What util.promisify(exec) gives (TypeScript reads this name, as for node's exec). */
  function __promisify__(command: string, options?: ExecOptions & { encoding?: BufferEncoding }): PromiseWithChild<{ stdout: string; stderr: string }>;
  function __promisify__(command: string, options: ExecOptions & { encoding: 'buffer' | null }): PromiseWithChild<{ stdout: Buffer; stderr: Buffer }>;
}

/**
 * Runs `file` with `args` (no shell unless `shell`) on the cluster and buffers
 * its output, as child_process.execFile does. util.promisify(execFile)
 * resolves { stdout, stderr }.
 */
export function execFile(file: string, callback?: ExecCallback): RemoteChildProcessWithoutNullStreams;
export function execFile(file: string, args: readonly string[] | undefined | null, callback?: ExecCallback): RemoteChildProcessWithoutNullStreams;
export function execFile(file: string, options: ExecFileOptions & { encoding: 'buffer' | null }, callback?: ExecBufferCallback): RemoteChildProcessWithoutNullStreams;
export function execFile(file: string, options: ExecFileOptions | undefined | null, callback?: ExecCallback): RemoteChildProcessWithoutNullStreams;
export function execFile(file: string, args: readonly string[] | undefined | null, options: ExecFileOptions & { encoding: 'buffer' | null }, callback?: ExecBufferCallback): RemoteChildProcessWithoutNullStreams;
export function execFile(file: string, args: readonly string[] | undefined | null, options: ExecFileOptions | undefined | null, callback?: ExecCallback): RemoteChildProcessWithoutNullStreams;
export function execFile(file: string, args?: unknown, options?: unknown, callback?: unknown): RemoteChildProcessWithoutNullStreams {
  return (plain.execFile as unknown as (f: string, a?: unknown, o?: unknown, cb?: unknown) => RemoteChildProcessWithoutNullStreams)(file, args, options, callback);
}
Object.defineProperty(execFile, promisify.custom, { enumerable: false, value: (plain.execFile as unknown as Record<symbol, unknown>)[promisify.custom] });
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace execFile {
  /** What util.promisify(execFile) gives. */
  function __promisify__(file: string, args?: readonly string[] | null, options?: ExecFileOptions & { encoding?: BufferEncoding }): PromiseWithChild<{ stdout: string; stderr: string }>;
  function __promisify__(file: string, args: readonly string[] | null | undefined, options: ExecFileOptions & { encoding: 'buffer' | null }): PromiseWithChild<{ stdout: Buffer; stderr: Buffer }>;
  function __promisify__(file: string, options?: ExecFileOptions & { encoding?: BufferEncoding }): PromiseWithChild<{ stdout: string; stderr: string }>;
}
