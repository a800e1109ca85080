/**
 * The executor side of EXEC (docs/PROTOCOL.md 4.9, docs/EXEC.md): starts the
 * program as rexd's user with pipes for stdio, relays them on the EXEC stream
 * with per-stream credit, delivers signals, and answers EXIT when the program
 * has ended and its last byte of output has been sent.
 */
import { accessSync, closeSync, constants as fsc, existsSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import type { Connection, Reply, StreamListener } from '../../protocol/connection.js';
import type { MsgTypeName } from '../../protocol/messages.js';
import { ProtocolError } from '../../protocol/frame.js';
import { EXEC_MAX_CHUNK, type MessageOf } from '../../protocol/messages.js';
import type { LoadMeter } from '../../daemon/load.js';
import type { Logger } from '../../daemon/log.js';
import { helper } from '../../util/paths.js';
import { startChild, type Child, type StartOptions } from './child.js';
import { filterEnv } from './env.js';
import { JOB_ENV, type Containment, type JobBox } from './contain.js';
import type { JobRecord } from './jobs.js';
import type { LogEvent } from '../../log/txlog.js';
import { pendingSignals, STOP_SIGNALS_MASK } from '../../util/proc.js';
import { testSwitch } from '../../util/testmode.js';
import { allowedExecutable, limitedEnv, type ExecLimit } from './limit.js';
import { fetchFile, libraryDir, openCached } from './transfer.js';
import { DEFAULT_WINDOW, fileSha256, MAX_WINDOW, RELAYED_SIGNALS } from '../protocol.js';

const RELAYED = new Set(RELAYED_SIGNALS);

/**
 * What a job's stream takes from the origin once the job runs (the listener in
 * superviseJob handles each); the origin's rexd relays exactly these from its
 * client (service.ts), so a new one is added here and handled below.
 */
export const FROM_ORIGIN: ReadonlySet<MsgTypeName> = new Set<MsgTypeName>(['DATA', 'WINDOW_UPDATE', 'SIGNAL', 'WINSIZE']);

/** What the executor needs from its rexd. */
export interface ExecutorContext {
  hostName: string;
  /** rex.rc rex-temp-directory: where a program runs when the caller's cwd does not exist here. */
  tempDirectory: string;
  /** rexd's private state directory: the program cache and the run and image directories are in it (src/exec/executor/dirs.ts). */
  stateDirectory: string;
  /** This rexd's socket, so that the program's own REX calls reach the executor's daemon. */
  socket: string;
  meter: LoadMeter;
  log: Logger;
  /** Grace between HUP and KILL when the origin is gone. */
  killGraceMs?: number;
  /** rex.rc rex-auto-transfer: 'off' runs only what is here (and sends nothing); 'on' and 'command' fetch from the origin. */
  autoTransfer?: 'on' | 'off' | 'command';
  /** rex.rc rex-auto-transfer `command:`: as origin, copy with this shell command instead of FILE frames (docs/EXEC.md, Transfer). */
  transferCommand?: string;
  /** The on-disk record of running programs, for the clean-up after a crash. */
  jobs?: JobRecord;
  /** A row of rexd's transaction log (a cache entry that failed verification). */
  record?: (ev: LogEvent) => void;
  /** Puts each job in a cgroup or process group of its own, ended with it (docs/EXEC.md, Containment). */
  containment?: Containment;
  /** An origin rexd's link that brings nothing (not even its LOAD polls) for this long is dead: its jobs end (default 15 s). */
  originSilenceMs?: number;
  /** Set once rexd stops: nothing new is started ahead (rfork's spare restorer). */
  stopped?: boolean;
  /** What a feature keeps per rexd and ends when rexd stops (rfork's spare restorer). */
  atStop?: (() => void)[];
}

/** The programs running here for EXEC, so that a stopping rexd can end them (no orphans). */
export const running = new Set<Child>();

/** Ends every running program's container (rexd stopping): nothing they started survives. */
export function endContained(ctx: ExecutorContext): void {
  for (const end of contained.values()) end();
  contained.clear();
  ctx.containment?.close();
}
const contained = new Map<Child, () => void>();

/**
 * Watches a peer connection that carries jobs: the origin rexd polls LOAD on it
 * every load-interval, so a link silent for `originSilenceMs` (cut, or the
 * origin host gone without a FIN) is closed, which ends its jobs as an origin's
 * death does. A local client may be silent as long as it likes: not watched.
 */
function watchOrigin(conn: Connection, ctx: ExecutorContext): void {
  if (conn.peer?.role !== 'peer' || watchedOrigins.has(conn)) return;
  watchedOrigins.add(conn);
  const limit = ctx.originSilenceMs ?? 15_000;
  const t = setInterval(() => {
    if (!conn.isOpen) return clearInterval(t);
    const silent = performance.now() - conn.lastReceivedAt;
    if (silent <= limit) return;
    clearInterval(t);
    ctx.log.warn({ origin: conn.peer?.host, silentMs: Math.round(silent) }, 'EXEC: origin link silent; closing it and ending its jobs');
    conn.destroy(new Error(`the origin sent nothing for ${Math.round(silent)} ms (link cut or host gone)`));
  }, Math.min(1000, limit));
  t.unref();
}
const watchedOrigins = new WeakSet<Connection>();

/** How long a CONT waits for a stop signal sent before it to be taken by the program (deliverSignal). */
const STOP_TAKEN_WAIT_MS = 2000;

/**
 * Sends signal `name` to the program. A CONT first waits (up to
 * STOP_TAKEN_WAIT_MS) until no stop signal is pending for it: the kernel
 * discards a pending TSTP, TTIN, TTOU or STOP when a CONT is sent (signal(7)),
 * so a TSTP relayed just before a CONT (Ctrl-Z, then fg, arriving in one read)
 * would otherwise never reach a program that had it blocked for a moment, as
 * a shell does while it forks.
 */
async function deliverSignal(child: Child, name: string): Promise<void> {
  const pid = child.pid;
  if (pid === undefined) return;
  if (name === 'CONT') {
    const until = Date.now() + STOP_TAKEN_WAIT_MS;
    for (;;) {
      const pending = pendingSignals(pid);
      if (pending === undefined || (pending & STOP_SIGNALS_MASK) === 0n || Date.now() >= until) break;
      if (child.exitCode !== null || child.signalCode !== null) return;
      await new Promise((r) => setTimeout(r, 2));
    }
  }
  if (child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(pid, `SIG${name}` as NodeJS.Signals);
  } catch {
    /* it has just exited */
  }
}

/** Ends a program's whole process group: HUP first, KILL after `graceMs` if it is still there. */
export function killGroup(child: Child, graceMs = 2000): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  const pid = child.pid;
  try {
    process.kill(-pid, 'SIGHUP');
  } catch {
    /* already gone */
  }
  setTimeout(() => {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }, graceMs).unref();
}

