/**
 * Executable transfer (rex.rc rex-auto-transfer, docs/EXEC.md "Transfer"):
 * when the program an EXEC names is missing on the executor or differs from
 * the origin's (sha256), the executor asks the origin for it once (FETCH) and
 * keeps it in a content-addressed cache in rex-temp-directory, verified before
 * use and reused by later runs; the cache is trimmed least-recently-used to a
 * size limit.
 */
import { createHash, randomBytes } from 'node:crypto';
import { type BigIntStats, closeSync, constants as fsc, fchmodSync, fstatSync, lstatSync, mkdirSync, openSync, read, readSync, readdirSync, renameSync, rmSync, symlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Connection } from '../../protocol/connection.js';
import { ProtocolError } from '../../protocol/frame.js';
import type { MessageOf } from '../../protocol/messages.js';
import { testSwitch } from '../../util/testmode.js';
import type { LogEvent } from '../../log/txlog.js';
import { execDirs, ownUid } from './dirs.js';
import { TRANSFER_MAX, fileSha256 } from '../protocol.js';
import { processAlive } from '../../util/proc.js';

/** Default size limit of one host's cache; REX_EXEC_CACHE_MAX (bytes) overrides it. */
export const CACHE_MAX_DEFAULT = 1 << 30;

/** The cache directory of a state directory (docs/EXEC.md, "The cache"). */
export function cacheDir(root: string): string {
  return join(root, 'cache');
}

/**
 * How a cache file is opened: never through a symbolic link, and without
 * blocking on a FIFO someone put there (libuv adds O_CLOEXEC).
 */
const O_READ = fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK;
/** How a new cache file is created: it must not exist, not even as a link. */
const O_CREATE = fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW;

/** What a cache entry's insertion record holds: the fstat of the file as it was inserted (ctime cannot be set by anyone). */
function statKey(st: BigIntStats): string {
  return `v1 dev=${st.dev} ino=${st.ino} size=${st.size} mtime=${st.mtimeNs} ctime=${st.ctimeNs} mode=${st.mode.toString(8)} uid=${st.uid}`;
}

function recordPath(dir: string, hex: string): string {
  return join(dir, `${hex}.stat`);
}

/** The insertion record of an entry, or undefined (missing, a link, not ours). */
function readRecord(dir: string, hex: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(recordPath(dir, hex), O_READ);
  } catch {
    return undefined;
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile() || st.uid !== ownUid() || st.size > 512) return undefined;
    const buf = Buffer.alloc(512);
    return buf.subarray(0, readSync(fd, buf, 0, buf.length, 0)).toString('utf8').trim();
  } catch {
    return undefined;
  } finally {
    closeSync(fd);
  }
}

/** Records the entry's fstat at insertion (or after a successful re-hash): written aside, then renamed over. */
function writeRecord(dir: string, hex: string, st: BigIntStats): void {
  const tmp = join(dir, `.${hex}.stat.${process.pid}.${randomBytes(6).toString('hex')}`);
  const fd = openSync(tmp, O_CREATE, 0o600);
  try {
    writeSync(fd, `${statKey(st)}\n`);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, recordPath(dir, hex));
}

/** Where a cache check reports what it removed: rexd's log and its transaction log. */
export interface CacheReport {
  log: { info(obj: object, msg: string): void; warn(obj: object, msg: string): void };
  /** A row of the transaction log (docs/LOG.md); absent outside rexd. */
  record?: (ev: LogEvent) => void;
}

/** Removes a cache entry that failed verification, and says so in both logs. */
function reject(dir: string, hex: string, why: string, report: CacheReport | undefined): void {
  rmSync(join(dir, hex), { recursive: true, force: true });
  rmSync(recordPath(dir, hex), { force: true });
  report?.log.warn({ sha256: hex, cached: join(dir, hex), why }, 'EXEC: cache entry failed verification; removed, the file is fetched again');
  report?.record?.({ kind: 'transaction', messageType: 'EXEC', target: join(dir, hex), outcome: 'denied', reason: `cache entry failed verification (${why}); removed, fetched again` });
}

const readAt = promisify(read);

