/**
 * Executable transfer (rex.rc rex-auto-transfer, docs/EXEC.md "Transfer"):
 * when the program an EXEC names is missing on the executor or differs from
 * the origin's (sha256), the executor asks the origin for it once (FETCH) and
 * keeps it in a content-addressed cache in rex-temp-directory, verified before
 * use and reused by later runs; the cache is trimmed least-recently-used to a
 * size limit.
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, closeSync, fstatSync, mkdirSync, openSync, readFileSync, readSync, readdirSync, renameSync, rmSync, statSync, symlinkSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import type { Connection } from '../protocol/connection.js';
import { ProtocolError } from '../protocol/frame.js';
import type { MessageOf } from '../protocol/messages.js';
import { testSwitch } from '../util/testmode.js';

/** Largest program transferred (it travels through the daemons' memory once). */
export const TRANSFER_MAX = 1 << 30;

/** Default size limit of one host's cache; REX_EXEC_CACHE_MAX (bytes) overrides it. */
export const CACHE_MAX_DEFAULT = 1 << 30;

const hashes = new Map<string, { key: string; hex: string }>();

/** sha256 of a file, remembered per (path, device, inode, size, mtime) so a program is hashed once. */
export function fileSha256(path: string): string {
  const st = statSync(path);
  const key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  const hit = hashes.get(path);
  if (hit && hit.key === key) return hit.hex;
  const hex = createHash('sha256').update(readFileSync(path)).digest('hex');
  hashes.set(path, { key, hex });
  return hex;
}

/** The cache directory of a host's temp directory. */
export function cacheDir(tempDirectory: string): string {
  return join(tempDirectory, 'cache');
}

/** The cached program with this hash, touched for LRU, or undefined. */
export function cached(tempDirectory: string, hex: string): string | undefined {
  const p = join(cacheDir(tempDirectory), hex);
  try {
    statSync(p);
  } catch {
    return undefined;
  }
  const now = new Date();
  try {
    utimesSync(p, now, now); // mtime is the LRU clock: atime may be off (noatime)
  } catch {
    /* read-only: still usable */
  }
  return p;
}

/** Receives one program into the cache: chunks, then verify and publish atomically. */
export class Incoming {
  private fd: number;
  private tmp: string;
  private hash = createHash('sha256');
  private bytes = 0;

  constructor(
    private readonly tempDirectory: string,
    private readonly hex: string,
  ) {
    const dir = cacheDir(tempDirectory);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.tmp = join(dir, `.${hex}.${process.pid}.${Math.random().toString(36).slice(2)}`);
    this.fd = openSync(this.tmp, 'wx', 0o600);
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
    closeSync(this.fd);
    return this.publish(this.hash.digest('hex'));
  }

  /**
   * Verifies and publishes what an external command wrote to {@link path}
   * (the FILE chunks did not carry it): it is hashed here like a received copy.
   */
  finishCopied(): string {
    closeSync(this.fd);
    const fd = openSync(this.tmp, 'r');
    try {
      const size = fstatSync(fd).size;
      if (size > TRANSFER_MAX) {
        rmSync(this.tmp, { force: true });
        throw new Error(`the copy is ${size} bytes, more than the ${TRANSFER_MAX} a transfer may carry`);
      }
      const buf = Buffer.allocUnsafe(1 << 20);
      for (let n; (n = readSync(fd, buf, 0, buf.length, null)) > 0; ) this.hash.update(buf.subarray(0, n));
      this.bytes = size;
    } finally {
      closeSync(fd);
    }
    return this.publish(this.hash.digest('hex'));
  }

  private publish(got: string): string {
    if (got !== this.hex) {
      rmSync(this.tmp, { force: true });
      throw new Error(`transferred program has sha256 ${got}, expected ${this.hex}; not used`);
    }
    chmodSync(this.tmp, 0o700);
    const final = join(cacheDir(this.tempDirectory), this.hex);
    renameSync(this.tmp, final);
    trimCache(this.tempDirectory, Number(process.env.REX_EXEC_CACHE_MAX) || CACHE_MAX_DEFAULT, this.hex);
    return final;
  }

  /** Drops a transfer that failed or was interrupted (Ctrl-C at the origin, connection lost). */
  abort(): void {
    try {
      closeSync(this.fd);
    } catch {
      /* closed */
    }
    rmSync(this.tmp, { force: true });
  }
}

/** Removes least-recently-used entries until the cache is within `max` bytes; `keep` is never removed. */
export function trimCache(tempDirectory: string, max: number, keep?: string): string[] {
  const dir = cacheDir(tempDirectory);
  let entries: { name: string; size: number; used: number }[] = [];
  try {
    entries = readdirSync(dir)
      .filter((n) => /^[0-9a-f]{64}$/.test(n))
      .map((name) => {
        const st = statSync(join(dir, name));
        return { name, size: st.size, used: st.mtimeMs };
      });
  } catch {
    return [];
  }
  let total = entries.reduce((a, e) => a + e.size, 0);
  const removed: string[] = [];
  for (const e of entries.sort((a, b) => a.used - b.used)) {
    if (total <= max) break;
    if (e.name === keep) continue;
    rmSync(join(dir, e.name), { force: true });
    total -= e.size;
    removed.push(e.name);
  }
  return removed;
}

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

