/**
 * rfork's executor side (docs/RFORK.md section 5): an RFORK's image accepted
 * (the local client's own descriptor, inline, or fetched by hash with the
 * files it maps) and restored by rex-restore, whose restored child then runs
 * as any job does (superviseJob in src/exec/executor/executor.ts).
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, closeSync, mkdirSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import type { Connection, Reply } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { MessageOf } from '../protocol/messages.js';
import { helper } from '../util/paths.js';
import { testSwitch } from '../util/testmode.js';
import { fileSha256 } from '../exec/protocol.js';
import { startChild, type Child } from '../exec/executor/child.js';
import { execDirs } from '../exec/executor/dirs.js';
import { jobSetup, killGroup, start, superviseJob, type ExecutorContext } from '../exec/executor/executor.js';
import { cached, fetchFile, hiddenForTests } from '../exec/executor/transfer.js';
import { fdWindow, imageFds, inlineImage } from './protocol.js';

/**
 * Restores RFORK `m`'s image here, on the stream it opened on `conn`, and
 * relays the restored child; resolves with the EXIT answer. Throws
 * ProtocolError when nothing could be started (BAD_REQUEST, INCOMPATIBLE,
 * TIMEOUT ... with the restorer's words).
 */
export async function restoreHere(m: MessageOf<'RFORK'>, conn: Connection, ctx: ExecutorContext, onStarted?: () => void): Promise<Reply> {
  const { env, cwd, jobId, notice } = jobSetup(m, ctx);
  // The restorer rebuilds the image in this process; the proxied descriptors are sockets at their numbers.
  const proxied = imageFds(m.fds);
  let child: Child;
  let early: Buffer[] = [];
  const imageFile = await imageFor(m, conn, ctx);
  // The origin's cwd missing here (hosts that share no files): the child continues in the fallback a program
  // would start in, and the client is told, as for EXEC.
  const fileArgs = [...(await imageFiles(m, conn, ctx)), ...(notice ? ['--cwd', cwd] : [])];
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
  // A restored process keeps its own cwd where it exists here, else the notice says where it continues.
  return superviseJob(child, { stream: m.stream, cwd, ...(m.window !== undefined ? { window: m.window } : {}), proxied, perFdWindow: fdWindow, early, ...(notice ? { notice } : {}), ...(jobId ? { jobId } : {}), onExit: () => dropImage(m, imageFile) }, conn, ctx, onStarted);
}

/** The restorer program (built by npm install). */
const RESTORER = (): string => helper('rex-restore');

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
  if (spares.has(ctx) || ctx.stopped) return;
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
  if (!spareDropped.has(ctx)) {
    spareDropped.add(ctx);
    (ctx.atStop ??= []).push(() => dropSpare(ctx));
  }
}
const spareDropped = new WeakSet<ExecutorContext>();

/** Takes the spare restorer of `ctx` if one runs; undefined otherwise. restoreHere starts the next once the restored child runs. */
function takeSpare(ctx: ExecutorContext): Child | undefined {
  const c = spares.get(ctx);
  spares.delete(ctx);
  if (!c) return undefined;
  if (c.pid === undefined || c.exitCode !== null || c.signalCode !== null) return undefined;
  c.removeAllListeners('exit');
  c.removeAllListeners('error');
  return c;
}

/** Ends the spare restorer of `ctx` (rexd stopping). */
function dropSpare(ctx: ExecutorContext): void {
  const c = spares.get(ctx);
  spares.delete(ctx);
  c?.kill('SIGKILL');
}

/** The image file to restore: the local client's own (its memfd, checked by the service), or one fetched from the origin by hash. */
async function imageFor(m: MessageOf<'RFORK'>, conn: Connection, ctx: ExecutorContext): Promise<string> {
  const want = m.sha256 && m.sha256.byteLength === 32 ? Buffer.from(m.sha256).toString('hex') : undefined;
  let file: string;
  if (m.imageData) {
    // Sent inside the RFORK: written once for the restorer, private to this rexd's user, removed after the restore.
    const dir = execDirs(ctx.stateDirectory).images;
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const image = inlineImage(m.imageData, m.imageSize);
    file = join(dir, `${process.pid}-${randomBytes(8).toString('hex')}`);
    writeFileSync(file, image, { mode: 0o600, flag: 'wx' });
    ctx.log.info({ program: m.path, bytes: image.byteLength, sent: m.imageData.byteLength }, 'RFORK: rfork image received inline');
  } else if (!want) {
    return m.path;
  } else {
    file = (await cached(ctx.stateDirectory, want, ctx)) ?? (await fetchFile(conn, m.stream, { hex: want, path: m.path }, ctx));
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
 * host: each file the origin listed in RFORK `files` (with its sha256) is mapped
 * from this host's file at the same path when the content is the same, else
 * from the cached copy, fetched from the origin when missing. Content, not
 * inode, decides (docs/IMAGE.md 3.2): the daemons have checked every byte.
 */
async function imageFiles(m: MessageOf<'RFORK'>, conn: Connection, ctx: ExecutorContext): Promise<string[]> {
  if ((!m.sha256 && !m.imageData) || !m.files) return []; // the origin's own host: the strict identity check holds
  const args: string[] = [];
  for (const [i, f] of m.files.entries()) {
    if (f.sha256.byteLength !== 32 || !isAbsolute(f.path) || f.path.includes('=')) {
      throw new ProtocolError('BAD_REQUEST', `RFORK files entry ${i} ("${f.path}"): an image's file needs an absolute path without "=" and a 32-byte sha256`, { fatal: false });
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
function dropImage(m: MessageOf<'RFORK'>, file: string | undefined): void {
  if (!file || file === m.path) return; // the local client's own descriptor is not ours to remove
  rmSync(file, { force: true });
}

/** How rex-restore's exit status before the jump maps to an RFORK error (docs/RFORK.md section 2). */
// Exit 4 (EX_HOST): this host cannot run the image (its CPU, a mapped file that differs): INCOMPATIBLE, ENOEXEC in librex.
const RESTORE_FAILURES: Record<number, ProtocolError['proto']> = { 2: 'BAD_REQUEST', 3: 'BAD_REQUEST', 4: 'INCOMPATIBLE', 5: 'INTERNAL' };
/**
 * Waits until the restored program says it runs (one byte on the greeting
 * socket at fd `greet`, after this rexd's socket path was offered there), and
 * returns what the restorer wrote on stderr meanwhile. A restorer that exits
 * first is the RFORK's error, with its message.
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
