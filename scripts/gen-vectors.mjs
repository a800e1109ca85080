#!/usr/bin/env node
// Regenerates test/vectors/protocol-v1.json: the shared test vectors of wire
// protocol v1 (docs/PROTOCOL.md section 5). The bytes are built here by hand, not
// by either implementation, so that both the TypeScript and the C decoder are
// checked against an independent reading of the spec. The numbers (message
// types, kinds) are the protocol table's (src/protocol/messages.ts, constants.ts), not a copy.
//
//   node scripts/gen-vectors.mjs [--out DIR]   (DIR defaults to the package root)
// test/protocol/gen-protocol.test.ts runs it and requires the committed file.
import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadProtocol, root } from './protocol-table.mjs';

const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
if (outIdx >= 0 && !args[outIdx + 1]) throw new Error('gen-vectors: --out needs a directory');
const out = join(outIdx >= 0 ? args[outIdx + 1] : root, 'test', 'vectors', 'protocol-v1.json');
const { constants, messages } = await loadProtocol();
const KIND = constants.Kind;
const T = messages.MsgType;

const be = (n, w) => {
  const b = Buffer.alloc(w);
  if (w === 8) b.writeBigUInt64BE(BigInt.asUintN(64, BigInt(n)));
  else b.writeUIntBE(Number(BigInt.asUintN(w * 8, BigInt(n))), 0, w);
  return b;
};
/** Raw attribute: tag, kind number, value bytes (length taken from them unless given). */
const rawAttr = (tag, kind, value, len = value.length) => Buffer.concat([be(tag, 2), be(kind, 1), be(len, 4), value]);
/** Raw frame: header fields and payload bytes (length taken from payload unless given). */
const rawFrame = (type, flags, stream, payload, len = payload.length) => Buffer.concat([be(len, 4), be(type, 2), be(flags, 2), be(stream, 4), payload]);

// Attribute builders that also return the expected decoded form.
const u = (tag, v, w) => ({ bytes: rawAttr(tag, KIND.uint, be(v, w)), json: { tag, kind: 'uint', value: BigInt(v).toString() } });
const i = (tag, v, w) => ({ bytes: rawAttr(tag, KIND.int, be(v, w)), json: { tag, kind: 'int', value: BigInt(v).toString() } });
const f = (tag, v) => {
  const b = Buffer.alloc(8);
  b.writeDoubleBE(v);
  const value = Number.isFinite(v) ? v : String(v);
  return { bytes: rawAttr(tag, KIND.f64, b), json: { tag, kind: 'f64', value } };
};
const s = (tag, v) => ({ bytes: rawAttr(tag, KIND.string, Buffer.from(v, 'utf8')), json: { tag, kind: 'string', value: v } });
const by = (tag, hex) => ({ bytes: rawAttr(tag, KIND.bytes, Buffer.from(hex, 'hex')), json: { tag, kind: 'bytes', value: hex } });
const bo = (tag, v) => ({ bytes: rawAttr(tag, KIND.bool, Buffer.from([v ? 1 : 0])), json: { tag, kind: 'bool', value: v } });
const l = (tag, items) => {
  const inner = Buffer.concat(items.map((x) => x.bytes));
  return { bytes: rawAttr(tag, KIND.list, inner), json: { tag, kind: 'list', value: items.map((x) => x.json) } };
};
const frame = (type, flags, stream, attrs) => ({
  bytes: rawFrame(type, flags, stream, Buffer.concat(attrs.map((a) => a.bytes))),
  json: { type, flags, stream, attrs: attrs.map((a) => a.json) },
});

const cases = [];
const ok = (name, frames, extra = {}) => cases.push({ name, hex: Buffer.concat(frames.map((x) => x.bytes)).toString('hex'), frames: frames.map((x) => x.json), ...extra });
const bad = (name, bytes, error, extra = {}) => cases.push({ name, hex: bytes.toString('hex'), error, ...extra });
const inc = (name, bytes, extra = {}) => cases.push({ name, hex: bytes.toString('hex'), incomplete: true, ...extra });

