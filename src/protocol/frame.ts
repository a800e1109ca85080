/**
 * Frames and attributes of protocol v1: encoding (encode.ts, re-exported), and a decoder that can be fed
 * arbitrary bytes. The decoder never buffers more than one header plus the
 * payload limit, checks every length before reading, and reports malformed input
 * as a ProtocolError carrying the ERROR code to send back.
 */
import { ATTR_HEADER_SIZE, FLAGS_KNOWN, HEADER_SIZE, Kind, LIMITS, kindName, type KindName } from './constants.js';
import { ProtocolError, type Attr, type Frame } from './encode.js';
import { msgTypeName } from './messages.js';

export * from './encode.js';

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