/** Finds the file to run: a path as given (relative to cwd), or a bare name in PATH (execvp's rule). */
export function resolveProgram(path: string, cwd: string, envPath: string | undefined, host: string): string {
  const candidates = path.includes('/') ? [isAbsolute(path) ? path : resolve(cwd, path)] : (envPath ?? '/usr/local/bin:/usr/bin:/bin').split(delimiter).filter(Boolean).map((d) => join(d, path));
  let denied: string | undefined;
  // Test seam: lets one machine play hosts with different file systems (a program "only on the origin").
  const hide = testSwitch('REX_EXEC_TEST_HIDE');
  for (const c of candidates) {
    if (hide && c.startsWith(hide)) continue;
    let st;
    try {
      st = statSync(c);
    } catch {
      continue;
    }
    try {
      if (st.isDirectory()) throw new Error('directory');
      accessSync(c, fsc.X_OK);
      return c;
    } catch {
      denied ??= c;
    }
  }
  if (denied) throw new ProtocolError('DENIED', `${denied} on ${host}: permission denied (not an executable file)`, { fatal: false });
  throw new ProtocolError('NO_ENTRY', path.includes('/') ? `${candidates[0]}: no such program on ${host}` : `${path}: not found in PATH on ${host}`, { fatal: false });
}

