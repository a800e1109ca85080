#!/usr/bin/env node
// Generates the C view of wire protocol v1 from its one description, the
// TypeScript table (docs/PROTOCOL.md section 4):
//
//   src/protocol/constants.ts   versions, sizes, limits, flags, kinds, roles, ERROR codes
//   src/protocol/messages.ts    every message (its type number and attributes, one entry each) and the lists nested in them
//   src/protocol/signals.ts     the signals of SIGNAL messages, and which ones a stub forwards
//
// into the marked GENERATED block of native/src/wire.h, the internal header of
// the protocol (the public rex.h has none of it: only the C API of rex(3)): the constants, enum
// rex_msg_type and its X-macro REX_MSG_TYPES (proto.c names every type with it),
// the attribute tag enums REX_<MESSAGE>_<FIELD> and REX_<GROUP>_<FIELD>, the
// ERROR codes REX_EPROTO_* and their X-macro REX_EPROTO_CODES (errors.c's names
// and texts), and REX_FORWARDED_SIGNALS (librex's stub and rex_pty).
//
// The table stays TypeScript, read from dist/ (tsc's output), because its
// `as const` literal types are what type every message in src/ (MessageOf,
// Body): a JSON copy would lose them, and a second hand-kept copy is what this
// replaces. When a source is newer than its dist/ file this script runs the
// project's build (tsc -p tsconfig.json) first, so it never reads a stale table
// (scripts/protocol-table.mjs, which scripts/gen-vectors.mjs shares).
//
// The output is committed; test/protocol/gen-protocol.test.ts runs this script
// into a temporary directory and requires byte-identical output (the pattern of
// scripts/gen-image-cpu.mjs), so wire.h cannot drift from the table.
//
//   node scripts/gen-protocol.mjs [--out DIR]   (DIR defaults to the package root)
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { loadProtocol, root } from './protocol-table.mjs';

const args = process.argv.slice(2);
const outIdx = args.indexOf('--out');
const out = outIdx >= 0 ? args[outIdx + 1] : root;
if (outIdx >= 0 && !out) throw new Error('gen-protocol: --out needs a directory');
const { constants: C, messages: M, signals: S } = await loadProtocol();

// ------------------------------------------------------------------ helpers
/** versionMin -> VERSION_MIN, loadavg1 -> LOADAVG1. */
const snake = (s) => s.replace(/([a-z0-9])([A-Z])/g, '$1_$2').toUpperCase();
const hex4 = (v) => `0x${v.toString(16).padStart(4, '0')}`;
/** A C string literal of bytes: printable ASCII as is, the rest escaped (a hex escape never swallows the next character). */
const cString = (bytes) => {
  let s = '';
  let afterHex = false;
  for (const b of bytes) {
    const ch = String.fromCharCode(b);
    const named = { 0x0a: '\\n', 0x0d: '\\r', 0x09: '\\t', 0x22: '\\"', 0x5c: '\\\\' }[b];
    if (named) { s += named; afterHex = false; }
    else if (b >= 0x20 && b < 0x7f) { s += (afterHex && /[0-9a-fA-F]/.test(ch) ? '""' : '') + ch; afterHex = false; }
    else { s += `\\x${b.toString(16).padStart(2, '0')}`; afterHex = true; }
  }
  return `"${s}"`;
};
/** `enum { A = 1, B = 2 };` wrapped as the hand-written enums were. */
const tagEnum = (prefix, fields) => {
  const items = Object.entries(fields).map(([name, spec]) => `${prefix}_${snake(name)} = ${spec.tag}`);
  const lines = [];
  let line = 'enum {';
  for (const [i, it] of items.entries()) {
    const piece = ` ${it}${i < items.length - 1 ? ',' : ''}`;
    if (line.length + piece.length > 110 && line !== 'enum {') {
      lines.push(line);
      line = '      ';
    }
    line += piece;
  }
  lines.push(`${line} };`);
  return lines;
};
/** Body lines of an X-macro list, continued with backslashes aligned. */
const xmacro = (head, items) => {
  const lines = [head, ...items.map((it) => `  ${it}`)];
  const w = Math.max(...lines.map((l) => l.length)) + 1;
  return lines.map((l, i) => (i < lines.length - 1 ? `${l.padEnd(w)}\\` : l));
};

// Every nested list must be a named group, so that its tags get a C name.
const groupName = new Map(Object.entries(M.ATTRIBUTE_GROUPS).map(([name, fields]) => [fields, name]));
const seen = new Set();
const walk = (where, fields) => {
  for (const [name, spec] of Object.entries(fields)) {
    if (spec.t !== 'group' && spec.t !== 'struct') continue;
    if (!groupName.has(spec.fields)) throw new Error(`gen-protocol: ${where}.${name} nests an attribute list that ATTRIBUTE_GROUPS (src/protocol/messages.ts) does not name`);
    if (!seen.has(spec.fields)) {
      seen.add(spec.fields);
      walk(groupName.get(spec.fields), spec.fields);
    }
  }
};
for (const [type, fields] of Object.entries(M.MESSAGE_SPECS)) walk(type, fields);
// Two entries of MESSAGES with one number would be one message on the wire.
const byNumber = new Map();
for (const [name, e] of Object.entries(M.MESSAGES)) {
  if (byNumber.has(e.type)) throw new Error(`gen-protocol: messages ${byNumber.get(e.type)} and ${name} both have type ${hex4(e.type)} (src/protocol/messages.ts)`);
  byNumber.set(e.type, name);
}

