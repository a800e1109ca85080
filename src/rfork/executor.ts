/**
 * rfork's executor side (docs/RFORK.md section 5): an RFORK's image accepted
 * (the local client's own descriptor, inline, or fetched by hash with the
 * files it maps) and restored by rex-restore, whose restored child then runs
 * as any job does (superviseJob in src/exec/executor/executor.ts).
 */
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, constants as fsc, mkdirSync, openSync, readSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { Socket } from 'node:net';
import { promisify } from 'node:util';
import { isAbsolute, join } from 'node:path';
import type { Connection, Reply } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { MessageOf } from '../protocol/messages.js';
import { helper } from '../util/paths.js';
import { testSwitch } from '../util/testmode.js';
import { fileSha256, TRANSFER_MAX } from '../exec/protocol.js';
import { startChild, type Child } from '../exec/executor/child.js';
import { execDirs } from '../exec/executor/dirs.js';
import { jobSetup, killGroup, start, superviseJob, type ExecutorContext } from '../exec/executor/executor.js';
import { cached, fetchFile, hiddenForTests, receiveFile } from '../exec/executor/transfer.js';
import { fdWindow, imageFds, inlineImage } from './protocol.js';
import { IMG_TRAILER_SIZE } from './image-layout.generated.js';

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
  // An image fetched from the origin streams into the restorer as it arrives (streamImage); any other is a file.
  // A state directory where no FIFO can be made: the image is fetched into the cache first, as before streaming.
  const streamed =
    m.sha256 && m.sha256.byteLength === 32 && !m.imageData
      ? await imageFifo(ctx).catch((e: Error) => void ctx.log.warn({ err: e.message }, 'RFORK: the image cannot be streamed into the restorer; fetching it into the cache first'))
      : undefined;
  let imageFile: string;
  let fileArgs: string[];
  try {
    // The files first: their FETCHes use the RFORK's stream, which the image's FETCH then holds until its end.
    // The origin's cwd missing here (hosts that share no files): the child continues in the fallback a program
    // would start in, and the client is told, as for EXEC.
    fileArgs = [...(await imageFiles(m, conn, ctx)), ...(notice ? ['--cwd', cwd] : [])];
    imageFile = streamed ? streamed.path : await imageFor(m, conn, ctx);
  } catch (e) {
    streamed?.drop();
    throw e;
  }
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
    try {
      child = await start(RESTORER(), [...fileArgs, imageFile], { cwd, env, stdio }, ctx);
    } catch (e) {
      streamed?.drop();
      throw e;
    }
  }
  const arriving = streamed ? streamImage(conn, m.stream, { hex: Buffer.from(m.sha256!).toString('hex'), path: m.path }, streamed, ctx) : undefined;
  try {
    if (!arriving) early = await restored(child, greet, ctx, () => dropImage(m, imageFile));
    else {
      // A transfer that fails (the sha256 differs, the origin goes away) withholds the image's last bytes: the
      // restorer reads a truncated image and refuses it (exit 3) before it maps anything; its error is the RFORK's.
      const restore = restored(child, greet, ctx, () => streamed!.drop(), arriving);
      restore.catch(() => {});
      early = await Promise.race([
        restore,
        arriving.then(
          () => restore,
          (e: unknown) => {
            killGroup(child, 100);
            streamed!.drop();
            throw e;
          },
        ),
      ]);
    }
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
function restored(child: Child, greet: number, ctx: ExecutorContext, cleanup: () => void, arriving?: Promise<void>): Promise<Buffer[]> {
  const sock = child.stdio[greet] as import('node:net').Socket;
  const stderr = child.stderr!;
  const early: Buffer[] = [];
  const collect = (d: Buffer): void => void early.push(d);
  stderr.on('data', collect);
  sock.on('error', () => {});
  sock.write(`REX1 ${ctx.socket}\n`);
  return new Promise<Buffer[]>((ok, fail) => {
    // 30 s from the image's last byte: a streamed image may take longer than that to arrive.
    let timer: NodeJS.Timeout | undefined;
    const arm = (): void => {
      if (finished) return;
      timer = setTimeout(() => {
        done();
        killGroup(child, 100);
        cleanup();
        fail(new ProtocolError('TIMEOUT', `the restored process did not start on ${ctx.hostName} within 30 s`, { fatal: false }));
      }, 30_000);
    };
    let finished = false;
    if (arriving) arriving.then(arm, () => {});
    else arm();
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
      finished = true;
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

/** A FIFO a streamed image goes through: its path, this rexd's end (read-write: opening it never blocks), and its removal. */
interface ImageFifo {
  path: string;
  out: Socket;
  drop: () => void;
}

/** Makes a FIFO in the images directory, private to this rexd's user, open at this end before the restorer opens it. */
async function imageFifo(ctx: ExecutorContext): Promise<ImageFifo> {
  const dir = execDirs(ctx.stateDirectory).images;
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const path = join(dir, `${process.pid}-${randomBytes(8).toString('hex')}.fifo`);
  try {
    await execFileP('mkfifo', ['-m', '600', path]);
    // Read-write: never blocks, and the restorer's open for reading never waits for a writer either.
    const fd = openSync(path, fsc.O_RDWR | fsc.O_NONBLOCK | fsc.O_NOFOLLOW);
    const out = new Socket({ fd, readable: false, writable: true });
    out.on('error', () => {});
    return { path, out, drop: () => (out.destroy(), rmSync(path, { force: true })) };
  } catch (e) {
    rmSync(path, { force: true });
    throw new ProtocolError('INTERNAL', `cannot make the image FIFO in ${dir} on ${ctx.hostName}: ${(e as Error).message}`, { fatal: false });
  }
}
const execFileP = promisify(execFile);

/**
 * Fetches the image from the origin (FETCH, then FILE chunks, docs/PROTOCOL.md
 * 4.9) straight into the restorer through `fifo`, so that the restore runs
 * while the image arrives (docs/RFORK.md section 5): no copy in the cache, no
 * file written and read back. Every byte is hashed as it passes; the last
 * IMG_TRAILER_SIZE bytes (the trailer with data_hash, without which the
 * restorer maps nothing it has read and jumps nowhere) are written only once
 * the whole image has the sha256 the RFORK named. Anything else (a different
 * hash, a short image, the origin gone, a SIGNAL) closes the FIFO without
 * them: the restorer reads a truncated image and exits 3, and the promise
 * rejects with the transfer's error.
 */
function streamImage(conn: Connection, stream: number, want: { hex: string; path: string }, fifo: ImageFifo, ctx: ExecutorContext): Promise<void> {
  const hash = createHash('sha256');
  let held = Buffer.alloc(0);
  let bytes = 0;
  let total = 0;
  const corrupt = testSwitch('REX_TEST_CORRUPT_IMAGE');
  return receiveFile(conn, stream, want, ctx, {
    aborted: 'the rfork image was not completed for the restorer',
    size: (n) => {
      total = n;
    },
    write: (chunk) => {
      let data = chunk;
      // Test seam 'stream': a byte of page data near the end damaged before it is hashed, as a link could: the
      // restorer has read it (its data_hash is in the trailer still held back), the sha256 refuses it.
      const at = total - 4096;
      if (corrupt === 'stream' && at > 0 && bytes <= at && bytes + data.length > at) (data = Buffer.from(data))[at - bytes] ^= 0xff;
      hash.update(data);
      // Test seam '1': damaged after the check (the executor's disk, say): the restorer's own hashes refuse it.
      if (corrupt === '1' && bytes <= 64 && bytes + data.length > 64) (data = Buffer.from(data))[64 - bytes] ^= 0xff;
      bytes += data.length;
      if (bytes > TRANSFER_MAX) throw new Error(`the image is larger than ${TRANSFER_MAX} bytes`);
      // Passed through without a copy (the socket keeps the chunk until the restorer has read it), less the
      // last IMG_TRAILER_SIZE bytes so far, which are held back.
      if (data.length >= IMG_TRAILER_SIZE) {
        if (held.length > 0) fifo.out.write(held);
        fifo.out.write(data.subarray(0, data.length - IMG_TRAILER_SIZE));
        held = Buffer.from(data.subarray(data.length - IMG_TRAILER_SIZE));
      } else {
        const all = Buffer.concat([held, data]);
        const cut = Math.max(0, all.length - IMG_TRAILER_SIZE);
        if (cut > 0) fifo.out.write(all.subarray(0, cut));
        held = all.subarray(cut);
      }
    },
    finish: (copied) => {
      if (copied) throw new Error('an rfork image streams in FILE chunks, not by the rex-auto-transfer command');
      const got = hash.digest('hex');
      if (got !== want.hex) throw new Error(`the image received has sha256 ${got}, expected ${want.hex}; not restored`);
      fifo.out.end(held);
      ctx.log.info({ program: want.path, sha256: want.hex, bytes, streamed: true }, 'EXEC: program transferred from the origin');
    },
    // Without the trailer.
    abort: () => fifo.out.destroy(),
  });
}