/** Where and with what a job starts here (jobSetup): common to a program (EXEC) and a restored image (RFORK). */
export interface JobSetup {
  env: Record<string, string>;
  cwd: string;
  /** The client's PATH, before the environment was limited: under a program grant it still finds a bare name. */
  clientPath: string | undefined;
  /** A line for the client's stderr (its cwd does not exist here). */
  notice?: string;
  /** The job's REX_JOB id, when jobs are contained. */
  jobId?: string;
}

/** The environment and directory a job starts with: the client's environment filtered (and limited under a program grant), its cwd when it exists here. */
export function jobSetup(m: { env?: string[]; cwd?: string }, ctx: ExecutorContext, limit?: ExecLimit): JobSetup {
  const clientEnv = filterEnv(m.env ?? []);
  // The client's PATH, before anything below changes env: under a program grant it still finds a bare name.
  const clientPath = clientEnv.PATH;
  const env = limit ? limitedEnv(clientEnv) : clientEnv;
  let notice: string | undefined;
  let cwd = m.cwd;
  if (!cwd || !isDir(cwd)) {
    mkdirSync(ctx.tempDirectory, { recursive: true, mode: 0o700 });
    if (cwd) notice = `rex: ${ctx.hostName}: ${cwd} does not exist here; running in ${ctx.tempDirectory}\n`;
    cwd = ctx.tempDirectory;
  }
  env.PWD = cwd;
  env.REX_SOCKET = ctx.socket;
  // Every process of the job inherits its id: the process-group containment finds escaped descendants by it.
  const jobId = ctx.containment?.newId();
  if (jobId) env[JOB_ENV] = jobId;
  return { env, cwd, clientPath, ...(notice ? { notice } : {}), ...(jobId ? { jobId } : {}) };
}

/**
 * Runs EXEC `m` here, on the stream it opened on `conn`; resolves with the EXIT
 * answer. Throws ProtocolError (NO_ENTRY, DENIED, BAD_REQUEST) when nothing
 * could be started.
 */
export async function runHere(m: MessageOf<'EXEC'>, conn: Connection, ctx: ExecutorContext, onStarted?: () => void, limit?: ExecLimit): Promise<Reply> {
  const ptyHelper = helper('rex_pty');
  if (m.pty && !existsSync(ptyHelper)) {
    throw new ProtocolError('BAD_REQUEST', `a pseudo-terminal needs ${ptyHelper} on ${ctx.hostName}, which is not built (make -C native); run without one (rex run -T)`, { fatal: false });
  }
  const setup = jobSetup(m, ctx, limit);
  const { env, cwd, clientPath } = setup;
  let child: Child;
  // Under a program grant only that program's executables run, as this host has them: nothing is fetched (src/exec/executor/limit.ts).
  // (The client's PATH finds a bare name: whatever it finds must still be one of the executables.)
  const limited = limit ? allowedExecutable(m.path, limit, () => resolveProgram(m.path, cwd, clientPath, ctx.hostName)) : undefined;
  const { file, exe, release } = limited !== undefined ? { file: limited, exe: limited, release: () => {} } : await programFor(m, cwd, env.PATH, conn, ctx);
  let libDir: string | undefined;
  const removeLibDir = (): void => {
    release();
    if (libDir) rmSync(libDir, { recursive: true, force: true });
  };
  try {
    // Shared libraries the program needs and this host lacks: fetched, and found first through a per-run directory.
    libDir = limit ? undefined : await libraryDir(m, conn, ctx);
    if (libDir) env.LD_LIBRARY_PATH = env.LD_LIBRARY_PATH ? `${libDir}:${env.LD_LIBRARY_PATH}` : libDir;
    const argv = m.argv && m.argv.length > 0 ? m.argv : [m.path];
    // With a pty, the helper starts the program on a new terminal and relays it (native/pty/rex_pty.c); fd 3 takes window sizes.
    child = m.pty
      ? await start(ptyHelper, [String(m.rows || 24), String(m.cols || 80), exe, ...argv], { cwd, env, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] }, ctx, file)
      : await start(exe, argv.slice(1), { argv0: argv[0]!, cwd, env, stdio: ['pipe', 'pipe', 'pipe'] }, ctx, file);
  } catch (e) {
    removeLibDir();
    throw e;
  }
  child.once('exit', removeLibDir);
  return superviseJob(child, { stream: m.stream, cwd, ...(m.window !== undefined ? { window: m.window } : {}), proxied: [0, 1, 2], pty: !!m.pty, ...(setup.notice ? { notice: setup.notice } : {}), ...(setup.jobId ? { jobId: setup.jobId } : {}) }, conn, ctx, onStarted);
}

