// The C decoder (librex's rex_frame_decode, through the addon) and the
// TypeScript decoder (src/protocol/frame.ts) must give the same verdict on the
// same bytes: on every shared vector, and on random and mutated input.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { vectors } from '../helpers/vectors.js';
import { ProtocolError, decodeOne, encodeFrame, type Attr } from '../../src/protocol/frame.js';
import { frameToJson } from '../../src/protocol/json.js';
import { loadAddon, type NativeDecodeResult } from '../../src/util/native.js';
import { runs } from '../helpers/property.js';

const addon = loadAddon();

/** One decoder's verdict on the start of a buffer, in a form both can produce. */
type Verdict = { frame: unknown; consumed: number } | { incomplete: true } | { error: string };

function tsVerdict(buf: Buffer, maxPayload?: number): Verdict {
  try {
    const r = decodeOne(buf, maxPayload);
    return 'incomplete' in r ? { incomplete: true } : { frame: frameToJson(r.frame), consumed: r.consumed };
  } catch (e) {
    if (e instanceof ProtocolError) return { error: e.proto };
    throw e; // anything else is a bug in frame.ts, not a verdict
  }
}

function cVerdict(buf: Buffer, maxPayload?: number): Verdict {
  const r: NativeDecodeResult = addon.decodeFrame(buf, maxPayload);
  if ('error' in r) return { error: r.error };
  return r;
}

/** Every frame of buf, decoder by decoder, as the vectors list them. */
function decodeAll(decode: (b: Buffer, m?: number) => Verdict, buf: Buffer, maxPayload?: number): { frames: unknown[]; end: Verdict | 'done' } {
  const frames: unknown[] = [];
  let off = 0;
  do {
    const v = decode(buf.subarray(off), maxPayload);
    if (!('frame' in v)) return { frames, end: v };
    frames.push(v.frame);
    off += v.consumed;
  } while (off < buf.length);
  return { frames, end: 'done' };
}

describe('C decoder on the shared vectors', () => {
  it('loads the addon of the same protocol version', () => {
    expect(addon.protoVersion).toBe(1);
  });

  for (const v of vectors) {
    it(v.name, () => {
      const buf = Buffer.from(v.hex, 'hex');
      const c = decodeAll(cVerdict, buf, v.maxPayload);
      const ts = decodeAll(tsVerdict, buf, v.maxPayload);
      expect(c).toEqual(ts);
      if (v.error) expect(c.end).toEqual({ error: v.error });
      else if (v.incomplete) expect(c.end).toEqual({ incomplete: true });
      else {
        expect(c.end).toBe('done');
        expect(c.frames).toEqual(v.frames);
      }
    });
  }

  it('reports where and why a frame is malformed', () => {
    const bad = vectors.find((v) => v.name === 'attr-runs-past-payload')!;
    const r = addon.decodeFrame(Buffer.from(bad.hex, 'hex'));
    expect(r).toMatchObject({ error: 'MALFORMED', offset: 0 });
    expect((r as { message: string }).message).toMatch(/attribute 1 length 5 runs past its container \(4 bytes left\) at payload offset 0/);
    const big = addon.decodeFrame(Buffer.from('001000010010000000000001', 'hex'));
    expect((big as { message: string }).message).toBe('PING frame of 1048577 bytes exceeds the limit of 1048576');
  });
});

// ---------------------------------------------------------------- properties

const validFrames = vectors.filter((v) => v.frames && v.hex.length < 2000).map((v) => Buffer.from(v.hex, 'hex'));