// ---- valid frames: every message type of section 4
ok('hello-request', [frame(T.HELLO, 0, 0, [u(1, 1, 1), u(2, 1, 1), u(4, 1, 1), s(7, 'librex/0.1.0')])]);
ok('hello-answer', [frame(T.HELLO, 0, 0, [u(3, 1, 1), u(4, 3, 1), s(5, 'alpha'), u(6, 1048576, 4), s(7, 'rexd/0.1.0')])]);
ok('error-fatal', [frame(T.ERROR, 1, 0, [u(1, 3, 1), s(2, 'frame of 2000000 bytes exceeds the limit of 1048576'), bo(3, true), u(4, 0x10, 1)])]);
ok('goodbye', [frame(T.GOODBYE, 0, 0, [s(1, 'shutting down')])]);
ok('ping-routed', [frame(T.PING, 0, 1, [by(1, '0001020304050607'), s(2, 'beta')])]);
ok('pong', [frame(T.PONG, 1, 1, [by(1, '0001020304050607'), s(4, 'beta'), u(5, 1, 1)])]);
ok('load-get-empty-payload', [frame(T.LOAD_GET, 0, 3, [])]);
ok('load', [frame(T.LOAD, 1, 3, [s(1, 'alpha'), f(2, 0.25), l(3, [f(1, 0.5), f(1, 0.75), f(1, 1.5)]), u(4, 2, 1), u(5, 0, 1), u(6, 1764284400123, 8), u(7, 8 * 2 ** 30, 8)])]);
ok('hosts-get', [frame(T.HOSTS_GET, 0, 5, [])]);
ok('hosts', [
  frame(T.HOSTS, 1, 5, [
    l(1, [s(1, 'alpha'), s(2, '127.0.0.1'), u(3, 7801, 2), f(4, 0.1), bo(7, true), u(8, 12, 1), bo(9, true)]),
    l(1, [s(1, 'beta'), s(2, '127.0.0.1'), u(3, 7802, 2), bo(7, false), s(10, 'connect ECONNREFUSED 127.0.0.1:7802')]),
  ]),
]);
// remote calls (section 4.7): a CALL with an input frame (add(2, 3): int32 a, int32 b), its RESULT (return 5)
ok('call', [frame(T.CALL, 1, 7, [s(1, 'alpha.alice.demo.add'), by(2, '0200000003000000'), u(3, 30000, 2)])]);
// placement limited to some hosts (REX_PLACE_HOSTS, docs/PLACEMENT.md): CALL among, tag 6, repeated
ok('call-among', [frame(T.CALL, 1, 9, [s(1, '*.demo.add'), by(2, '0200000003000000'), s(6, 'n1'), s(6, 'n2')])]);
ok('result', [frame(T.RESULT, 1, 7, [by(1, '05000000'), s(2, 'alpha')])]);
ok('result-accepted-then-end', [frame(T.RESULT, 0, 9, [bo(3, true)]), frame(T.RESULT, 1, 9, [by(1, '')])]);
ok('entries-get', [frame(T.ENTRIES_GET, 0, 11, [s(1, 'demo')])]);
ok('entries', [frame(T.ENTRIES, 1, 11, [l(1, [s(1, 'add'), u(2, 8, 1), u(3, 4, 1), bo(4, true), s(6, 'int32 add(int32 a, int32 b)')]), l(1, [s(1, 'log_msg'), bo(4, false), s(5, 'log_msg is variadic')]), s(2, 'demo'), s(3, 'alpha')])]);
// paging (section 4.7): one entry point by name; a page of the names after a cursor that match a glob; a page that says where the next starts
ok('entries-get-name', [frame(T.ENTRIES_GET, 0, 13, [s(1, 'beta.m'), s(2, 'cbrt')])]);
ok('entries-get-page', [frame(T.ENTRIES_GET, 0, 15, [s(1, 'beta.c'), s(3, 'str*'), s(4, 'strcat'), u(5, 1000, 2)])]);
ok('entries-page', [frame(T.ENTRIES, 1, 15, [l(1, [s(1, 'strchr'), u(2, 16, 1), u(3, 8, 1), bo(4, true)]), l(1, [s(1, 'strcmp'), u(2, 16, 1), u(3, 4, 1), bo(4, true)]), s(2, 'c'), s(3, 'beta'), s(4, 'strcmp')])]);
ok('cancel', [frame(T.CANCEL, 0, 13, [u(1, 7, 1)])]);
ok('cancelled', [frame(T.CANCELLED, 1, 13, [bo(1, true)])]);
ok('define', [frame(T.DEFINE, 0, 1, [s(1, 'scale'), u(2, 16, 1), u(3, 8, 1), s(4, 'd'), l(5, [u(1, 1, 1), s(2, '{ii}'), u(3, 0, 1), u(4, 8, 1)]), l(5, [u(1, 1, 1), s(2, 'd'), u(3, 8, 1), u(4, 8, 1)])])]);
ok('define-buffer', [frame(T.DEFINE, 0, 3, [s(1, 'sum'), u(2, 8, 1), u(3, 8, 1), s(4, 'l'), l(5, [u(1, 2, 1), u(3, 0, 1), u(5, 1, 1), u(6, 8, 1), u(7, 8, 1), u(9, 3, 1), u(10, 1, 1)]), l(5, [u(1, 1, 1), s(2, 'I'), u(3, 4, 1), u(4, 4, 1)])])]);
ok('defined', [frame(T.DEFINED, 1, 1, [])]);
// the native front end's rex call (section 4.7.1): the command line, an empty argument kept; the output over two frames, the last with the status
ok('call-cli', [frame(T.CALL_CLI, 1, 1, [s(1, 'beta.c.strtol'), s(2, '42xyz'), s(2, ''), s(2, '10'), bo(3, true), s(5, '5000'), s(6, '/run/rex/rexd.sock')])]);
ok('call-output', [frame(T.CALL_OUTPUT, 0, 1, [by(1, '7b0a')]), frame(T.CALL_OUTPUT, 1, 1, [by(1, '7d0a'), u(3, 0, 1)])]);
ok('call-output-error', [frame(T.CALL_OUTPUT, 1, 1, [by(2, '7265783a2075736167650a'), u(3, 2, 1)])]);
ok('error-crashed', [frame(T.ERROR, 1, 7, [u(1, 13, 1), s(2, "crash: the function crashed its controller with SIGSEGV (pid 4242)"), u(4, 0x70, 1)])]);
// identity (section 4.8): HELLO naming a program, ENROLL with a token secret and proof, a rotation, ENROLLED
ok('hello-request-program', [frame(T.HELLO, 0, 0, [u(1, 1, 1), u(2, 1, 1), u(4, 1, 1), s(7, 'rex-ts/0.1.0'), s(8, 'render')])]);
ok('ping-forwarded-program', [frame(T.PING, 0, 2, [by(1, '0001020304050607'), s(4, 'render')])]);
ok('enroll-token', [frame(T.ENROLL, 0, 1, [s(1, 'J5QXG2LOM5WG65LUEBXW4ZJAMFZXGZLU'), by(2, '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff')])]);
ok('enroll-rotation', [frame(T.ENROLL, 0, 3, [by(3, '3081da30818da003020102')])]);
ok('enrolled', [frame(T.ENROLLED, 1, 1, [s(1, 'alpha.alice'), s(2, 'MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E43U'), s(3, 'beta.bob'), s(4, 'AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH'), bo(5, false)])]);
// joining a cluster (section 4.8): JOIN with a token secret, proof and the joiner's port; JOINED with one member; INTRODUCE, INTRODUCED
ok('join', [frame(T.JOIN, 0, 1, [s(1, 'J5QXG2LOM5WG65LUEBXW4ZJAMFZXGZLU'), by(2, '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff'), s(3, '10.0.0.3'), u(4, 7800, 2)])]);
ok('joined', [frame(T.JOINED, 1, 1, [s(1, 'alpha.alice'), s(2, 'MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E43U'), s(3, 'gamma.alice'), s(4, 'AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH'), l(5, [s(1, 'beta.alice'), by(2, '3081da30818da003020102'), s(3, '10.0.0.2'), u(4, 7800, 2)])])]);
ok('introduce', [frame(T.INTRODUCE, 0, 5, [by(1, '3081da30818da003020102'), s(2, '10.0.0.3'), u(3, 7800, 2)])]);
ok('introduced', [frame(T.INTRODUCED, 1, 5, [s(1, 'gamma.alice'), s(2, 'AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH'), bo(3, false)])]);
// remote execution (section 4.9): EXEC with argv and env (repeated strings), STARTED, stdio DATA both ways with
// credit (WINDOW_UPDATE on the stream), SIGNAL, WINSIZE, stdout EOF, EXIT by code and by signal
ok('exec', [frame(T.EXEC, 0, 15, [s(1, '/bin/echo'), s(2, 'echo'), s(2, 'hi there'), s(3, 'LANG=C'), s(3, 'HOME=/home/alice'), s(4, '/home/alice'), s(5, 'beta'), u(9, 1048576, 4)])]);
// EXEC among (tag 17, repeated): the hosts placement may choose (REX_PLACE_HOSTS)
ok('exec-among', [frame(T.EXEC, 0, 21, [s(1, 'hostname'), s(2, 'hostname'), s(17, 'n1'), s(17, 'n2'), s(17, 'n3')])]);
ok('exec-pty', [frame(T.EXEC, 0, 17, [s(1, 'vi'), s(2, 'vi'), bo(6, true), u(7, 24, 1), u(8, 80, 1), s(10, 'render')])]);
ok('started', [frame(T.STARTED, 0, 15, [s(1, 'beta'), u(2, 4242, 2), u(3, 1048576, 4), s(4, '/home/alice')])]);
ok('data-stdin-then-eof', [frame(T.DATA, 0, 15, [u(1, 0, 1), by(2, '68656c6c6f0a')]), frame(T.DATA, 0, 15, [u(1, 0, 1), bo(3, true)])]);
ok('data-stdout-window', [frame(T.DATA, 0, 15, [u(1, 1, 1), by(2, '6869207468657265 0a'.replace(' ', ''))]), frame(T.WINDOW_UPDATE, 0, 15, [u(1, 9, 1)])]);
ok('signal', [frame(T.SIGNAL, 0, 15, [s(1, 'INT')])]);
ok('winsize', [frame(T.WINSIZE, 0, 17, [u(1, 50, 1), u(2, 132, 1)])]);
ok('exit-code', [frame(T.EXIT, 1, 15, [u(1, 3, 1), s(4, 'beta')])]);
ok('fetch-file', [frame(T.FETCH, 0, 15, [by(1, '00'.repeat(31) + 'ff'), s(2, '/home/alice/bin/render')]), frame(T.FILE, 0, 15, [u(4, 5, 1)]), frame(T.FILE, 0, 15, [by(1, '7f454c4602')]), frame(T.FILE, 0, 15, [bo(2, true)])]);
ok('file-error', [frame(T.FILE, 0, 17, [s(3, 'the origin cannot read /x: ENOENT')])]);
// transfer (section 4.9): EXEC naming a library the program needs, FETCH offering a destination for an external
// copy, PROGRESS towards the origin, FILE saying the copy was made by the rex-auto-transfer command
ok('exec-libs', [frame(T.EXEC, 0, 19, [s(1, '/home/alice/bin/render'), s(2, 'render'), by(11, '00'.repeat(31) + 'ff'), l(14, [s(1, 'libgreet.so.1'), s(2, '/home/alice/lib/libgreet.so.1'), by(3, '11'.repeat(32)), u(4, 15872, 2)])])]);
ok('fetch-dest-progress-copied', [
  frame(T.FETCH, 0, 19, [by(1, '11'.repeat(32)), s(2, '/home/alice/lib/libgreet.so.1'), s(3, '/tmp/.rex_beta_alice/cache/.1111.4242.x')]),
  frame(T.PROGRESS, 0, 19, [u(1, 8192, 2), u(2, 15872, 2), s(3, '/home/alice/lib/libgreet.so.1')]),
  frame(T.FILE, 0, 19, [bo(2, true), bo(5, true)]),
]);
// rfork (section 4.10): RFORK from the origin's stub (its memfd, the descriptors to proxy), then as the origin's rexd
// sends it on: the image's hash for FETCH and one file the image maps privately
ok('rfork', [frame(T.RFORK, 0, 21, [s(1, '/proc/4242/fd/5'), s(4, '/home/alice'), u(9, 1048576, 4), by(13, '000000000000000100000002' + '00000007')])]);
ok('rfork-routed', [frame(T.RFORK, 0, 23, [s(1, '/proc/4242/fd/5'), s(5, 'beta'), u(9, 1048576, 4), by(11, '22'.repeat(32)), l(14, [s(1, 'libc.so.6'), s(2, '/usr/lib/libc.so.6'), by(3, '33'.repeat(32)), u(4, 2125328, 4)])])]);
ok('exit-signal', [frame(T.EXIT, 1, 17, [s(2, 'KILL'), bo(3, false), s(4, 'beta')])]);
// ---- every kind and width
ok('uint-widths', [frame(T.PING, 0, 7, [u(100, 0xff, 1), u(101, 0xffff, 2), u(102, 0xffffffff, 4), u(103, 0xffffffffffffffffn, 8), u(104, 0, 8)])]);
ok('int-widths', [frame(T.PING, 0, 7, [i(100, -128, 1), i(101, -32768, 2), i(102, -2147483648, 4), i(103, -(2n ** 63n), 8), i(104, 2n ** 63n - 1n, 8), i(105, 127, 1)])]);
ok('f64-special', [frame(T.PING, 0, 7, [f(1, 1.5), f(2, -1e308), f(3, NaN), f(4, Infinity), f(5, -Infinity), f(6, 5e-324)])]);
ok('string-utf8', [frame(T.PING, 0, 7, [s(1, 'héllo wörld ✓ 🚀'), s(2, '')])]);
ok('bytes-empty-and-zeros', [frame(T.PING, 0, 7, [by(1, ''), by(2, '000000')])]);
ok('bool-both', [frame(T.PING, 0, 7, [bo(1, false), bo(2, true)])]);
ok('empty-list', [frame(T.PING, 0, 7, [l(1, [])])]);
ok('unknown-type-decodes', [frame(0x7fff, 0, 9, [u(1, 1, 1)])], { note: 'frame level accepts any type; the message layer answers UNSUPPORTED' });
ok('critical-tag-decodes', [frame(T.PING, 0, 9, [u(0x8001, 1, 1)])], { note: 'CRITICAL is judged by the message layer' });
ok('end-flag', [frame(T.PONG, 1, 0xffffffff, [])]);
ok('two-frames', [frame(T.LOAD_GET, 0, 1, []), frame(T.HOSTS_GET, 0, 3, [])]);
// depth: 8 levels of lists are allowed (the payload is level 1)
{
  let a = u(1, 1, 1);
  for (let d = 0; d < 7; d++) a = l(1, [a]);
  ok('depth-8', [frame(T.PING, 0, 1, [a])]);
  bad('depth-9', frame(T.PING, 0, 1, [l(1, [a])]).bytes, 'MALFORMED');
}
// attribute count: 4096 allowed, 4097 refused
{
  const many = Array.from({ length: 4096 }, (_, k) => bo(k % 60000, true));
  ok('attrs-4096', [frame(T.PING, 0, 1, many)]);
  bad('attrs-4097', frame(T.PING, 0, 1, [...many, bo(1, false)]).bytes, 'MALFORMED');
}
// payload limit (default 1 MiB) and a lowered one
{
  const big = rawFrame(T.PING, 0, 1, Buffer.alloc(0), 1048577);
  bad('too-big-header-only', big, 'TOO_BIG', { note: 'refused from the header alone, before any payload arrives' });
  const at = Buffer.alloc(16384 - 7);
  ok('payload-at-lowered-limit', [{ bytes: rawFrame(T.PING, 0, 1, rawAttr(1, KIND.bytes, at)), json: { type: T.PING, flags: 0, stream: 1, attrs: [{ tag: 1, kind: 'bytes', value: at.toString('hex') }] } }], { maxPayload: 16384 });
  bad('payload-over-lowered-limit', rawFrame(T.PING, 0, 1, Buffer.alloc(0), 16385), 'TOO_BIG', { maxPayload: 16384 });
}
// ---- malformed
bad('reserved-flag', rawFrame(T.PING, 2, 1, Buffer.alloc(0)), 'MALFORMED');
bad('unknown-kind', rawFrame(T.PING, 0, 1, rawAttr(1, 8, Buffer.alloc(1))), 'MALFORMED');
bad('kind-zero', rawFrame(T.PING, 0, 1, rawAttr(1, 0, Buffer.alloc(0))), 'MALFORMED');
bad('uint-width-3', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.uint, Buffer.alloc(3))), 'MALFORMED');
bad('uint-width-0', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.uint, Buffer.alloc(0))), 'MALFORMED');
bad('int-width-16', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.int, Buffer.alloc(16))), 'MALFORMED');
bad('f64-width-4', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.f64, Buffer.alloc(4))), 'MALFORMED');
bad('bool-value-2', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.bool, Buffer.from([2]))), 'MALFORMED');
bad('bool-width-2', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.bool, Buffer.from([0, 1]))), 'MALFORMED');
bad('string-nul', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.string, Buffer.from('a\0b'))), 'MALFORMED');
bad('string-bad-utf8', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.string, Buffer.from([0xc3, 0x28]))), 'MALFORMED');
bad('string-overlong-utf8', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.string, Buffer.from([0xc0, 0xaf]))), 'MALFORMED');
bad('string-surrogate-utf8', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.string, Buffer.from([0xed, 0xa0, 0x80]))), 'MALFORMED');
bad('attr-runs-past-payload', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.bytes, Buffer.alloc(4), 5)), 'MALFORMED');
bad('attr-length-huge', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.bytes, Buffer.alloc(4), 0xffffffff)), 'MALFORMED');
bad('truncated-attr-header', rawFrame(T.PING, 0, 1, Buffer.from([0, 1, 5])), 'MALFORMED');
{
  const inner = rawAttr(2, KIND.bytes, Buffer.alloc(4), 6); // runs past its list, though not past the payload
  const payload = Buffer.concat([rawAttr(1, KIND.list, inner), Buffer.alloc(2)]);
  bad('attr-runs-past-list', rawFrame(T.PING, 0, 1, payload), 'MALFORMED');
}
// ---- incomplete input: a decoder must ask for more, not fail
inc('empty-input', Buffer.alloc(0));
inc('partial-header', Buffer.from('00000000', 'hex'));
inc('header-without-payload', rawFrame(T.PING, 0, 1, Buffer.alloc(0), 20));
inc('payload-one-short', rawFrame(T.PING, 0, 1, rawAttr(1, KIND.bytes, Buffer.alloc(4))).subarray(0, 22));

mkdirSync(dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify({ version: 1, spec: 'docs/PROTOCOL.md', generator: 'scripts/gen-vectors.mjs', cases }, null, 1) + '\n');
console.log(`wrote ${cases.length} vectors to ${out}`);
