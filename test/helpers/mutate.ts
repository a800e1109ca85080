/**
 * Mutations of protocol v1 frames for fuzzing, as fast-check arbitraries: a
 * corpus of valid frames of every message type, and the ways an attacker
 * bends them (bit flips, truncation, length fields that lie, huge lengths,
 * repeated and unknown attributes, wrong types, streams and flags). The
 * decoder's own property tests (test/protocol/fuzz.test.ts) and the live
 * daemon fuzzer (test/security/fuzz-live.test.ts) both draw from here.
 */
import fc from 'fast-check';
import { ATTR_HEADER_SIZE, HEADER_SIZE, LIMITS, TAG_CRITICAL } from '../../src/protocol/constants.js';
import { decodeOne, encodeFrame, type Attr } from '../../src/protocol/frame.js';
import { MESSAGE_SPECS, MsgType, messageToFrame, type FieldSpec, type Message, type MsgTypeName } from '../../src/protocol/messages.js';
import { vectors } from './vectors.js';

/** Hex of every valid vector (one or more whole frames) below `maxHex` characters. */
export function validVectorHex(maxHex = 4000): string[] {
  return vectors.filter((c) => c.frames && c.hex.length < maxHex).map((c) => c.hex);
}

/**
 * Valid frames of every message type, as bytes: the shared vectors, except that
 * programs a daemon would really start are harmless ones (/bin/true, not vi).
 */
/** A CPU profile as LOAD carries it (docs/PROTOCOL.md 4.5): an AVX2 CPU with the AVX state component. */
export const CPU_SAMPLE = (() => {
  const leaves = Buffer.alloc(96);
  leaves.write('GenuntelineI', 4, 'latin1');
  leaves.writeUInt32LE(0x000a0f11, 16); // leaf 1 eax: family 0x19
  leaves.writeUInt32LE(0x7ed8320b, 24); // leaf 1 ecx
  leaves.writeUInt32LE(0x219c91a9, 36); // leaf 7 ebx: AVX2, BMI, ...
  return { leaves, xcr0: 7n, xsaveSize: 832, components: [{ index: 2, offset: 576, size: 256 }], modelName: 'Sample CPU' };
})();

export function frameCorpus(): Buffer[] {
  const skip = new Set(['exec-pty', 'exec', 'exec-libs']);
  const fromVectors = vectors.filter((c) => c.frames && c.hex.length < 4000 && !skip.has(c.name)).map((c) => Buffer.from(c.hex, 'hex'));
  const own: Message[] = [
    { type: 'EXEC', stream: 15, path: '/bin/true', argv: ['true', 'x'], env: ['LANG=C'], cwd: '/', window: 1 << 20 },
    { type: 'EXEC', stream: 17, path: '/bin/true', argv: ['true'], pty: true, rows: 24, cols: 80, program: 'render' },
    { type: 'EXEC', stream: 19, path: '/nonexistent/rex-fuzz', argv: ['x'], sha256: new Uint8Array(32).fill(0xff), libs: [{ name: 'libx.so.1', path: '/nonexistent/libx.so.1', sha256: new Uint8Array(32).fill(0x11), size: 10 }] },
    { type: 'RFORK', stream: 21, path: 'rfork', imageData: new Uint8Array(64).fill(7), imageSize: 64 },
    { type: 'WINDOW_UPDATE', stream: 15, increment: 65536 },
    { type: 'PROGRESS', stream: 19, done: 8192, total: 15872, path: '/nonexistent/libx.so.1' },
    { type: 'PING', stream: 1, nonce: new Uint8Array(16).fill(1), data: new Uint8Array(300).fill(2) },
    { type: 'LOAD', stream: 2, host: 'beta', load: 0.5, cores: 2, cpu: CPU_SAMPLE },
  ];
  const all = [...fromVectors, ...own.map((m) => encodeFrame(messageToFrame(m)))];
  const types = new Set(all.map((b) => b.readUInt16BE(4)));
  // A type neither the vectors nor the list above cover (a message just added
  // to the table) still gets a seed: its required attributes, read from the table.
  for (const name of Object.keys(MsgType) as MsgTypeName[]) {
    if (types.has(MsgType[name])) continue;
    const m = { type: name, stream: 1, ...sampleBody(MESSAGE_SPECS[name]) } as Message;
    all.push(encodeFrame(messageToFrame(m)));
  }
  return all;
}

/** The required attributes of an attribute list, each with a small valid value. */
function sampleBody(fields: Record<string, FieldSpec>): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(fields)) {
    if (!('required' in spec && spec.required)) continue;
    body[name] = sampleValue(spec);
  }
  return body;
}

