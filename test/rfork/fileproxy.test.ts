// The file channel of rfork (docs/RFORK.md 4.1, native/src/fileproxy.h): the
// C parsers of requests (the origin stub's) and answers (the supervisor's),
// run through native/build/test/fp_parse (built with ASan+UBSan), give the
// verdict of a model of the spec on every input: the fields of a valid
// message, "more bytes needed" on a prefix, a refusal naming the field on
// anything else.
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { configureProperties, runs } from '../helpers/property.js';

const NATIVE = join(packageRoot(), 'native');
const HARNESS = join(NATIVE, 'build', 'test', 'fp_parse');

const REQ = 40;
const RESP = 24;
const MAX_IO = 65536;
const REQ_MAGIC = 0x51465852;
const RESP_MAGIC = 0x52465852;
/** Per operation: uses a, b, aux; carries a payload; b is a count. */
const OPS: Record<number, { a?: boolean; b?: boolean; aux?: boolean; payload?: boolean; count?: boolean; stat?: number; reads?: boolean; writes?: boolean }> = {
  1: { b: true, count: true, reads: true }, // READ
  2: { payload: true, writes: true }, // WRITE
  3: { a: true, b: true, count: true, reads: true }, // PREAD
  4: { a: true, payload: true, writes: true }, // PWRITE
  5: { a: true, b: true }, // LSEEK
  6: { stat: 144 }, // FSTAT
  7: { aux: true, stat: 256 }, // STATX
  8: { a: true }, // FTRUNCATE
  9: {}, // FSYNC
  10: {}, // FDATASYNC
  11: { b: true, count: true, reads: true }, // GETDENTS64
  12: {}, // GETFL
  13: { aux: true }, // SETFL
  14: { stat: 120 }, // FSTATFS
  15: { a: true, b: true, aux: true }, // FALLOCATE
  16: {}, // STREAM (from the child: no filter, relay as streams)
};

type Verdict = string; // "OK ...", "MORE" or "BAD <field>"

/** The model of a request's parse (docs/RFORK.md 4.1); BAD carries the field's offset. */
function modelReq(buf: Buffer): Verdict {
  if (buf.length < REQ) return 'MORE';
  if (buf.readUInt32LE(0) !== REQ_MAGIC) return 'BAD offset 0';
  const op = buf.readUInt16LE(4);
  const spec = OPS[op];
  if (!spec) return 'BAD offset 4';
  if (buf.readUInt16LE(6) !== 0 || buf.readUInt32LE(20) !== 0) return 'BAD reserved';
  const fd = buf.readInt32LE(8);
  if (fd < 0) return 'BAD offset 8';
  const len = buf.readUInt32LE(12);
  if (len > MAX_IO || (len && !spec.payload)) return 'BAD offset 12';
  const aux = buf.readUInt32LE(16);
  const a = buf.readBigInt64LE(24);
  const b = buf.readBigInt64LE(32);
  if (aux && !spec.aux) return 'BAD offset 16';
  if (a && !spec.a) return 'BAD offset 24';
  if (b && !spec.b) return 'BAD offset 32';
  if (spec.count && (b < 0n || b > BigInt(MAX_IO))) return 'BAD offset 32';
  if ([3, 4, 8, 15].includes(op) && a < 0n) return 'BAD offset 24';
  if (op === 5 && (b < 0n || b > 4n)) return 'BAD offset 32';
  if (op === 15 && b <= 0n) return 'BAD offset 32';
  if (buf.length - REQ < len) return 'MORE';
  return `OK ${REQ + len} ${op} ${fd} ${len} ${aux} ${a} ${b}`;
}