/** sha256 of what `fd` holds, read 8 MiB at a time with the event loop free in between. */
async function hashFd(fd: number): Promise<string> {
  const h = createHash('sha256');
  const buf = Buffer.allocUnsafe(8 << 20);
  for (let pos = 0; ; ) {
    const { bytesRead } = await readAt(fd, buf, 0, buf.length, pos);
    if (bytesRead === 0) break;
    h.update(buf.subarray(0, bytesRead));
    pos += bytesRead;
  }
  return h.digest('hex');
}

/** A verified cache entry: its path, and a descriptor open on the very file that was verified (the caller closes it). */
export interface CacheHit {
  path: string;
  fd: number;
}

/**
 * The cached file with this hash, verified, or undefined (docs/EXEC.md, "The
 * cache"). It is opened once with O_NOFOLLOW and checked through that
 * descriptor: a regular file of rexd's uid that group and others cannot
 * write, whose fstat (device, inode, size, mtime, ctime, mode, owner) is the
 * one recorded when rexd inserted it; when there is no record or it differs,
 * the content is re-hashed and must match (the record is then rewritten).
 * Anything else is removed and logged, and the caller fetches the file again.
 * The insertion record's mtime is the LRU clock.
 */
export async function openCached(root: string, hex: string, report?: CacheReport): Promise<CacheHit | undefined> {
  if (!/^[0-9a-f]{64}$/.test(hex)) return undefined;
  const dir = cacheDir(root);
  const path = join(dir, hex);
  let fd: number;
  try {
    fd = openSync(path, O_READ);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    reject(dir, hex, code === 'ELOOP' ? 'it is a symbolic link' : `it cannot be opened (${code})`, report);
    return undefined;
  }
  let why: string | undefined;
  try {
    const st = fstatSync(fd, { bigint: true });
    const mode = Number(st.mode);
    if (!st.isFile()) why = 'it is not a regular file';
    else if (Number(st.uid) !== ownUid()) why = `it belongs to uid ${st.uid}, not to rexd's uid ${ownUid()}`;
    else if ((mode & 0o022) !== 0) why = `group or others can write it (mode ${(mode & 0o7777).toString(8)})`;
    else if (st.size > BigInt(TRANSFER_MAX)) why = `it is ${st.size} bytes, more than a transfer carries`;
    else if (readRecord(dir, hex) !== statKey(st)) {
      // No insertion record, or the file changed since: only its content can vouch for it.
      const got = await hashFd(fd);
      if (got !== hex) why = `its content has sha256 ${got}`;
      else {
        const now = fstatSync(fd, { bigint: true });
        if (statKey(now) !== statKey(st)) why = 'it changed while it was being hashed';
        else {
          writeRecord(dir, hex, st);
          report?.log.info({ sha256: hex, cached: path }, 'EXEC: cache entry had no matching insertion record; re-hashed and recorded');
        }
      }
    }
  } catch (e) {
    why = `it cannot be checked (${(e as Error).message})`;
  }
  if (why !== undefined) {
    closeSync(fd);
    reject(dir, hex, why, report);
    return undefined;
  }
  const now = new Date();
  try {
    utimesSync(recordPath(dir, hex), now, now); // the LRU clock: the entry's own times are part of its record
  } catch {
    /* read-only: still usable */
  }
  return { path, fd };
}

/** {@link openCached} for a file used by path (a library, an rfork image or mapped file): verified, its descriptor closed. */
export async function cached(root: string, hex: string, report?: CacheReport): Promise<string | undefined> {
  const hit = await openCached(root, hex, report);
  if (!hit) return undefined;
  closeSync(hit.fd);
  return hit.path;
}

/** Receives one program into the cache: chunks, then verify and publish atomically. */
export class Incoming {
  private fd: number;
  private tmp: string;
  private hash = createHash('sha256');
  private bytes = 0;

  constructor(
    private readonly root: string,
    private readonly hex: string,
  ) {
    if (!/^[0-9a-f]{64}$/.test(hex)) throw new Error(`"${hex}" is not a sha256 in hex`);
    const dir = cacheDir(root);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.tmp = join(dir, `.${hex}.${process.pid}.${randomBytes(6).toString('hex')}`);
    this.fd = openSync(this.tmp, O_CREATE, 0o600);
  }

  /** Appends a chunk; throws when the program is larger than {@link TRANSFER_MAX}. */
  write(data: Uint8Array): void {
    this.bytes += data.byteLength;
    if (this.bytes > TRANSFER_MAX) throw new Error(`program is larger than ${TRANSFER_MAX} bytes`);
    this.hash.update(data);
    writeSync(this.fd, data);
  }