function sampleValue(spec: FieldSpec): unknown {
  switch (spec.t) {
    case 'u32':
    case 'u64n':
      return 1;
    case 'u64':
      return 1n;
    case 'f64':
      return 0.5;
    case 'str':
      return 'x';
    case 'bytes':
      return new Uint8Array(1);
    case 'bool':
      return true;
    case 'f64list':
      return [0.5];
    case 'strs':
      return ['x'];
    case 'group':
      return [sampleBody(spec.fields)];
    case 'struct':
      return sampleBody(spec.fields);
  }
}

/** Offsets of the top-level attribute headers of the first frame in `b` (as far as they are well formed). */
function attrOffsets(b: Buffer): number[] {
  if (b.length < HEADER_SIZE) return [];
  const end = Math.min(b.length, HEADER_SIZE + b.readUInt32BE(0));
  const out: number[] = [];
  for (let off = HEADER_SIZE; off + ATTR_HEADER_SIZE <= end; ) {
    out.push(off);
    off += ATTR_HEADER_SIZE + b.readUInt32BE(off + 3);
  }
  return out;
}

/** Re-encodes the first frame of `b` with its attributes changed by `f`; other input is left as it is. */
function restructure(b: Buffer, f: (attrs: Attr[]) => Attr[]): Buffer {
  try {
    const r = decodeOne(b);
    if (!('frame' in r)) return b;
    return Buffer.concat([encodeFrame({ ...r.frame, attrs: f(r.frame.attrs) }), b.subarray(r.consumed)]);
  } catch {
    return b;
  }
}

const u32 = fc.integer({ min: 0, max: 0xffffffff });
/** Length values that lie: off by a little, at and past the limits, the largest a field holds. */
const lengthLie = fc.oneof(
  fc.integer({ min: -16, max: 16 }).map((d) => ({ delta: d })),
  fc.constantFrom(0, 1, LIMITS.minPayload, LIMITS.maxPayload, LIMITS.maxPayload + 1, 0x7fffffff, 0xffffffff).map((v) => ({ value: v })),
  u32.map((v) => ({ value: v })),
);
const attrValue: fc.Arbitrary<Attr> = fc.oneof(
  fc.record({ tag: fc.integer({ min: 0, max: 0xffff }), kind: fc.constant('string' as const), value: fc.string({ maxLength: 40 }).filter((s) => !s.includes('\0')) }),
  fc.record({ tag: fc.integer({ min: 0, max: 0xffff }), kind: fc.constant('uint' as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
  fc.record({ tag: fc.integer({ min: 0, max: 0xffff }), kind: fc.constant('bytes' as const), value: fc.uint8Array({ maxLength: 64 }) }),
  fc.record({ tag: fc.integer({ min: 0, max: 0xffff }), kind: fc.constant('bool' as const), value: fc.boolean() }),
  fc.record({ tag: fc.integer({ min: 0, max: 0xffff }), kind: fc.constant('list' as const), value: fc.constant([] as Attr[]) }),
);

/** One mutation of a byte string holding one or more frames. */
export type Mutation = (b: Buffer) => Buffer;

function named(name: string, m: Mutation): Mutation {
  Object.defineProperty(m, 'name', { value: name });
  return m;
}

/** Mutations of the bytes: the framing itself is damaged (flips, truncation, lengths that lie, flags, inserted bytes). */
export const byteMutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.nat(), fc.integer({ min: 0, max: 7 })).map(([pos, bit]) =>
    named(`flip bit ${bit} at ${pos}`, (b) => {
      if (!b.length) return b;
      const c = Buffer.from(b);
      c[pos % c.length]! ^= 1 << bit;
      return c;
    }),
  ),
  fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })).map(([pos, v]) =>
    named(`byte ${pos} = ${v}`, (b) => {
      if (!b.length) return b;
      const c = Buffer.from(b);
      c[pos % c.length] = v;
      return c;
    }),
  ),
  fc.nat().map((n) => named(`truncate at ${n}`, (b) => b.subarray(0, b.length ? n % b.length : 0))),
  lengthLie.map((lie) =>
    named(`frame length ${JSON.stringify(lie)}`, (b) => {
      if (b.length < HEADER_SIZE) return b;
      const c = Buffer.from(b);
      c.writeUInt32BE('value' in lie ? lie.value : (c.readUInt32BE(0) + lie.delta) >>> 0, 0);
      return c;
    }),
  ),
  fc.tuple(fc.nat(), lengthLie).map(([i, lie]) =>
    named(`attribute ${i} length ${JSON.stringify(lie)}`, (b) => {
      const offs = attrOffsets(b);
      if (!offs.length) return b;
      const c = Buffer.from(b);
      const at = offs[i % offs.length]! + 3;
      c.writeUInt32BE('value' in lie ? lie.value : (c.readUInt32BE(at) + lie.delta) >>> 0, at);
      return c;
    }),
  ),
  fc.oneof(fc.integer({ min: 0, max: 0xffff }), fc.constantFrom(1, 0x8000, 0xfffe)).map((fl) =>
    named(`flags 0x${fl.toString(16)}`, (b) => {
      if (b.length < HEADER_SIZE) return b;
      const c = Buffer.from(b);
      c.writeUInt16BE(fl, 6);
      return c;
    }),
  ),
  fc.tuple(fc.nat(), fc.uint8Array({ minLength: 1, maxLength: 64 })).map(([pos, bytes]) =>
    named(`insert ${bytes.length} bytes at ${pos}`, (b) => {
      const at = b.length ? pos % (b.length + 1) : 0;
      return Buffer.concat([b.subarray(0, at), Buffer.from(bytes), b.subarray(at)]);
    }),
  ),
  fc.tuple(fc.nat(), fc.nat(), fc.integer({ min: 1, max: 8 })).map(([from, len, times]) =>
    named(`repeat bytes ${from}+${len} ${times} times`, (b) => {
      if (!b.length) return b;
      const s = from % b.length;
      const piece = b.subarray(s, s + 1 + (len % (b.length - s)));
      return Buffer.concat([b.subarray(0, s), ...Array<Buffer>(times + 1).fill(piece), b.subarray(s)]);
    }),
  ),
);

