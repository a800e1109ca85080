import { describe, expect, it } from 'vitest';
import { vectors } from '../helpers/vectors.js';
import { FrameDecoder, ProtocolError, decodeOne, encodeFrame, type Frame } from '../../src/protocol/frame.js';
import { frameToJson } from '../../src/protocol/json.js';

/** Decodes every frame in `buf` the way a receiver would, one call at a time. */
function decodeAll(buf: Buffer, maxPayload?: number): { frames: Frame[]; incomplete: boolean } {
  const frames: Frame[] = [];
  let off = 0;
  for (;;) {
    const r = decodeOne(buf.subarray(off), maxPayload);
    if ('incomplete' in r) return { frames, incomplete: off < buf.length || frames.length === 0 };
    frames.push(r.frame);
    off += r.consumed;
    if (off === buf.length) return { frames, incomplete: false };
  }
}

describe('protocol v1 shared vectors (TypeScript decoder)', () => {
  it('has vectors of all three outcomes', () => {
    expect(vectors.filter((v) => v.frames).length).toBeGreaterThan(20);
    expect(vectors.filter((v) => v.error).length).toBeGreaterThan(15);
    expect(vectors.filter((v) => v.incomplete).length).toBeGreaterThanOrEqual(4);
  });

  for (const v of vectors) {
    it(v.name, () => {
      const buf = Buffer.from(v.hex, 'hex');
      if (v.error) {
        let err: unknown;
        try {
          decodeAll(buf, v.maxPayload);
        } catch (e) {
          err = e;
        }
        expect(err).toBeInstanceOf(ProtocolError);
        expect((err as ProtocolError).proto).toBe(v.error);
        // The streaming decoder must reach the same verdict, even byte by byte.
        const d = new FrameDecoder(v.maxPayload);
        expect(() => {
          for (const b of buf) d.push(Buffer.from([b]));
        }).toThrow(ProtocolError);
        return;
      }
      const r = decodeAll(buf, v.maxPayload);
      if (v.incomplete) {
        expect(r.incomplete).toBe(true);
        return;
      }
      expect(r.incomplete).toBe(false);
      expect(r.frames.map(frameToJson)).toEqual(v.frames);
      // Re-encoding gives the same bytes where the vector uses minimal integer widths.
      const minimal = !['uint-widths', 'int-widths', 'load', 'hello-answer'].includes(v.name);
      if (minimal) expect(Buffer.concat(r.frames.map(encodeFrame)).toString('hex')).toBe(v.hex);
      // Fed in 3-byte chunks, the streaming decoder yields the same frames.
      const d = new FrameDecoder(v.maxPayload);
      const got: Frame[] = [];
      for (let i = 0; i < buf.length; i += 3) got.push(...d.push(buf.subarray(i, i + 3)));
      expect(got.map(frameToJson)).toEqual(v.frames);
      expect(d.buffered).toBe(0);
    });
  }
});