  /** Bytes received so far. */
  get received(): number {
    return this.bytes;
  }

  /** The temporary file: where an external transfer command (rex-auto-transfer: command) writes the copy. */
  get path(): string {
    return this.tmp;
  }

  /** Verifies the content against the hash the EXEC named and publishes it; returns its path. */
  finish(): string {
    return this.publish(this.hash.digest('hex'));
  }

  /**
   * Verifies and publishes what an external command wrote to {@link path}
   * (the FILE chunks did not carry it): it is hashed here like a received copy.
   * The command may have replaced the file (rsync renames its own over it):
   * it is opened without following a link, must be a regular file, and when
   * it is not rexd's own private file its content is copied into one.
   */
  finishCopied(): string {
    closeSync(this.fd);
    this.fd = -1;
    let fd: number;
    try {
      fd = openSync(this.tmp, O_READ); // the command may have left a link there: not followed
    } catch (e) {
      rmSync(this.tmp, { force: true });
      throw e;
    }
    let out = -1;
    let fresh = '';
    try {
      const st = fstatSync(fd);
      if (!st.isFile()) throw new Error('the copy is not a regular file');
      if (st.size > TRANSFER_MAX) throw new Error(`the copy is ${st.size} bytes, more than the ${TRANSFER_MAX} a transfer may carry`);
      const own = st.uid === ownUid() && (st.mode & 0o022) === 0;
      if (!own) {
        fresh = join(cacheDir(this.root), `.${this.hex}.${process.pid}.${randomBytes(6).toString('hex')}`);
        out = openSync(fresh, O_CREATE, 0o600);
      }
      const buf = Buffer.allocUnsafe(1 << 20);
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) {
        this.hash.update(buf.subarray(0, n));
        if (out >= 0) writeSync(out, buf, 0, n);
      }
      this.bytes = st.size;
      if (out >= 0) {
        rmSync(this.tmp, { force: true });
        this.tmp = fresh;
        this.fd = out;
        closeSync(fd);
      } else {
        this.fd = fd;
      }
    } catch (e) {
      closeSync(fd);
      rmSync(this.tmp, { force: true });
      if (out >= 0) {
        closeSync(out);
        rmSync(fresh, { force: true });
      }
      throw e;
    }
    return this.publish(this.hash.digest('hex'));
  }

  /** Publishes the file this.fd is open on: read-only, renamed to its hash, its fstat recorded. */
  private publish(got: string): string {
    try {
      if (got !== this.hex) throw new Error(`transferred program has sha256 ${got}, expected ${this.hex}; not used`);
      fchmodSync(this.fd, 0o500);
      const dir = cacheDir(this.root);
      const final = join(dir, this.hex);
      renameSync(this.tmp, final);
      writeRecord(dir, this.hex, fstatSync(this.fd, { bigint: true })); // after the rename, which changes ctime
      trimCache(this.root, Number(process.env.REX_EXEC_CACHE_MAX) || CACHE_MAX_DEFAULT, this.hex);
      return final;
    } catch (e) {
      rmSync(this.tmp, { force: true });
      throw e;
    } finally {
      closeSync(this.fd);
      this.fd = -1;
    }
  }

  /** Drops a transfer that failed or was interrupted (Ctrl-C at the origin, connection lost). */
  abort(): void {
    try {
      if (this.fd >= 0) closeSync(this.fd);
    } catch {
      /* closed */
    }
    this.fd = -1;
    rmSync(this.tmp, { force: true });
  }
}

/** Removes least-recently-used entries until the cache is within `max` bytes; `keep` is never removed. */
export function trimCache(root: string, max: number, keep?: string): string[] {
  const dir = cacheDir(root);
  let entries: { name: string; size: number; used: number }[] = [];
  try {
    entries = readdirSync(dir)
      .filter((n) => /^[0-9a-f]{64}$/.test(n))
      .map((name) => {
        const st = lstatSync(join(dir, name));
        let used = st.mtimeMs;
        try {
          used = lstatSync(recordPath(dir, name)).mtimeMs;
        } catch {
          /* no record: the entry's own mtime */
        }
        return { name, size: st.size, used };
      });
  } catch {
    return [];
  }
  let total = entries.reduce((a, e) => a + e.size, 0);
  const removed: string[] = [];
  for (const e of entries.sort((a, b) => a.used - b.used)) {
    if (total <= max) break;
    if (e.name === keep) continue;
    rmSync(join(dir, e.name), { recursive: true, force: true });
    rmSync(recordPath(dir, e.name), { force: true });
    total -= e.size;
    removed.push(e.name);
  }
  return removed;
}