/** How superviseJob relays one started job. */
export interface JobRelay {
  /** The request's stream. */
  stream: number;
  /** The directory it runs in, as STARTED says. */
  cwd: string;
  /** The origin's starting credit for DATA towards it (EXEC/RFORK `window`). */
  window?: number;
  /** The child's descriptors relayed on the stream: 0-2 for a program, every proxied one for rfork. */
  proxied: number[];
  /** fd 3 takes window sizes (the pty helper). */
  pty?: boolean;
  /** STARTED carries fdWindow, credit per descriptor, this function of the number of descriptors fed to the child (rfork, docs/PROTOCOL.md 4.9). */
  perFdWindow?: (inputs: number) => number;
  /** A line for the client's stderr after STARTED. */
  notice?: string;
  /** Bytes for the client's stderr before anything the child writes (the restorer's words). */
  early?: Buffer[];
  /** The job's REX_JOB id (jobSetup). */
  jobId?: string;
  /** Called once the child has exited. */
  onExit?: () => void;
}

/**
 * Relays a started job on its stream (docs/PROTOCOL.md 4.9): sends STARTED,
 * its output as the origin's credit allows, the origin's input, signals and
 * window sizes to it, and resolves with EXIT once it has ended and its last
 * byte of output has gone. The job is contained, recorded and counted as
 * load meanwhile. Shared by EXEC and rfork's RFORK (src/rfork/executor.ts).
 */
