/**
 * Frames and attributes of protocol v1: encoding, and a decoder that can be fed
 * arbitrary bytes. The decoder never buffers more than one header plus the
 * payload limit, checks every length before reading, and reports malformed input
 * as a ProtocolError carrying the ERROR code to send back.
 */
import { RexError } from '../util/errors.js';
import {
  ATTR_HEADER_SIZE,
  FLAGS_KNOWN,
  HEADER_SIZE,
  Kind,
  LIMITS,
  PROTO_ERRORS,
  ProtoError,
  kindName,
  msgTypeName,
  type KindName,
  type ProtoErrorName,
} from './constants.js';

/** One attribute of a payload; lists nest. */
export type Attr =
  | { tag: number; kind: 'uint'; value: bigint }
  | { tag: number; kind: 'int'; value: bigint }
  | { tag: number; kind: 'f64'; value: number }
  | { tag: number; kind: 'string'; value: string }
  | { tag: number; kind: 'bytes'; value: Uint8Array }
  | { tag: number; kind: 'list'; value: Attr[] }
  | { tag: number; kind: 'bool'; value: boolean };

/** A decoded frame. */
export interface Frame {
  type: number;
  flags: number;
  stream: number;
  attrs: Attr[];
}


/** A protocol violation, with the ERROR code (docs/PROTOCOL.md section 4.2) to answer with. */
export class ProtocolError extends RexError {
  readonly proto: ProtoErrorName;
  /** True when the connection must be closed after reporting it. */
  readonly fatal: boolean;

  constructor(proto: ProtoErrorName, message: string, opts: { fatal?: boolean; where?: string; hint?: string } = {}) {
    super(PROTO_ERRORS[proto].rex, message, { ...(opts.where ? { where: opts.where } : {}), ...(opts.hint ? { hint: opts.hint } : {}) });
    this.name = 'ProtocolError';
    this.proto = proto;
    this.fatal = opts.fatal ?? (proto === 'MALFORMED' || proto === 'TOO_BIG' || proto === 'VERSION');
  }

  /** The numeric code for ERROR frames. */
  get protoCode(): number {
    return ProtoError[this.proto];
  }
}

// ---------------------------------------------------------------- encoding

const INT_RANGES: Record<number, [bigint, bigint]> = {
  1: [-(1n << 7n), (1n << 7n) - 1n],
  2: [-(1n << 15n), (1n << 15n) - 1n],
  4: [-(1n << 31n), (1n << 31n) - 1n],
  8: [-(1n << 63n), (1n << 63n) - 1n],
};

function uintWidth(v: bigint): number {
  if (v < 0n || v > 0xffff_ffff_ffff_ffffn) throw new RangeError(`uint out of range: ${v}`);
  return v <= 0xffn ? 1 : v <= 0xffffn ? 2 : v <= 0xffff_ffffn ? 4 : 8;
}

function intWidth(v: bigint): number {
  for (const w of [1, 2, 4, 8]) {
    const [lo, hi] = INT_RANGES[w]!;
    if (v >= lo && v <= hi) return w;
  }
  throw new RangeError(`int out of range: ${v}`);
}

function attrValueSize(a: Attr): number {
  switch (a.kind) {
    case 'uint': return uintWidth(a.value);
    case 'int': return intWidth(a.value);
    case 'f64': return 8;
    case 'string': return Buffer.byteLength(a.value, 'utf8');
    case 'bytes': return a.value.byteLength;
    case 'bool': return 1;
    case 'list': return attrsSize(a.value);
  }
}

/** Encoded size of a sequence of attributes (headers included). */
export function attrsSize(attrs: Attr[]): number {
  let n = 0;
  for (const a of attrs) n += ATTR_HEADER_SIZE + attrValueSize(a);
  return n;
}

function writeAttrs(buf: Buffer, off: number, attrs: Attr[]): number {
  for (const a of attrs) {
    const len = attrValueSize(a);
    buf.writeUInt16BE(a.tag, off);
    buf.writeUInt8(Kind[a.kind], off + 2);
    buf.writeUInt32BE(len, off + 3);
    off += ATTR_HEADER_SIZE;
    switch (a.kind) {
      case 'uint':
        if (len === 8) buf.writeBigUInt64BE(a.value, off);
        else buf.writeUIntBE(Number(a.value), off, len);
        break;
      case 'int':
        if (len === 8) buf.writeBigInt64BE(a.value, off);
        else buf.writeIntBE(Number(a.value), off, len);
        break;
      case 'f64': buf.writeDoubleBE(a.value, off); break;
      case 'string':
        if (a.value.includes('\0')) throw new RangeError(`string attribute ${a.tag} contains NUL`);
        buf.write(a.value, off, 'utf8');
        break;
      case 'bytes': buf.set(a.value, off); break;
      case 'bool': buf.writeUInt8(a.value ? 1 : 0, off); break;
      case 'list': writeAttrs(buf, off, a.value); break;
    }
    off += len;
  }
  return off;
}

