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

/** Largest header of one sendFds/recvFds message (bytes). */
export const FDPASS_MAX_HEADER = 65536;
/** Most descriptors one message may carry (the kernel's SCM_MAX_FD). */
export const FDPASS_MAX_FDS = 253;

/** What recvFds read: one message, nothing yet ('again'), or the peer closed its end ('eof'). */
export type FdMessage = { header: Buffer; fds: number[] } | 'again' | 'eof';

/** A connection accepted by acceptUnix, with its peer's SO_PEERCRED. */
export interface AcceptedUnix extends PeerCredentials {
  fd: number;
}

/** A libuv poll handle on a raw descriptor (FdWatch): close it before closing the descriptor. */
export interface FdWatcher {
  close(): void;
  /** Changes what it waits for: bit 1 readable, bit 2 writable (libuv allows one watcher per descriptor). */
  setEvents(events: number): void;
  /** Lets the event loop end while only this watcher is active (as net.Socket#unref). */
  unref(): FdWatcher;
  ref(): FdWatcher;
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
  /**
   * Descriptor passing (docs/ARCHITECTURE.md, "Privilege separation primitives"). socketPair gives
   * two connected AF_UNIX descriptors, close-on-exec and blocking: SOCK_SEQPACKET for
   * sendFds/recvFds, SOCK_STREAM (`seqpacket` false) for a byte stream to wrap in
   * `new net.Socket({ fd })` here and in the process it is passed to.
   */
  socketPair(seqpacket: boolean): [number, number];
  /**
   * Sends one message (header: 1 to FDPASS_MAX_HEADER bytes) with up to FDPASS_MAX_FDS descriptors
   * (SCM_RIGHTS) on a SOCK_SEQPACKET socket, without blocking: false when the socket's buffer is
   * full (wait for writability with watchFd and send again). The descriptors stay open here.
   */
  sendFds(sock: number, fds: readonly number[], header: Uint8Array): boolean;
  /**
   * Receives one message from a SOCK_SEQPACKET socket without blocking; its descriptors arrive
   * close-on-exec. A message with more than maxFds descriptors (or control data the kernel had to
   * truncate), a header longer than maxHeader (default FDPASS_MAX_HEADER) or an empty header with
   * descriptors is refused: its descriptors are closed and an Error with `code` ETOOMANYREFS,
   * EMSGSIZE or EBADMSG is thrown; the next message can be read after it.
   */
  recvFds(sock: number, maxFds: number, maxHeader?: number): FdMessage;
  /** A listening AF_UNIX stream socket at path (non-blocking, close-on-exec); the file's mode is the umask's. */
  listenUnix(path: string, backlog?: number): number;
  /** accept4 on a listenUnix descriptor: the connection (close-on-exec, blocking) and its peer's credentials, or null when none is pending. */
  acceptUnix(fd: number): AcceptedUnix | null;
  /**
   * Calls onReady(err, events) from the event loop while fd is readable (events bit 1), writable
   * (bit 2, when asked) or hung up (bit 4); level-triggered, so drain it in the call. At most
   * one watcher per descriptor: change its events with setEvents.
   */
  watchFd(fd: number, on: { readable?: boolean; writable?: boolean }, onReady: (err: string | null, events: number) => void): FdWatcher;
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
  socketPair(seqpacket: boolean): [number, number];
  sendFds(sock: number, fds: readonly number[], header: Buffer): boolean;
  recvFds(sock: number, maxFds: number, maxHeader: number): FdMessage;
  listenUnix(path: string, backlog: number): number;
  acceptUnix(fd: number): AcceptedUnix | null;
  FdWatch: new (fd: number, events: number, cb: (err: string | null, events: number) => void) => FdWatcher;
}

const isFd = (fd: unknown): fd is number => Number.isInteger(fd) && (fd as number) >= 0 && (fd as number) <= 0x7fff_ffff;
function checkFd(what: string, fd: unknown): void {
  if (!isFd(fd)) throw new RangeError(`${what} must be a file descriptor number, got ${String(fd)}`);
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
    socketPair: (seqpacket) => raw.socketPair(seqpacket === true),
    sendFds(sock, fds, header) {
      checkFd('sendFds: sock', sock);
      if (!Array.isArray(fds) || fds.length > FDPASS_MAX_FDS || !fds.every(isFd)) throw new RangeError(`sendFds: fds must be an array of at most ${FDPASS_MAX_FDS} file descriptor numbers`);
      if (!(header instanceof Uint8Array) || header.byteLength < 1 || header.byteLength > FDPASS_MAX_HEADER) throw new RangeError(`sendFds: header must be a Buffer of 1 to ${FDPASS_MAX_HEADER} bytes`);
      return raw.sendFds(sock, fds, Buffer.isBuffer(header) ? header : Buffer.from(header.buffer, header.byteOffset, header.byteLength));
    },
    recvFds(sock, maxFds, maxHeader = FDPASS_MAX_HEADER) {
      checkFd('recvFds: sock', sock);
      if (!Number.isInteger(maxFds) || maxFds < 0 || maxFds > FDPASS_MAX_FDS) throw new RangeError(`recvFds: maxFds must be an integer from 0 to ${FDPASS_MAX_FDS}, got ${maxFds}`);
      if (!Number.isInteger(maxHeader) || maxHeader < 1 || maxHeader > FDPASS_MAX_HEADER) throw new RangeError(`recvFds: maxHeader must be an integer from 1 to ${FDPASS_MAX_HEADER}, got ${maxHeader}`);
      return raw.recvFds(sock, maxFds, maxHeader);
    },
    listenUnix(path, backlog = 511) {
      if (typeof path !== 'string' || path.length === 0 || path.includes('\0') || Buffer.byteLength(path) > 107) throw new TypeError(`listenUnix: path must be a socket path of 1 to 107 bytes, got ${JSON.stringify(path)}`);
      if (!Number.isInteger(backlog) || backlog < 1 || backlog > 65535) throw new RangeError(`listenUnix: backlog must be an integer from 1 to 65535, got ${backlog}`);
      return raw.listenUnix(path, backlog);
    },
    acceptUnix(fd) {
      checkFd('acceptUnix: fd', fd);
      return raw.acceptUnix(fd);
    },
    watchFd(fd, on, onReady) {
      checkFd('watchFd: fd', fd);
      const events = (on.readable ? 1 : 0) | (on.writable ? 2 : 0);
      if (events === 0) throw new TypeError('watchFd: ask for readable, writable or both');
      if (typeof onReady !== 'function') throw new TypeError('watchFd: onReady must be a function');
      return new raw.FdWatch(fd, events, onReady);
    },
  };
  loaded.set(path, addon);
  return addon;
}
