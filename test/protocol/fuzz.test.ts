import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { frameCorpus, mutatedFrameArb, validVectorHex } from '../helpers/mutate.js';
import { HEADER_SIZE, LIMITS } from '../../src/protocol/constants.js';
import { FrameDecoder, ProtocolError, ZERO_COPY_MIN, decodeOne, encodeFrame, encodeFrameParts, type Attr, type Frame } from '../../src/protocol/frame.js';
import { MsgType, frameToMessage, messageToFrame } from '../../src/protocol/messages.js';
import { frameToJson } from '../../src/protocol/json.js';
import { runs } from '../helpers/property.js';

const validHex: string[] = validVectorHex();

const tag = fc.integer({ min: 0, max: 0xffff });
const leafAttr: fc.Arbitrary<Attr> = fc.oneof(
  fc.record({ tag, kind: fc.constant('uint' as const), value: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }) }),
  fc.record({ tag, kind: fc.constant('int' as const), value: fc.bigInt({ min: -(1n << 63n), max: (1n << 63n) - 1n }) }),
  fc.record({ tag, kind: fc.constant('f64' as const), value: fc.double({ noNaN: true }).filter((d) => !Object.is(d, -0)) }),
  fc.record({ tag, kind: fc.constant('string' as const), value: fc.string({ unit: 'grapheme', maxLength: 20 }).filter((s) => !s.includes('\0')) }),
  fc.record({ tag, kind: fc.constant('bytes' as const), value: fc.uint8Array({ maxLength: 40 }) }),
  fc.record({ tag, kind: fc.constant('bool' as const), value: fc.boolean() }),
);
const attrTree: fc.Arbitrary<Attr[]> = fc.letrec<{ attrs: Attr[]; attr: Attr }>((tie) => ({
  attr: fc.oneof({ depthSize: 'small', maxDepth: 6, withCrossShrink: true }, leafAttr, fc.record({ tag, kind: fc.constant('list' as const), value: tie('attrs') as fc.Arbitrary<Attr[]> })),
  attrs: fc.array(tie('attr'), { maxLength: 5 }),
})).attrs;
const frameArb: fc.Arbitrary<Frame> = fc.record({
  type: fc.integer({ min: 0, max: 0xffff }),
  flags: fc.constantFrom(0, 1),
  stream: fc.integer({ min: 0, max: 0xffffffff }),
  attrs: attrTree,
});

function onlyProtocolErrors(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof ProtocolError)) throw e;
  }
}

describe('protocol v1 properties', () => {
  it('encode then decode gives the frame back', () => {
    fc.assert(
      fc.property(frameArb, (f) => {
        const bytes = encodeFrame(f);
        const r = decodeOne(bytes);
        expect('frame' in r && r.consumed).toBe(bytes.length);
        if ('frame' in r) expect(frameToJson(r.frame)).toEqual(frameToJson(f));
      }),
      { numRuns: runs(500) },
    );
  });

  it('the zero-copy pieces of a frame are exactly its encoding, large byte values left uncopied', () => {
    const big = fc.record({ tag, kind: fc.constant('bytes' as const), value: fc.integer({ min: ZERO_COPY_MIN, max: 3 * ZERO_COPY_MIN }).map((n) => new Uint8Array(n).map((_, i) => (i * 31) & 0xff)) });
    fc.assert(
      fc.property(frameArb, fc.array(fc.tuple(fc.nat(5), big), { maxLength: 3 }), (f, inserts) => {
        const attrs = [...f.attrs];
        for (const [at, a] of inserts) attrs.splice(Math.min(at, attrs.length), 0, a);
        const g = { ...f, attrs };
        const parts = encodeFrameParts(g);
        expect(Buffer.concat(parts).equals(encodeFrame(g))).toBe(true);
        // Each large value is one of the pieces, sharing the caller's memory.
        for (const [, a] of inserts) expect(parts.some((p) => p.buffer === a.value.buffer && p.length === a.value.byteLength)).toBe(true);
      }),
      { numRuns: runs(300) },
    );
  });

  it('random bytes: frames, incomplete, or a ProtocolError — nothing else', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        onlyProtocolErrors(() => decodeOne(Buffer.from(bytes)));
      }),
      { numRuns: runs(3000) },
    );
  });

  it('mutated valid frames never break the decoder or the message layer', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(...validHex),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.nat(),
        (hex, flips, cut) => {
          const buf = Buffer.from(hex, 'hex');
          for (const [pos, val] of flips) buf[pos % buf.length] = val;
          const truncated = buf.subarray(0, buf.length - (cut % 4 === 0 ? cut % buf.length : 0));
          onlyProtocolErrors(() => {
            const r = decodeOne(truncated);
            if ('frame' in r) frameToMessage(r.frame);
          });
        },
      ),
      { numRuns: runs(3000) },
    );
  });

  it('frames bent by the live fuzzer\'s mutations (lengths that lie, repeated and unknown attributes, ...) give frames or a ProtocolError', () => {
    const corpus = frameCorpus();
    fc.assert(
      fc.property(mutatedFrameArb(corpus), ({ bytes }) => {
        onlyProtocolErrors(() => {
          for (let rest = bytes; ; ) {
            const r = decodeOne(rest);
            if (!('frame' in r)) break;
            onlyProtocolErrors(() => frameToMessage(r.frame));
            rest = rest.subarray(r.consumed);
          }
        });
      }),
      { numRuns: 3000 },
    );
  });

  it('the streaming decoder never holds more than one header plus the payload limit', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ minLength: 1, maxLength: 64 }), { maxLength: 40 }), fc.integer({ min: 16384, max: 65536 }), (chunks, max) => {
        const d = new FrameDecoder(max);
        onlyProtocolErrors(() => {
          for (const c of chunks) {
            d.push(Buffer.from(c));
            expect(d.buffered).toBeLessThanOrEqual(HEADER_SIZE + max);
          }
        });
      }),
      { numRuns: runs(1000) },
    );
  });

  it('a huge length is refused from the header alone', () => {
    const d = new FrameDecoder();
    const header = Buffer.alloc(HEADER_SIZE);
    header.writeUInt32BE(LIMITS.maxPayload + 1, 0);
    header.writeUInt16BE(MsgType.PING, 4);
    expect(() => d.push(header)).toThrow(/PING frame of 1048577 bytes exceeds the limit of 1048576/);
    // Poisoned: the stream cannot be resynchronised, so later input is refused too.
    expect(() => d.push(Buffer.alloc(1))).toThrow(ProtocolError);
  });

  it('frames before a malformed one are still delivered', () => {
    const good = encodeFrame({ type: MsgType.LOAD_GET, flags: 0, stream: 1, attrs: [] });
    const badFrame = Buffer.from(good);
    badFrame.writeUInt16BE(0x8000, 6); // reserved flag bit
    const seen: Frame[] = [];
    expect(() => new FrameDecoder().push(Buffer.concat([good, badFrame]), (f) => seen.push(f))).toThrow(/reserved flag bits/);
    expect(seen).toHaveLength(1);
  });
});