/** What the executor's side of a transfer needs from its rexd (a subset of ExecutorContext). */
export interface TransferContext extends CacheReport {
  hostName: string;
  /** rexd's state directory: the cache and the per-run directories are in it (docs/EXEC.md, "Where files live"). */
  stateDirectory: string;
  autoTransfer?: 'on' | 'off' | 'command';
}

/** Least time between two PROGRESS messages of one transfer: enough for a smooth bar, few frames. */
const PROGRESS_EVERY_MS = 100;

/** Where {@link receiveFile} puts what arrives: the program cache (fetchFile) or the restorer's FIFO (rfork). */
export interface FileSink<T> {
  /** The size the first FILE announces. */
  size?(total: number): void;
  /** A chunk; throws to fail the transfer with its message. */
  write(data: Buffer): void;
  /** At the last FILE (`copied`: the origin's rex-auto-transfer command wrote the file); throws to fail it. */
  finish(copied: boolean): T;
  /** The transfer failed: drops what arrived. */
  abort(): void;
  /** What abort() leaves, for the log line ('partial copy removed'). */
  aborted: string;
  /** Where the origin's copy command may write the file (FETCH dest). */
  dest?: string;
}

/**
 * Fetches one file from the origin on the stream `stream` (FETCH, then FILE
 * chunks or an external copy, docs/PROTOCOL.md 4.9) into `sink`, resolving
 * with what its finish() returns. A SIGNAL from the origin meanwhile (its stub
 * was interrupted) cancels the transfer, and the sink is aborted whichever way
 * it fails.
 */
export function receiveFile<T>(conn: Connection, stream: number, want: { hex: string; path: string }, ctx: Pick<TransferContext, 'hostName' | 'log'>, sink: FileSink<T>): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const fail = (why: string, proto: 'NO_ENTRY' | 'UNREACHABLE' | 'CANCELLED' = 'NO_ENTRY'): void => {
      if (settled) return;
      settled = true;
      sink.abort();
      ctx.log.info({ file: want.path, sha256: want.hex, why }, `EXEC: transfer failed; ${sink.aborted}`);
      reject(new ProtocolError(proto, `${want.path}: transfer to ${ctx.hostName} failed: ${why}`, { fatal: false }));
    };
    const adopted = conn.adoptStream(stream, {
      onMessage: (x) => {
        if (settled) return;
        if (x.type === 'SIGNAL') return fail(`cancelled by the origin (SIG${x.signal})`, 'CANCELLED');
        if (x.type !== 'FILE') return;
        if (x.error) return fail(x.error);
        try {
          if (x.size !== undefined) sink.size?.(x.size);
          if (x.data && x.data.byteLength > 0) sink.write(Buffer.from(x.data.buffer, x.data.byteOffset, x.data.byteLength));
          if (x.eof) {
            const done = sink.finish(!!x.copied);
            settled = true;
            resolve(done);
          }
        } catch (e) {
          fail((e as Error).message);
        }
      },
      onClose: (err) => fail(`the origin went away (${err?.message ?? 'stream closed'})`, 'UNREACHABLE'),
    });
    // The origin may have gone while the cache was looked up: then no FILE and no close will ever come.
    if (!adopted) return fail('the origin went away before the transfer began', 'UNREACHABLE');
    conn.sendOn(stream, { type: 'FETCH', sha256: Buffer.from(want.hex, 'hex'), path: want.path, ...(sink.dest ? { dest: sink.dest } : {}) });
  });
}

/**
 * Fetches one file from the origin on the EXEC stream `stream` into the cache
 * ({@link receiveFile}), sending PROGRESS towards the origin as it arrives;
 * resolves with the cached path. The temporary file is removed whichever way
 * it fails.
 */