/** Encodes one frame; throws RangeError for values the format cannot carry (a caller bug). */
export function encodeFrame(f: Frame): Buffer {
  const payload = attrsSize(f.attrs);
  if (payload > LIMITS.maxPayload) throw new RangeError(`payload of ${payload} bytes exceeds ${LIMITS.maxPayload}`);
  const buf = Buffer.allocUnsafe(HEADER_SIZE + payload); // every byte is written below: no zero-fill of large DATA frames
  buf.writeUInt32BE(payload, 0);
  buf.writeUInt16BE(f.type, 4);
  buf.writeUInt16BE(f.flags, 6);
  buf.writeUInt32BE(f.stream >>> 0, 8);
  writeAttrs(buf, HEADER_SIZE, f.attrs);
  return buf;
}

/** A top-level `bytes` value at least this long is not copied by {@link encodeFrameParts}. */
export const ZERO_COPY_MIN = 16 * 1024;

/**
 * Encodes one frame as the pieces to write in order: the frame's own bytes,
 * with each large top-level `bytes` value (stdio DATA, FILE chunks) left as
 * the caller's buffer instead of copied. Written together (one writev), the
 * pieces are exactly {@link encodeFrame}'s bytes. The caller must not change
 * those buffers until they are written.
 */
export function encodeFrameParts(f: Frame): Buffer[] {
  if (!f.attrs.some((a) => a.kind === 'bytes' && a.value.byteLength >= ZERO_COPY_MIN)) return [encodeFrame(f)];
  const payload = attrsSize(f.attrs);
  if (payload > LIMITS.maxPayload) throw new RangeError(`payload of ${payload} bytes exceeds ${LIMITS.maxPayload}`);
  const parts: Buffer[] = [];
  const head = Buffer.allocUnsafe(HEADER_SIZE);
  head.writeUInt32BE(payload, 0);
  head.writeUInt16BE(f.type, 4);
  head.writeUInt16BE(f.flags, 6);
  head.writeUInt32BE(f.stream >>> 0, 8);
  parts.push(head);
  let small: Attr[] = [];
  const flushSmall = (): void => {
    if (small.length === 0) return;
    const b = Buffer.allocUnsafe(attrsSize(small));
    writeAttrs(b, 0, small);
    parts.push(b);
    small = [];
  };
  for (const a of f.attrs) {
    if (a.kind !== 'bytes' || a.value.byteLength < ZERO_COPY_MIN) {
      small.push(a);
      continue;
    }
    flushSmall();
    const h = Buffer.allocUnsafe(ATTR_HEADER_SIZE);
    h.writeUInt16BE(a.tag, 0);
    h.writeUInt8(Kind.bytes, 2);
    h.writeUInt32BE(a.value.byteLength, 3);
    parts.push(h, Buffer.from(a.value.buffer, a.value.byteOffset, a.value.byteLength));
  }
  flushSmall();
  return parts;
}

// ---------------------------------------------------------------- decoding

// ignoreBOM: a leading U+FEFF is part of the string, not a mark to strip (the C decoder keeps it too).
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

interface DecodeBudget {
  attrs: number;
}

function malformed(msg: string, off: number): ProtocolError {
  return new ProtocolError('MALFORMED', `${msg} at payload offset ${off}`);
}

function decodeAttrs(buf: Buffer, start: number, end: number, depth: number, budget: DecodeBudget): Attr[] {
  if (depth > LIMITS.maxDepth) throw malformed(`lists nested deeper than ${LIMITS.maxDepth}`, start - HEADER_SIZE);
  const out: Attr[] = [];
  let off = start;
  while (off < end) {
    if (end - off < ATTR_HEADER_SIZE) throw malformed(`truncated attribute header (${end - off} bytes left)`, off - HEADER_SIZE);
    if (++budget.attrs > LIMITS.maxAttrs) throw malformed(`more than ${LIMITS.maxAttrs} attributes`, off - HEADER_SIZE);
    const tag = buf.readUInt16BE(off);
    const kindNum = buf.readUInt8(off + 2);
    const len = buf.readUInt32BE(off + 3);
    const at = off - HEADER_SIZE;
    off += ATTR_HEADER_SIZE;
    if (len > end - off) throw malformed(`attribute ${tag} length ${len} runs past its container (${end - off} bytes left)`, at);
    const kind = kindName(kindNum);
    const v = buf.subarray(off, off + len);
    switch (kind) {
      case 'uint':
        if (len !== 1 && len !== 2 && len !== 4 && len !== 8) throw malformed(`uint attribute ${tag} has length ${len} (expected 1, 2, 4 or 8)`, at);
        out.push({ tag, kind, value: len === 8 ? v.readBigUInt64BE(0) : BigInt(v.readUIntBE(0, len)) });
        break;
      case 'int':
        if (len !== 1 && len !== 2 && len !== 4 && len !== 8) throw malformed(`int attribute ${tag} has length ${len} (expected 1, 2, 4 or 8)`, at);
        out.push({ tag, kind, value: len === 8 ? v.readBigInt64BE(0) : BigInt(v.readIntBE(0, len)) });
        break;
      case 'f64':
        if (len !== 8) throw malformed(`f64 attribute ${tag} has length ${len} (expected 8)`, at);
        out.push({ tag, kind, value: v.readDoubleBE(0) });
        break;
      case 'string': {
        if (v.includes(0)) throw malformed(`string attribute ${tag} contains a NUL byte`, at);
        let s: string;
        try {
          s = utf8.decode(v);
        } catch {
          throw malformed(`string attribute ${tag} is not valid UTF-8`, at);
        }
        out.push({ tag, kind, value: s });
        break;
      }
      case 'bytes':
        out.push({ tag, kind, value: Uint8Array.prototype.slice.call(v) });
        break;
      case 'bool':
        if (len !== 1 || (v[0] !== 0 && v[0] !== 1)) throw malformed(`bool attribute ${tag} must be one byte 0 or 1`, at);
        out.push({ tag, kind, value: v[0] === 1 });
        break;
      case 'list':
        out.push({ tag, kind, value: decodeAttrs(buf, off, off + len, depth + 1, budget) });
        break;
      default:
        throw malformed(`attribute ${tag} has unknown kind ${kindNum}`, at);
    }
    off += len;
  }
  return out;
}

