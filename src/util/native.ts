/**
 * The one loader of the Node-API addon (native/build/Release/rex_addon.node,
 * built by `npm install` through scripts/build-native.mjs). Arguments are
 * checked here, with precise messages, so that the C++ layer stays thin.
 */
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ErrorCodes, RexError } from './errors.js';
import { packageRoot } from './paths.js';

/** A decoded attribute in the shape of test/vectors/protocol-v1.json (integers as decimal strings, bytes as hex). */
export type VectorAttr =
  | { tag: number; kind: 'uint' | 'int'; value: string }
  | { tag: number; kind: 'f64'; value: number | 'NaN' | 'Infinity' | '-Infinity' }
  | { tag: number; kind: 'string'; value: string }
  | { tag: number; kind: 'bytes'; value: string }
  | { tag: number; kind: 'bool'; value: boolean }
  | { tag: number; kind: 'list'; value: VectorAttr[] };

/** A decoded frame in the shape of the vectors file. */
export interface VectorFrame {
  type: number;
  flags: number;
  stream: number;
  attrs: VectorAttr[];
}

/** What the C decoder (rex_frame_decode) says about the start of a buffer. */
export type NativeDecodeResult =
  | { frame: VectorFrame; consumed: number }
  | { incomplete: true }
  | { error: 'MALFORMED' | 'TOO_BIG'; message: string; offset: number };

/** Credentials of the process at the other end of a Unix socket. */
export interface PeerCredentials {
  pid: number;
  uid: number;
  gid: number;
}

/** The addon's functions, with arguments checked. */
export interface RexAddon {
  /** Decodes the first frame of buf with librex's C decoder; maxPayload defaults to 1 MiB. */
  decodeFrame(buf: Uint8Array, maxPayload?: number): NativeDecodeResult;
  /** SO_PEERCRED of a connected Unix socket's file descriptor; throws with `errno` set on failure. */
  peerCredentials(fd: number): PeerCredentials;
  /**
   * Starts `file` (an absolute path) with posix_spawn, in a session of its own,
   * every signal at its default; `stdio[i]` 'pipe' gives a socket pair whose
   * end is returned at index i (close-on-exec), 'ignore' gives /dev/null
   * (returned as -1). Throws with `code` (ENOENT, EACCES, ...) when the program
   * cannot start. `onExit(code, signal)` is called once when it ends (signal
   * a number), from the event loop.
   */
  spawnProcess(file: string, argv: readonly string[], env: readonly string[], cwd: string, stdio: readonly ('pipe' | 'ignore')[], onExit: (code: number | null, signal: number | null) => void): { pid: number; fds: number[] };
  /** PR_SET_CHILD_SUBREAPER on this process (orphans of its jobs come back to it); false when refused. */
  setChildSubreaper(): boolean;
  /** waitpid(pid, WNOHANG) of an adopted orphan: true once reaped (or not a child of this process). */
  reapChild(pid: number): boolean;
  /** CPUID(leaf, subleaf) of this CPU: [eax, ebx, ecx, edx] as unsigned 32-bit numbers. */
  cpuid(leaf: number, subleaf: number): [number, number, number, number];
  /** XCR0 (the state components the OS enables); 0n when the OS has not enabled XSAVE. */
  xcr0(): bigint;
  /** REX_PROTO_VERSION of the C side. */
  readonly protoVersion: number;
}

interface RawAddon {
  decodeFrame(buf: Buffer, maxPayload?: number): NativeDecodeResult;
  peerCredentials(fd: number): PeerCredentials;
  spawnProcess(file: string, argv: readonly string[], env: readonly string[], cwd: string, stdio: number[], onExit: (code: number | null, signal: number | null) => void): number[];
  setChildSubreaper(): boolean;
  reapChild(pid: number): boolean;
  cpuid(leaf: number, subleaf: number): [number, number, number, number];
  xgetbv0(): [number, number];
  protoVersion: number;
}

/** Loaded addons by path: a binary is loaded once per process. */
const loaded = new Map<string, RexAddon>();

/** Path of the addon binary: $REX_ADDON, else native/build/Release/rex_addon.node in the package. */
export function addonPath(): string {
  return process.env.REX_ADDON || join(packageRoot(), 'native', 'build', 'Release', 'rex_addon.node');
}

