/**
 * The lines `rex cluster up --slurm` and its step's tasks exchange (src/cluster/slurm.ts, docs/SLURM.md
 * "The exchange"): what each side accepts, what it refuses and how it says so, and that nothing thrown at the
 * parsers makes them do anything but parse or throw a RexError. Also the node-local private directory check.
 */
import { chownSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createKeyMaterial } from '../../src/keys/certs.js';
import { ensurePrivateDir, jobSocket, parseClusterMsg, parseHello, parseJoined, parseReady, slurmBaseDir, splitLine, SLURM_WIRE } from '../../src/cluster/slurm.js';
import { RexError } from '../../src/util/errors.js';
import { configureProperties, runs } from '../helpers/property.js';

configureProperties();

let cert = '';
beforeAll(async () => {
  cert = (await createKeyMaterial('n1.alice')).certPem;
});

const member = (name: string, extra: Record<string, unknown> = {}) => ({ name, address: '10.0.0.1', port: 7800, cert, ...extra });
const cluster = (extra: Record<string, unknown> = {}) => ({ job: '42', user: 'alice', members: [member('n1'), member('n2', { address: 'n2.example' })], rc: [], ...extra });

describe('the launcher/task exchange', () => {
  it('reads its own lines and ignores other output of the step', () => {
    expect(splitLine('some other output')).toBeUndefined();
    expect(splitLine(`${SLURM_WIRE}x {}`)).toBeUndefined();
    const p = splitLine(`${SLURM_WIRE} hello ${JSON.stringify({ node: 'n1', port: 1234, cert, step: '0', pid: 99 })}`)!;
    expect(p.kind).toBe('hello');
    expect(parseHello(p.body)).toEqual({ node: 'n1', port: 1234, cert, step: '0', pid: 99 });
    expect(parseReady({ node: 'n3', socket: '/tmp/rex-slurm-1000/job-42/run/rexd.sock', pid: 7 }).node).toBe('n3');
    expect(parseJoined({ node: 'n2', host: 'n2' })).toEqual({ node: 'n2', host: 'n2' });
    const c = parseClusterMsg(cluster({ rc: ['programs : demo=/opt/demo.so'] }));
    expect(c.members.map((m) => m.name)).toEqual(['n1', 'n2']);
    expect(c.rc).toEqual(['programs : demo=/opt/demo.so']);
  });

  const refusals: [string, () => unknown, RegExp][] = [
    ['not JSON', () => splitLine(`${SLURM_WIRE} hello {nope`), /REX-SLURM1 hello: not JSON/],
    ['a HELLO without a port', () => parseHello({ node: 'n1', cert, step: '0', pid: 1 }), /hello: field port: expected a whole number from 1 to 65535/],
    ['a HELLO whose port is out of range', () => parseHello({ node: 'n1', port: 70000, cert, step: '0', pid: 1 }), /field port/],
    ['a node name with a comma (it would split rex.rc servers)', () => parseHello({ node: 'n1,evil@1.2.3.4', port: 1, cert, step: '0', pid: 1 }), /field node: "n1,evil@1.2.3.4" is not valid/],
    ['a certificate that is not PEM', () => parseHello({ node: 'n1', port: 1, cert: 'hello', step: '0', pid: 1 }), /field cert/],
    ['a JSON array instead of an object', () => parseClusterMsg([]), /cluster: expected a JSON object/],
    ['a CLUSTER with no members', () => parseClusterMsg(cluster({ members: [] })), /field members: expected 1 to 4096 nodes/],
    ['a CLUSTER naming a node twice', () => parseClusterMsg(cluster({ members: [member('n1'), member('n1')] })), /node n1 is listed twice/],
    ['an address with a line break (rex.rc injection)', () => parseClusterMsg(cluster({ members: [member('n1', { address: '10.0.0.1\nclients : 0.0.0.0/0' })] })), /members\[0\]: field address/],
    ['an address with a colon that is no IPv6 address', () => parseClusterMsg(cluster({ members: [member('n1', { address: 'a:b:zz' })] })), /field address: "a:b:zz" is not valid/],
    ['an rc line with a line break', () => parseClusterMsg(cluster({ rc: ['log-level : info\nclients : 0.0.0.0/0'] })), /field rc: expected rex.rc lines/],
    ['a job id that is not a number', () => parseClusterMsg(cluster({ job: '42; rm -rf /' })), /field job/],
    ['a user name with a dot (it would change the identity)', () => parseClusterMsg(cluster({ user: 'alice.render' })), /field user/],
    ['a READY with a relative socket', () => parseReady({ node: 'n1', socket: 'run/rexd.sock', pid: 1 }), /field socket/],
    ['a JOINED (up --join) with a node name holding a comma', () => parseJoined({ node: 'n1,n4', host: 'n1' }), /joined: field node: "n1,n4" is not valid/],
    ['a JOINED without its host', () => parseJoined({ node: 'n1' }), /joined: field host: missing or not a string/],
  ];
  // claim: slurm.exchange-negative
  it('refuses each bad line, naming the line kind and the field', () => {
    for (const [what, f, msg] of refusals) {
      let err: unknown;
      try {
        f();
      } catch (e) {
        err = e;
      }
      expect(err, what).toBeInstanceOf(RexError);
      expect((err as RexError).code, what).toBe('REX_ERR_PROTO_MALFORMED');
      expect((err as Error).message, what).toMatch(msg);
    }
  });

  // claim: slurm.exchange-fuzz
  it('parses or refuses with a RexError whatever arrives (property)', () => {
    const anyJson = fc.jsonValue({ maxDepth: 4 });
    const near = fc.record({ job: fc.oneof(fc.string(), fc.constant('42')), user: fc.oneof(fc.string(), fc.constant('alice')), members: fc.array(fc.record({ name: fc.string(), address: fc.string(), port: fc.integer(), cert: fc.oneof(fc.string(), fc.constant(cert)) }), { maxLength: 4 }), rc: fc.array(fc.string(), { maxLength: 3 }) });
    fc.assert(
      fc.property(fc.oneof(anyJson, near), fc.string(), (body, line) => {
        for (const f of [parseHello, parseReady, parseClusterMsg, parseJoined]) {
          try {
            const r = f(body as never) as { node?: string; members?: { name: string; address: string }[]; rc?: string[] };
            // What is accepted is safe to write into rex.rc: no line breaks, commas or spaces in names and addresses.
            for (const w of [r.node ?? '', ...(r.members ?? []).flatMap((m) => [m.name, m.address])]) expect(w).not.toMatch(/[,\s#]/);
            for (const l of r.rc ?? []) expect(l).not.toMatch(/[\n\r]/);
          } catch (e) {
            expect(e).toBeInstanceOf(RexError);
          }
        }
        try {
          splitLine(`${SLURM_WIRE} ${line}`);
        } catch (e) {
          expect(e).toBeInstanceOf(RexError);
        }
      }),
      { numRuns: runs(500) },
    );
  });

  it('an accepted CLUSTER round-trips and never carries rex.rc separators in names or addresses (property)', () => {
    const name = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_-]{0,10}$/);
    fc.assert(
      fc.property(fc.uniqueArray(name, { minLength: 1, maxLength: 6 }), fc.array(fc.string({ maxLength: 8 }), { maxLength: 6 }), (names, addrs) => {
        const body = { job: '7', user: 'u', members: names.map((n, i) => ({ name: n, address: addrs[i] ?? `10.0.0.${i + 1}`, port: 1 + i, cert })), rc: [] };
        try {
          const c = parseClusterMsg(JSON.parse(JSON.stringify(body)));
          for (const m of c.members) expect(`${m.name}@${m.address}:${m.port}`).not.toMatch(/[,\s#]/);
          expect(c.members.map((m) => m.name)).toEqual(names);
        } catch (e) {
          expect(e).toBeInstanceOf(RexError);
        }
      }),
      { numRuns: runs(300) },
    );
  });
});

describe('the node-local private directory', () => {
  let root: string;
  beforeAll(() => {
    root = mkdtempSync(join(tmpdir(), 'rex-slurm-dir-'));
  });
  afterAll(() => rmSync(root, { recursive: true, force: true }));

  it('is made 0700 under $TMPDIR, one per user, and the socket path follows the job', () => {
    const env = { TMPDIR: root };
    const base = slurmBaseDir(env);
    expect(base).toBe(join(root, `rex-slurm-${process.getuid!()}`));
    ensurePrivateDir(base);
    expect(statSync(base).mode & 0o777).toBe(0o700);
    expect(jobSocket('42', env)).toBe(join(base, 'job-42', 'run', 'rexd.sock'));
  });

  // claim: slurm.private-dir
  it('refuses a symbolic link another user planted, and a directory another user made first', () => {
    const link = join(root, 'planted');
    mkdirSync(join(root, 'elsewhere'));
    symlinkSync(join(root, 'elsewhere'), link);
    expect(() => ensurePrivateDir(link)).toThrow(/is not a directory \(a symbolic link or a file\): refusing to keep REX state there/);
    if (process.getuid?.() === 0) {
      const theirs = join(root, 'theirs');
      mkdirSync(theirs, { mode: 0o777 });
      chownSync(theirs, 65534, 65534);
      expect(() => ensurePrivateDir(theirs)).toThrow(/belongs to uid 65534, not to you \(uid 0\): another user made it first/);
    } else {
      console.log('note: the other-owner case needs root to make a directory of another uid; the symbolic-link case ran');
    }
  });
});
