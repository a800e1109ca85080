/**
 * `rex call` through the native front end (native/frontend/rex.c do_call, rex(1) NATIVE FRONT END) beside
 * the Node CLI: the native one sends CALL_CLI to the local rexd, which runs the Node CLI's own `rex call`
 * (docs/PROTOCOL.md 4.7.1). A table of cases on a real cluster (libm, libc and a library built here, with
 * an enum, structs, a refused variadic function) gives identical stdout, stderr and exit statuses through
 * both; the native one starts no Node; and CALL_CLI lets nobody do what the Node CLI could not: another
 * local user, a remote key (a peer session), huge and deeply nested arguments get the same refusals.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { KeyStore } from '../../src/keys/store.js';
import { pinKnownHost } from '../../src/keys/tls.js';
import { queryLog, type LogRow } from '../../src/log/txlog.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { markXml, repdb } from '../calls/helpers.js';
import { startCluster } from '../helpers/cluster.js';
import { runs } from '../helpers/property.js';
import { Outsiders } from '../helpers/outsiders.js';

const NATIVE = join(packageRoot(), 'native', 'build', 'bin', 'rex');
type Front = 'native' | 'node';
interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** The system's own libm/libc, the ones `cc` links against. */
function systemLibrary(name: string): string {
  const p = execFileSync('cc', [`-print-file-name=${name}`], { encoding: 'utf8' }).trim();
  if (!existsSync(p)) throw new Error(`cc -print-file-name=${name} gave ${p}, which does not exist: this test needs the C library the compiler links against`);
  return realpathSync(p);
}

const doc = (elf: string, program: string, body: string[]) =>
  `<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE rex-entry-points SYSTEM "rex.dtd">\n<rex-entry-points version="1" elf-file="${elf}" program="${program}">\n${body.map((l) => `  ${l}`).join('\n')}\n</rex-entry-points>\n`;

const M_XML = doc('libm.so.6', 'm', ['<entry-point name="cbrt"><returns type="double"/><param name="x" type="double"/></entry-point>']);
const C_XML = doc('libc.so.6', 'c', [
  '<entry-point name="strtol"><returns type="int64"/><param name="nptr" type="char*" direction="in" string="yes"/><param name="endptr" type="char**" direction="out" into="nptr"/><param name="base" type="int32"/></entry-point>',
]);

/** A library with an enum, a struct in and out, an out buffer and a variadic function (refused). */
const LIBRARY = `#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
enum mood { CALM = 1, ANGRY = 2, SLEEPY = 7 };
struct badge { char tag[3]; uint8_t raw[3]; enum mood mood; int32_t id; };
int32_t add(int32_t a, int32_t b) { return a + b; }
enum mood next_mood(enum mood m) { return m == CALM ? ANGRY : m == ANGRY ? SLEEPY : (enum mood)42; }
struct badge make_badge(const char *name, enum mood m, int32_t id) {
  struct badge b;
  memset(&b, 0, sizeof b);
  strncpy(b.tag, name, 2);
  memcpy(b.raw, b.tag, 3);
  b.mood = m;
  b.id = id;
  return b;
}
int32_t describe(struct badge b, char *out, uint32_t cap) { return snprintf(out, cap, "%s/%d/%d", b.tag, (int)b.mood, b.id); }
/* Returns once a writer opened the FIFO at path and closed it: the test holds a call in flight with it. */
int32_t gate(const char *path) { int fd = open(path, O_RDONLY); char c; ssize_t n = fd < 0 ? -1 : read(fd, &c, 1); if (fd >= 0) close(fd); return (int32_t)n; }
int sumv(int n, ...) { va_list ap; va_start(ap, n); int s = 0; for (int i = 0; i < n; i++) s += va_arg(ap, int); va_end(ap); return s; }
`;
const MARKS: Record<string, Record<string, string>> = {
  make_badge: { name: 'direction="in" string="yes"' },
  describe: { out: 'direction="out" size-is="cap" string="yes"' },
  gate: { path: 'direction="in" string="yes"' },
};


