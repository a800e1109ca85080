/**
 * The JSON form of decoded frames used by the shared test vectors and by
 * `rex debug decode`: integers as decimal strings, bytes as hex, special f64
 * values as strings.
 */
import type { Attr, Frame } from './frame.js';

/** A JSON-safe attribute, as in test/vectors/protocol-v1.json. */
export interface JsonAttr {
  tag: number;
  kind: Attr['kind'];
  value: string | number | boolean | JsonAttr[];
}

/** A JSON-safe frame. */
export interface JsonFrame {
  type: number;
  flags: number;
  stream: number;
  attrs: JsonAttr[];
}

/** Converts one attribute to its JSON form. */
export function attrToJson(a: Attr): JsonAttr {
  switch (a.kind) {
    case 'uint':
    case 'int':
      return { tag: a.tag, kind: a.kind, value: a.value.toString() };
    case 'f64':
      return { tag: a.tag, kind: a.kind, value: Number.isFinite(a.value) ? a.value : String(a.value) };
    case 'bytes':
      return { tag: a.tag, kind: a.kind, value: Buffer.from(a.value).toString('hex') };
    case 'list':
      return { tag: a.tag, kind: a.kind, value: a.value.map(attrToJson) };
    default:
      return { tag: a.tag, kind: a.kind, value: a.value };
  }
}

/** Converts a frame to its JSON form. */
export function frameToJson(f: Frame): JsonFrame {
  return { type: f.type, flags: f.flags, stream: f.stream, attrs: f.attrs.map(attrToJson) };
}