describe('protocol v1 messages', () => {
  it('round-trips typed messages', () => {
    const hosts = messageToFrame({
      type: 'HOSTS',
      stream: 4,
      hosts: [
        { name: 'alpha', address: '127.0.0.1', port: 7801, load: 0.5, reachable: true, self: true, ageMs: 0 },
        { name: 'beta', reachable: false, error: 'connect ECONNREFUSED' },
      ],
    });
    const r = decodeOne(encodeFrame(hosts));
    if (!('frame' in r)) throw new Error('incomplete');
    expect(frameToMessage(r.frame)).toEqual({
      type: 'HOSTS',
      stream: 4,
      end: true,
      hosts: [
        { name: 'alpha', address: '127.0.0.1', port: 7801, load: 0.5, reachable: true, self: true, ageMs: 0 },
        { name: 'beta', reachable: false, error: 'connect ECONNREFUSED' },
      ],
    });
  });

  it('decodes a LOAD frame with its load averages', () => {
    const bytes = encodeFrame(messageToFrame({ type: 'LOAD', stream: 3, host: 'alpha', load: 0.25, loadavg: [0.5, 0.4, 0.3], cores: 2, jobs: 1, time: 1_764_284_400_123 }));
    const r = decodeOne(bytes);
    if (!('frame' in r)) throw new Error('incomplete');
    expect(frameToMessage(r.frame)).toEqual({ type: 'LOAD', stream: 3, end: true, host: 'alpha', load: 0.25, loadavg: [0.5, 0.4, 0.3], cores: 2, jobs: 1, time: 1_764_284_400_123 });
  });

  it('refuses a known tag of the wrong kind, naming the attribute', () => {
    const f: Frame = { type: MsgType.LOAD, flags: 1, stream: 3, attrs: [{ tag: 1, kind: 'uint', value: 1n }, { tag: 2, kind: 'f64', value: 1 }] };
    expect(() => frameToMessage(f)).toThrow(/LOAD: attribute host \(tag 1\) must be string, got uint/);
  });

  it('refuses a missing required attribute with BAD_REQUEST', () => {
    const f: Frame = { type: MsgType.LOAD, flags: 1, stream: 3, attrs: [{ tag: 1, kind: 'string', value: 'alpha' }] };
    let err: unknown;
    try {
      frameToMessage(f);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ProtocolError);
    expect((err as ProtocolError).proto).toBe('BAD_REQUEST');
    expect((err as Error).message).toMatch(/required attribute load \(tag 2\) missing/);
  });

  it('ignores unknown tags but refuses unknown critical ones', () => {
    const base: Attr[] = [{ tag: 99, kind: 'string', value: 'future field' }];
    expect(frameToMessage({ type: MsgType.LOAD_GET, flags: 0, stream: 1, attrs: base })).toEqual({ type: 'LOAD_GET', stream: 1, end: false });
    expect(() => frameToMessage({ type: MsgType.LOAD_GET, flags: 0, stream: 1, attrs: [{ tag: 0x8000 | 99, kind: 'bool', value: true }] })).toThrow(/critical attribute 99/);
  });

  it('refuses a repeated non-repeated attribute and oversized strings', () => {
    const s = (v: string): Attr => ({ tag: 1, kind: 'string', value: v });
    expect(() => frameToMessage({ type: MsgType.GOODBYE, flags: 0, stream: 0, attrs: [s('a'), s('b')] })).toThrow(/reason \(tag 1\) repeated/);
    expect(() => frameToMessage({ type: MsgType.GOODBYE, flags: 0, stream: 0, attrs: [s('x'.repeat(4097))] })).toThrow(/at most 4096/);
  });

  it('answers an unknown message type with UNSUPPORTED, not a crash', () => {
    let err: unknown;
    try {
      frameToMessage({ type: 0x7777, flags: 0, stream: 1, attrs: [] });
    } catch (e) {
      err = e;
    }
    expect((err as ProtocolError).proto).toBe('UNSUPPORTED');
    expect((err as ProtocolError).fatal).toBe(false);
  });
});
