/**
 * spawn() and exec() for TypeScript programs, mirroring node:child_process but
 * running the program on the host rexd's placement picks (or `host`):
 * a ChildProcess-like object with stdin/stdout/stderr streams, 'spawn',
 * 'exit', 'close' and 'error' events, and kill() (docs/EXEC.md).
 */
import { EventEmitter } from 'node:events';
import { Readable, Writable } from 'node:stream';
import { envList } from '../exec/executor/env.js';
import { localProgram, RemoteProcess, type ExitStatus } from '../exec/origin/stub.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { signalName } from '../util/signals.js';
import { RexClient, type ClientOptions } from './client.js';

/** Options of {@link spawn}: where and how to run, beyond node's cwd and env. */
export interface SpawnOptions extends ClientOptions {
  /** Host to run on; default: the local rexd places it. */
  host?: string;
  /** Working directory on the executor (default: this process's, when it exists there). */
  cwd?: string;
  /** Environment (default process.env); the executor removes the deny list of docs/EXEC.md. */
  env?: NodeJS.ProcessEnv;
  /** argv[0] (default: the command). */
  argv0?: string;
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

/** The errno-style error node's spawn gives for a program that cannot start. */
export interface SpawnError extends Error {
  code: string;
  errno?: number;
  syscall: string;
  path: string;
  spawnargs: string[];
}

const ERRNO: Record<string, [string, number]> = { NO_ENTRY: ['ENOENT', -2], DENIED: ['EACCES', -13] };

/** A program running on a cluster host, shaped like node's ChildProcess. */
export class RemoteChildProcess extends EventEmitter {
  readonly stdin: Writable;
  readonly stdout: Readable;
  readonly stderr: Readable;
  /** The pid on the executor host (undefined until 'spawn'). */
  pid: number | undefined;
  /** The host it runs on (undefined until 'spawn'). */
  host: string | undefined;
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  killed = false;
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
  /** Output `done` callbacks held back while a consumer does not read (backpressure to the executor). */
  private held = new Map<number, (() => void)[]>();

  constructor(command: string, args: readonly string[], opts: SpawnOptions) {
    super();
    this.spawnfile = command;
    this.spawnargs = [opts.argv0 ?? command, ...args];
    this.size = opts.pty ? { rows: terminalSide(opts.rows, 24, 'rows'), cols: terminalSide(opts.cols, 80, 'cols') } : undefined;
    const reader = (fd: number) =>
      new Readable({
        read: () => {
          for (const done of this.held.get(fd)?.splice(0) ?? []) done();
        },
      });
    this.stdout = reader(1);
    this.stderr = reader(2);
    this.stdin = new Writable({
      write: (chunk: Buffer, _enc, cb) => {
        const go = (): void => {
          if (!this.rp) return void cb(new Error('the program is not running'));
          if (this.rp.write(chunk)) cb();
          else this.rp.once('drain', () => cb());
        };
        if (this.rp) go();
        else this.once('spawn', go);
      },
      final: (cb) => {
        if (this.rp) {
          this.rp.end();
          cb();
        } else
          this.once('spawn', () => {
            this.rp?.end();
            cb();
          });
      },
    });
    this.stdin.on('error', () => {}); // like node's: a program that is gone cannot be written to; 'error' on the child says why
    void this.start(opts);
  }

  private async start(opts: SpawnOptions): Promise<void> {
    try {
      this.client = await RexClient.connect(opts);
      // A resize() asked before now goes in the EXEC itself: the terminal has that size before the program runs.
      const size = this.size && (this.earlySize ?? this.size);
      this.earlySize = undefined;
      const env = envList(opts.env ?? process.env);
      const local = localProgram(this.spawnfile, opts.cwd ?? process.cwd(), (opts.env ?? process.env).PATH);
      this.rp = await RemoteProcess.start(
        this.client.conn,
        { path: local?.path ?? this.spawnfile, argv: this.spawnargs, env, cwd: opts.cwd ?? process.cwd(), ...(opts.host ? { host: opts.host } : {}), ...(local ? { sha256: local.sha256 } : {}), ...(size ? { pty: size } : {}) },
        (fd, data, done) => {
          const stream = fd === 2 ? this.stderr : this.stdout;
          if (!data) {
            stream.push(null);
            return;
          }
          if (stream.push(data)) done();
          else this.held.set(fd, [...(this.held.get(fd) ?? []), done]);
        },
      );
    } catch (e) {
      this.fail(e as Error & { proto?: string });
      return;
    }
    this.pid = this.rp.pid;
    this.host = this.rp.host;
    // A resize() that came while the EXEC was on its way: sent before anything a 'spawn' listener writes.
    const late = this.earlySize as { rows: number; cols: number } | undefined; // set by resize() during the awaits above
    if (late) this.rp.winsize(late.rows, late.cols);
    this.emit('spawn');
    for (const s of this.early.splice(0)) this.rp.signal(s);
    let status: ExitStatus;
    try {
      status = await this.rp.exited;
    } catch (e) {
      this.client.close();
      this.stdout.push(null);
      this.stderr.push(null);
      this.emit('error', e);
      this.finish(null, 'SIGKILL');
      return;
    }
    this.client.close();
    this.finish(status.code ?? null, status.signal ? (`SIG${status.signal}` as NodeJS.Signals) : null);
  }