export function superviseJob(child: Child, job: JobRelay, conn: Connection, ctx: ExecutorContext, onStarted?: () => void): Promise<Reply> {
  const { proxied, jobId } = job;
  const winsize = job.pty ? (child.stdio[3] as import('node:stream').Writable | null) : null;
  winsize?.on('error', () => {});
  running.add(child);
  const box: JobBox | undefined = jobId ? ctx.containment!.enter(child.pid!, jobId) : undefined;
  ctx.jobs?.add(child.pid!, box);
  const pid = child.pid!;
  // The job's end ends everything it started (setsid, HUP ignored, double fork); then its record goes.
  const endJob = (): void => {
    if (!contained.delete(child) && box) return;
    if (box) ctx.containment!.end(box);
    ctx.jobs?.remove(pid);
  };
  contained.set(child, endJob);
  watchOrigin(conn, ctx);
  const jobDone = ctx.meter.jobStarted();
  onStarted?.();
  const stream = job.stream;
  // Descriptors the program writes (relayed to the origin) and reads (fed from the origin): 1, 2 and 0 for a program; for rfork every proxied one, both ways but 0 in and 1-2 out.
  const outputs = proxied.filter((fd) => fd !== 0).map((fd) => [fd, child.stdio[fd] as import('node:stream').Readable] as const);
  const inputs = new Map(proxied.filter((fd) => fd !== 1 && fd !== 2).map((fd) => [fd, child.stdio[fd] as import('node:stream').Writable] as const));
  for (const w of inputs.values()) w.on('error', () => {}); // EPIPE: the program stopped reading; the rest is dropped
  const inputOpen = new Set(inputs.keys());
  // A larger window than MAX_WINDOW counts as MAX_WINDOW: a sender may always send less than its credit.
  let credit = Math.min(job.window ?? DEFAULT_WINDOW, MAX_WINDOW);
  // Output read but not yet sent for lack of credit, in order across stdout and stderr.
  const queue: { fd: number; data?: Buffer; eof?: boolean }[] = [];
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let finish: ((r: Reply) => void) | undefined;
  let gone = false;

  // Bytes of output queued since the last flush, and the flush the end of this event-loop turn will run.
  let queued = 0;
  let flushSoon: NodeJS.Immediate | undefined;
  const flush = (): void => {
    queued = 0;
    if (flushSoon) clearImmediate(flushSoon);
    flushSoon = undefined;
    if (gone) queue.length = 0; // nobody reads any more: drain the pipes so the program is not blocked
    while (queue.length > 0) {
      const item = queue[0]!;
      if (item.eof) {
        conn.sendOn(stream, { type: 'DATA', fd: item.fd, eof: true });
        queue.shift();
        continue;
      }
      if (credit <= 0) break;
      // The reads of one descriptor waiting in a row go as one frame, up to the chunk limit and the credit: fewer,
      // larger frames (and credits back) for a program that writes fast; the buffers are not joined.
      const max = Math.min(credit, EXEC_MAX_CHUNK);
      const parts: Buffer[] = [];
      let n = 0;
      while (n < max && queue.length > 0 && queue[0]!.fd === item.fd && !queue[0]!.eof) {
        const next = queue[0]!;
        const take = Math.min(max - n, next.data!.length);
        parts.push(take === next.data!.length ? next.data! : next.data!.subarray(0, take));
        n += take;
        if (take === next.data!.length) queue.shift();
        else next.data = next.data!.subarray(take);
      }
      conn.sendDataOn(stream, item.fd, parts);
      credit -= n;
    }
    const blocked = queue.length > 0;
    for (const [, s] of outputs) {
      if (blocked) s.pause();
      else if (!s.readableEnded) s.resume();
    }
    maybeExit();
  };
  // Signals reach the program one after another, in the order the origin sent them (see deliverSignal).
  let signals = Promise.resolve();
  let eofs = 0;
  // Descriptors whose end has been queued: each once, whichever of 'end', 'close' or the orphan check comes first.
  const ended = new Set<number>();
  const maybeExit = (): void => {
    if (!exited || eofs < outputs.length || queue.length > 0 || !finish) return;
    const { code, signal } = exited;
    finish(signal ? { type: 'EXIT', signal: signal.replace(/^SIG/, ''), host: ctx.hostName } : { type: 'EXIT', code: code ?? 0, host: ctx.hostName });
    finish = undefined;
    endJob();
    // Input the origin never ended (the program exited first) would keep its socket open for good: one fd per job.
    for (const w of inputs.values()) w.destroy();
  };
  // What the restorer wrote on stderr before the restored program ran comes first.
  for (const d of job.early ?? []) queue.push({ fd: 2, data: d });
  for (const [fd, s] of outputs) {
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      queue.push({ fd, data: d });
      queued += d.length;
      // What one turn of the event loop reads (libuv reads up to 64 KiB at a time, several times while the
      // program keeps writing) goes out together: the flush waits for the end of the turn, or a full chunk.
      if (queued >= EXEC_MAX_CHUNK) flush();
      else if (!flushSoon) flushSoon = setImmediate(flush);
    });
    const end = (): void => {
      if (ended.has(fd)) return;
      ended.add(fd);
      queue.push({ fd, eof: true });
      eofs++;
      flush();
    };
    s.on('end', end);
    // An rfork child that exits with input still coming (a file read ahead, a pipe it stopped reading) makes the
    // write into its socket fail (EPIPE), and Node destroys that socket without an 'end': its close is the end. Else
    // the EXIT waited for the orphan check (2 s) after every such child.
    s.on('close', end);
    // Node starts reading a child's stdio socket at once: an end that came before these listeners (a restored
    // child closing a descriptor right after its greeting) has been emitted already and will not come again.
    if (s.readableEnded || s.destroyed) {
      ended.add(fd);
      queue.push({ fd, eof: true });
      eofs++;
    }
  }

  const listener: StreamListener = {
    onMessage: (x) => {
      switch (x.type) {
        case 'DATA': {
          const input = inputs.get(x.fd);
          const open = input !== undefined && inputOpen.has(x.fd) && !input.destroyed;
          const len = x.data?.byteLength ?? 0;
          if (len > 0) {
            // Credit goes back once the bytes are handed on (or dropped: nobody reads that descriptor), naming the descriptor (fdWindow).
            const credit = { type: 'WINDOW_UPDATE', increment: len, fd: x.fd } as const;
            if (open) input.write(x.data!, () => conn.sendOn(stream, credit));
            else conn.sendOn(stream, credit);
          }
          if (x.eof && open) {
            inputOpen.delete(x.fd);
            input.end();
          }
          return;
        }
        case 'WINDOW_UPDATE':
          credit += x.increment;
          flush();
          return;
        case 'SIGNAL': {
          const name = x.signal.replace(/^SIG/, '');
          if (!RELAYED.has(name)) {
            ctx.log.info({ signal: x.signal, pid: child.pid }, 'EXEC: ignoring a signal that is not relayed');
            return;
          }
          signals = signals.then(() => deliverSignal(child, name));
          return;
        }
        case 'WINSIZE':
          winsize?.write(`${x.rows} ${x.cols}\n`); // without a pty there is nothing to resize
          return;
        default:
          return;
      }
    },
    onClose: (err) => {
      // The origin (or its connection) is gone: nobody will read the output, so the program ends too.
      gone = true;
      if (!exited) {
        ctx.log.info({ pid: child.pid, err: err?.message }, 'EXEC: origin gone; ending the program');
        killGroup(child, ctx.killGraceMs);
      }
    },
  };
  // The origin may have gone while the program was starting: then nothing will ever call onClose, so call it now.
  if (!conn.adoptStream(stream, listener)) listener.onClose?.(new Error('the origin went away while the program started'));
  conn.sendOn(stream, { type: 'STARTED', host: ctx.hostName, pid: child.pid!, window: DEFAULT_WINDOW, cwd: job.cwd, ...(job.perFdWindow ? { fdWindow: job.perFdWindow(inputs.size) } : {}) });
  if (job.notice) queue.push({ fd: 2, data: Buffer.from(job.notice) });
  flush();
  return new Promise<Reply>((resolveExit) => {
    finish = resolveExit;
    whenExited(child, (code, signal) => {
      running.delete(child);
      if (!box) ctx.jobs?.remove(pid);
      jobDone();
      exited = { code, signal };
      // Children of the program that still hold the pipes would keep the stream open forever.
      // Output still waiting for credit is not abandoned: the check waits while the origin reads slowly.
      job.onExit?.();
      const orphanCheck = (): void => {
        if (eofs >= outputs.length) return;
        if (queue.length > 0 && !gone) {
          setTimeout(orphanCheck, 2000).unref();
          return;
        }
        for (const [fd, o] of outputs) {
          ended.add(fd);
          o.destroy();
        }
        eofs = outputs.length;
        maybeExit();
      };
      setTimeout(orphanCheck, 2000).unref();
      maybeExit();
    });
  });
}