export function fetchFile(conn: Connection, stream: number, want: { hex: string; path: string }, ctx: TransferContext): Promise<string> {
  let incoming: Incoming;
  try {
    incoming = new Incoming(ctx.stateDirectory, want.hex);
  } catch (e) {
    return Promise.reject(new ProtocolError('INTERNAL', `cannot write the program cache in ${cacheDir(ctx.stateDirectory)} on ${ctx.hostName}: ${(e as Error).message}`, { fatal: false }));
  }
  let total = 0;
  let last = 0;
  const progress = (done: number, force = false): void => {
    const now = Date.now();
    if (!force && now - last < PROGRESS_EVERY_MS) return;
    last = now;
    conn.sendOn(stream, { type: 'PROGRESS', done, total, path: want.path });
  };
  return receiveFile(conn, stream, want, ctx, {
    dest: incoming.path,
    aborted: 'partial copy removed',
    size: (n) => {
      total = n;
      progress(0, true);
    },
    write: (data) => {
      incoming.write(data);
      progress(incoming.received);
    },
    finish: (copied) => {
      const path = copied ? incoming.finishCopied() : incoming.finish();
      progress(incoming.received, true);
      ctx.log.info({ program: want.path, sha256: want.hex, cached: path, bytes: incoming.received, ...(copied ? { by: 'command' } : {}) }, 'EXEC: program transferred from the origin');
      return path;
    },
    abort: () => incoming.abort(),
  });
}

/** Test seam: lets one machine play hosts with different file systems (a file "only on the origin"). */
export function hiddenForTests(path: string): boolean {
  const hide = testSwitch('REX_EXEC_TEST_HIDE');
  return !!hide && path.startsWith(hide);
}

/**
 * Makes the shared libraries EXEC `m` lists loadable for this run: a library
 * present here at the same path with the same hash needs nothing; any other is
 * taken from the cache or fetched from the origin, and linked under its
 * DT_NEEDED name in a fresh per-run directory, which the caller puts first in
 * LD_LIBRARY_PATH and removes when the program ends. Returns that directory,
 * or undefined when nothing had to be provided.
 */
export async function libraryDir(m: MessageOf<'EXEC'>, conn: Connection, ctx: TransferContext): Promise<string | undefined> {
  const links: [string, string][] = [];
  const names = new Set<string>();
  for (const [i, lib] of (m.libs ?? []).entries()) {
    // The name becomes a file in the per-run directory: it must not reach outside it, or name one file twice.
    if (lib.sha256.byteLength !== 32 || lib.name === '' || lib.name.includes('/') || lib.name === '.' || lib.name === '..' || names.has(lib.name)) {
      throw new ProtocolError('BAD_REQUEST', `EXEC libs entry ${i} ("${lib.name}"): needs a file name (no "/", not "." or "..", not repeated) and a 32-byte sha256`, { fatal: false });
    }
    names.add(lib.name);
    const hex = Buffer.from(lib.sha256).toString('hex');
    let same = false;
    try {
      same = !hiddenForTests(lib.path) && fileSha256(lib.path) === hex;
    } catch {
      /* not here */
    }
    if (same) continue;
    let file = await cached(ctx.stateDirectory, hex, ctx);
    if (!file) {
      if (ctx.autoTransfer === 'off') continue; // the loader will say which library is missing
      file = await fetchFile(conn, m.stream, { hex, path: lib.path }, ctx);
    }
    links.push([lib.name, file]);
  }
  if (links.length === 0) return undefined;
  const runs = execDirs(ctx.stateDirectory).run;
  sweepRunDirs(runs);
  // Per run, not shared: two programs may need different libraries under one name at the same time.
  const dir = join(runs, `${process.pid}-${randomBytes(6).toString('hex')}`);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  for (const [name, file] of links) symlinkSync(file, join(dir, name));
  return dir;
}

/** Removes the per-run directories of a rexd that is gone (killed, crashed): each is named after its rexd's pid. */
function sweepRunDirs(runs: string): void {
  let names: string[];
  try {
    names = readdirSync(runs);
  } catch {
    return;
  }
  for (const n of names) {
    const pid = Number(/^(\d+)-/.exec(n)?.[1]);
    if (!pid || pid === process.pid) continue;
    if (processAlive(pid)) continue; // alive (or a reused pid: then the directory stays, which is harmless)
    rmSync(join(runs, n), { recursive: true, force: true });
  }
}
