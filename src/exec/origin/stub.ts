/**
 * The origin stub of remote execution: one EXEC stream on a connection to the
 * local rexd, with the program's stdio as credit-controlled byte streams,
 * signals, window size and the exit status. `rex run` and spawn() are thin
 * layers over it: they only decide where bytes come from and go to
 * (docs/EXEC.md, "The origin stub"). rexecve's and rfork's stub is C's,
 * rex__stub_exec in native/src/rexec.c.
 */
import { EventEmitter } from 'node:events';
import { statSync } from 'node:fs';
import { join } from 'node:path';
import type { Connection, StreamHandle } from '../../protocol/connection.js';
import { EXEC_MAX_CHUNK, type Message } from '../../protocol/messages.js';
import { ErrorCodes, RexError } from '../../util/errors.js';
import { PLACE_HOSTS_ENV, parsePlaceHosts } from '../../placement/hosts.js';
import { DEFAULT_WINDOW, MAX_WINDOW, fileSha256, TRANSFER_MAX } from '../protocol.js';

/**
 * The origin's own copy of a program, as EXEC should name it for transfer:
 * its absolute path (a bare name searched in PATH) and content hash; undefined
 * when it is not an executable file here (the executor then searches alone).
 */
export function localProgram(prog: string, cwd: string, envPath: string | undefined): { path: string; sha256: Buffer } | undefined {
  const dirs = prog.includes('/') ? [''] : (envPath ?? '').split(':').filter(Boolean);
  for (const d of dirs) {
    const p = prog.includes('/') ? (prog.startsWith('/') ? prog : join(cwd, prog)) : join(d, prog);
    try {
      const st = statSync(p);
      if (!st.isFile() || (st.mode & 0o111) === 0 || st.size > TRANSFER_MAX) continue;
      return { path: p, sha256: Buffer.from(fileSha256(p), 'hex') };
    } catch {
      /* not here */
    }
  }
  return undefined;
}

/** What to run and where. */
export interface ExecRequest {
  /** Program path (or bare name, searched in env PATH on the executor). */
  path: string;
  argv: string[];
  /** NAME=VALUE entries; the executor drops the deny list. */
  env?: string[];
  cwd?: string;
  /** Host to run on; absent: placement by the local rexd. */
  host?: string;
  /** Without `host`: the hosts placement may choose among; default REX_PLACE_HOSTS (docs/PLACEMENT.md), else all. */
  among?: string[];
  /** Initial credit for output towards us. */
  window?: number;
  /** A pseudo-terminal of this size for the program (stdout and stderr both arrive as fd 1). */
  pty?: { rows: number; cols: number };
  /** sha256 of the origin's program file: lets the executor fetch it when it lacks it or has another (transfer). */
  sha256?: Uint8Array;
  /**
   * Transfer progress before the program starts: a function receives every
   * PROGRESS; false ignores them; by default a bar is drawn on stderr when it
   * is a terminal and the transfer has run longer than {@link PROGRESS_AFTER_MS}.
   */
  progress?: boolean | ((p: TransferProgress) => void);
}

/** How far a transfer to the executor has come (PROGRESS, docs/PROTOCOL.md 4.9). */
export interface TransferProgress {
  done: number;
  total: number;
  /** The origin's path of the file being sent (the program or a library). */
  path: string;
}

/** A transfer shorter than this draws no bar: a quick one would only flicker. */
export const PROGRESS_AFTER_MS = 300;

/** One line of the transfer bar, fitted to `width` columns: `rex: sending NAME [####....]  42% 12.0/28.5 MB`. */
export function renderProgress(p: TransferProgress, width: number): string {
  const total = Math.max(p.total, p.done, 1);
  const frac = Math.min(1, p.done / total);
  const mb = (n: number): string => (n / 1e6).toFixed(1);
  const name = p.path.slice(p.path.lastIndexOf('/') + 1) || p.path;
  const tail = ` ${String(Math.floor(frac * 100)).padStart(3)}% ${mb(p.done)}/${mb(total)} MB`;
  const head = `rex: sending ${name.length > 24 ? name.slice(0, 23) + '~' : name} `;
  const barWidth = Math.max(0, Math.min(40, width - 1 - head.length - tail.length - 2));
  const filled = Math.round(frac * barWidth);
  const bar = barWidth > 0 ? `[${'#'.repeat(filled)}${'.'.repeat(barWidth - filled)}]` : '';
  return (head + bar + tail).slice(0, Math.max(0, width - 1));
}