/** /proc/self/fd exists: a verified cache entry is executed through its descriptor. */
const PROC_FD = existsSync('/proc/self/fd');

/** A program to start: `file` to name in messages, `exe` to execute, `release` once it has ended (or failed to start). */
interface Program {
  file: string;
  exe: string;
  release: () => void;
}

/**
 * The file to run for EXEC `m`: the one here when it matches the origin's hash
 * (or no hash was sent), else the cached copy, else one fetched from the
 * origin (FETCH/FILE on the EXEC stream) into the cache. A cached program is
 * opened once and verified through that descriptor (openCached), and what
 * runs is that descriptor, /proc/<rexd>/fd/N (rexd's own table: posix_spawn's
 * child closes its inherited descriptors before the exec), held open until
 * the program ends so that a script's interpreter can open it too: the file
 * verified is the file executed, whatever happens to the name meanwhile.
 */
async function programFor(m: MessageOf<'EXEC'>, cwd: string, envPath: string | undefined, conn: Connection, ctx: ExecutorContext): Promise<Program> {
  const want = m.sha256 && m.sha256.byteLength === 32 ? Buffer.from(m.sha256).toString('hex') : undefined;
  const plain = (file: string): Program => ({ file, exe: file, release: () => {} });
  let here: string | undefined;
  try {
    here = resolveProgram(m.path, cwd, envPath, ctx.hostName);
  } catch (e) {
    if (!want || !(e instanceof ProtocolError) || e.proto !== 'NO_ENTRY') throw e;
  }
  if (!want) return plain(here!);
  if (here && fileSha256(here) === want) return plain(here);
  let hit = await openCached(ctx.stateDirectory, want, ctx);
  if (!hit) {
    if (ctx.autoTransfer === 'off') {
      if (here) return plain(here); // differs, but transfer is off: the host's own program runs
      throw new ProtocolError('NO_ENTRY', `${m.path}: no such program on ${ctx.hostName}, and rex-auto-transfer is off there`, { fatal: false });
    }
    await fetchProgram(m, want, conn, ctx);
    hit = await openCached(ctx.stateDirectory, want, ctx);
    if (!hit) throw new ProtocolError('INTERNAL', `${m.path}: the copy fetched into the cache on ${ctx.hostName} failed verification (see rexd's log)`, { fatal: false });
  }
  const { path, fd } = hit;
  if (!PROC_FD) {
    closeSync(fd);
    return plain(path);
  }
  let open = true;
  return {
    file: path,
    exe: `/proc/${process.pid}/fd/${fd}`,
    release: () => {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

/** Fetches the program EXEC `m` names from the origin into the cache (docs/EXEC.md, Transfer); resolves with its path. */
function fetchProgram(m: MessageOf<'EXEC'>, hex: string, conn: Connection, ctx: ExecutorContext): Promise<string> {
  return fetchFile(conn, m.stream, { hex, path: m.path }, ctx);
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/** Calls `cb` when `child` exits, or soon if it has exited already (a restored child may end before its relay is set up). */
function whenExited(child: Child, cb: (code: number | null, signal: NodeJS.Signals | null) => void): void {
  if (child.exitCode !== null || child.signalCode !== null) setImmediate(() => cb(child.exitCode, child.signalCode));
  else child.once('exit', cb);
}

/**
 * Starts `file` (see startChild) and resolves once it runs; a failure to start
 * it is the EXEC (or RFORK) error it means, naming `shown` (the program, also when a
 * helper starts it).
 */
export async function start(file: string, args: readonly string[], o: StartOptions, ctx: ExecutorContext, shown = file): Promise<Child> {
  const refusal = (e: NodeJS.ErrnoException): ProtocolError => {
    if (e.code === 'ENOENT') return new ProtocolError('NO_ENTRY', `${shown}: no such program on ${ctx.hostName} (${e.message})`, { fatal: false });
    if (e.code === 'EACCES' || e.code === 'EPERM') return new ProtocolError('DENIED', `${shown} on ${ctx.hostName}: ${e.message}`, { fatal: false });
    return new ProtocolError('INTERNAL', `cannot start ${shown} on ${ctx.hostName}: ${e.message}`, { fatal: false });
  };
  let started: ReturnType<typeof startChild>;
  try {
    started = startChild(file, args, o);
  } catch (e) {
    throw refusal(e as NodeJS.ErrnoException);
  }
  const { child, native } = started;
  if (!native) {
    await new Promise<void>((ok, fail) => {
      child.once('spawn', ok);
      child.once('error', (e: NodeJS.ErrnoException) => fail(refusal(e)));
    });
  }
  return child;
}


