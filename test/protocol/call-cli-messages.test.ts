// CALL_CLI and CALL_OUTPUT (docs/PROTOCOL.md 4.7.1): the decoder rexd runs on a local client's request keeps
// what the client sent, refuses what breaks the table's limits with a ProtocolError naming the attribute,
// and never fails otherwise, whatever the bytes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { ProtocolError } from '../../src/protocol/encode.js';
import { decodeOne, encodeFrame } from '../../src/protocol/frame.js';
import { CALL_CLI_MAX_ARGS, CALL_MAX_FRAME, MsgType, frameToMessage, messageToFrame, type Message } from '../../src/protocol/messages.js';
import { runs } from '../helpers/property.js';

function roundTrip(m: Message): Message {
  const r = decodeOne(encodeFrame(messageToFrame(m)));
  if (!('frame' in r)) throw new Error('did not decode');
  return frameToMessage(r.frame);
}

const str = (tag: number, value: string) => ({ tag, kind: 'string' as const, value });

describe('CALL_CLI and CALL_OUTPUT', () => {
  it('keep the command line: target, arguments in order (empty ones too), flags, the socket', () => {
    const m: Message = { type: 'CALL_CLI', stream: 1, end: true, target: 'beta.m.cbrt', args: ['27', '', '{"x":[1,2]}', 'é'], json: true, hex: '0a', timeout: '500', socket: '/run/rexd.sock' };
    expect(roundTrip(m)).toEqual(m);
    const o: Message = { type: 'CALL_OUTPUT', stream: 1, end: true, stdout: Buffer.from('3\n'), stderr: Buffer.alloc(0), status: 0 };
    expect(roundTrip(o)).toMatchObject({ type: 'CALL_OUTPUT', status: 0 });
    expect(messageToFrame({ type: 'CALL_OUTPUT', stream: 1, stdout: Buffer.from('x') }).flags).toBe(1);
  });

  it('refuses a CALL_CLI without a target, with too many arguments, a too long target or --timeout, or a wrong kind', () => {
    const call = (attrs: { tag: number; kind: 'string' | 'uint'; value: string | bigint }[]) => () => frameToMessage({ type: MsgType.CALL_CLI, flags: 1, stream: 1, attrs: attrs as never });
    expect(call([str(2, '1')])).toThrow(/CALL_CLI: required attribute target \(tag 1\) missing/);
    expect(call([str(1, 'a.b'), ...Array.from({ length: CALL_CLI_MAX_ARGS + 1 }, () => str(2, '1'))])).toThrow(ProtocolError);
    expect(call([str(1, 'x'.repeat(1025))])).toThrow(/target/);
    expect(call([str(1, 'a.b'), str(5, '1'.repeat(65))])).toThrow(/timeout/);
    expect(call([str(1, 'a.b'), { tag: 2, kind: 'uint', value: 1n }])).toThrow(/CALL_CLI: attribute args \(tag 2\) must be string, got uint/);
    expect(call([str(1, 'a.b'), { tag: 3, kind: 'string', value: 'yes' }])).toThrow(/json/);
    expect(() => frameToMessage({ type: MsgType.CALL_OUTPUT, flags: 1, stream: 1, attrs: [{ tag: 1, kind: 'bytes', value: new Uint8Array(CALL_MAX_FRAME + 1) }] })).toThrow(/stdout/);
  });

  it('any command line survives a round trip (property)', () => {
    const s = fc.string({ maxLength: 40, unit: 'grapheme' }).filter((x) => !x.includes('\0'));
    fc.assert(
      fc.property(s, fc.array(s, { maxLength: 30 }), fc.boolean(), fc.option(s, { nil: undefined }), fc.option(fc.string({ maxLength: 64 }).filter((x) => !x.includes('\0')), { nil: undefined }), (target, args, json, hex, timeout) => {
        const m = { type: 'CALL_CLI', stream: 1, end: true, target, args, ...(json ? { json } : {}), ...(hex !== undefined ? { hex } : {}), ...(timeout !== undefined ? { timeout } : {}) } as Message;
        const back = roundTrip(m) as Message & { args?: string[] };
        expect({ ...back, args: back.args ?? [] }).toEqual({ ...m, args });
      }),
      { numRuns: runs(300) },
    );
  });

  it('whatever the payload bytes, decodes within the limits or refuses with a ProtocolError (fuzz)', () => {
    const valid = encodeFrame(messageToFrame({ type: 'CALL_CLI', stream: 1, end: true, target: 'beta.c.strtol', args: ['42xyz', '10'], json: true, timeout: '30000', socket: '/s' }));
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 512 }),
          // A valid request with bytes changed: lengths, kinds and tags break in every way.
          fc.array(fc.tuple(fc.nat(valid.length - 13), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }).map((edits) => {
            const b = Buffer.from(valid.subarray(12));
            for (const [i, v] of edits) b[i] = v;
            return b;
          }),
        ),
        (payload) => {
          const head = Buffer.alloc(12);
          head.writeUInt32BE(payload.length, 0);
          head.writeUInt16BE(MsgType.CALL_CLI, 4);
          head.writeUInt16BE(1, 6);
          head.writeUInt32BE(1, 8);
          let m: Message;
          try {
            const r = decodeOne(Buffer.concat([head, payload]));
            if (!('frame' in r)) return;
            m = frameToMessage(r.frame);
          } catch (e) {
            expect(e).toBeInstanceOf(ProtocolError);
            return;
          }
          if (m.type !== 'CALL_CLI') throw new Error(`decoded as ${m.type}`);
          expect(typeof m.target).toBe('string');
          expect(Buffer.byteLength(m.target)).toBeLessThanOrEqual(1024);
          expect((m.args ?? []).length).toBeLessThanOrEqual(CALL_CLI_MAX_ARGS);
          if (m.timeout !== undefined) expect(Buffer.byteLength(m.timeout)).toBeLessThanOrEqual(64);
        },
      ),
      { numRuns: runs(2000) },
    );
  });
});