function modelResp(buf: Buffer, op: number, want: number): Verdict {
  if (buf.length < RESP) return 'MORE';
  if (buf.readUInt32LE(0) !== RESP_MAGIC) return 'BAD offset 0';
  if (buf.readUInt16LE(4) !== op) return 'BAD offset 4';
  if (buf.readUInt16LE(6) !== 0 || buf.readUInt32LE(12) !== 0) return 'BAD reserved';
  const len = buf.readUInt32LE(8);
  const r = buf.readBigInt64LE(16);
  const spec = OPS[op]!;
  if (r < -4095n) return 'BAD offset 16';
  if (r < 0n && len) return 'BAD offset 8';
  if (spec.reads) {
    if (len > want) return 'BAD offset 8';
    if (r >= 0n && r !== BigInt(len)) return 'BAD offset 16';
  } else if (spec.stat) {
    if (r >= 0n && (r !== 0n || len !== spec.stat)) return 'BAD offset 8';
  } else {
    if (len) return 'BAD offset 8';
    if (spec.writes && r > BigInt(want)) return 'BAD offset 16';
  }
  if (buf.length - RESP < len) return 'MORE';
  return `OK ${RESP + len} ${r} ${len}`;
}

/** Runs the C parsers on many inputs at once; one verdict per input, with BAD reduced to the field's offset as the model says it. */
function harness(lines: string[]): string[] {
  const out = execFileSync(HARNESS, { input: lines.join('\n') + '\n', maxBuffer: 64 << 20 }).toString().trimEnd().split('\n');
  return out.map((l) => {
    if (!l.startsWith('BAD ')) return l;
    if (/reserved/.test(l)) return 'BAD reserved';
    const m = /at offset (\d+)/.exec(l);
    return m ? `BAD offset ${m[1]}` : l;
  });
}

const i64 = fc.oneof(fc.constantFrom(0n, 1n, -1n, 2n, 4n, 5n, 65536n, 65537n, -4095n, -4096n, 144n, 256n, 9223372036854775807n, -9223372036854775808n), fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }));
const u32 = fc.oneof(fc.constantFrom(0, 1, 3, 8, 64, 120, 144, 256, 65536, 65537, 0xffffffff), fc.nat({ max: 0xffffffff }));

/** A header with fields drawn around the limits, then some payload (possibly shorter than its len). */
const request = fc
  .record({
    magic: fc.oneof({ weight: 9, arbitrary: fc.constant(REQ_MAGIC) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
    op: fc.integer({ min: 0, max: 17 }),
    zero16: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
    fd: fc.oneof(fc.constantFrom(0, 3, -1, 2147483647, -2147483648), fc.integer({ min: -2147483648, max: 2147483647 })),
    len: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 2, arbitrary: fc.nat({ max: 40 }) }, { weight: 1, arbitrary: u32 }),
    aux: fc.oneof({ weight: 3, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: u32 }),
    zero32: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
    a: fc.oneof({ weight: 2, arbitrary: fc.constant(0n) }, { weight: 1, arbitrary: i64 }),
    b: fc.oneof({ weight: 2, arbitrary: fc.constant(0n) }, { weight: 1, arbitrary: i64 }),
    tail: fc.uint8Array({ maxLength: 48 }),
    cut: fc.option(fc.nat({ max: 88 }), { freq: 4 }),
  })
  .map((r) => {
    const h = Buffer.alloc(REQ);
    h.writeUInt32LE(r.magic, 0);
    h.writeUInt16LE(r.op, 4);
    h.writeUInt16LE(r.zero16, 6);
    h.writeInt32LE(r.fd, 8);
    h.writeUInt32LE(r.len, 12);
    h.writeUInt32LE(r.aux, 16);
    h.writeUInt32LE(r.zero32, 20);
    h.writeBigInt64LE(r.a, 24);
    h.writeBigInt64LE(r.b, 32);
    const all = Buffer.concat([h, Buffer.from(r.tail)]);
    return r.cut === null ? all : all.subarray(0, Math.min(r.cut, all.length));
  });

