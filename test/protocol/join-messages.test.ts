/**
 * The messages of joining a cluster (JOIN, JOINED, INTRODUCE, INTRODUCED;
 * docs/PROTOCOL.md 4.8) and the hosts file they fill (docs/KEYS.md "Joining a
 * cluster"): round trips of any valid value, refusals of what is missing, and
 * mutated frames and arbitrary hosts-file text that must never do worse than
 * a ProtocolError or a named problem.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { HostsFile, mergeServers, type MemberEntry } from '../../src/keys/hosts.js';
import { decodeOne, encodeFrame, ProtocolError } from '../../src/protocol/frame.js';
import { MsgType, frameToMessage, messageToFrame, type Message } from '../../src/protocol/messages.js';
import { frameCorpus, mutatedFrameArb } from '../helpers/mutate.js';
import { runs } from '../helpers/property.js';

const tmp = mkdtempSync(join(tmpdir(), 'rex-join-msg-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

function roundTrip(m: Message): Message {
  const r = decodeOne(encodeFrame(messageToFrame(m)));
  if (!('frame' in r)) throw new Error('did not decode');
  return frameToMessage(r.frame);
}

const name = fc.stringMatching(/^[a-z][a-z0-9_-]{0,20}\.[a-z][a-z0-9_-]{0,20}$/);
const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.domain());
const port = fc.integer({ min: 1, max: 65535 });
const bytes = fc.uint8Array({ minLength: 1, maxLength: 300 }).map((b) => Buffer.from(b));

describe('JOIN, JOINED, INTRODUCE, INTRODUCED', () => {
  it('any valid JOINED, with any members, survives a round trip (property)', () => {
    const member = fc.record({ name, cert: bytes, address, port, error: fc.option(fc.string({ maxLength: 60 }).filter((s) => !s.includes('\0')), { nil: undefined }) }).map(({ error, ...m }) => (error === undefined ? m : { ...m, error }));
    fc.assert(
      fc.property(name, name, fc.array(member, { maxLength: 8 }), (server, joined, members) => {
        const m: Message = { type: 'JOINED', stream: 1, end: true, server, serverId: 'MFRG-GZDF-MZTW-Q2LK-NNWG-23TP-OBYX-E43U', name: joined, id: 'AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH', members };
        const back = roundTrip(m) as Message & { members?: unknown[] };
        expect({ ...back, members: back.members ?? [] }).toEqual(m);
      }),
      { numRuns: runs(200) },
    );
  });

  it('JOIN and INTRODUCE survive a round trip; the joiner may leave its address to the member (property)', () => {
    fc.assert(
      fc.property(fc.stringMatching(/^[A-Z2-7]{32}$/), bytes, fc.option(address, { nil: undefined }), port, (secret, proof, addr, p) => {
        const j: Message = { type: 'JOIN', stream: 1, end: false, secret, proof, port: p, ...(addr !== undefined ? { address: addr } : {}) };
        expect(roundTrip(j)).toEqual(j);
        const i: Message = { type: 'INTRODUCE', stream: 3, end: false, cert: proof, address: addr ?? '127.0.0.1', port: p };
        expect(roundTrip(i)).toEqual(i);
      }),
      { numRuns: runs(200) },
    );
  });

  it('refuses a JOIN without its port and a member without its certificate, naming the attribute', () => {
    expect(() => frameToMessage({ type: MsgType.JOIN, flags: 0, stream: 1, attrs: [{ tag: 1, kind: 'string', value: 'S' }, { tag: 2, kind: 'bytes', value: new Uint8Array(32) }] })).toThrow(/JOIN: required attribute port \(tag 4\) missing/);
    const joined = messageToFrame({ type: 'JOINED', stream: 1, server: 'a.u', serverId: 'X', name: 'b.u', id: 'Y', members: [{ name: 'c.u', cert: Buffer.from('c'), address: '::1', port: 1 }] });
    const list = joined.attrs.find((a) => a.tag === 5)!;
    (list.value as { tag: number }[]).splice((list.value as { tag: number }[]).findIndex((a) => a.tag === 2), 1);
    expect(() => frameToMessage(joined)).toThrow(/cert \(tag 2\) missing/);
  });

  it('mutated join frames decode to a message or a ProtocolError, nothing else (property)', () => {
    const types = new Set<number>([MsgType.JOIN, MsgType.JOINED, MsgType.INTRODUCE, MsgType.INTRODUCED]);
    const corpus = frameCorpus().filter((b) => types.has(b.readUInt16BE(4)));
    expect(corpus.length).toBeGreaterThanOrEqual(4);
    fc.assert(
      fc.property(mutatedFrameArb(corpus), ({ bytes: b }) => {
        try {
          const r = decodeOne(b);
          if ('frame' in r) frameToMessage(r.frame);
        } catch (e) {
          if (!(e instanceof ProtocolError)) throw e;
        }
      }),
      { numRuns: runs(1000) },
    );
  });
});

describe('the hosts file', () => {
  let n = 0;
  const hostName = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,20}$/);

  it('keeps what is written to it, one entry per name, the last one winning (property)', () => {
    const entry = fc.record({ name: hostName, address: fc.oneof(fc.ipV4(), fc.ipV6()), port, identity: name, id: fc.stringMatching(/^[A-Z2-7]{4}(-[A-Z2-7]{4}){7}$/), via: fc.constantFrom('join', 'introduced-by=alpha.alice') });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 10 }), (entries) => {
        const h = new HostsFile(join(tmp, `h${++n}`));
        mkdirP(h.file);
        const want = new Map<string, MemberEntry>();
        for (const e of entries) {
          h.upsert(e);
          want.set(e.name, e);
        }
        const problems: string[] = [];
        const got = h.read(problems);
        expect(problems).toEqual([]);
        expect(got.map(({ added: _a, ...m }) => m).sort((a, b) => a.name.localeCompare(b.name))).toEqual([...want.values()].sort((a, b) => a.name.localeCompare(b.name)));
      }),
      { numRuns: runs(50) },
    );
  });

  it('any text reads without throwing: a line that is not NAME@ADDRESS:PORT is a named problem (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ maxLength: 40 }), { maxLength: 10 }), (lines) => {
        const h = new HostsFile(join(tmp, `h${++n}`));
        mkdirP(h.file);
        writeFileSync(h.file, lines.join('\n'));
        const problems: string[] = [];
        const got = h.read(problems);
        for (const m of got) expect(m.port).toBeGreaterThan(0);
        for (const p of problems) expect(p).toMatch(/hosts:\d+: /);
      }),
      { numRuns: runs(200) },
    );
  });

  it('merges under rex.rc servers: a name in both keeps its rex.rc address', () => {
    const merged = mergeServers([{ name: 'alpha', address: '10.0.0.1', port: 7800 }], [
      { name: 'alpha', address: '192.0.2.1', port: 1 },
      { name: 'beta', address: '10.0.0.2', port: 7800 },
    ]);
    expect(merged).toEqual([
      { name: 'alpha', address: '10.0.0.1', port: 7800 },
      { name: 'beta', address: '10.0.0.2', port: 7800 },
    ]);
  });
});

/** The state directory the hosts file lives in, made fresh. */
function mkdirP(file: string): void {
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
}