/** Mutations that keep the framing well formed: repeated, unknown, missing attributes, another type or stream (frames in the wrong state). */
export const structuralMutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.tuple(fc.nat(), fc.integer({ min: 1, max: 64 })).map(([i, times]) =>
    named(`repeat attribute ${i} ${times} times`, (b) =>
      restructure(b, (attrs) => {
        if (!attrs.length) return attrs;
        const k = i % attrs.length;
        return [...attrs.slice(0, k + 1), ...Array<Attr>(times).fill(attrs[k]!), ...attrs.slice(k + 1)];
      }),
    ),
  ),
  fc.tuple(fc.nat(), attrValue, fc.boolean()).map(([i, a, critical]) =>
    named(`insert ${critical ? 'critical ' : ''}tag ${a.tag}`, (b) =>
      restructure(b, (attrs) => {
        const k = i % (attrs.length + 1);
        return [...attrs.slice(0, k), { ...a, tag: critical ? a.tag | TAG_CRITICAL : a.tag }, ...attrs.slice(k)];
      }),
    ),
  ),
  fc.nat().map((i) => named(`drop attribute ${i}`, (b) => restructure(b, (attrs) => attrs.filter((_, k) => k !== i % Math.max(1, attrs.length))))),
  fc.oneof(fc.constantFrom(...Object.values(MsgType)), fc.integer({ min: 0, max: 0xffff })).map((t) =>
    named(`type 0x${t.toString(16)}`, (b) => {
      if (b.length < HEADER_SIZE) return b;
      const c = Buffer.from(b);
      c.writeUInt16BE(t, 4);
      return c;
    }),
  ),
  fc.oneof(fc.constantFrom(0, 1, 2, 3, 1023, 1024, 1025, 0x7fffffff, 0xffffffff), u32).map((s) =>
    named(`stream ${s}`, (b) => {
      if (b.length < HEADER_SIZE) return b;
      const c = Buffer.from(b);
      c.writeUInt32BE(s, 8);
      return c;
    }),
  ),
);

/** Every kind of mutation the fuzzers apply. */
export const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(byteMutationArb, structuralMutationArb
);

/** A valid frame bent by one to four mutations; the names say what was done (fast-check prints them on failure). */
export function mutatedFrameArb(corpus: Buffer[], mutations: fc.Arbitrary<Mutation> = mutationArb): fc.Arbitrary<{ bytes: Buffer; how: string }> {
  return fc.tuple(fc.constantFrom(...corpus), fc.array(mutations, { minLength: 1, maxLength: 4 })).map(([base, ms]) => {
    let b = base;
    for (const m of ms) b = m(b);
    return { bytes: b, how: ms.map((m) => m.name).join(', ') };
  });
}