/** Loads the addon once; throws RexError NATIVE_ADDON when it is missing or does not load. */
export function loadAddon(): RexAddon {
  const path = addonPath();
  const cached = loaded.get(path);
  if (cached) return cached;
  if (!existsSync(path)) {
    throw new RexError(ErrorCodes.NATIVE_ADDON, `the native addon ${path} does not exist`, {
      where: path,
      hint: 'build it with `node scripts/build-native.mjs` (npm install runs it); it needs make, gcc and g++',
    });
  }
  let raw: RawAddon;
  try {
    raw = createRequire(import.meta.url)(path) as RawAddon;
  } catch (e) {
    throw new RexError(ErrorCodes.NATIVE_ADDON, `cannot load the native addon ${path}: ${(e as Error).message}`, {
      where: path,
      hint: 'rebuild it for this Node.js with `node scripts/build-native.mjs`',
      cause: e,
    });
  }
  const addon: RexAddon = {
    protoVersion: raw.protoVersion,
    decodeFrame(buf, maxPayload) {
      if (!(buf instanceof Uint8Array)) throw new TypeError('decodeFrame: buf must be a Buffer or Uint8Array');
      if (maxPayload !== undefined && (!Number.isInteger(maxPayload) || maxPayload < 1 || maxPayload > 0xffff_ffff)) {
        throw new RangeError(`decodeFrame: maxPayload must be an integer from 1 to 2^32-1, got ${maxPayload}`);
      }
      const b = Buffer.isBuffer(buf) ? buf : Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
      return raw.decodeFrame(b, maxPayload);
    },
    peerCredentials(fd) {
      if (!Number.isInteger(fd) || fd < 0 || fd > 0x7fff_ffff) throw new RangeError(`peerCredentials: fd must be a file descriptor number, got ${fd}`);
      return raw.peerCredentials(fd);
    },
    spawnProcess(file, argv, env, cwd, stdio, onExit) {
      const strings = (what: string, a: readonly string[]): void => {
        if (!Array.isArray(a) || a.some((x) => typeof x !== 'string' || x.includes('\0'))) throw new TypeError(`spawnProcess: ${what} must be an array of strings without NUL`);
      };
      if (typeof file !== 'string' || !file.startsWith('/') || file.includes('\0')) throw new TypeError(`spawnProcess: file must be an absolute path, got ${JSON.stringify(file)}`);
      strings('argv', argv);
      strings('env', env);
      if (argv.length === 0) throw new TypeError('spawnProcess: argv needs at least argv[0]');
      if (typeof cwd !== 'string' || cwd.includes('\0')) throw new TypeError('spawnProcess: cwd must be a path');
      if (!Array.isArray(stdio) || stdio.length > 1024 || stdio.some((x) => x !== 'pipe' && x !== 'ignore')) throw new TypeError("spawnProcess: stdio must be at most 1024 of 'pipe' or 'ignore'");
      if (typeof onExit !== 'function') throw new TypeError('spawnProcess: onExit must be a function');
      const [pid, ...fds] = raw.spawnProcess(file, argv, env, cwd, stdio.map((x) => (x === 'pipe' ? 1 : 0)), onExit);
      return { pid: pid!, fds };
    },
    setChildSubreaper: () => raw.setChildSubreaper(),
    cpuid(leaf, subleaf) {
      for (const [n, v] of [['leaf', leaf], ['subleaf', subleaf]] as const) {
        if (!Number.isInteger(v) || v < 0 || v > 0xffff_ffff) throw new RangeError(`cpuid: ${n} must be an unsigned 32-bit integer, got ${v}`);
      }
      return raw.cpuid(leaf, subleaf);
    },
    xcr0() {
      const [lo, hi] = raw.xgetbv0();
      return (BigInt(hi) << 32n) | BigInt(lo);
    },
    reapChild(pid) {
      if (!Number.isInteger(pid) || pid < 1) throw new RangeError(`reapChild: pid must be a positive integer, got ${pid}`);
      return raw.reapChild(pid);
    },
  };
  loaded.set(path, addon);
  return addon;
}