  private fail(e: Error & { proto?: string }): void {
    this.over = true;
    this.client?.close();
    const [code, errno] = ERRNO[e.proto ?? ''] ?? ['EHOSTUNREACH', -113];
    const err = Object.assign(new Error(`spawn ${this.spawnfile} ${code}: ${e.message}`), { code, errno, syscall: `spawn ${this.spawnfile}`, path: this.spawnfile, spawnargs: this.spawnargs.slice(1) }) as SpawnError;
    this.stdout.push(null);
    this.stderr.push(null);
    this.emit('error', err);
    this.emit('close', -2, null);
  }

  private finish(code: number | null, signal: NodeJS.Signals | null): void {
    this.over = true;
    this.exitCode = code;
    this.signalCode = signal;
    this.emit('exit', code, signal);
    // 'close' after the output streams have ended, as node does.
    let open = 2;
    const closed = (): void => {
      if (--open === 0) this.emit('close', code, signal);
    };
    for (const s of [this.stdout, this.stderr]) {
      if (s.readableEnded) closed();
      else {
        s.once('end', closed);
        s.once('close', closed);
        s.resume(); // nobody reads it: drain so that 'close' can come (node does the same for unread pipes)
      }
    }
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

  /** Sends `signal` (default SIGTERM) to the remote program; true when it was sent. */
  kill(signal: NodeJS.Signals | number = 'SIGTERM'): boolean {
    if (this.exitCode !== null || this.signalCode !== null) return false;
    const name = typeof signal === 'number' ? signalName(signal) : signal;
    if (!name) return false;
    this.killed = true;
    if (this.rp) this.rp.signal(name);
    else this.early.push(name);
    return true;
  }
}

/** A terminal dimension from spawn()'s options, checked: a bad one is thrown at once, as node does for bad options. */
function terminalSide(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isInteger(v) || v < 1 || v > 65535) throw new RexError(ErrorCodes.USAGE, `spawn(): ${name} ${v}: expected an integer from 1 to 65535`);
  return v;
}

/** Runs `command` with `args` on the cluster, as child_process.spawn does locally. */
export function spawn(command: string, args: readonly string[] = [], options: SpawnOptions = {}): RemoteChildProcess {
  return new RemoteChildProcess(command, args, options);
}

/** What exec()'s callback receives. */
export type ExecCallback = (error: (Error & { code?: number | string; signal?: NodeJS.Signals | null }) | null, stdout: string, stderr: string) => void;

/**
 * Runs `command` through /bin/sh -c on the cluster and buffers its output, as
 * child_process.exec does: the callback gets an error when the command failed
 * (code, or signal), and stdout and stderr as strings.
 */
export function exec(command: string, options?: SpawnOptions | ExecCallback, callback?: ExecCallback): RemoteChildProcess {
  const opts = typeof options === 'function' ? {} : (options ?? {});
  const cb = typeof options === 'function' ? options : callback;
  const child = spawn('/bin/sh', ['-c', command], { ...opts, argv0: '/bin/sh' });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdin.end();
  let failed: Error | undefined;
  child.on('error', (e: Error) => (failed = e));
  child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
    if (!cb) return;
    if (failed) return cb(Object.assign(failed, { code: (failed as SpawnError).code }), out, err);
    if (code === 0 && !signal) return cb(null, out, err);
    cb(Object.assign(new Error(`Command failed: ${command}\n${err}`), { code: code ?? undefined, signal, cmd: command, killed: child.killed }), out, err);
  });
  return child;
}
