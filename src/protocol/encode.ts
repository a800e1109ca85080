/**
 * Frames and attributes of protocol v1, the encoding half: the values, their
 * encoder, and the error every layer reports violations with. It sits below
 * the message table (messages.ts), which sizes attributes with it, and below
 * the decoder (frame.ts), which names message types from that table: apart,
 * neither needs the other (no import circle).
 */
import { RexError } from '../util/errors.js';
import { ATTR_HEADER_SIZE, HEADER_SIZE, Kind, LIMITS, PROTO_ERRORS, ProtoError, type ProtoErrorName } from './constants.js';

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
