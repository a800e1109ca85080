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
 * A frame passed on undecoded (FrameDecoder's `raw`): its 12-byte header, a
 * copy the receiver may rewrite (the stream id), and its payload as the views
 * of the received chunks it spans, in order, never copied.
 */
export interface RawFrame {
  type: number;
  stream: number;
  header: Buffer;
  payload: Buffer[];
}

/**
 * Says whether a frame, by its header, is to be passed on undecoded (a relay's
 * DATA): then `onRaw` gets it instead of `onFrame`, once its payload's
 * attributes have been checked to be well framed (see {@link rawPayloadOk});
 * one that is not is decoded as any other frame.
 */
export type RawFilter = (type: number, flags: number, stream: number) => boolean;

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
   * malformed one are still delivered before push throws. With `raw`, a frame
   * it picks goes to `onRaw` undecoded (not returned): its payload stays in the
   * chunks it arrived in, whose views are handed on without a copy.
   */
  push(chunk: Buffer, onFrame?: (f: Frame) => void, raw?: { want: RawFilter; onRaw: (f: RawFrame) => void }): Frame[] {
    if (this.failed) throw this.failed;
    this.chunks.push(chunk);
    this.size += chunk.length;
    const frames: Frame[] = [];
    try {
      for (;;) {
        if (this.size < HEADER_SIZE) break;
        // Join only the header first: a large frame arriving in many small chunks
        // must not be re-copied on every chunk.
        if (this.chunks[0]!.length < HEADER_SIZE) this.joinHeader();
        const head = this.chunks[0]!;
        const need = HEADER_SIZE + head.readUInt32BE(0);
        if (this.size < need) {
          decodeOne(head.subarray(0, HEADER_SIZE), this.maxPayload); // limit check before buffering
          break;
        }
        if (raw) {
          const type = head.readUInt16BE(4);
          // want() only looks: a frame it does not take gets the full decode below, which checks the header as well.
          if (raw.want(type, head.readUInt16BE(6), head.readUInt32BE(8))) {
            decodeOne(head.subarray(0, HEADER_SIZE), this.maxPayload); // length and flags, as for any frame
            const header = Buffer.from(head.subarray(0, HEADER_SIZE));
            const payload = this.peek(need).map((v, i) => (i === 0 ? v.subarray(HEADER_SIZE) : v)).filter((v) => v.length > 0);
            // Badly framed attributes (or a kind a relayed frame never has) take the full decode below, which says why.
            if (rawPayloadOk(payload)) {
              this.drop(need);
              raw.onRaw({ type, stream: header.readUInt32BE(8), header, payload });
              continue;
            }
          }
        }
        const buf = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
        const r = decodeOne(buf, this.maxPayload);
        if ('incomplete' in r) break; // unreachable: need bytes are present
        frames.push(r.frame);
        onFrame?.(r.frame);
        if (r.consumed === buf.length) {
          this.chunks = [];
          this.size = 0;
        } else {
          const rest = buf.subarray(r.consumed);
          this.chunks = [rest];
          this.size = rest.length;
        }
      }
    } catch (e) {
      this.failed = e as ProtocolError;
      this.chunks = [];
      this.size = 0;
      throw e;
    }
    return frames;
  }

  /** Makes the first chunk hold at least a header, copying only the few bytes needed. */
  private joinHeader(): void {
    let n = 0;
    let k = 0;
    while (n < HEADER_SIZE) n += this.chunks[k++]!.length;
    this.chunks.splice(0, k, Buffer.concat(this.chunks.slice(0, k), n));
  }

  /** The first n buffered bytes, as views of the chunks they are in. */
  private peek(n: number): Buffer[] {
    const out: Buffer[] = [];
    for (let k = 0, left = n; left > 0; k++) {
      const c = this.chunks[k]!;
      out.push(c.length <= left ? c : c.subarray(0, left));
      left -= Math.min(c.length, left);
    }
    return out;
  }

  /** Forgets the first n buffered bytes. */
  private drop(n: number): void {
    this.size -= n;
    while (n > 0) {
      const c = this.chunks[0]!;
      if (c.length <= n) {
        this.chunks.shift();
        n -= c.length;
      } else {
        this.chunks[0] = c.subarray(n);
        n = 0;
      }
    }
  }
}

/**
 * Checks, without decoding or copying, that a payload held in `parts` is a
 * sequence of attributes each of which lies inside it, with a known kind, a
 * length that fits its kind, and a bool of 0 or 1. A relay passing a frame on
 * undecoded (the origin's DATA) still refuses what a full decode would refuse
 * at its level. A string or list is not accepted here (a relayed DATA and
 * WINDOW_UPDATE have none): a frame with one, or a badly framed one, is
 * decoded in full instead, which accepts it or says what is wrong, as before.
 */
export function rawPayloadOk(parts: readonly Buffer[]): boolean {
  let total = 0;
  for (const p of parts) total += p.length;
  // The byte at absolute offset i of the payload.
  let pi = 0;
  let base = 0;
  const at = (i: number): number => {
    while (i >= base + parts[pi]!.length) base += parts[pi++]!.length;
    return parts[pi]![i - base]!;
  };
  let off = 0;
  let attrs = 0;
  while (off < total) {
    if (total - off < ATTR_HEADER_SIZE || ++attrs > LIMITS.maxAttrs) return false;
    const kind = at(off + 2);
    const len = ((at(off + 3) << 24) >>> 0) + (at(off + 4) << 16) + (at(off + 5) << 8) + at(off + 6);
    off += ATTR_HEADER_SIZE;
    if (len > total - off) return false;
    switch (kind) {
      case Kind.uint:
      case Kind.int:
        if (len !== 1 && len !== 2 && len !== 4 && len !== 8) return false;
        break;
      case Kind.f64:
        if (len !== 8) return false;
        break;
      case Kind.bytes:
        break;
      case Kind.bool:
        if (len !== 1 || at(off) > 1) return false;
        break;
      default:
        return false; // string, list (not in a relayed frame) or an unknown kind
    }
    off += len;
  }
  return true;
}

/** Converts kind names to numbers for callers building raw attributes. */
export function kindNumber(k: KindName): number {
  return Kind[k];
}
