// The CPU profile in LOAD and HOSTS (docs/PROTOCOL.md 4.5): it survives the
// wire, and every malformed field is refused with a MALFORMED (or
// BAD_REQUEST for a missing one) error naming it, at the frame layer or at
// src/cpu/wire.ts's check.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CPU_SAMPLE, mutatedFrameArb } from '../helpers/mutate.js';
import { runs } from '../helpers/property.js';
import { decodeOne, encodeFrame, ProtocolError, type Attr, type Frame } from '../../src/protocol/frame.js';
import { MsgType, frameToMessage, messageToFrame, type MessageOf } from '../../src/protocol/messages.js';
import { hostCpuProfile } from '../../src/cpu/profile.js';
import { profileFromJson, profileFromWire, profileToJson, profileToWire, type CpuWire } from '../../src/cpu/wire.js';

const host = hostCpuProfile();

function roundTrip(m: MessageOf<'LOAD'>): MessageOf<'LOAD'> {
  const r = decodeOne(encodeFrame(messageToFrame(m)));
  if (!('frame' in r)) throw new Error('incomplete');
  return frameToMessage(r.frame) as MessageOf<'LOAD'>;
}

const load = (cpu: CpuWire): MessageOf<'LOAD'> => ({ type: 'LOAD', stream: 3, host: 'beta', load: 0.1, cpu });

/** The LOAD frame with `cpu` replaced by these raw attributes. */
function loadWithCpuAttrs(cpuAttrs: Attr[]): Frame {
  return { type: MsgType.LOAD, flags: 1, stream: 3, attrs: [{ tag: 1, kind: 'string', value: 'beta' }, { tag: 2, kind: 'f64', value: 0.1 }, { tag: 8, kind: 'list', value: cpuAttrs }] };
}

function refusal(fn: () => unknown): ProtocolError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ProtocolError);
  return err as ProtocolError;
}