/** Runs `rex ARGS` through one front end; resolves with what a parent's wait() sees. */
function rex(front: Front, args: string[], opts: { env: NodeJS.ProcessEnv; cwd: string; uid?: number; gid?: number; onSpawn?: (pid: number) => void }): Promise<Result> {
  return new Promise((resolve, reject) => {
    const o = { env: opts.env, cwd: opts.cwd, ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid! } : {}) };
    const child = front === 'native' ? spawn(NATIVE, args, o) : spawn(process.execPath, [distBin('rex'), ...args], o);
    let out = '';
    let err = '';
    child.on('error', reject);
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.end();
    opts.onSpawn?.(child.pid!);
    child.on('close', (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  });
}

// On loopback, not in network namespaces: the remote-key case connects to beta's TLS port from here.
describe('rex call through the native front end beside the Node CLI', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let dir: string;
  let socket: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    const work = mkdtempSync(join(tmpdir(), 'rex-native-call-'));
    writeFileSync(join(work, 'fe.c'), LIBRARY);
    const lib = join(work, 'libfe.so');
    execFileSync('cc', ['-g', '-O1', '-shared', '-fPIC', '-Wall', '-o', lib, join(work, 'fe.c')], { stdio: 'pipe' });
    const feXml = join(work, 'libfe.xml');
    writeFileSync(feXml, markXml(repdb(['-gx', '--program', 'fe', lib]), MARKS));
    const mXml = join(work, 'libm.xml');
    const cXml = join(work, 'libc.xml');
    writeFileSync(mXml, M_XML);
    writeFileSync(cXml, C_XML);
    for (const x of [feXml, mXml, cXml]) repdb([x]);
    chmodSync(work, 0o755);
    const started = await startCluster(2, { netns: false, rc: [`programs : m=${systemLibrary('libm.so.6')}:${mXml}, c=${systemLibrary('libc.so.6')}:${cXml}, fe=${lib}:${feXml}`] });
    cluster = started.cluster;
    dir = started.dir;
    stop = async () => {
      await started.stop();
      rmSync(work, { recursive: true, force: true });
    };
    await cluster.waitAllReachable();
    socket = cluster.host('alpha').socket;
    mkdirSync(join(dir, 'home'), { recursive: true });
    env = { PATH: process.env.PATH, HOME: join(dir, 'home'), LANG: 'C', REX_SOCKET: socket, REX_ROOT: join(dir, 'noroot') };
  }, 180_000);
  afterAll(async () => {
    await stop?.();
  });

  async function both(args: string[], opts: { env?: NodeJS.ProcessEnv; uid?: number; gid?: number } = {}): Promise<[Result, Result]> {
    const o = { env: opts.env ?? env, cwd: dir, ...(opts.uid !== undefined ? { uid: opts.uid, gid: opts.gid! } : {}) };
    return [await rex('native', args, o), await rex('node', args, o)];
  }

  const badge = '{"tag":"xy","raw":"000000","mood":"ANGRY","id":5}';
  it.each([
    ['scalar return', ['call', 'beta.fe.add', '2', '40'], 0],
    ['scalar return, placed by rexd (no host)', ['call', 'fe.add', '-2147483648', '0'], 0],
    ['options after --: a negative argument', ['call', '--', 'beta.fe.add', '1', '-2'], 0],
    ['a double: beta.m.cbrt 27', ['call', 'beta.m.cbrt', '27'], 0],
    ['a double, --json', ['call', 'beta.m.cbrt', '2', '--json'], 0],
    ['strtol with endptr', ['call', 'beta.c.strtol', '42xyz', '10'], 0],
    ['strtol with endptr, --json (a 64-bit return as a string)', ['call', '--json', 'beta.c.strtol', '  -0x1fz', '0'], 0],
    ['--hex', ['call', 'beta.fe.add', '--hex', '0200000028000000'], 0],
    ['--hex=, --json', ['call', '--hex=0200000028000000', '--json', 'beta.fe.add'], 0],
    ['an enum by name', ['call', 'beta.fe.next_mood', 'ANGRY'], 0],
    ['an enum value with no name, --json', ['call', 'beta.fe.next_mood', 'SLEEPY', '--json'], 0],
    ['a struct returned, text in and enum by number', ['call', 'beta.fe.make_badge', 'ab', '2', '7'], 0],
    ['a struct as a JSON argument, an out buffer', ['call', 'beta.fe.describe', badge, '12'], 0],
    ['a struct as a JSON argument, --json', ['call', 'beta.fe.describe', badge, '8', '--json'], 0],
    ['--timeout 5000', ['call', '--timeout', '5000', 'beta.m.cbrt', '8'], 0],
    ['usage error: not an integer (exit 2)', ['call', 'beta.fe.add', 'x', '3'], 2],
    ['usage error: not JSON (exit 2)', ['call', 'beta.fe.describe', '{bad', '4'], 2],
    ['usage error: an enum name it does not have', ['call', 'beta.fe.next_mood', 'HAPPY'], 1],
    ['wrong argument count', ['call', 'beta.fe.add', '1'], 2],
    ['too many arguments', ['call', 'beta.fe.add', '1', '2', '3'], 2],
    ['a refused entry point (variadic)', ['call', 'beta.fe.sumv', '1'], 1],
    ['an unknown function', ['call', 'beta.fe.nosuch', '1'], 1],
    ['an unknown host', ['call', 'nosuch.fe.add', '1', '2'], 1],
    ['an unknown program', ['call', 'beta.nope.add', '1', '2'], 1],
    ['a target that is not one', ['call', 'justone'], 1],
    ['negative numbers are arguments, as commander reads them', ['call', 'beta.fe.add', '-1', '-2'], 0],
    ['a double written -.5e1', ['call', 'beta.m.cbrt', '-.5e1'], 0],
    ['--timeout bad value', ['call', '--timeout', 'abc', 'beta.fe.add', '1', '2'], 2],
    ['--timeout=0', ['call', 'beta.fe.add', '1', '2', '--timeout=0'], 2],
    ['bad --hex (odd digits: the frame is what Buffer.from makes of it)', ['call', 'beta.fe.add', '--hex', '0200000'], 1],
    ['delegated: an unknown option', ['call', 'beta.fe.add', '1', '-x'], 2],
    ['delegated: --json=1', ['call', 'beta.fe.add', '1', '2', '--json=1'], 2],
    ['delegated: an option as --timeout\'s value', ['call', 'beta.fe.add', '1', '2', '--timeout', '--json'], 2],
    ['delegated: no target', ['call', '--json'], 2],
    ['delegated: --help', ['call', '--help'], 0],
    ['delegated: -c (a missing file: REX_SOCKET decides)', ['call', '-c', '/no/such/rex.rc', 'beta.fe.add', '1', '2'], 0],
  ] as [string, string[], number][])('%s: same status, stdout and stderr', async (_name, args, status) => {
    const [n, j] = await both(args);
    expect(n).toEqual(j);
    expect(n.code).toBe(status);
  });

  // claim: frontend.call-parity
  // claim: log.call-cli-rows
  it("the transaction log has the Node CLI's rows for a native call (its ENTRIES_GET and CALL, same identity and outcome), and the CALL_CLI row", async () => {
    const logDb = join(cluster.host('alpha').stateDir, 'rex-log.sqlite');
    const rowsSince = async (since: number, n: number) => {
      let rows: LogRow[] = [];
      await vi.waitFor(
        () => {
          // Rows are written in batches: wait until the request's are there.
          rows = queryLog(logDb, { since, limit: 1000 }).filter((r) => ['ENTRIES_GET', 'CALL', 'CALL_CLI'].includes(r.message_type ?? ''));
          if (rows.length < n) throw new Error(`${rows.length} of ${n} rows`);
        },
        { timeout: 10_000, interval: 50 },
      );
      return rows.map((r) => ({ kind: r.kind, identity: r.identity, type: r.message_type, target: r.target, outcome: r.outcome })).sort((a, b) => String(a.type).localeCompare(String(b.type)));
    };
    const t0 = Date.now();
    expect((await rex('node', ['call', 'beta.fe.add', '5', '6'], { env, cwd: dir })).stdout).toBe('11\n');
    const viaNode = await rowsSince(t0, 2);
    const t1 = Date.now();
    expect((await rex('native', ['call', 'beta.fe.add', '5', '6'], { env, cwd: dir })).stdout).toBe('11\n');
    const viaNative = await rowsSince(t1, 3);
    expect(viaNode.map((r) => [r.type, r.target, r.outcome])).toEqual([
      ['CALL', 'beta.fe.add', 'ok'],
      ['ENTRIES_GET', 'beta.fe', 'ok'],
    ]);
    expect(viaNative).toEqual([...viaNode.slice(0, 1), { ...viaNode[0]!, type: 'CALL_CLI' }, ...viaNode.slice(1)]);
  });

  it('a large answer over several CALL_OUTPUT frames (a 600 KB out buffer, 1.2 MB of --json hex): the same bytes', async () => {
    const [n, j] = await both(['call', 'beta.fe.describe', badge, '600000', '--json']);
    expect(n.code).toBe(0);
    expect(n.stdout.length).toBeGreaterThan(1_200_000);
    expect(n).toEqual(j);
  });

  it('a reader that goes away: both end with SIGPIPE\'s 141 in the pipeline, as yes | head would', () => {
    for (const front of ['native', 'node'] as const) {
      const cmd = front === 'native' ? `"${NATIVE}"` : `"${process.execPath}" "${distBin('rex')}"`;
      // 1.2 MB of --json: more than the pipe holds once head has gone.
      const r = spawnSync('bash', ['-c', `${cmd} call beta.fe.describe '${badge}' 600000 --json | head -c 1; echo " status \${PIPESTATUS[0]}"`], { env, cwd: dir, encoding: 'utf8', timeout: 60_000 });
      expect([front, r.stdout]).toEqual([front, '{ status 141\n']);
    }
  });

  it('Ctrl-C while the call runs on beta: both die of SIGINT, and rexd serves on', async () => {
    for (const front of ['native', 'node'] as const) {
      const fifo = join(dir, `int-${front}.fifo`);
      execFileSync('mkfifo', [fifo]);
      const r = await rex(front, ['call', 'beta.fe.gate', fifo], {
        env,
        cwd: dir,
        onSpawn: (pid) => {
          void (async () => {
            // The gate is open on beta: the call is in flight. SIGINT as a terminal sends it, then let the function return.
            const w = await open(fifo, 'w');
            process.kill(pid, 'SIGINT');
            await w.close();
          })();
        },
      });
      expect([front, r.code, r.signal, r.stdout]).toEqual([front, null, 'SIGINT', '']);
    }
    expect((await rex('native', ['call', 'beta.fe.add', '20', '22'], { env, cwd: dir })).stdout).toBe('42\n');
  });

  it('whatever the command line, rexd answers CALL_CLI with an exit status the CLI gives, and serves on (fuzz, a real rexd)', async () => {
    const client = await cluster.client('alpha');
    try {
      const word = fc.oneof(fc.constantFrom('beta.fe.add', 'beta.fe.describe', 'fe.next_mood', 'beta.m.cbrt', 'beta.c.strtol', 'nosuch.fe.add', 'beta.fe.sumv', '*.fe.add'), fc.string({ maxLength: 40 }));
      const arg = fc.oneof(fc.integer().map(String), fc.double().map(String), fc.json({ maxDepth: 3 }), fc.string({ maxLength: 60 }), fc.constantFrom('CALM', 'SLEEPY', 'hex:00ff', '{"tag":"ab","mood":"CALM","id":1}'));
      await fc.assert(
        fc.asyncProperty(word, fc.array(arg, { maxLength: 5 }), fc.boolean(), fc.option(fc.constantFrom('5000', '0', 'x', '1e3', '-1'), { nil: undefined }), async (target, args, json, timeout) => {
          const clean = (x: string) => x.replace(/\0/g, '');
          const m = await client.conn.request({ type: 'CALL_CLI', target: clean(target), args: args.map(clean), ...(json ? { json } : {}), ...(timeout ? { timeout } : {}), socket }, 30_000);
          expect(m.type).toBe('CALL_OUTPUT');
          const out = m as Extract<typeof m, { type: 'CALL_OUTPUT' }>;
          expect([0, 1, 2]).toContain(out.status);
        }),
        { numRuns: runs(60) },
      );
    } finally {
      client.close();
    }
    expect((await rex('native', ['call', 'beta.fe.add', '1', '1'], { env, cwd: dir })).stdout).toBe('2\n');
  });

  it('huge and deeply nested arguments: the same refusals, and rexd serves on', async () => {
    // 12 arguments of 120 KB (an argument string is at most 128 KiB, Linux's MAX_ARG_STRLEN): 1.4 MB, more than
    // CALL_CLI's one frame, so the native front end hands them to the Node CLI.
    const big = Array.from({ length: 12 }, () => '7'.repeat(120_000));
    const [hn, hj] = await both(['call', 'beta.fe.add', ...big]);
    expect(hn).toEqual(hj);
    expect(hn.code).toBe(2);
    // 120 KB: served by rexd, which echoes it in the usage error as the Node CLI does.
    const [mn, mj] = await both(['call', 'beta.m.cbrt', `${'9'.repeat(120_000)}z`]);
    expect(mn).toEqual(mj);
    expect([mn.code, mn.stderr.length > 120_000]).toEqual([2, true]);
    // 60 000 levels of nesting where a struct is expected, and 1024 arguments where two are.
    const deep = '['.repeat(60_000) + ']'.repeat(60_000);
    const [dn, dj] = await both(['call', 'beta.fe.describe', deep, '4']);
    expect(dn).toEqual(dj);
    expect(dn.code).not.toBe(0);
    const deepObj = '{"a":'.repeat(20_000) + '1' + '}'.repeat(20_000);
    const [on, oj] = await both(['call', 'beta.fe.describe', deepObj, '4']);
    expect(on).toEqual(oj);
    expect(on.code).not.toBe(0);
    const many = Array.from({ length: 1024 }, (_, i) => String(i));
    const [an, aj] = await both(['call', 'beta.fe.add', ...many]);
    expect(an).toEqual(aj);
    expect(an.code).toBe(2);
    // 1025: more than CALL_CLI carries; the Node CLI's own answer.
    const [bn, bj] = await both(['call', 'beta.fe.add', ...many, '1024']);
    expect(bn).toEqual(bj);
    expect((await rex('native', ['call', 'beta.fe.add', '1', '1'], { env, cwd: dir })).stdout).toBe('2\n');
  });

  it('no rexd: delegated, the Node CLI\'s message and status', async () => {
    const e = { ...env, REX_SOCKET: join(dir, 'no-such.sock') };
    const [n, j] = await both(['call', 'beta.fe.add', '1', '2'], { env: e });
    expect(n).toEqual(j);
    expect(n.code).toBe(1);
    expect(n.stderr).toContain('no-such.sock');
  });

  // claim: frontend.call-no-node
  it('rex call starts no Node: the process is the native binary, with no child, while its call runs on beta', async () => {
    // beta.fe.gate blocks in open() of a FIFO until this side opens it for writing: once that open returns,
    // the call is in flight and the front end waits for rexd's answer.
    const fifo = join(dir, 'gate.fifo');
    execFileSync('mkfifo', [fifo]);
    let seen: { exe: string; children: string; cmdline: string } | undefined;
    const r = await rex('native', ['call', 'beta.fe.gate', fifo], {
      env,
      cwd: dir,
      onSpawn: (pid) => {
        void (async () => {
          const w = await open(fifo, 'w');
          seen = { exe: readlinkSync(`/proc/${pid}/exe`), children: readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim(), cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8') };
          await w.write('x');
          await w.close();
        })();
      },
    });
    expect(seen).toEqual({ exe: realpathSync(NATIVE), children: '', cmdline: `${NATIVE}\0call\0beta.fe.gate\0${fifo}\0` });
    expect(r).toEqual({ code: 0, signal: null, stdout: '1\n', stderr: '' });
  });

  // Needs root to run the front ends as another uid (as test/daemon/rexd.test.ts does).
  it.skipIf(process.getuid?.() !== 0)('another local user reaching the socket: the same DENIED at HELLO as the Node CLI gets (rexd serves its owner only, SO_PEERCRED)', async () => {
    // Let uid 65534 reach the socket: the refusal is then rexd's, at HELLO, not the file system's.
    const opened: string[] = [];
    for (let d = dirname(socket); d.startsWith(dir); d = dirname(d)) opened.push(d);
    const modes = opened.map((d) => statSync(d).mode & 0o7777);
    for (const d of opened) chmodSync(d, 0o711);
    const sockMode = statSync(socket).mode & 0o7777;
    chmodSync(socket, 0o777);
    try {
      const e = { ...env, HOME: '/nonexistent' };
      const [n, j] = await both(['call', 'beta.fe.add', '1', '2'], { env: e, uid: 65534, gid: 65534 });
      expect(n).toEqual(j);
      expect([n.code, n.stdout]).toEqual([1, '']);
      expect(n.stderr).toContain('DENIED: uid 65534 may not use this rexd: it acts only for its owner, uid 0');
    } finally {
      chmodSync(socket, sockMode);
      opened.forEach((d, i) => chmodSync(d, modes[i]!));
    }
  });

  it('a remote key (a peer session) is refused CALL_CLI: it has ENTRIES_GET and CALL under its grants, nothing more', async () => {
    const users = new Outsiders(dir);
    const b = cluster.host('beta');
    const store = new KeyStore(b.stateDir);
    const who = await users.enrolled('ann.root', { store, name: b.identity, entry: { name: 'beta', address: b.address, port: b.port } });
    // A grant for program fe that denies add: CALL_CLI would be a way around deny= if rexd served it to peers.
    await cluster.rexKey('beta', ['--grant', 'ann.root', '--program', 'fe', '--deny', 'add']);
    const c = await RexClient.connectRemote({ host: b.address, port: b.port, own: who.own, pin: pinKnownHost(who.store, 'beta') });
    try {
      await expect(c.conn.request({ type: 'CALL_CLI', target: 'beta.fe.add', args: ['1', '2'], socket: b.socket })).rejects.toThrow(
        'BAD_REQUEST: CALL_CLI is served to local clients only: a remote caller sends ENTRIES_GET and CALL (docs/PROTOCOL.md 4.7.1)',
      );
      await expect(c.conn.request({ type: 'CALL_CLI', target: 'beta.fe.next_mood', args: ['CALM'], socket: b.socket })).rejects.toThrow('BAD_REQUEST');
      await expect(c.call('beta.fe.add', Uint8Array.of(1, 0, 0, 0, 2, 0, 0, 0))).rejects.toThrow('DENIED');
      const r = await c.call('beta.fe.next_mood', Uint8Array.of(1, 0, 0, 0));
      expect(Buffer.from(r.output).readInt32LE(0)).toBe(2);
    } finally {
      c.close();
    }
  });
});