const answer = fc
  .record({
    op: fc.integer({ min: 1, max: 16 }),
    echo: fc.oneof({ weight: 9, arbitrary: fc.constant(-1) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
    magic: fc.oneof({ weight: 9, arbitrary: fc.constant(RESP_MAGIC) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
    zero16: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 0xffff }) }),
    zero32: fc.oneof({ weight: 9, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.nat({ max: 0xffffffff }) }),
    len: fc.oneof(fc.constantFrom(0, 3, 120, 144, 256), fc.nat({ max: 300 }), u32),
    result: i64,
    want: fc.oneof(fc.constantFrom(0, 3, 144, 256, 65536), fc.nat({ max: 400 })),
    extra: fc.integer({ min: -30, max: 30 }),
  })
  .map((r) => {
    const h = Buffer.alloc(RESP);
    h.writeUInt32LE(r.magic, 0);
    h.writeUInt16LE(r.echo < 0 ? r.op : r.echo, 4);
    h.writeUInt16LE(r.zero16, 6);
    h.writeUInt32LE(r.len, 8);
    h.writeUInt32LE(r.zero32, 12);
    h.writeBigInt64LE(r.result, 16);
    const dataLen = Math.max(0, Math.min(r.len, 400) + r.extra);
    const all = Buffer.concat([h, Buffer.alloc(dataLen, 0x5a)]);
    const cut = r.extra < -20 ? Math.max(0, RESP + r.extra) : all.length;
    return { op: r.op, want: r.want, buf: all.subarray(0, cut) };
  });

beforeAll(() => {
  configureProperties();
  execFileSync('make', ['-s', '-C', NATIVE, 'build/test/fp_parse'], { stdio: 'pipe' });
});

describe('file channel parsers (fp_parse) against the model of the spec', () => {
  it('requests: the same verdict and fields as the model, for headers around every limit and any prefix', () => {
    const cases = fc.sample(request, runs(3000));
    const got = harness(cases.map((b) => `Q ${b.toString('hex')}`));
    expect(got).toHaveLength(cases.length);
    const kinds = new Set<string>();
    cases.forEach((b, i) => {
      const want = modelReq(b);
      kinds.add(want.split(' ')[0]!);
      expect(got[i], `request ${b.toString('hex')}`).toBe(want);
    });
    // The generator reaches every verdict, or the comparison says little.
    expect([...kinds].sort()).toEqual(['BAD', 'MORE', 'OK']);
  });

  it('answers: the same verdict as the model for each operation, result and length', () => {
    const cases = fc.sample(answer, runs(3000));
    const got = harness(cases.map((c) => `R ${c.op} ${c.want} ${c.buf.toString('hex')}`));
    expect(got).toHaveLength(cases.length);
    const kinds = new Set<string>();
    cases.forEach((c, i) => {
      const want = modelResp(c.buf, c.op, c.want);
      kinds.add(want.split(' ')[0]!);
      expect(got[i], `answer op ${c.op} want ${c.want}: ${c.buf.toString('hex')}`).toBe(want);
    });
    expect([...kinds].sort()).toEqual(['BAD', 'MORE', 'OK']);
  });

  it('refuses named fields: a wrong magic, an unknown operation, a payload on a read, a count over 64 KiB', () => {
    const ok = Buffer.alloc(REQ);
    ok.writeUInt32LE(REQ_MAGIC, 0);
    ok.writeUInt16LE(1, 4);
    ok.writeInt32LE(3, 8);
    ok.writeBigInt64LE(100n, 32);
    const variant = (f: (b: Buffer) => void): string => {
      const b = Buffer.from(ok);
      f(b);
      return `Q ${b.toString('hex')}`;
    };
    const raw = execFileSync(HARNESS, {
      input: [`Q ${ok.toString('hex')}`, variant((b) => b.writeUInt32LE(0, 0)), variant((b) => b.writeUInt16LE(99, 4)), variant((b) => b.writeUInt32LE(5, 12)), variant((b) => b.writeBigInt64LE(65537n, 32))].join('\n') + '\n',
    })
      .toString()
      .trimEnd()
      .split('\n');
    expect(raw[0]).toBe('OK 40 1 3 0 0 0 100');
    expect(raw[1]).toMatch(/^BAD request magic at offset 0: 0x00000000, not "RXFQ"$/);
    expect(raw[2]).toMatch(/^BAD request op at offset 4: 99 is not an operation$/);
    expect(raw[3]).toMatch(/^BAD request len at offset 12: 5, but op 1 carries no data$/);
    expect(raw[4]).toMatch(/^BAD request count at offset 32: 65537 is not in 0\.\.65536$/);
  });
});