/** What the executor's side of a transfer needs from its rexd (a subset of ExecutorContext). */
export interface TransferContext {
  hostName: string;
  tempDirectory: string;
  autoTransfer?: 'on' | 'off' | 'command';
  log: { info(obj: object, msg: string): void };
}

/** Least time between two PROGRESS messages of one transfer: enough for a smooth bar, few frames. */
const PROGRESS_EVERY_MS = 100;

/**
 * Fetches one file from the origin on the EXEC stream `stream` (FETCH, then
 * FILE chunks or an external copy, docs/PROTOCOL.md 4.9) into the cache,
 * sending PROGRESS towards the origin as it arrives; resolves with the cached
 * path. A SIGNAL from the origin meanwhile (its stub was interrupted) cancels
 * the transfer, and the temporary file is removed whichever way it fails.
 */
export function fetchFile(conn: Connection, stream: number, want: { hex: string; path: string }, ctx: TransferContext): Promise<string> {
  return new Promise<string>((resolvePath, reject) => {
    let incoming: Incoming;
    try {
      incoming = new Incoming(ctx.tempDirectory, want.hex);
    } catch (e) {
      reject(new ProtocolError('INTERNAL', `cannot write the program cache in ${ctx.tempDirectory} on ${ctx.hostName}: ${(e as Error).message}`, { fatal: false }));
      return;
    }
    let settled = false;
    let total = 0;
    let last = 0;
    const progress = (done: number, force = false): void => {
      const now = Date.now();
      if (!force && now - last < PROGRESS_EVERY_MS) return;
      last = now;
      conn.sendOn(stream, { type: 'PROGRESS', done, total, path: want.path });
    };
    const fail = (why: string, proto: 'NO_ENTRY' | 'UNREACHABLE' | 'CANCELLED' = 'NO_ENTRY'): void => {
      if (settled) return;
      settled = true;
      incoming.abort();
      ctx.log.info({ file: want.path, sha256: want.hex, why }, 'EXEC: transfer failed; partial copy removed');
      reject(new ProtocolError(proto, `${want.path}: transfer to ${ctx.hostName} failed: ${why}`, { fatal: false }));
    };
    conn.adoptStream(stream, {
      onMessage: (x) => {
        if (settled) return;
        if (x.type === 'SIGNAL') return fail(`cancelled by the origin (SIG${x.signal})`, 'CANCELLED');
        if (x.type !== 'FILE') return;
        if (x.error) return fail(x.error);
        try {
          if (x.size !== undefined) {
            total = x.size;
            progress(0, true);
          }
          if (x.data) {
            incoming.write(x.data);
            progress(incoming.received);
          }
          if (x.eof) {
            const path = x.copied ? incoming.finishCopied() : incoming.finish();
            settled = true;
            progress(incoming.received, true);
            ctx.log.info({ program: want.path, sha256: want.hex, cached: path, bytes: incoming.received, ...(x.copied ? { by: 'command' } : {}) }, 'EXEC: program transferred from the origin');
            resolvePath(path);
          }
        } catch (e) {
          fail((e as Error).message);
        }
      },
      onClose: (err) => fail(`the origin went away (${err?.message ?? 'stream closed'})`, 'UNREACHABLE'),
    });
    conn.sendOn(stream, { type: 'FETCH', sha256: Buffer.from(want.hex, 'hex'), path: want.path, dest: incoming.path });
  });
}

/**
 * Test seam: REX_TEST_FETCH_DELAY_MS makes an origin wait that long before
 * each FILE chunk it sends, so that a test can interrupt a transfer that a
 * loopback link would otherwise finish before the interruption lands.
 */
export function fetchDelayForTests(): number {
  const ms = Number(testSwitch('REX_TEST_FETCH_DELAY_MS'));
  return Number.isFinite(ms) && ms > 0 ? Math.min(ms, 1000) : 0;
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
    let file = cached(ctx.tempDirectory, hex);
    if (!file) {
      if (ctx.autoTransfer === 'off') continue; // the loader will say which library is missing
      file = await fetchFile(conn, m.stream, { hex, path: lib.path }, ctx);
    }
    links.push([lib.name, file]);
  }
  if (links.length === 0) return undefined;
  sweepRunDirs(join(ctx.tempDirectory, 'run'));
  // Per run, not shared: two programs may need different libraries under one name at the same time.
  const dir = join(ctx.tempDirectory, 'run', `${process.pid}-${randomBytes(6).toString('hex')}`);
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
    try {
      process.kill(pid, 0);
      continue; // alive (or a reused pid: then the directory stays, which is harmless)
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EPERM') continue;
    }
    rmSync(join(runs, n), { recursive: true, force: true });
  }
}