describe('LOAD carries the CPU profile (docs/PROTOCOL.md 4.5)', () => {
  it("this host's profile survives LOAD and decodes to the same vendor, model, level, XCR0, components and features", () => {
    const m = roundTrip(load(profileToWire(host)));
    expect(m.cpu).toBeDefined();
    const p = profileFromWire(m.cpu!, 'LOAD from beta cpu');
    expect(p).toEqual(host);
  });

  it('the JSON form of the test switch REX_TEST_CPU_PROFILE reads back to the same profile', () => {
    expect(profileFromJson(profileToJson(host), 'p.json')).toEqual(host);
    expect(() => profileFromJson('{', 'p.json')).toThrow(/^p\.json: not JSON/);
    expect(() => profileFromJson(JSON.stringify({ ...JSON.parse(profileToJson(host)), leaves: {} }), 'p.json')).toThrow(/p\.json: leaves\["0x0\.0"\] must be four 32-bit words/);
  });

  it('a LOAD without cpu (an older rexd) still decodes: the field is optional', () => {
    expect(roundTrip({ type: 'LOAD', stream: 3, host: 'beta', load: 0.1 }).cpu).toBeUndefined();
  });

  it('refuses malformed cpu attributes at the frame layer, naming the field', () => {
    const good = messageToFrame(load(profileToWire(host))).attrs.find((a) => a.tag === 8)!.value as Attr[];
    const without = (tag: number) => good.filter((a) => a.tag !== tag);
    // cpu itself of the wrong kind
    const f1: Frame = { type: MsgType.LOAD, flags: 1, stream: 3, attrs: [{ tag: 1, kind: 'string', value: 'beta' }, { tag: 2, kind: 'f64', value: 0.1 }, { tag: 8, kind: 'string', value: 'AVX2' }] };
    expect(refusal(() => frameToMessage(f1))).toMatchObject({ proto: 'MALFORMED', message: expect.stringMatching(/^LOAD: attribute cpu \(tag 8\) must be list, got string/) as unknown as string });
    // leaves too long
    const e2 = refusal(() => frameToMessage(loadWithCpuAttrs([...without(1), { tag: 1, kind: 'bytes', value: new Uint8Array(2048) }])));
    expect(e2.proto).toBe('MALFORMED');
    expect(e2.message).toMatch(/^LOAD cpu: attribute leaves is 2048 bytes, at most 1024 allowed/);
    // xcr0 of the wrong kind
    expect(refusal(() => frameToMessage(loadWithCpuAttrs([...without(2), { tag: 2, kind: 'string', value: '0x7' }]))).message).toMatch(/^LOAD cpu: attribute xcr0 \(tag 2\) must be uint, got string/);
    // xcr0 missing
    const e4 = refusal(() => frameToMessage(loadWithCpuAttrs(without(2))));
    expect(e4.proto).toBe('BAD_REQUEST');
    expect(e4.message).toMatch(/^LOAD cpu: required attribute xcr0 \(tag 2\) missing/);
    // too many components
    const comp: Attr = { tag: 4, kind: 'list', value: [{ tag: 1, kind: 'uint', value: 2n }, { tag: 2, kind: 'uint', value: 576n }, { tag: 3, kind: 'uint', value: 256n }] };
    expect(refusal(() => frameToMessage(loadWithCpuAttrs([...without(4), ...Array.from({ length: 63 }, () => comp)]))).message).toMatch(/^LOAD cpu: more than 62 components entries/);
    // a component missing its offset
    const e6 = refusal(() => frameToMessage(loadWithCpuAttrs([...without(4), { tag: 4, kind: 'list', value: [{ tag: 1, kind: 'uint', value: 2n }] }])));
    expect(e6.message).toMatch(/^LOAD cpu components\[0\]: required attribute offset \(tag 2\) missing/);
    // model name too long
    expect(refusal(() => frameToMessage(loadWithCpuAttrs([...without(5), { tag: 5, kind: 'string', value: 'x'.repeat(49) }]))).message).toMatch(/^LOAD cpu: attribute modelName is 49 bytes, at most 48 allowed/);
  });

  it('refuses well-formed attributes whose values cannot describe a CPU, naming the field', () => {
    const w = profileToWire(host);
    const where = 'LOAD from beta cpu';
    const check = (over: Partial<CpuWire>, re: RegExp) => {
      const e = refusal(() => profileFromWire({ ...w, ...over }, where));
      expect(e.proto).toBe('MALFORMED');
      expect(e.message).toMatch(re);
    };
    check({ leaves: new Uint8Array(80) }, /^LOAD from beta cpu: leaves is 80 bytes: must be at least 96/);
    check({ leaves: new Uint8Array(100) }, /^LOAD from beta cpu: leaves is 100 bytes/);
    check({ leaves: new Uint8Array(96) }, /^LOAD from beta cpu: leaves: the vendor in CPUID leaf 0 is not 12 printable characters/);
    check({ xcr0: 0x5n }, /^LOAD from beta cpu: xcr0 = 0x5: x87 and SSE state \(bits 0 and 1\) must be enabled/);
    check({ xsaveSize: 70000 }, /^LOAD from beta cpu: xsaveSize = 70000: at most 65536/);
    check({ xsaveSize: 100, components: [] , xcr0: 3n }, /^LOAD from beta cpu: xsaveSize = 100: an XSAVE area has at least 576 bytes/);
    check({ xcr0: 3n, xsaveSize: 1024, components: [{ index: 2, offset: 576, size: 256 }] }, /^LOAD from beta cpu: components\[0\]\.index = 2: not enabled in xcr0 0x3/);
    check({ xcr0: 7n, xsaveSize: 832, components: [{ index: 1, offset: 576, size: 256 }] }, /^LOAD from beta cpu: components\[0\]\.index = 1: user state components are 2\.\.63/);
    check({ xcr0: 7n, xsaveSize: 832, components: [{ index: 2, offset: 700, size: 256 }] }, /^LOAD from beta cpu: components\[0\] \(component 2\): offset 700 size 256 does not lie within the 832-byte XSAVE area/);
    check({ xcr0: 7n, xsaveSize: 832, components: [{ index: 2, offset: 576, size: 256 }, { index: 2, offset: 576, size: 256 }] }, /^LOAD from beta cpu: components\[1\]\.index = 2: components must be in increasing order/);
    check({ xcr0: 7n, xsaveSize: 832, components: [] }, /^LOAD from beta cpu: components: xcr0 0x7 enables component 2, but its place is not given/);
    check({ modelName: 'Evil\x1b[2J CPU' }, /^LOAD from beta cpu: modelName: only printable ASCII is allowed/);
  });

  it('property: mutated LOAD and HOSTS frames with a profile decode, or fail with a protocol error; never anything else', () => {
    const corpus = [
      encodeFrame(messageToFrame(load(CPU_SAMPLE))),
      encodeFrame(messageToFrame(load(profileToWire(host)))),
      encodeFrame(messageToFrame({ type: 'HOSTS', stream: 4, hosts: [{ name: 'alpha', self: true, cpu: CPU_SAMPLE }, { name: 'beta', cpu: profileToWire(host) }] })),
    ];
    expect(profileFromWire(CPU_SAMPLE, 'sample').features).toContain('AVX2');
    fc.assert(
      fc.property(mutatedFrameArb(corpus), ({ bytes }) => {
        try {
          const r = decodeOne(bytes);
          if (!('frame' in r)) return;
          const m = frameToMessage(r.frame);
          const cpus = m.type === 'LOAD' ? [m.cpu] : m.type === 'HOSTS' ? (m.hosts ?? []).map((h) => h.cpu) : [];
          for (const c of cpus) if (c) profileFromWire(c, 'fuzz');
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
        }
      }),
      { numRuns: runs(2000) },
    );
  });
});
