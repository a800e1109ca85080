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
  /** REX_PROTO_VERSION of the C side. */
  readonly protoVersion: number;
}

interface RawAddon {
  decodeFrame(buf: Buffer, maxPayload?: number): NativeDecodeResult;
  peerCredentials(fd: number): PeerCredentials;
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
  };
  loaded.set(path, addon);
  return addon;
}
