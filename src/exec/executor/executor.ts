/**
 * The executor side of EXEC (docs/PROTOCOL.md 4.9, docs/EXEC.md): starts the
 * program as rexd's user with pipes for stdio, relays them on the EXEC stream
 * with per-stream credit, delivers signals, and answers EXIT when the program
 * has ended and its last byte of output has been sent.
 */
import { randomBytes } from 'node:crypto';
import { accessSync, chmodSync, closeSync, constants as fsc, existsSync, mkdirSync, openSync, readSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { delimiter, isAbsolute, join, resolve } from 'node:path';
import { inflateRawSync } from 'node:zlib';
import type { Connection, Reply, StreamListener } from '../../protocol/connection.js';
import { ProtocolError } from '../../protocol/frame.js';
import { EXEC_MAX_CHUNK, IMAGE_INLINE_MAX, type MessageOf } from '../../protocol/messages.js';
import type { LoadMeter } from '../../daemon/load.js';
import type { Logger } from '../../daemon/log.js';
import { packageRoot } from '../../util/paths.js';
import { startChild, type Child, type StartOptions } from './child.js';
import { filterEnv } from './env.js';
import { JOB_ENV, type Containment, type JobBox } from './contain.js';
import type { JobRecord } from './jobs.js';
import type { LogEvent } from '../../log/txlog.js';
import { pendingSignals, STOP_SIGNALS_MASK } from '../../util/proc.js';
import { testSwitch } from '../../util/testmode.js';
import { execDirs } from './dirs.js';
import { allowedExecutable, limitedEnv, type ExecLimit } from './limit.js';
import { cached, fetchFile, hiddenForTests, libraryDir, openCached } from './transfer.js';
import { DEFAULT_WINDOW, fileSha256, RELAYED_SIGNALS } from '../protocol.js';

/**
 * rfork's credit per relayed descriptor (STARTED fdWindow): each descriptor the
 * child reads has a window of its own, so one the stub reads ahead and the
 * child leaves unread (a file, a busy socket) cannot take the credit another
 * one (the pipe it waits on) needs. DEFAULT_WINDOW each, less when there are
 * many, so that what this rexd may hold for one child stays near 16 MiB
 * (64 KiB each at least: 64 MiB for the 1024 descriptors allowed).
 */
export function fdWindow(inputs: number): number {
  return Math.max(64 << 10, Math.min(DEFAULT_WINDOW, Math.floor((16 << 20) / Math.max(1, inputs))));
}

const RELAYED = new Set(RELAYED_SIGNALS);

/** What the executor needs from its rexd. */
export interface ExecutorContext {
  hostName: string;
  /** rex.rc rex-temp-directory: where a program runs when the caller's cwd does not exist here. */
  tempDirectory: string;
  /** rexd's private state directory: the program cache and the run and image directories are in it (src/exec/dirs.ts). */
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

/**
 * Runs EXEC `m` here, on the stream it opened on `conn`; resolves with the EXIT
 * answer. Throws ProtocolError (NO_ENTRY, DENIED, BAD_REQUEST) when nothing
 * could be started.
 */
export async function runHere(m: MessageOf<'EXEC'>, conn: Connection, ctx: ExecutorContext, onStarted?: () => void, limit?: ExecLimit): Promise<Reply> {
  const ptyHelper = join(packageRoot(), 'native', 'build', 'bin', 'rex_pty');
  if (m.pty && !existsSync(ptyHelper)) {
    throw new ProtocolError('BAD_REQUEST', `a pseudo-terminal needs ${ptyHelper} on ${ctx.hostName}, which is not built (make -C native); run without one (rex run -T)`, { fatal: false });
  }
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
  const proxied = m.image ? imageFds(m.fds) : [0, 1, 2];
  let child: Child;
  let early: Buffer[] = [];
  let imageFile: string | undefined;
  if (m.image) {
    // rfork: the restorer rebuilds the image in this process; the proxied descriptors are sockets at their numbers.
    imageFile = await imageFor(m, conn, ctx);
    const fileArgs = await imageFiles(m, conn, ctx);
    const greet = Math.max(...proxied) + 1;
    // Only descriptors 0-2 (the common case): a spare restorer started ahead takes its arguments on fd 3 and saves a spawn.
    const spare = greet === 3 ? takeSpare(ctx) : undefined;
    if (spare) {
      child = spare;
      const text = Buffer.from([...fileArgs, imageFile].map((a) => `${a}\0`).join(''));
      const len = Buffer.alloc(4);
      len.writeUInt32LE(text.length);
      (child.stdio[3] as import('node:stream').Writable).write(Buffer.concat([len, text]));
    } else {
      const stdio: ('pipe' | 'ignore')[] = Array.from({ length: greet + 1 }, () => 'ignore');
      for (const fd of [...proxied, greet]) stdio[fd] = 'pipe';
      child = await start(RESTORER(), [...fileArgs, imageFile], { cwd, env, stdio }, ctx);
    }
    try {
      early = await restored(child, greet, ctx, () => dropImage(m, imageFile));
    } finally {
      // The next rfork with 0-2 only finds a spare ready. Started once this one's STARTED is out (it is sent in the
      // same turn of the event loop), so that the start (node's spawn, if the addon is missing, blocks rexd 2-6 ms)
      // never delays this greeting.
      if (greet === 3) setImmediate(() => prepareSpare(ctx));
    }
  } else {
    // Under a program grant only that program's executables run, as this host has them: nothing is fetched (src/exec/limit.ts).
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
  }
  const winsize = m.pty ? (child.stdio[3] as import('node:stream').Writable | null) : null;
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
  const stream = m.stream;
  // Descriptors the program writes (relayed to the origin) and reads (fed from the origin): 1, 2 and 0 for a program; for rfork every proxied one, both ways but 0 in and 1-2 out.
  const outputs = proxied.filter((fd) => fd !== 0).map((fd) => [fd, child.stdio[fd] as import('node:stream').Readable] as const);
  const inputs = new Map(proxied.filter((fd) => fd !== 1 && fd !== 2).map((fd) => [fd, child.stdio[fd] as import('node:stream').Writable] as const));
  for (const w of inputs.values()) w.on('error', () => {}); // EPIPE: the program stopped reading; the rest is dropped
  const inputOpen = new Set(inputs.keys());
  let credit = m.window ?? DEFAULT_WINDOW;
  // Output read but not yet sent for lack of credit, in order across stdout and stderr.
  const queue: { fd: number; data?: Buffer; eof?: boolean }[] = [];
  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  let finish: ((r: Reply) => void) | undefined;
  let gone = false;

  const flush = (): void => {
    if (gone) queue.length = 0; // nobody reads any more: drain the pipes so the program is not blocked
    while (queue.length > 0) {
      const item = queue[0]!;
      if (item.eof) {
        conn.sendOn(stream, { type: 'DATA', fd: item.fd, eof: true });
        queue.shift();
        continue;
      }
      if (credit <= 0) break;
      const n = Math.min(credit, EXEC_MAX_CHUNK, item.data!.length);
      conn.sendOn(stream, { type: 'DATA', fd: item.fd, data: item.data!.subarray(0, n) });
      credit -= n;
      if (n === item.data!.length) queue.shift();
      else item.data = item.data!.subarray(n);
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
  for (const d of early) queue.push({ fd: 2, data: d });
  for (const [fd, s] of outputs) {
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      queue.push({ fd, data: d });
      flush();
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
  conn.sendOn(stream, { type: 'STARTED', host: ctx.hostName, pid: child.pid!, window: DEFAULT_WINDOW, cwd, ...(m.image ? { fdWindow: fdWindow(inputs.size) } : {}) });
  if (notice && !m.image) queue.push({ fd: 2, data: Buffer.from(notice) }); // a restored process keeps its own cwd (or was refused)
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
      dropImage(m, imageFile);
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

/** The restorer program (built by npm install). */
const RESTORER = (): string => join(packageRoot(), 'native', 'build', 'bin', 'rex-restore');

/**
 * Spare restorers, one per rexd at most: started ahead with `--args-fd 3`
 * and descriptors 0-3 as sockets, waiting for the arguments of the next
 * rfork image whose proxied descriptors are 0-2, so that the process start
 * (about 0.4 ms with posix_spawn, several ms with node's spawn) and the
 * restorer's own exec are not on the rfork's path. A spare whose
 * rexd goes away reads end-of-file and exits.
 */
const spares = new Map<ExecutorContext, Child>();

/** Starts the spare restorer of `ctx` unless there is one. */
export function prepareSpare(ctx: ExecutorContext): void {
  if (spares.has(ctx) || stopping.has(ctx)) return;
  let c: Child;
  try {
    c = startChild(RESTORER(), ['--args-fd', '3'], { cwd: '/', env: {}, stdio: ['pipe', 'pipe', 'pipe', 'pipe'] }).child;
  } catch {
    return;
  }
  for (const x of c.stdio) (x as import('node:stream').Stream | null)?.on('error', () => {});
  c.on('error', () => spares.delete(ctx));
  c.once('exit', () => {
    if (spares.get(ctx) === c) spares.delete(ctx);
  });
  spares.set(ctx, c);
}

/** Takes the spare restorer of `ctx` if one runs; undefined otherwise. runHere starts the next once the restored child runs. */
function takeSpare(ctx: ExecutorContext): Child | undefined {
  const c = spares.get(ctx);
  spares.delete(ctx);
  if (!c) return undefined;
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return undefined;
  c.removeAllListeners('exit');
  c.removeAllListeners('error');
  return c;
}

/** Contexts whose rexd is stopping: no new spares. */
const stopping = new Set<ExecutorContext>();

/** Ends the spare restorer of `ctx` (rexd stopping). */
export function dropSpare(ctx: ExecutorContext): void {
  stopping.add(ctx);
  const c = spares.get(ctx);
  spares.delete(ctx);
  c?.kill('SIGKILL');
}

/** Calls `cb` when `child` exits, or soon if it has exited already (a restored child may end before its relay is set up). */
function whenExited(child: Child, cb: (code: number | null, signal: NodeJS.Signals | null) => void): void {
  if (child.exitCode !== null || child.signalCode !== null) setImmediate(() => cb(child.exitCode, child.signalCode));
  else child.once('exit', cb);
}

/**
 * Starts `file` (see startChild) and resolves once it runs; a failure to start
 * it is the EXEC error it means, naming `shown` (the program, also when a
 * helper starts it).
 */
async function start(file: string, args: readonly string[], o: StartOptions, ctx: ExecutorContext, shown = file): Promise<Child> {
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

/** Most descriptors an rfork image may ask to proxy (each is a socket pair here). */
export const MAX_PROXIED_FDS = 1024;

/** EXEC `fds` of an image (big-endian u32 each): validated, 0-2 always included, ascending. */
export function imageFds(raw: Uint8Array | undefined): number[] {
  const fds = new Set([0, 1, 2]);
  if (raw) {
    if (raw.byteLength % 4 !== 0) throw new ProtocolError('BAD_REQUEST', `EXEC fds: ${raw.byteLength} bytes is not a list of 4-byte descriptor numbers`, { fatal: false });
    const v = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
    for (let i = 0; i < raw.byteLength; i += 4) {
      const fd = v.getUint32(i);
      if (fd >= 65536) throw new ProtocolError('BAD_REQUEST', `EXEC fds: descriptor ${fd} (entry ${i / 4}) is above 65535`, { fatal: false });
      if (i > 0 && fd <= v.getUint32(i - 4)) throw new ProtocolError('BAD_REQUEST', `EXEC fds: entry ${i / 4} (${fd}) is not above the one before: the list must ascend without repeats`, { fatal: false });
      fds.add(fd);
    }
  }
  if (fds.size > MAX_PROXIED_FDS) throw new ProtocolError('BAD_REQUEST', `EXEC fds: ${fds.size} descriptors, more than the ${MAX_PROXIED_FDS} one process may proxy`, { fatal: false });
  return [...fds].sort((a, b) => a - b);
}

/**
 * The image an EXEC carries inline: `imageData` itself, or, with `imageSize`,
 * its raw DEFLATE inflated to exactly that many bytes (at most 768 KiB: the
 * output is bounded before inflating, so a small stream cannot expand into
 * more). Anything else is BAD_REQUEST naming the field; the restorer then
 * validates the image itself (docs/IMAGE.md).
 */
export function inlineImage(data: Uint8Array, size: number | undefined): Buffer {
  if (size === undefined) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  if (size < 1 || size > IMAGE_INLINE_MAX) throw new ProtocolError('BAD_REQUEST', `EXEC imageSize ${size}: an inline image is 1 to ${IMAGE_INLINE_MAX} bytes`, { fatal: false });
  let image: Buffer;
  try {
    image = inflateRawSync(data, { maxOutputLength: size });
  } catch (e) {
    const why = (e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE' ? `it inflates to more than imageSize ${size} bytes` : (e as Error).message;
    throw new ProtocolError('BAD_REQUEST', `EXEC imageData (${data.byteLength} bytes of raw DEFLATE): ${why}`, { fatal: false });
  }
  if (image.length !== size) throw new ProtocolError('BAD_REQUEST', `EXEC imageData inflates to ${image.length} bytes, not imageSize ${size}: a truncated or damaged image`, { fatal: false });
  return image;
}

/** The image file to restore: the local client's own (its memfd, checked by the service), or one fetched from the origin by hash. */
async function imageFor(m: MessageOf<'EXEC'>, conn: Connection, ctx: ExecutorContext): Promise<string> {
  const want = m.sha256 && m.sha256.byteLength === 32 ? Buffer.from(m.sha256).toString('hex') : undefined;
  let file: string;
  if (m.imageData) {
    // Sent inside the EXEC: written once for the restorer, private to this rexd's user, removed after the restore.
    const dir = execDirs(ctx.stateDirectory).images;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const image = inlineImage(m.imageData, m.imageSize);
    file = join(dir, `${process.pid}-${randomBytes(8).toString('hex')}`);
    writeFileSync(file, image, { mode: 0o600, flag: 'wx' });
    ctx.log.info({ program: m.path, bytes: image.byteLength, sent: m.imageData.byteLength }, 'EXEC: rfork image received inline');
  } else if (!want) {
    return m.path;
  } else {
    file = (await cached(ctx.stateDirectory, want, ctx)) ?? (await fetchProgram(m, want, conn, ctx));
  }
  // Test seam: hosts of one machine share a file system, so nothing else makes a restore fail on the executor only.
  if (testSwitch('REX_TEST_CORRUPT_IMAGE') === '1') {
    // Flip every bit of one byte of meta_hash: setting it to a constant left 1 image in 256 intact.
    chmodSync(file, 0o600); // a cached image is read-only (0500)
    const fd = openSync(file, 'r+');
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, 64);
    writeSync(fd, Buffer.from([b[0]! ^ 0xff]), 0, 1, 64);
    closeSync(fd);
  }
  return file;
}

/**
 * The restorer's `--file ORIGINAL=LOCAL` arguments for an image from another
 * host: each file the origin listed in EXEC `libs` (with its sha256) is mapped
 * from this host's file at the same path when the content is the same, else
 * from the cached copy, fetched from the origin when missing. Content, not
 * inode, decides (docs/IMAGE.md 3.2): the daemons have checked every byte.
 */
async function imageFiles(m: MessageOf<'EXEC'>, conn: Connection, ctx: ExecutorContext): Promise<string[]> {
  if ((!m.sha256 && !m.imageData) || !m.libs) return []; // the origin's own host: the strict identity check holds
  const args: string[] = [];
  for (const [i, f] of m.libs.entries()) {
    if (f.sha256.byteLength !== 32 || !isAbsolute(f.path) || f.path.includes('=')) {
      throw new ProtocolError('BAD_REQUEST', `EXEC libs entry ${i} ("${f.path}"): an image's file needs an absolute path without "=" and a 32-byte sha256`, { fatal: false });
    }
    const hex = Buffer.from(f.sha256).toString('hex');
    let local: string | undefined;
    try {
      if (!hiddenForTests(f.path) && fileSha256(f.path) === hex) local = f.path;
    } catch {
      /* not here */
    }
    local ??= await cached(ctx.stateDirectory, hex, ctx);
    if (!local) {
      if (ctx.autoTransfer === 'off') continue; // the restorer names the file it cannot map
      local = await fetchFile(conn, m.stream, { hex, path: f.path }, ctx);
    }
    args.push('--file', `${f.path}=${local}`);
  }
  return args;
}

/** Removes a fetched image once it is restored (or failed): images are used once, they do not stay in the cache. */
function dropImage(m: MessageOf<'EXEC'>, file: string | undefined): void {
  if (!file || file === m.path) return; // the local client's own descriptor is not ours to remove
  rmSync(file, { force: true });
}

/** How rex-restore's exit status before the jump maps to an EXEC error (docs/RFORK.md section 2). */
// Exit 4 (EX_HOST): this host cannot run the image (its CPU, a mapped file that differs): INCOMPATIBLE, ENOEXEC in librex.
const RESTORE_FAILURES: Record<number, ProtocolError['proto']> = { 2: 'BAD_REQUEST', 3: 'BAD_REQUEST', 4: 'INCOMPATIBLE', 5: 'INTERNAL' };

/**
 * Waits until the restored program says it runs (one byte on the greeting
 * socket at fd `greet`, after this rexd's socket path was offered there), and
 * returns what the restorer wrote on stderr meanwhile. A restorer that exits
 * first is the EXEC's error, with its message.
 */
function restored(child: Child, greet: number, ctx: ExecutorContext, cleanup: () => void): Promise<Buffer[]> {
  const sock = child.stdio[greet] as import('node:net').Socket;
  const stderr = child.stderr!;
  const early: Buffer[] = [];
  const collect = (d: Buffer): void => void early.push(d);
  stderr.on('data', collect);
  sock.on('error', () => {});
  sock.write(`REX1 ${ctx.socket}\n`);
  return new Promise<Buffer[]>((ok, fail) => {
    const timer = setTimeout(() => {
      done();
      killGroup(child, 100);
      cleanup();
      fail(new ProtocolError('TIMEOUT', `the restored process did not start on ${ctx.hostName} within 30 s`, { fatal: false }));
    }, 30_000);
    let greeted = false;
    const onData = (): void => {
      greeted = true;
      done();
      sock.destroy();
      ok(early);
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
      // A child that greets and exits at once: its byte may be read after the exit is seen. The socket's end settles it.
      const settle = (): void => {
        clearTimeout(late);
        if (greeted) return;
        sock.off('data', onData);
        if (sock.read(1) !== null) return onData();
        failed(code, signal);
      };
      const late = setTimeout(settle, 500);
      if (sock.readableEnded || sock.destroyed) settle();
      else sock.once('close', settle);
    };
    const failed = (code: number | null, signal: NodeJS.Signals | null): void => {
      done(true);
      cleanup();
      // Its last words may arrive on stderr after the exit event: wait for the end of stderr (briefly).
      const report = (): void => {
        clearTimeout(late);
        stderr.off('data', collect);
        const text = Buffer.concat(early).toString('utf8').trim().split('\n').slice(-3).join('; ') || 'no message';
        const proto = code !== null ? (RESTORE_FAILURES[code] ?? 'INTERNAL') : 'INTERNAL';
        fail(new ProtocolError(proto, `restore failed on ${ctx.hostName} (${code !== null ? `rex-restore exit ${code}` : `signal ${signal}`}): ${text}`, { fatal: false }));
      };
      const late = setTimeout(report, 500);
      if (stderr.readableEnded) report();
      else stderr.once('end', report);
    };
    const done = (keepCollecting = false): void => {
      clearTimeout(timer);
      sock.off('data', onData);
      child.off('exit', onExit);
      if (keepCollecting) return;
      stderr.off('data', collect);
      stderr.pause(); // the relay takes over from here (it resumes the outputs once STARTED is sent)
    };
    sock.once('data', onData);
    child.once('exit', onExit);
  });
}