/** A mutation of a byte buffer; applied in order. */
const mutation = fc.oneof(
  fc.record({ op: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ op: fc.constant('set' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('cut' as const), at: fc.nat() }),
  fc.record({ op: fc.constant('insert' as const), at: fc.nat(), byte: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ op: fc.constant('len32' as const), at: fc.nat(), value: fc.constantFrom(0, 1, 6, 7, 8, 0x100000, 0x100001, 0xffffffff) }),
  fc.record({ op: fc.constant('fixHeader' as const) }),
);
type Mutation = typeof mutation extends fc.Arbitrary<infer M> ? M : never;

function mutate(src: Buffer, ms: Mutation[]): Buffer {
  let b = Buffer.from(src);
  for (const m of ms) {
    if (b.length === 0) break;
    switch (m.op) {
      case 'flip': b[m.at % b.length]! ^= 1 << m.bit; break;
      case 'set': b[m.at % b.length] = m.byte; break;
      case 'cut': b = b.subarray(0, m.at % (b.length + 1)); break;
      case 'insert': {
        const at = m.at % (b.length + 1);
        b = Buffer.concat([b.subarray(0, at), Buffer.from([m.byte]), b.subarray(at)]);
        break;
      }
      case 'len32':
        if (b.length >= 4) b.writeUInt32BE(m.value, m.at % (b.length - 3));
        break;
      case 'fixHeader':
        if (b.length >= 12) b.writeUInt32BE(b.length - 12, 0);
        break;
    }
  }
  return b;
}

/** Random attributes behind a header whose length is right, so that the attribute decoder is reached. */
const framedRandom = fc
  .tuple(fc.integer({ min: 0, max: 0xffff }), fc.integer({ min: 0, max: 1 }), fc.uint8Array({ maxLength: 200 }))
  .map(([type, flags, payload]) => {
    const b = Buffer.alloc(12 + payload.length);
    b.writeUInt32BE(payload.length, 0);
    b.writeUInt16BE(type, 4);
    b.writeUInt16BE(flags, 6);
    b.set(payload, 12);
    return b;
  });

describe('C and TypeScript decoders agree on arbitrary input', () => {
  const agree = (buf: Buffer, maxPayload?: number): void => {
    expect(cVerdict(buf, maxPayload)).toEqual(tsVerdict(buf, maxPayload));
  };

  it('random bytes', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (u) => agree(Buffer.from(u))), { numRuns: runs(3000) });
  });

  it('random payloads behind a valid header', () => {
    fc.assert(fc.property(framedRandom, (b) => agree(b)), { numRuns: runs(3000) });
  });

  it('mutated valid frames, at the default and the lowest payload limit', () => {
    fc.assert(
      fc.property(fc.constantFrom(...validFrames), fc.array(mutation, { minLength: 1, maxLength: 4 }), fc.constantFrom(undefined, 16384), (src, ms, max) =>
        agree(mutate(src, ms), max),
      ),
      { numRuns: runs(5000) },
    );
  });

  it('frames built by the TypeScript encoder', () => {
    const attr: fc.Memo<Attr> = fc.memo((n) =>
      fc.oneof(
        { depthSize: 'small', withCrossShrink: true },
        fc.record({ tag: fc.integer({ min: 0, max: 0xffff }), kind: fc.constant('uint' as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
        fc.record({ tag: fc.integer({ min: 0, max: 0xffff }), kind: fc.constant('int' as const), value: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }) }),
        fc.record({ tag: fc.nat(0xffff), kind: fc.constant('f64' as const), value: fc.double() }),
        fc.record({ tag: fc.nat(0xffff), kind: fc.constant('string' as const), value: fc.string({ unit: 'grapheme' }).map((s) => s.replace(/\0/g, '')) }),
        fc.record({ tag: fc.nat(0xffff), kind: fc.constant('bytes' as const), value: fc.uint8Array({ maxLength: 16 }) }),
        fc.record({ tag: fc.nat(0xffff), kind: fc.constant('bool' as const), value: fc.boolean() }),
        fc.record({ tag: fc.nat(0xffff), kind: fc.constant('list' as const), value: n > 1 ? fc.array(attr(n - 1), { maxLength: 4 }) : fc.constant<Attr[]>([]) }),
      ),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 0xffff }), fc.nat(), fc.array(attr(6), { maxLength: 6 }), (type, stream, attrs) => {
        const buf = encodeFrame({ type, flags: 1, stream, attrs });
        const c = cVerdict(buf);
        expect(c).toEqual(tsVerdict(buf));
        expect(c).toMatchObject({ consumed: buf.length });
      }),
      { numRuns: runs(1000) },
    );
  });

  // A leading U+FEFF is data, not a byte order mark: both decoders keep it.
  it('a string starting with U+FEFF decodes the same in C and TypeScript', () => {
    agree(Buffer.from('0000000b000300000000000000010400000004efbbbf61', 'hex'));
  });
});