/** Draws PROGRESS on a terminal: nothing for the first {@link PROGRESS_AFTER_MS}, then one line redrawn in place. */
class ProgressBar {
  private since: number | undefined;
  private drawn = false;
  // REX_PROGRESS_AFTER_MS (milliseconds) lets a test, or an impatient user, see the bar for any transfer.
  private readonly after = Number(process.env.REX_PROGRESS_AFTER_MS || PROGRESS_AFTER_MS) || 0;

  constructor(private readonly out: NodeJS.WriteStream) {}

  update(p: TransferProgress): void {
    const now = Date.now();
    this.since ??= now;
    if (now - this.since < this.after) return;
    this.out.write(`\r${renderProgress(p, this.out.columns || 80)}\x1b[K`);
    this.drawn = true;
  }

  /** Erases the bar (the program's own output starts on a clean line). */
  clear(): void {
    if (this.drawn) this.out.write('\r\x1b[K');
    this.drawn = false;
  }
}

/** How a remote program ended. */
export interface ExitStatus {
  /** Exit code when it exited. */
  code?: number;
  /** Signal name without SIG when a signal killed it. */
  signal?: string;
  host: string;
}

/**
 * Receives output: call `done` once the bytes are handed on (written), which
 * returns their credit to the executor. Not calling it stops the program's
 * output after one window (backpressure).
 */
export type OutputSink = (fd: number, data: Buffer | undefined, done: () => void) => void;

/**
 * A program running on some host of the cluster. Emits 'drain' when stdin
 * credit is available again after write() returned false, and 'status' (an
 * {@link ExitStatus}) as soon as EXIT arrives: all its output has reached the
 * sink by then, though not necessarily been handed on (`exited` waits for that).
 */
export class RemoteProcess extends EventEmitter {
  /** Where it runs and its pid there. */
  host = '';
  pid = 0;
  cwd = '';
  /** Resolves when the program has ended and all its output was delivered to the sink. */
  readonly exited: Promise<ExitStatus>;
  private credit = 0;
  private queue: Buffer[] = [];
  private stdinEnded = false;
  private eofSent = false;
  private outstanding = 0;
  /** Output handed on and not yet credited back, sent once it reaches `batch` (a quarter of the window granted). */
  private owed = 0;
  private batch = DEFAULT_WINDOW / 4;
  private status: ExitStatus | undefined;
  private settle!: { resolve: (s: ExitStatus) => void; reject: (e: Error) => void };
  private handle!: StreamHandle;

  private constructor() {
    super();
    this.exited = new Promise((resolve, reject) => (this.settle = { resolve, reject }));
    this.exited.catch(() => {}); // a caller that never awaits must not crash the process
  }

