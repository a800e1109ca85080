// Entry-point lists of any size (issue 14, docs/PROTOCOL.md 4.7 "Paging"): a
// real cluster serving a library with 3,000 entry points (more than one frame
// holds) lists all of them from another host, filters with --match, calls one
// by name without the list, and pages through a list that changes between
// pages (the program reloaded) without duplicates; a hostile server's pages
// are refused with the field named; and the page rules hold for any entries
// (properties).
import { execFile, execFileSync } from 'node:child_process';
import { appendFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { KeyStore } from '../../src/keys/store.js';
import { tlsServerOptions } from '../../src/keys/tls.js';
import { ProtocolError } from '../../src/protocol/frame.js';
import { join } from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { CallManager, loadProgram } from '../../src/calls/index.js';
import { checkPage, compareNames, fitPage, globMatcher, listEntries, pageBudget, selectEntries, sortEntries, type EntriesQuery } from '../../src/calls/entries.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { LIMITS } from '../../src/protocol/constants.js';
import { Connection, type Reply } from '../../src/protocol/connection.js';
import { decodeOne, encodeFrame } from '../../src/protocol/frame.js';
import { frameToMessage, messageToFrame, type EntryInfo, type Message, type MessageOf } from '../../src/protocol/messages.js';
import { RexClient } from '../../src/runtime/client.js';
import { queryLog } from '../../src/log/txlog.js';
import { startCluster } from '../helpers/cluster.js';
import { runs } from '../helpers/property.js';
import { vectors } from '../helpers/vectors.js';
import { NATIVE, ROOT, buildLibrary, repdb, tempDir, writeXml } from './helpers.js';

const run = promisify(execFile);
const REX = join(ROOT, 'dist/bin/rex.js');
const PAD = 'x'.repeat(40);
const fname = (i: number): string => `f${String(i).padStart(4, '0')}_${PAD}`;

/** A C library of the functions `ids` (each returns x + id), with -g, and its repdb XML. */
function bigLibrary(dir: string, tag: string, ids: number[]): { lib: string; xml: string } {
  const src = join(dir, `${tag}.c`);
  writeFileSync(src, ids.map((i) => `int ${fname(i)}(int x) { return x + ${i}; }\n`).join(''));
  const lib = join(dir, `lib${tag}.so`);
  execFileSync('gcc', ['-g', '-O0', '-shared', '-fPIC', '-o', lib, src], { stdio: 'pipe' });
  const xml = join(dir, `${tag}.xml`);
  writeFileSync(xml, repdb(['-gx', '--program', 'big', lib]));
  return { lib, xml };
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

describe('a library with more entry points than one frame holds, on a real cluster', () => {
  let dir: string;
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let alpha: RexClient;
  let v2: { lib: string; xml: string };
  const N = 3000;

  beforeAll(async () => {
    dir = tempDir('rex-paging-');
    const v1 = bigLibrary(dir, 'big', range(N));
    v2 = bigLibrary(dir, 'big2', range(N + 200).filter((i) => i % 7 !== 0));
    // `late`'s definitions do not exist yet: only a request that reads them can notice.
    ({ cluster, stop } = await startCluster(2, { peerTimeout: '10s', rc: [`programs : big=${v1.lib}:${v1.xml}, late=${v1.lib}:${join(dir, 'late.xml')}`] }));
    await cluster.waitAllReachable();
    alpha = await cluster.client('alpha');
  }, 180_000);

  afterAll(async () => {
    alpha?.close();
    await stop?.();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function rex(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    try {
      const r = await run(process.execPath, [REX, ...args, '--socket', cluster.host('alpha').socket], { encoding: 'utf8', maxBuffer: 1 << 26 });
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (e) {
      const x = e as { code: number; stdout: string; stderr: string };
      return { code: x.code, stdout: x.stdout, stderr: x.stderr };
    }
  }

  it('the whole list does not fit in one frame, so it comes in several pages, each within the limits', async () => {
    const pages: MessageOf<'ENTRIES'>[] = [];
    let after: string | undefined;
    do {
      // The first page waits while beta reads the 3,000 definitions (in a worker thread): more than the 5 s default on a loaded machine.
      const m = await alpha.conn.request({ type: 'ENTRIES_GET', target: 'beta.big', limit: 100000, ...(after ? { after } : {}) }, 60_000);
      expect(m.type).toBe('ENTRIES');
      const page = m as MessageOf<'ENTRIES'>;
      // Re-encoded, each page is a legal frame: within the payload and attribute limits.
      const bytes = encodeFrame(messageToFrame({ ...page, stream: 1 }));
      expect(bytes.length).toBeLessThanOrEqual(LIMITS.maxPayload + 12);
      expect('frame' in decodeOne(bytes)).toBe(true);
      pages.push(page);
      after = page.next;
    } while (after !== undefined);
    expect(pages.length).toBeGreaterThan(1);
    expect(pages.flatMap((p) => p.entries ?? []).map((e) => e.name)).toEqual(range(N).map(fname));
  }, 60_000);

  it('rex entries beta.big lists all 3,000 from alpha; --match filters on beta', async () => {
    const all = await rex('entries', 'beta.big');
    expect(all.stderr).toBe('');
    const lines = all.stdout.trim().split('\n');
    expect(lines).toHaveLength(N);
    expect(lines[0]).toBe(`+ int32 ${fname(0)}(int32 x)`);
    expect(lines[N - 1]).toBe(`+ int32 ${fname(N - 1)}(int32 x)`);
    const some = await rex('entries', 'beta.big', '--match', 'f29[5-9]?_*');
    expect(some.stdout.trim().split('\n')).toEqual(range(50).map((i) => `+ int32 ${fname(2950 + i)}(int32 x)`));
    const json = JSON.parse((await rex('entries', 'beta.big', '--match', '*0007_*', '--json')).stdout) as { name: string; definition: { name: string } }[];
    expect(json.map((e) => e.definition.name)).toEqual([fname(7)]);
    const bad = await rex('entries', 'beta.big', '--match', 'f[12');
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain("match 'f[12': the [ at character 2 is not closed");
  }, 60_000);

  it('limit 0 asks only whether a program is offered: answered from rex.rc, without reading its definitions', async () => {
    const late = (await alpha.conn.request({ type: 'ENTRIES_GET', target: 'beta.late', limit: 0 })) as MessageOf<'ENTRIES'>;
    expect([late.type, late.entries ?? [], late.program, late.host]).toEqual(['ENTRIES', [], 'late', 'beta']);
    // reading them is what fails: the definitions file is missing
    await expect(alpha.conn.request({ type: 'ENTRIES_GET', target: 'beta.late', name: 'F0' }, 60_000)).rejects.toThrow(/NO_ENTRY: .*program 'late' \(rex.rc programs\) cannot be loaded on beta/);
    await expect(alpha.conn.request({ type: 'ENTRIES_GET', target: 'beta.nosuch', limit: 0 })).rejects.toThrow(/NO_ENTRY: .*no program 'nosuch' is offered/);
  }, 60_000);

  it('a call by name needs no listing: rex call beta.big.F and RexClient.entry', async () => {
    const r = await rex('call', `beta.big.${fname(2999)}`, '5');
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('3004\n');
    const e = await alpha.entry('beta.big', fname(1234));
    expect(e.inputSize).toBe(4);
    expect(JSON.parse(e.definition!).name).toBe(fname(1234));
    await expect(alpha.entry('beta.big', 'f1234')).rejects.toThrow(/NO_ENTRY: beta: big\.f1234: program big has no entry point 'f1234'/);
    // Each ENTRIES_GET is a transaction row on beta (written just after the answer).
    await vi.waitFor(() => {
      const rows = queryLog(join(cluster.host('beta').stateDir, 'rex-log.sqlite'), {}).filter((x) => x.message_type === 'ENTRIES_GET' && x.target === 'beta.big');
      expect(rows.length).toBeGreaterThan(0);
    }, { timeout: 10_000 });
  }, 60_000);

  it('paging through a list that changes between pages (program reloaded) gives each name once, and no crash', async () => {
    const first = (await alpha.conn.request({ type: 'ENTRIES_GET', target: 'beta.big', limit: 1000 }, 60_000)) as MessageOf<'ENTRIES'>;
    // The page is cut by size (attributes), before the limit: the cursor is its last name.
    const cut = (first.entries ?? []).length;
    expect(cut).toBeGreaterThan(100);
    expect(cut).toBeLessThan(1000);
    expect(first.next).toBe(fname(cut - 1));
    // beta restarts with a new version of the program: every 7th function gone, 200 new ones at the end.
    const b = cluster.host('beta');
    cluster.kill('beta');
    await cluster.waitExit('beta');
    appendFileSync(b.rcFile, `programs : big=${v2.lib}:${v2.xml}\n`);
    await cluster.startHost(b);
    await cluster.waitAllReachable();
    const names = (first.entries ?? []).map((e) => e.name);
    let after = first.next;
    while (after !== undefined) {
      const m = (await alpha.conn.request({ type: 'ENTRIES_GET', target: 'beta.big', limit: 1000, after }, 60_000)) as MessageOf<'ENTRIES'>;
      names.push(...(m.entries ?? []).map((e) => e.name));
      after = m.next;
    }
    // The names up to the cursor from the old list, the names after it from the new one: each once, in order.
    const expected = [...range(cut), ...range(N + 200).filter((i) => i >= cut && i % 7 !== 0)].map(fname);
    expect(new Set(names).size).toBe(names.length);
    expect(names).toEqual(expected);
    // And a fresh listing is the new list.
    expect((await alpha.entries('beta.big')).map((e) => e.name)).toEqual(range(N + 200).filter((i) => i % 7 !== 0).map(fname));
  }, 120_000);
});

describe('a program that registers more entry points than one frame holds (rex_register_entry + rex_serve)', () => {
  it('rexd reads all of them from its controller, page by page', async () => {
    const dir = tempDir('rex-paging-served-');
    try {
      const src = join(dir, 'many.c');
      writeFileSync(
        src,
        `#include <stdio.h>\n#include <rex.h>\nstatic void id(const void *in, void *out) { *(int *)out = *(const int *)in; }\n` +
          `int main(void) { char n[64]; for (int i = 0; i < 2000; i++) { snprintf(n, sizeof n, "e%04d", 1999 - i); if (rex_register_entry(n, id, 4, 4)) return 1; } return rex_serve() ? 2 : 0; }\n`,
      );
      const exe = join(dir, 'many');
      execFileSync('gcc', ['-std=c11', '-Wall', '-Werror', `-I${join(NATIVE, 'include')}`, '-o', exe, src, join(NATIVE, 'build', 'lib', 'librex.a')], { stdio: 'pipe' });
      const manager = new CallManager({ host: 'alpha', programs: (n) => (n === 'many' ? { kind: 'program', name: 'many', exec: exe } : undefined) });
      try {
        const list = await manager.entries('many');
        expect(list.entries.map((e) => e.name)).toEqual(range(2000).map((i) => `e${String(i).padStart(4, '0')}`));
        const out = await manager.call('many.e1999', Uint8Array.of(9, 0, 0, 0));
        expect(Buffer.from(out).readInt32LE(0)).toBe(9);
        expect((await manager.entry('many', 'e0042')).entry.inputSize).toBe(4);
      } finally {
        await manager.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

/** A protocol stand-in for rexd whose ENTRIES answers a test writes. */
async function hostileDaemon(socket: string, answer: (m: MessageOf<'ENTRIES_GET'>) => Reply): Promise<Server> {
  const server = createServer((sock) => {
    const conn: Connection = new Connection(sock, {
      initiator: false,
      local: { role: 'daemon', host: 'evil', software: 'hostile/0' },
      label: 'test client',
      onRequest: (m: Message): Reply => {
        if (m.type !== 'ENTRIES_GET') throw new Error('unexpected');
        return answer(m);
      },
    });
    conn.handshake().catch(() => undefined);
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return server;
}

const entry = (name: string): EntryInfo => ({ name, inputSize: 4, outputSize: 4, callable: true });

describe('hostile ENTRIES pages are refused with the field named', () => {
  const cases: [string, (m: MessageOf<'ENTRIES_GET'>) => Reply, RegExp][] = [
    ['next that is not the last name (would skip or loop)', () => ({ type: 'ENTRIES', entries: [entry('a'), entry('b')], next: 'a' }), /next 'a' is not the page's last name 'b'/],
    ['next on an empty page (would never end)', () => ({ type: 'ENTRIES', entries: [], next: 'zz' }), /next 'zz' on a page without entries/],
    ['a repeated name', () => ({ type: 'ENTRIES', entries: [entry('a'), entry('a')] }), /entries\[1\]\.name 'a' repeats an earlier entry/],
    ['names not after the cursor (duplicates across pages)', (m) => ({ type: 'ENTRIES', entries: m.after ? [entry('a')] : [entry('a')], ...(m.after ? {} : { next: 'a' }) }), /entries\[0\]\.name 'a' is not after the cursor 'a'/],
    ['an unsorted page with next', () => ({ type: 'ENTRIES', entries: [entry('b'), entry('a')], next: 'a' }), /entries\[1\]\.name 'a' does not follow 'b'/],
    ['more entries than the limit asked', (m) => ({ type: 'ENTRIES', entries: range((m.limit ?? 1) + 1).map((i) => ({ name: `n${String(i).padStart(5, '0')}` })), next: `n${String(m.limit ?? 1).padStart(5, '0')}` }), /more than the limit 1000 asked for/],
  ];
  let dir: string;
  beforeAll(() => {
    dir = tempDir('rex-hostile-entries-');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const [what, answer, error] of cases) {
    it(what, async () => {
      const socket = join(dir, `${what.length}-${Math.random().toString(36).slice(2)}.sock`);
      const server = await hostileDaemon(socket, answer);
      try {
        const client = await RexClient.connect({ socket });
        try {
          await expect(client.entries('prog')).rejects.toThrow(error);
        } finally {
          client.close();
        }
        // The shell says the same, naming the server.
        const r = await run(process.execPath, [REX, 'entries', 'prog', '--socket', socket], { encoding: 'utf8' }).then(
          () => ({ stderr: '' }),
          (e: { stderr: string }) => e,
        );
        expect(r.stderr).toMatch(error);
        expect(r.stderr).toMatch(/ENTRIES from rexd at /);
      } finally {
        await new Promise((r) => server.close(r));
      }
    }, 30_000);
  }

  it('a server paging without end is stopped at the listing limit', async () => {
    const socket = join(dir, 'endless.sock');
    let n = 0;
    const server = await hostileDaemon(socket, () => {
      const names = range(500).map(() => `n${String(n++).padStart(8, '0')}`);
      return { type: 'ENTRIES', entries: names.map(entry), next: names.at(-1)! };
    });
    try {
      const client = await RexClient.connect({ socket });
      try {
        await expect(client.entries('prog')).rejects.toThrow(/lists more than 65536 entry points; stopped/);
      } finally {
        client.close();
      }
    } finally {
      await new Promise((r) => server.close(r));
    }
  }, 60_000);

  it('a server that predates paging (ignores name, limit, after) still works: its one page is the whole list', async () => {
    const socket = join(dir, 'old.sock');
    const server = await hostileDaemon(socket, () => ({ type: 'ENTRIES', entries: [entry('zeta'), entry('alpha_fn'), entry('str_x')] }));
    try {
      const client = await RexClient.connect({ socket });
      try {
        expect((await client.entries('prog')).map((e) => e.name)).toEqual(['zeta', 'alpha_fn', 'str_x']);
        expect((await client.entries('prog', { match: 'str*' })).map((e) => e.name)).toEqual(['str_x']);
        expect((await client.entry('prog', 'alpha_fn')).name).toBe('alpha_fn');
      } finally {
        client.close();
      }
    } finally {
      await new Promise((r) => server.close(r));
    }
  }, 30_000);
});

describe('shared vectors of the paging attributes (TypeScript side; native/test/test_vectors.c reads the same)', () => {
  const msg = (name: string): Message => {
    const v = vectors.find((x) => x.name === name)!;
    const r = decodeOne(Buffer.from(v.hex, 'hex'));
    if (!('frame' in r)) throw new Error(`${name}: incomplete`);
    return frameToMessage(r.frame);
  };
  it('ENTRIES_GET by name, ENTRIES_GET with match/after/limit, ENTRIES with next', () => {
    expect(msg('entries-get-name')).toMatchObject({ type: 'ENTRIES_GET', target: 'beta.m', name: 'cbrt' });
    expect(msg('entries-get-page')).toMatchObject({ type: 'ENTRIES_GET', target: 'beta.c', match: 'str*', after: 'strcat', limit: 1000 });
    const page = msg('entries-page') as MessageOf<'ENTRIES'>;
    expect(page.next).toBe('strcmp');
    expect(page.entries!.map((e) => e.name)).toEqual(['strchr', 'strcmp']);
    expect(() => checkPage({ after: 'strcat', limit: 1000 }, page, 'vector')).not.toThrow();
  });
});

describe('a hostile peer rexd answering ENTRIES through the relay', () => {
  // beta's rexd is replaced by an impostor holding beta's own key (a compromised peer): the origin rexd checks its pages
  // before relaying them, refuses with the field named, and logs the refusal. Not in network namespaces: the impostor
  // listens on beta's address from this process.
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let alpha: RexClient;
  let server: TlsServer | undefined;
  const sockets = new Set<{ destroy(): void }>();
  let answer: (m: MessageOf<'ENTRIES_GET'>) => Reply = () => ({ type: 'ENTRIES', entries: [] });

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2, { netns: false, peerTimeout: '10s' }));
    await cluster.waitAllReachable();
    const beta = cluster.host('beta');
    cluster.kill('beta');
    await cluster.waitExit('beta');
    const own = new KeyStore(beta.stateDir).load(beta.identity);
    server = createTlsServer(tlsServerOptions(own), (sock) => {
      sockets.add(sock);
      sock.on('close', () => sockets.delete(sock));
      const conn: Connection = new Connection(sock, {
        initiator: false,
        local: { role: 'daemon', host: 'beta', software: 'impostor/0' },
        label: 'alpha',
        onRequest: (m: Message): Reply => {
          if (m.type === 'LOAD_GET') return { type: 'LOAD', host: 'beta', load: 0.1, cores: 1, jobs: 0, time: Date.now() };
          if (m.type === 'ENTRIES_GET') return answer(m);
          throw new ProtocolError('UNSUPPORTED', `impostor does not serve ${m.type}`, { fatal: false });
        },
      });
      conn.handshake().catch(() => undefined);
    });
    await new Promise<void>((r) => server!.listen(beta.port, beta.address, r));
    alpha = await cluster.client('alpha');
  }, 120_000);

  afterAll(async () => {
    alpha?.close();
    await stop?.();
    for (const s of sockets) s.destroy();
    await new Promise((r) => (server ? server.close(r) : r(undefined)));
  }, 60_000);

  it('a page whose next is not its last name is refused by alpha with the field named, and logged', async () => {
    answer = () => ({ type: 'ENTRIES', program: 'big', entries: [entry('a'), entry('b')], next: 'a' });
    await vi.waitFor(async () => expect((await alpha.hosts()).find((h) => h.name === 'beta')?.reachable).toBe(true), { timeout: 30_000 });
    await expect(alpha.entries('beta.big')).rejects.toThrow(/MALFORMED: ENTRIES from beta: next 'a' is not the page's last name 'b'/);
    await vi.waitFor(() => {
      const rows = queryLog(join(cluster.host('alpha').stateDir, 'rex-log.sqlite'), { outcome: 'error' }).filter((x) => x.message_type === 'ENTRIES_GET' && x.target === 'beta.big');
      expect(rows.map((x) => x.reason)).toContainEqual(expect.stringMatching(/ENTRIES from beta: next 'a' is not the page's last name 'b'/));
    }, { timeout: 10_000 });
  }, 60_000);

  it('a page of entries already given (a loop) is refused, and so is an empty page with next', async () => {
    answer = (m) => ({ type: 'ENTRIES', entries: [entry('a')], ...(m.after === undefined ? { next: 'a' } : {}) });
    await expect(alpha.entries('beta.big')).rejects.toThrow(/ENTRIES from beta: entries\[0\]\.name 'a' is not after the cursor 'a'/);
    answer = () => ({ type: 'ENTRIES', entries: [], next: 'zz' });
    await expect(alpha.entries('beta.big')).rejects.toThrow(/ENTRIES from beta: next 'zz' on a page without entries/);
    // A peer's honest answer still goes through the same connection.
    answer = () => ({ type: 'ENTRIES', entries: [entry('a'), entry('b')] });
    expect((await alpha.entries('beta.big')).map((e) => e.name)).toEqual(['a', 'b']);
  }, 60_000);
});

// ------------------------------------------------------------------ properties

/** Reference glob: the same language as a regular expression, for the property below. */
function globRegex(p: string): RegExp {
  let re = '';
  for (const c of Array.from(p)) re += c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
  return new RegExp(`^${re}$`, 'su');
}

const nameArb = fc.string({ unit: fc.constantFrom('a', 'b', 'c', '_', 'é', '𝒳'), minLength: 1, maxLength: 12 });
const entryArb: fc.Arbitrary<EntryInfo> = fc.record(
  {
    name: nameArb,
    inputSize: fc.nat(),
    outputSize: fc.nat(),
    callable: fc.boolean(),
    refusal: fc.string({ maxLength: 200 }).filter((s) => !s.includes('\0')),
    signature: fc.string({ maxLength: 300 }).filter((s) => !s.includes('\0')),
    definition: fc.oneof({ weight: 6, arbitrary: fc.nat({ max: 3000 }) }, { weight: 1, arbitrary: fc.nat({ max: 262144 }) }).map((n) => 'd'.repeat(n)),
    variable: fc.boolean(),
  },
  { requiredKeys: ['name'] },
);
const listArb = fc.uniqueArray(entryArb, { selector: (e) => e.name, maxLength: 60 }).map(sortEntries);

describe('paging properties', () => {
  it('the glob matcher agrees with a regular expression on * and ?', () => {
    const pat = fc.string({ unit: fc.constantFrom('a', 'b', '*', '?', 'é', '𝒳'), maxLength: 8 });
    fc.assert(
      fc.property(pat, nameArb, (p, n) => {
        expect(globMatcher(p)(n)).toBe(globRegex(p).test(n));
      }),
      { numRuns: runs(2000) },
    );
    expect(globMatcher('str[!a-c]?')('strdx')).toBe(true);
    expect(globMatcher('str[!a-c]?')('strax')).toBe(false);
    expect(globMatcher('\\*x')('*x')).toBe(true);
  });

  it('a page never exceeds the frame limits for the receiver, and paging yields every entry once, in order', () => {
    fc.assert(
      fc.property(listArb, fc.integer({ min: LIMITS.minPayload, max: LIMITS.maxPayload }), fc.integer({ min: 1, max: 50 }), (list, maxPayload, limit) => {
        const budget = pageBudget(maxPayload);
        const got: string[] = [];
        let after: string | undefined;
        for (let guard = 0; guard <= list.length + 1; guard++) {
          const q: EntriesQuery = { limit, ...(after !== undefined ? { after } : {}) };
          let page: { entries: EntryInfo[]; next?: string };
          try {
            page = fitPage(selectEntries(list, q), q.limit, budget, 'p');
          } catch (e) {
            // Only an entry that alone exceeds a small receiver's frame may be refused, and it is named.
            expect((e as Error).message).toMatch(/alone is \d+ bytes/);
            return;
          }
          const m: MessageOf<'ENTRIES'> = { type: 'ENTRIES', stream: 1, program: 'p'.repeat(255), host: 'h'.repeat(255), entries: page.entries, ...(page.next !== undefined ? { next: page.next } : {}) };
          const bytes = encodeFrame(messageToFrame(m));
          const r = decodeOne(bytes, maxPayload);
          expect('frame' in r).toBe(true);
          if ('frame' in r) checkPage(q, frameToMessage(r.frame) as MessageOf<'ENTRIES'>, 'p');
          got.push(...page.entries.map((e) => e.name));
          if (page.next === undefined) break;
          after = page.next;
        }
        expect(got).toEqual(list.map((e) => e.name));
      }),
      { numRuns: runs(150) },
    );
  });

  it('a page changed in any way that could repeat, skip or loop is refused', () => {
    const page = fc.uniqueArray(nameArb, { minLength: 2, maxLength: 10 }).map((ns) => ns.sort(compareNames));
    fc.assert(
      fc.property(page, fc.nat(), fc.constantFrom('swap', 'dup', 'next', 'before'), (names, k, how) => {
        const i = 1 + (k % (names.length - 1));
        const ns = [...names];
        let next = ns.at(-1);
        const q: EntriesQuery = { after: '', limit: 100 };
        if (how === 'swap') [ns[i - 1], ns[i]] = [ns[i]!, ns[i - 1]!];
        if (how === 'dup') ns[i] = ns[i - 1]!;
        if (how === 'next') next = ns[i - 1];
        if (how === 'before') q.after = ns[i]!;
        if (how === 'swap') next = ns.at(-1);
        expect(() => checkPage(q, { type: 'ENTRIES', stream: 1, entries: ns.map(entry), ...(next !== undefined ? { next } : {}) }, 'evil')).toThrow(/ENTRIES from evil: (entries\[\d+\]\.name|next) /);
      }),
      { numRuns: runs(500) },
    );
  });

  it('any ENTRIES_GET (fuzzed name, match, after, limit, max-payload) gets a legal page from CallManager.handle or a clear non-fatal error, never a crash', async () => {
    const dir = tempDir('rex-paging-fuzz-');
    const lib = buildLibrary(dir);
    const spec = (await loadProgram({ name: 'calltest', object: lib, xml: writeXml(dir, lib) })).spec;
    const manager = new CallManager({ host: 'alpha', programs: (n) => (n === 'calltest' ? spec : undefined) });
    const text = fc.string({ unit: fc.constantFrom('s', 'l', 'e', 'n', '*', '?', '[', ']', '!', '-', '\\', '3', '2', '_', 'é', '𝒳'), maxLength: 10 });
    try {
      await fc.assert(
        fc.asyncProperty(
          fc.record({ name: text, match: text, after: text, limit: fc.nat({ max: 40 }) }, { requiredKeys: [] }),
          fc.integer({ min: LIMITS.minPayload, max: LIMITS.maxPayload }),
          async (q, maxPayload) => {
            // The asking connection's HELLO max-payload is what the page is cut to.
            const conn = Object.assign(Object.create(Connection.prototype) as Connection, { peer: { role: 'client', version: 1, maxPayload } });
            let reply: Reply;
            try {
              reply = await manager.handle({ type: 'ENTRIES_GET', stream: 3, target: 'calltest', ...q }, { name: 'tester', conn });
            } catch (e) {
              expect(e).toBeInstanceOf(ProtocolError);
              expect(`${(e as ProtocolError).proto}:${(e as ProtocolError).fatal}`).toMatch(/^(BAD_REQUEST|NO_ENTRY):false$/);
              expect((e as Error).message).toMatch(/calltest/);
              return;
            }
            const r = decodeOne(encodeFrame(messageToFrame({ ...reply, stream: 3 } as Message)), maxPayload);
            expect('frame' in r).toBe(true);
            if (!('frame' in r)) return;
            const page = frameToMessage(r.frame) as MessageOf<'ENTRIES'>;
            checkPage(q, page, 'alpha');
            if (q.name !== undefined) expect(page.entries!.map((e) => e.name)).toEqual([q.name]);
            else if (q.match !== undefined) expect((page.entries ?? []).every((e) => globMatcher(q.match!)(e.name))).toBe(true);
          },
        ),
        { numRuns: runs(400) },
      );
    } finally {
      await manager.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('listEntries collects pages of a list that changes between requests without duplicates', async () => {
    await fc.assert(
      fc.asyncProperty(listArb, listArb, fc.integer({ min: 1, max: 7 }), async (before, after, limit) => {
        let calls = 0;
        const got = await listEntries(async (m) => {
          const list = calls++ === 0 ? before : after;
          const p = fitPage(selectEntries(list, { ...(m.after !== undefined ? { after: m.after } : {}) }), Math.min(m.limit!, limit), pageBudget(), 'p');
          return { type: 'ENTRIES', stream: m.stream, entries: p.entries, ...(p.next !== undefined ? { next: p.next } : {}) };
        }, 'p').catch((e: Error) => e);
        if (got instanceof Error) {
          expect(got.message).toMatch(/alone is/);
          return;
        }
        const names = got.map((e) => e.name);
        expect(new Set(names).size).toBe(names.length);
        expect([...names].sort(compareNames)).toEqual(names);
      }),
      { numRuns: runs(150) },
    );
  });
});
