// The protocol has one description, the TypeScript table (src/protocol/constants.ts,
// messages.ts, signals.ts); the protocol block of native/src/wire.h (the internal header of the
// codec; the public rex.h has none of it) is generated from it by
// scripts/gen-protocol.mjs, and the shared vectors take their numbers from it
// (scripts/gen-vectors.mjs). The committed files must be exactly what the
// generators write now, so neither can drift from the table.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { PROTO_ERRORS } from '../../src/protocol/constants.js';
import { MESSAGE_SPECS, MsgType } from '../../src/protocol/messages.js';
import { FORWARDED_SIGNALS } from '../../src/protocol/signals.js';

const root = packageRoot();
const out = mkdtempSync(join(tmpdir(), 'rex-gen-proto-'));
afterAll(() => rmSync(out, { recursive: true, force: true }));
const header = (): string => readFileSync(join(root, 'native', 'src', 'wire.h'), 'utf8');

describe('the protocol table generates wire.h', () => {
  it('running the generator gives exactly the committed wire.h', () => {
    execFileSync(process.execPath, [join(root, 'scripts', 'gen-protocol.mjs'), '--out', out], { stdio: 'pipe' });
    const rel = 'native/src/wire.h';
    expect(readFileSync(join(out, rel), 'utf8'), `${rel} differs from what scripts/gen-protocol.mjs writes: run it and commit`).toBe(header());
  });

  it('the public rex.h declares none of the wire protocol: no generated block, codec or protocol constant', () => {
    const pub = readFileSync(join(root, 'native', 'include', 'rex.h'), 'utf8');
    expect(pub).not.toContain('GENERATED');
    expect(pub).not.toMatch(/\brex_frame|\brex_attr|\bREX_MSG_|\bREX_PROTO_|\bREX_EPROTO_|\bREX_FORWARDED_SIGNALS\b/);
  });

  it('running scripts/gen-vectors.mjs gives exactly the committed shared vectors', () => {
    execFileSync(process.execPath, [join(root, 'scripts', 'gen-vectors.mjs'), '--out', out], { stdio: 'pipe' });
    const rel = 'test/vectors/protocol-v1.json';
    expect(readFileSync(join(out, rel), 'utf8'), `${rel} differs from what scripts/gen-vectors.mjs writes: run it and commit`).toBe(readFileSync(join(root, rel), 'utf8'));
  });

  it('the C view names every message type, tag, ERROR code and forwarded signal of the table', () => {
    const h = header();
    const cTypes = [...h.matchAll(/^ {2}X\(([A-Z][A-Z0-9_]*), (0x[0-9a-f]{4})\) *\\?$/gm)].map((m) => [m[1], Number(m[2])]);
    expect(cTypes).toEqual(Object.entries(MsgType));
    expect(h).toContain(`REX_RFORK_IMAGE_DATA = ${MESSAGE_SPECS.RFORK.imageData.tag}`);
    expect(h).toContain(`REX_CALL_DEADLINE_MS = ${MESSAGE_SPECS.CALL.deadlineMs.tag}`);
    const cErrors = [...h.matchAll(/^ {2}X\(([A-Z][A-Z0-9_]*), \(-(\d+)\), "([^"]*)"\) *\\?$/gm)].map((m) => [m[1], Number(m[2]), m[3]]);
    expect(cErrors).toEqual(Object.entries(PROTO_ERRORS).map(([name, e]) => [name, e.code, e.text]));
    const sigs = /#define REX_FORWARDED_SIGNALS\(X\) +\\\n {2}(.*)$/m.exec(h)?.[1]?.trim();
    expect(sigs).toBe(FORWARDED_SIGNALS.map((s) => `X(${s})`).join(' '));
  });
});
