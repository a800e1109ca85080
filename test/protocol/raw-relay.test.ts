// The relay's pass-through (docs/PROTOCOL.md 3.1, "Relaying"): an origin rexd hands DATA and WINDOW_UPDATE
// on as they arrived, only the stream id rewritten. The decoder gives such a frame as views of the chunks it
// came in, whatever the chunk boundaries, and anything a full decode would refuse still takes the full decode.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { FrameDecoder, encodeFrame, rawPayloadOk, type Frame, type RawFrame } from '../../src/protocol/frame.js';
import { EXEC_MAX_CHUNK, MsgType, dataFrameParts, messageToFrame } from '../../src/protocol/messages.js';
import { runs } from '../helpers/property.js';

const RAW = new Set<number>([MsgType.DATA, MsgType.WINDOW_UPDATE]);

/** Feeds `bytes` in pieces cut at `cuts`; returns what came out, in order. */
function feed(bytes: Buffer, cuts: number[]): ({ raw: RawFrame } | { frame: Frame })[] {
  const d = new FrameDecoder();
  const out: ({ raw: RawFrame } | { frame: Frame })[] = [];
  const at = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  let prev = 0;
  for (const c of [...at, bytes.length]) {
    if (c <= prev) continue;
    d.push(bytes.subarray(prev, c), (f) => out.push({ frame: f }), { want: (t, fl) => fl === 0 && RAW.has(t), onRaw: (f) => out.push({ raw: f }) });
    prev = c;
  }
  return out;
}

describe('FrameDecoder raw frames (the origin relay)', () => {
  it('a DATA frame comes out as header and payload views that join to the bytes sent, whatever the chunking (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 70_000 }), fc.array(fc.nat(), { maxLength: 12 }), fc.boolean(), (data, cuts, eof) => {
        const data1 = encodeFrame(messageToFrame({ type: 'DATA', stream: 7, fd: 1, data, ...(eof ? { eof } : {}) }));
        const ping = encodeFrame(messageToFrame({ type: 'PING', stream: 9 }));
        const credit = encodeFrame(messageToFrame({ type: 'WINDOW_UPDATE', stream: 7, increment: data.length + 1 }));
        const out = feed(Buffer.concat([data1, ping, credit]), cuts);
        expect(out.map((o) => ('raw' in o ? `raw ${o.raw.type}` : `frame ${o.frame.type}`))).toEqual([`raw ${MsgType.DATA}`, `frame ${MsgType.PING}`, `raw ${MsgType.WINDOW_UPDATE}`]);
        const [d, , w] = out as { raw: RawFrame }[];
        expect(d!.raw.stream).toBe(7);
        expect(Buffer.concat([d!.raw.header, ...d!.raw.payload]).equals(data1)).toBe(true);
        expect(Buffer.concat([w!.raw.header, ...w!.raw.payload]).equals(credit)).toBe(true);
        for (const p of d!.raw.payload) expect(p.length).toBeGreaterThan(0);
      }),
      { numRuns: runs(200) },
    );
  });

  it('a frame with END, or a type the relay does not take, is decoded as usual', () => {
    const exit = encodeFrame(messageToFrame({ type: 'EXIT', stream: 7, code: 3 }));
    const out = feed(exit, [5]);
    expect(out).toHaveLength(1);
    expect('frame' in out[0]!).toBe(true);
  });

  it('badly framed attributes are not passed on: the full decode refuses them as MALFORMED', () => {
    const good = encodeFrame(messageToFrame({ type: 'DATA', stream: 7, fd: 1, data: Buffer.from('hello') }));
    const bad = Buffer.from(good);
    bad.writeUInt32BE(1000, 12 + 3); // fd's length runs past the payload
    expect(() => feed(bad, [])).toThrow(/MALFORMED|runs past/);
    const badBool = encodeFrame({ type: MsgType.DATA, flags: 0, stream: 7, attrs: [{ tag: 1, kind: 'uint', value: 1n }, { tag: 3, kind: 'bool', value: true }] });
    badBool[badBool.length - 1] = 2;
    expect(() => feed(badBool, [])).toThrow(/bool/);
  });

  it('rawPayloadOk accepts what DATA and WINDOW_UPDATE carry and nothing with a string, a list or an unknown kind', () => {
    const payload = (f: Frame) => encodeFrame(f).subarray(12);
    expect(rawPayloadOk([payload({ type: MsgType.DATA, flags: 0, stream: 1, attrs: [{ tag: 1, kind: 'uint', value: 2n }, { tag: 2, kind: 'bytes', value: new Uint8Array(9) }, { tag: 3, kind: 'bool', value: true }] })])).toBe(true);
    expect(rawPayloadOk([])).toBe(true);
    expect(rawPayloadOk([payload({ type: MsgType.DATA, flags: 0, stream: 1, attrs: [{ tag: 9, kind: 'string', value: 'x' }] })])).toBe(false);
    expect(rawPayloadOk([payload({ type: MsgType.DATA, flags: 0, stream: 1, attrs: [{ tag: 9, kind: 'list', value: [] }] })])).toBe(false);
    expect(rawPayloadOk([Buffer.from([0, 1, 9, 0, 0, 0, 0])])).toBe(false);
    expect(rawPayloadOk([Buffer.from([0, 1, 1, 0, 0, 0, 3, 1, 2, 3])])).toBe(false); // uint of 3 bytes
    // Split anywhere, the answer is the same.
    const p = payload({ type: MsgType.DATA, flags: 0, stream: 1, attrs: [{ tag: 1, kind: 'uint', value: 300n }, { tag: 2, kind: 'bytes', value: new Uint8Array(20) }] });
    for (let i = 1; i < p.length; i++) expect(rawPayloadOk([p.subarray(0, i), p.subarray(i)])).toBe(true);
  });

  it('dataFrameParts: several buffers make the bytes of one DATA frame of them joined (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 5000 }), { maxLength: 6 }), fc.nat(70_000), fc.nat(), (bufs, fd, stream) => {
        const joined = Buffer.concat(bufs);
        const want = encodeFrame(messageToFrame({ type: 'DATA', stream, fd, data: joined }));
        expect(Buffer.concat(dataFrameParts(stream, fd, bufs)).equals(want)).toBe(true);
      }),
      { numRuns: runs(200) },
    );
    expect(() => dataFrameParts(1, 1, [new Uint8Array(EXEC_MAX_CHUNK), new Uint8Array(1)])).toThrow(RangeError);
  });
});