// ------------------------------------------------------------------ C view
const g = [];
const BEGIN = '/* BEGIN GENERATED by scripts/gen-protocol.mjs from src/protocol/constants.ts, messages.ts and signals.ts.';
const END = '/* END GENERATED by scripts/gen-protocol.mjs */';
g.push(BEGIN);
g.push(' * Do not edit: change the TypeScript table and run `node scripts/gen-protocol.mjs`. */');
g.push('');
g.push('/** Protocol versions this library speaks (docs/PROTOCOL.md, section 4.1). */');
g.push(`#define REX_PROTO_VERSION ${C.VERSION_MAX}`);
g.push(`#define REX_PROTO_VERSION_MIN ${C.VERSION_MIN}`);
g.push(`#define REX_PROTO_VERSION_MAX ${C.VERSION_MAX}`);
g.push('');
g.push('/** The bytes the initiator sends before its first frame (section 1). */');
g.push(`#define REX_PROTO_PREFACE ${cString(C.PREFACE)}`);
g.push(`#define REX_PROTO_PREFACE_SIZE ${C.PREFACE.length}`);
g.push('');
g.push('/** Fixed sizes: frame header and attribute header (sections 2 and 2.1). */');
g.push(`#define REX_PROTO_HEADER_SIZE ${C.HEADER_SIZE}`);
g.push(`#define REX_PROTO_ATTR_HEADER_SIZE ${C.ATTR_HEADER_SIZE}`);
g.push('');
g.push('/** Limits of version 1 (section 2). */');
for (const [k, v] of Object.entries(C.LIMITS)) g.push(`#define REX_PROTO_${snake(k)} ${v}u`);
g.push('');
g.push('/** Frame flags: END marks the last frame of a request or response. */');
g.push(`#define REX_FLAG_END ${hex4(C.FLAG_END)}u`);
g.push(`#define REX_FLAGS_KNOWN ${hex4(C.FLAGS_KNOWN)}u`);
g.push('');
g.push('/** Tag bit: the receiver must refuse the request if it does not know the tag. */');
g.push(`#define REX_TAG_CRITICAL ${hex4(C.TAG_CRITICAL)}u`);
g.push('');
const types = Object.entries(M.MsgType);
g.push('/** Message types (section 4). */');
g.push('enum rex_msg_type {');
types.forEach(([name, v], i) => g.push(`  REX_MSG_${name} = ${hex4(v)}${i < types.length - 1 ? ',' : ''}`));
g.push('};');
g.push('/** X(NAME, number) for every message type: REX_MSG_TYPES(X) expands to all of them, in order. */');
g.push(...xmacro('#define REX_MSG_TYPES(X)', types.map(([name, v]) => `X(${name}, ${hex4(v)})`)));
g.push('');
const kinds = Object.entries(C.Kind);
g.push('/** Attribute value kinds (section 2.1). */');
g.push('enum rex_kind {');
kinds.forEach(([name, v], i) => g.push(`  REX_KIND_${snake(name)} = ${v}${i < kinds.length - 1 ? ',' : ''}`));
g.push('};');
g.push('');
g.push('/** HELLO roles (section 4.1). */');
g.push(`enum rex_role { ${Object.entries(C.Role).map(([name, v]) => `REX_ROLE_${snake(name)} = ${v}`).join(', ')} };`);
g.push('');
g.push('/* Attribute tags of every message (section 4): REX_<MESSAGE>_<FIELD>. */');
for (const [type, fields] of Object.entries(M.MESSAGE_SPECS)) if (Object.keys(fields).length) g.push(...tagEnum(`REX_${type}`, fields));
g.push('/* Attribute tags inside the lists that messages nest: REX_<GROUP>_<FIELD>. */');
for (const [name, fields] of Object.entries(M.ATTRIBUTE_GROUPS)) g.push(...tagEnum(`REX_${name}`, fields));
g.push('');
const errs = Object.entries(C.PROTO_ERRORS);
g.push('/*');
g.push(' * ERROR frame codes (section 4.2), negated: the wire code of err is -err');
g.push(' * (REX_EPROTO_WIRE(err)). rex_strerror() gives the text, rex_err_name() the name.');
g.push(' */');
const w = Math.max(...errs.map(([name, e]) => `#define REX_EPROTO_${name} (-${e.code})`.length)) + 1;
for (const [name, e] of errs) g.push(`${`#define REX_EPROTO_${name} (-${e.code})`.padEnd(w)}/* ${e.text} */`);
g.push(`#define REX_EPROTO_LAST REX_EPROTO_${errs.reduce((a, b) => (b[1].code > a[1].code ? b : a))[0]}`);
g.push('/** X(NAME, code, text) for every ERROR code, code negated as above. */');
g.push(...xmacro('#define REX_EPROTO_CODES(X)', errs.map(([name, e]) => `X(${name}, (-${e.code}), ${JSON.stringify(e.text)})`)));
g.push('');
g.push('/** X(NAME) for every signal a stub forwards to its remote program (SIGNAL, section 4.9); SIG##NAME is its number. */');
g.push(...xmacro('#define REX_FORWARDED_SIGNALS(X)', [S.FORWARDED_SIGNALS.map((s) => `X(${s})`).join(' ')]));
g.push('');
g.push(END);

// Error codes must be 1..N without gaps: REX_IS_EPROTO is a range test.
errs.forEach(([name, e], i) => {
  if (e.code !== i + 1) throw new Error(`gen-protocol: ERROR code ${name} is ${e.code}, expected ${i + 1} (codes are consecutive from 1)`);
});

const rel = 'native/src/wire.h';
const text = readFileSync(join(root, rel), 'utf8');
const a = text.indexOf(BEGIN);
const b = text.indexOf(END);
if (a < 0 || b < a) throw new Error(`gen-protocol: ${rel} has no GENERATED block (the lines "${BEGIN}" ... "${END}")`);
const path = join(out, rel);
mkdirSync(dirname(path), { recursive: true });
writeFileSync(path, text.slice(0, a) + g.join('\n') + text.slice(b + END.length));