  /**
   * Sends EXEC on `conn` (a connection to the local rexd) and resolves once the
   * program runs; rejects with the executor's refusal (NO_ENTRY, DENIED,
   * UNREACHABLE...) when nothing started.
   */
  static start(conn: Connection, req: ExecRequest, sink: OutputSink): Promise<RemoteProcess> {
    // A named host is the caller's choice, even outside REX_PLACE_HOSTS (docs/PLACEMENT.md); a bad variable throws here.
    const among = req.host && req.host !== '*' ? undefined : (req.among ?? parsePlaceHosts(process.env[PLACE_HOSTS_ENV]));
    const rp = new RemoteProcess();
    // A quarter of the credit the executor uses: at most MAX_WINDOW of what was granted (it would wait for the rest forever).
    rp.batch = Math.max(1, Math.floor(Math.min(req.window ?? DEFAULT_WINDOW, MAX_WINDOW) / 4));
    const onProgress = typeof req.progress === 'function' ? req.progress : undefined;
    const bar = req.progress === undefined && process.stderr.isTTY ? new ProgressBar(process.stderr) : undefined;
    return new Promise<RemoteProcess>((resolve, reject) => {
      let started = false;
      try {
        rp.handle = conn.openStream(
          {
            type: 'EXEC',
            path: req.path,
            argv: req.argv,
            ...(req.env ? { env: req.env } : {}),
            ...(req.cwd ? { cwd: req.cwd } : {}),
            ...(req.host ? { host: req.host } : {}),
            ...(among ? { among } : {}),
            ...(req.sha256 ? { sha256: req.sha256 } : {}),
            ...(req.pty ? { pty: true, rows: req.pty.rows, cols: req.pty.cols } : {}),
            window: req.window ?? DEFAULT_WINDOW,
          },
          {
            onMessage: (m: Message) => {
              switch (m.type) {
                case 'PROGRESS':
                  if (started) return;
                  onProgress?.({ done: m.done, total: m.total, path: m.path ?? req.path });
                  bar?.update({ done: m.done, total: m.total, path: m.path ?? req.path });
                  return;
                case 'STARTED':
                  bar?.clear();
                  started = true;
                  rp.host = m.host;
                  rp.pid = m.pid ?? 0;
                  rp.cwd = m.cwd ?? '';
                  rp.credit = m.window ?? DEFAULT_WINDOW;
                  resolve(rp);
                  rp.flush();
                  return;
                case 'DATA': {
                  const len = m.data?.byteLength ?? 0;
                  if (len > 0) {
                    rp.outstanding++;
                    let once = false;
                    sink(m.fd, Buffer.from(m.data!.buffer, m.data!.byteOffset, len), () => {
                      if (once) return;
                      once = true;
                      rp.outstanding--;
                      // Credit goes back in batches of a quarter window (docs/PROTOCOL.md 3.1), as librex's stub does.
                      rp.owed += len;
                      if (rp.owed >= rp.batch) {
                        rp.handle.send({ type: 'WINDOW_UPDATE', increment: rp.owed });
                        rp.owed = 0;
                      }
                      rp.maybeDone();
                    });
                  }
                  if (m.eof) sink(m.fd, undefined, () => {});
                  return;
                }
                case 'WINDOW_UPDATE':
                  rp.credit += m.increment;
                  rp.flush();
                  return;
                case 'EXIT':
                  rp.status = { ...(m.signal ? { signal: m.signal } : { code: m.code ?? 0 }), host: m.host ?? rp.host };
                  rp.emit('status', rp.status);
                  rp.maybeDone();
                  return;
                default:
                  return;
              }
            },
            onClose: (err) => {
              bar?.clear();
              if (!err) return;
              if (!started) reject(err);
              else rp.settle.reject(err);
            },
          },
        );
      } catch (e) {
        reject(e);
      }
    });
  }

  /** How it ended, once EXIT has arrived (before `exited` resolves, which also waits for the output's delivery). */
  get ended(): ExitStatus | undefined {
    return this.status;
  }

  /** Queues stdin bytes; returns false when the caller should wait for 'drain'. */
  write(data: Buffer): boolean {
    if (this.stdinEnded) throw new RexError(ErrorCodes.USAGE, 'write after end of stdin');
    if (data.length > 0) this.queue.push(data);
    this.flush();
    return this.queue.length === 0;
  }

  /** Closes the program's stdin once the queued bytes are sent (EOF reaches the remote). */
  end(): void {
    this.stdinEnded = true;
    this.flush();
  }

  /** Delivers signal `name` (INT, TERM, ... without SIG) to the remote program. */
  signal(name: string): void {
    this.handle.send({ type: 'SIGNAL', signal: name.replace(/^SIG/, '') });
  }

  /** Tells the remote terminal its new size (with a pty). */
  winsize(rows: number, cols: number): void {
    this.handle.send({ type: 'WINSIZE', rows, cols });
  }

  private flush(): void {
    if (!this.host) return; // not started: nothing may be sent on the stream yet
    while (this.queue.length > 0 && this.credit > 0) {
      const b = this.queue[0]!;
      const n = Math.min(b.length, this.credit, EXEC_MAX_CHUNK);
      this.handle.send({ type: 'DATA', fd: 0, data: b.subarray(0, n) });
      this.credit -= n;
      if (n === b.length) this.queue.shift();
      else this.queue[0] = b.subarray(n);
    }
    if (this.queue.length === 0) {
      if (this.stdinEnded && !this.eofSent) {
        this.eofSent = true;
        this.handle.send({ type: 'DATA', fd: 0, eof: true });
      }
      if (this.listenerCount('drain') > 0) this.emit('drain');
    }
  }

  private maybeDone(): void {
    if (this.status && this.outstanding === 0) this.settle.resolve(this.status);
  }
}
