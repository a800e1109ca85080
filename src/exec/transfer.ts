/**
 * Executable transfer (rex.rc rex-auto-transfer, docs/EXEC.md "Transfer"):
 * when the program an EXEC names is missing on the executor or differs from
 * the origin's (sha256), the executor asks the origin for it once (FETCH) and
 * keeps it in a content-addressed cache in rex-temp-directory, verified before
 * use and reused by later runs; the cache is trimmed least-recently-used to a
 * size limit.
 */
import { createHash } from 'node:crypto';
import { chmodSync, closeSync, mkdirSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeSync } from 'node:fs';
import { join } from 'node:path';

/** Largest program transferred (it travels through the daemons' memory once). */
export const TRANSFER_MAX = 256 << 20;

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

  /** Verifies the content against the hash the EXEC named and publishes it; returns its path. */
  finish(): string {
    closeSync(this.fd);
    const got = this.hash.digest('hex');
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
