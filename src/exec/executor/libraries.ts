/**
 * The shared libraries a program needs, found on the origin the way the
 * dynamic loader (ld.so) would find them, without running the program
 * (docs/EXEC.md, "Transfer"): DT_NEEDED of the program and, recursively, of
 * each library, searched in DT_RPATH, LD_LIBRARY_PATH, DT_RUNPATH and the
 * system directories of /etc/ld.so.conf. The executor is sent the list (name,
 * path, sha256) and fetches the ones it lacks.
 */
import { closeSync, openSync, readFileSync, readSync, readdirSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import { readElf } from '../../gen/elf/index.js';
import { ErrorCodes, RexError } from '../../util/errors.js';
import { fileSha256, TRANSFER_MAX } from '../protocol.js';

/** What an object's dynamic section says about loading it. */
export interface DynamicInfo {
  /** DT_NEEDED names, in order. */
  needed: string[];
  /** DT_RPATH directories (searched before LD_LIBRARY_PATH, ignored when DT_RUNPATH exists). */
  rpath: string[];
  /** DT_RUNPATH directories (searched after LD_LIBRARY_PATH, for this object's own needs only). */
  runpath: string[];
  soname?: string;
}

/** One library the executor must be able to load: the name the loader looks for, and the origin's copy. */
export interface NeededLibrary {
  /** The DT_NEEDED name (what ld.so searches for; the executor links this name to the copy). */
  name: string;
  /** Absolute path of the origin's copy. */
  path: string;
  /** Lower-case hex sha256 of its content. */
  sha256: string;
  size: number;
}

/**
 * Libraries never sent: glibc's own. They must match the executor's dynamic
 * loader (ld-linux), which is the executor's and cannot be replaced through
 * LD_LIBRARY_PATH; a newer libc.so.6 beside an older loader breaks every program.
 */
export const NEVER_SENT: ReadonlySet<string> = new Set([
  'libc.so.6',
  'libm.so.6',
  'libmvec.so.1',
  'libpthread.so.0',
  'libdl.so.2',
  'librt.so.1',
  'libutil.so.1',
  'libresolv.so.2',
  'libanl.so.1',
  'libnsl.so.1',
  'libBrokenLocale.so.1',
  'libthread_db.so.1',
  'libc_malloc_debug.so.0',
  'libmemusage.so',
  'libpcprofile.so',
]);

/** Most libraries listed for one program (a bound on what an EXEC carries and what the executor checks). */
export const MAX_LIBRARIES = 512;

const SHT_DYNAMIC = 6;
const DT_NULL = 0n;
const DT_NEEDED = 1n;
const DT_SONAME = 14n;
const DT_RPATH = 15n;
const DT_RUNPATH = 29n;

function bad(file: string, where: string, msg: string): never {
  throw new RexError(ErrorCodes.ELF_MALFORMED, `${file}: ${where}: ${msg}`, {
    where: `${file}:${where}`,
    hint: 'the file is truncated or not a valid ELF object; rebuild it, or run a program whose libraries the executor has',
  });
}

/**
 * Reads the dynamic section of an ELF64 x86-64 object; a static program (no
 * .dynamic) gives empty lists. Throws ELF_MALFORMED naming the entry and
 * offset when an entry points outside its string table.
 */
export function readDynamic(buf: Buffer, name: string): DynamicInfo {
  const elf = readElf(buf, name);
  const info: DynamicInfo = { needed: [], rpath: [], runpath: [] };
  const dyn = elf.sections.find((s) => s.type === SHT_DYNAMIC);
  if (!dyn) return info;
  if (dyn.link === 0 || dyn.link >= elf.sections.length) bad(name, `section ${dyn.name || dyn.index} (.dynamic)`, `string table index ${dyn.link} is out of range (${elf.sections.length} sections)`);
  const d = elf.data(dyn);
  const strs = elf.data(elf.sections[dyn.link]!);
  const str = (off: bigint, i: number): string => {
    if (off >= BigInt(strs.length)) bad(name, `.dynamic entry ${i} at offset 0x${(dyn.offset + i * 16).toString(16)}`, `string offset 0x${off.toString(16)} is past the end of its string table (0x${strs.length.toString(16)} bytes)`);
    const start = Number(off);
    const end = strs.indexOf(0, start);
    if (end < 0) bad(name, `.dynamic entry ${i} at offset 0x${(dyn.offset + i * 16).toString(16)}`, `string at 0x${off.toString(16)} is not NUL-terminated`);
    return strs.toString('utf8', start, end);
  };
  for (let i = 0; (i + 1) * 16 <= d.length; i++) {
    const tag = d.readBigInt64LE(i * 16);
    if (tag === DT_NULL) break;
    const val = d.readBigUInt64LE(i * 16 + 8);
    if (tag === DT_NEEDED) info.needed.push(str(val, i));
    else if (tag === DT_SONAME) info.soname = str(val, i);
    else if (tag === DT_RPATH) info.rpath.push(...str(val, i).split(':').filter(Boolean));
    else if (tag === DT_RUNPATH) info.runpath.push(...str(val, i).split(':').filter(Boolean));
  }
  return info;
}

const infoCache = new Map<string, { key: string; info: DynamicInfo | undefined }>();

/** The dynamic info of a file, remembered per (path, inode, size, mtime); undefined when it is not a loadable x86-64 ELF. */
function dynamicOf(path: string): DynamicInfo | undefined {
  let key: string;
  try {
    const st = statSync(path);
    if (!st.isFile() || st.size > TRANSFER_MAX) return undefined;
    key = `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch {
    return undefined;
  }
  const hit = infoCache.get(path);
  if (hit && hit.key === key) return hit.info;
  let info: DynamicInfo | undefined;
  try {
    // Look at the magic first: a script or an rfork image must not be read whole for nothing.
    const fd = openSync(path, 'r');
    const magic = Buffer.alloc(4);
    try {
      readSync(fd, magic, 0, 4, 0);
    } finally {
      closeSync(fd);
    }
    if (magic.toString('latin1') !== '\x7fELF') throw new Error('not ELF');
    info = readDynamic(readFileSync(path), path);
  } catch {
    info = undefined; // a script, another architecture, a damaged file: ld.so would skip it too
  }
  infoCache.set(path, { key, info });
  return info;
}

/** $ORIGIN (and ${ORIGIN}) is the directory of the object that names the path; $LIB and $PLATFORM as on x86-64 Debian. */
function expand(dir: string, objectPath: string): string | undefined {
  const out = dir
    .replace(/\$(\{ORIGIN\}|ORIGIN)/g, dirname(objectPath))
    .replace(/\$(\{LIB\}|LIB)/g, 'lib/x86_64-linux-gnu')
    .replace(/\$(\{PLATFORM\}|PLATFORM)/g, 'x86_64');
  return isAbsolute(out) ? out : undefined; // a relative entry is relative to the cwd of whoever runs it: not ours to guess
}

let systemCache: { at: number; dirs: string[] } | undefined;

/** The system library directories: /etc/ld.so.conf (with `include` globs) then ld.so's built-in ones. */
export function systemLibraryDirs(conf = '/etc/ld.so.conf'): string[] {
  if (conf === '/etc/ld.so.conf' && systemCache && Date.now() - systemCache.at < 30_000) return systemCache.dirs;
  const dirs: string[] = [];
  const seen = new Set<string>();
  const read = (file: string, depth: number): void => {
    if (depth > 8 || seen.has(file)) return;
    seen.add(file);
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch {
      return;
    }
    for (const raw of text.split('\n')) {
      const line = raw.replace(/#.*/, '').trim();
      if (!line) continue;
      const inc = /^include\s+(.+)$/.exec(line);
      if (inc) {
        for (const pat of inc[1]!.split(/\s+/)) {
          const p = isAbsolute(pat) ? pat : join(dirname(file), pat);
          const base = p.slice(p.lastIndexOf('/') + 1);
          if (!base.includes('*')) read(p, depth + 1);
          else {
            const re = new RegExp('^' + base.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*') + '$');
            let names: string[] = [];
            try {
              names = readdirSync(dirname(p)).filter((n) => re.test(n)).sort();
            } catch {
              /* no such directory */
            }
            for (const n of names) read(join(dirname(p), n), depth + 1);
          }
        }
        continue;
      }
      if (isAbsolute(line)) dirs.push(line);
    }
  };
  read(conf, 0);
  dirs.push('/lib/x86_64-linux-gnu', '/usr/lib/x86_64-linux-gnu', '/lib64', '/usr/lib64', '/lib', '/usr/lib');
  const unique = [...new Set(dirs)];
  if (conf === '/etc/ld.so.conf') systemCache = { at: Date.now(), dirs: unique };
  return unique;
}

/**
 * The libraries `program` needs, resolved here as ld.so would (DT_RPATH of the
 * object and its loaders when it has no DT_RUNPATH, then `ldLibraryPath`, then
 * its DT_RUNPATH, then the system directories), breadth first, without glibc's
 * own ({@link NEVER_SENT}) and without names that cannot be found here (the
 * program would not start here either; the executor's loader says so).
 */
export function neededLibraries(program: string, ldLibraryPath: string | undefined, systemDirs = systemLibraryDirs()): NeededLibrary[] {
  const top = dynamicOf(program);
  if (!top) return [];
  const envDirs = (ldLibraryPath ?? '').split(/[:;]/).filter((d) => isAbsolute(d));
  const out: NeededLibrary[] = [];
  const seen = new Set<string>();
  const queue: { path: string; info: DynamicInfo; inherited: string[] }[] = [{ path: program, info: top, inherited: [] }];
  while (queue.length > 0 && out.length < MAX_LIBRARIES) {
    const { path: obj, info, inherited } = queue.shift()!;
    // DT_RPATH applies to the object's own needs and to those of everything it loads, unless DT_RUNPATH is present.
    const rpath = info.runpath.length === 0 ? [...info.rpath.map((d) => expand(d, obj)).filter((d): d is string => !!d), ...inherited] : [];
    const runpath = info.runpath.map((d) => expand(d, obj)).filter((d): d is string => !!d);
    for (const name of info.needed) {
      if (seen.has(name) || NEVER_SENT.has(name) || name.startsWith('ld-linux')) continue;
      seen.add(name);
      const candidates = name.includes('/') ? (isAbsolute(name) ? [name] : []) : [...rpath, ...envDirs, ...runpath, ...systemDirs].map((d) => join(d, name));
      for (const c of candidates) {
        const libInfo = dynamicOf(c);
        if (!libInfo) continue;
        let sha256: string;
        let size: number;
        try {
          size = statSync(c).size;
          sha256 = fileSha256(c);
        } catch {
          continue;
        }
        out.push({ name, path: c, sha256, size });
        queue.push({ path: c, info: libInfo, inherited: rpath });
        break;
      }
      if (out.length >= MAX_LIBRARIES) break;
    }
  }
  return out;
}