/** Decodes a payload (a frame without its header); for tests and vectors. */
export function decodePayload(payload: Buffer): Attr[] {
  const buf = Buffer.concat([Buffer.alloc(HEADER_SIZE), payload]);
  return decodeAttrs(buf, HEADER_SIZE, buf.length, 1, { attrs: 0 });
}

/** Result of {@link decodeOne}: a frame and the bytes it used, or a need for more input. */
export type DecodeResult = { frame: Frame; consumed: number } | { incomplete: true };

/**
 * Decodes the first frame of `buf`, checking the header's length against
 * `maxPayload` before looking at the payload.
 */
export function decodeOne(buf: Buffer, maxPayload: number = LIMITS.maxPayload): DecodeResult {
  if (buf.length < HEADER_SIZE) return { incomplete: true };
  const len = buf.readUInt32BE(0);
  const type = buf.readUInt16BE(4);
  const flags = buf.readUInt16BE(6);
  const stream = buf.readUInt32BE(8);
  if (len > maxPayload) {
    throw new ProtocolError('TOO_BIG', `${msgTypeName(type)} frame of ${len} bytes exceeds the limit of ${maxPayload}`, { fatal: true });
  }
  if ((flags & ~FLAGS_KNOWN) !== 0) throw new ProtocolError('MALFORMED', `reserved flag bits 0x${(flags & ~FLAGS_KNOWN).toString(16)} set in ${msgTypeName(type)} frame`);
  if (buf.length < HEADER_SIZE + len) return { incomplete: true };
  const attrs = decodeAttrs(buf, HEADER_SIZE, HEADER_SIZE + len, 1, { attrs: 0 });
  return { frame: { type, flags, stream, attrs }, consumed: HEADER_SIZE + len };
}

/**
 * Incremental decoder for a byte stream. Holds at most one incomplete frame; after
 * an error it is poisoned (the stream cannot be resynchronised) and throws again.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private size = 0;
  private failed: ProtocolError | undefined;

  constructor(private maxPayload: number = LIMITS.maxPayload) {}

  /** Lowers or raises the payload limit (after HELLO). */
  setMaxPayload(n: number): void {
    this.maxPayload = n;
  }

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.size;
  }

  /**
   * Adds bytes and returns every complete frame they finish. With `onFrame`, each
   * frame is also handed over as soon as it is decoded, so that frames before a
   * malformed one are still delivered before push throws.
   */
  push(chunk: Buffer, onFrame?: (f: Frame) => void): Frame[] {
    if (this.failed) throw this.failed;
    this.chunks.push(chunk);
    this.size += chunk.length;
    const frames: Frame[] = [];
    try {
      for (;;) {
        if (this.size < HEADER_SIZE) break;
        // Join only the header first: a large frame arriving in many small chunks
        // must not be re-copied on every chunk.
        if (this.chunks[0]!.length < HEADER_SIZE) this.chunks = [Buffer.concat(this.chunks, this.size)];
        const need = HEADER_SIZE + this.chunks[0]!.readUInt32BE(0);
        if (this.size < need) {
          decodeOne(this.chunks[0]!.subarray(0, HEADER_SIZE), this.maxPayload); // limit check before buffering
          break;
        }
        const buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
        const r = decodeOne(buf, this.maxPayload);
        if ('incomplete' in r) break; // unreachable: need bytes are present
        frames.push(r.frame);
        onFrame?.(r.frame);
        const rest = buf.subarray(r.consumed);
        this.chunks = rest.length ? [rest] : [];
        this.size = rest.length;
      }
    } catch (e) {
      this.failed = e as ProtocolError;
      this.chunks = [];
      this.size = 0;
      throw e;
    }
    return frames;
  }
}

/** Converts kind names to numbers for callers building raw attributes. */
export function kindNumber(k: KindName): number {
  return Kind[k];
}
