// rfork() across hosts of the local cluster (docs/RFORK.md): the fidelity
// programs of native/test/migration/ run with IMAGE "rfork", so each moves
// its child from alpha to beta (separate network and UTS namespaces when
// root) and the child checks its state there; the parent's wait() carries
// the verdict. Plus the rfork-only programs (rf_*): descriptors shared with
// the parent, signals, exit statuses, nesting, loops, refusals and faults.
// Every child is forced onto another host than its origin (REX_HOST=beta, a
// nested one onto alpha, placement with the origin excluded by the test switch
// REX_TEST_PLACE_ELSEWHERE), and each test asserts where its children ran:
// every moved child of these programs writes a WHERE line (zdtm.h zdtm_where),
// whose parent pid names the executor's rexd. The one rfork to the origin
// itself is the test of that path (files mapped without --file).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { packageRoot } from '../../src/util/paths.js';
import { readImageInfo } from '../../src/rfork/image.js';
import { NETNS, startCluster } from '../helpers/cluster.js';
import { ownTempDirectories } from '../exec/transfer-helper.js';
import { alive } from '../helpers/proc.js';

const NATIVE = join(packageRoot(), 'native');
const BIN = join(NATIVE, 'build', 'test', 'migration');

interface Ran {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a program of the suite from alpha's side; resolves with what its own parent (this test) sees. */
function run(cmd: string, args: string[], env: Record<string, string>, opts: { timeoutMs?: number; onStdout?: (s: string) => void } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      opts.onStdout?.(stdout);
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Pids of restorers still rebuilding an image (a restored process shows its own argv again; spares are not counted). Read from /proc: no ps needed. */
function restored(): number[] {
  const out: number[] = [];
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    try {
      const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
      // A spare restorer waiting for its next image (--args-fd) is not a leftover.
      if (argv[0]!.endsWith('/rex-restore') && argv[1] !== '--args-fd') out.push(Number(e));
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

let cluster: LocalCluster;
let stop: () => Promise<void>;
let env: Record<string, string>;
let dir: string;

/** One moved child, as zdtm_where wrote it: its program, pid, parent (the executor's rexd), host name and origin host name. */
interface Where {
  name: string;
  pid: number;
  ppid: number;
  host: string;
  origin: string;
}
let whereCount = 0;

/** The environment of one test: REX_HOST=beta (unless `extra` says otherwise) and a fresh file for its WHERE lines. */
function traced(extra: Record<string, string> = {}): { env: Record<string, string>; where: () => Where[] } {
  const file = join(dir, `where-${++whereCount}`);
  return {
    env: { ...env, REX_TEST_WHERE: file, ...extra },
    where: () =>
      (existsSync(file) ? readFileSync(file, 'utf8') : '')
        .split('\n')
        .filter(Boolean)
        .map((l) => {
          const [, name, pid, ppid, host, origin] = l.split(' ');
          return { name: name!, pid: Number(pid), ppid: Number(ppid), host: host!, origin: origin! };
        }),
  };
}

/** Asserts that `count` children ran on `host` of cluster `c` (the other host than their origin): its rexd is their parent. */
function expectRanOn(ws: Where[], host: string, count: number, c: LocalCluster = cluster): void {
  expect(ws, `the moved children's WHERE lines`).toHaveLength(count);
  const rexd = c.host(host).pid;
  const names = new Map(c.hosts.map((h) => [h.pid, h.name]));
  for (const w of ws) {
    expect(names.get(w.ppid) ?? `pid ${w.ppid}`, `${w.name}: child ${w.pid} ran under`).toBe(host);
    expect(w.ppid).toBe(rexd);
    // In network namespaces each host has its own UTS name; the origin's name is what rgethostname() keeps.
    if (NETNS) expect(w.host).toBe(host);
    if (NETNS) expect(w.origin).not.toBe(host);
  }
}

beforeAll(async () => {
  execFileSync('make', ['-s', '-C', NATIVE, 'all', 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-rfork-'));
  // Placement by load never picks the origin in this cluster: every child of these tests moves to another host.
  process.env.REX_TEST_PLACE_ELSEWHERE = '1';
  const c = await startCluster(2).finally(() => delete process.env.REX_TEST_PLACE_ELSEWHERE);
  cluster = c.cluster;
  stop = c.stop;
  await cluster.waitAllReachable();
  env = { REX_SOCKET: cluster.host('alpha').socket, REX_HOST: 'beta' };
}, 120_000);
afterAll(async () => {
  await stop?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the 2009 guide's example, test_rfork_1", () => {
  it('prints the parent on the origin and the child on beta with the origin view from rgetpid/rgetppid/rgethostname', async () => {
    const r = await run(join(NATIVE, 'build', 'bin', 'test_rfork_1'), [], env);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    const p = /^parent (\d+) runs on host (\S+) - load: (\S+)$/.exec(lines[0]!);
    const c = /^child (\d+) parent (\d+) origin pid (\d+) origin parent (\d+) origin host (\S+) runs on host (\S+) - REX loadavg: (\S+)$/.exec(lines[1]!);
    expect(p, r.stdout).not.toBeNull();
    expect(c, r.stdout).not.toBeNull();
    expect(lines.slice(2)).toEqual(['']);
    const [, parentPid, parentHost, load] = p!;
    const [, childPid, childParent, stubPid, originParent, originHost, childHost, childLoad] = c!;
    expect(Number(load)).toBeGreaterThanOrEqual(0);
    expect(Number(childLoad)).toBeGreaterThanOrEqual(0);
    expect(parentHost).toBe(hostname());
    expect(originHost).toBe(parentHost);
    expect(originParent).toBe(parentPid);
    // The child's parent is the executor's rexd; its origin pid is the stub the parent waited for.
    expect(Number(childParent)).toBe(cluster.host('beta').pid);
    expect(new Set([parentPid, childPid, stubPid]).size).toBe(3);
    // In network namespaces each host has its own UTS namespace and name.
    expect(childHost).toBe(NETNS ? 'beta' : hostname());
    // beta's transaction log has the rfork, with the image's bytes (sent inline with the RFORK).
    interface LogRow {
      message_type: string;
      target: string | null;
      outcome: string;
      bytes_in: number;
    }
    const row: LogRow | undefined = await vi.waitFor(
      () => {
        const out = execFileSync(process.execPath, [join(packageRoot(), 'dist', 'bin', 'rex.js'), 'log', '--socket', cluster.host('beta').socket, '--json', '-n', '200'], { encoding: 'utf8' });
        const found = (JSON.parse(out) as LogRow[]).find((x) => x.target === 'rfork image');
        if (!found) throw new Error("no RFORK row with target 'rfork image' in beta's log yet");
        return found;
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(row, 'an RFORK row with target "rfork image" in beta\'s log').toBeDefined();
    expect(row!.outcome).toBe('ok');
    expect(row!.message_type).toBe('RFORK');
    // The image went deflated: beta's rexd log has its size and the bytes that crossed the link, which the RFORK's bytes_in includes.
    const inline = readFileSync(cluster.host('beta').logFile, 'utf8')
      .split('\n')
      .filter((l) => l.includes('rfork image received inline'))
      .map((l) => JSON.parse(l) as { bytes: number; sent: number });
    expect(inline.length).toBeGreaterThan(0);
    const { bytes, sent } = inline.at(-1)!;
    expect(bytes).toBeGreaterThan(20_000); // pages of the program, libc and ld.so, heap and stack
    expect(sent).toBeLessThan(bytes / 2);
    expect(row!.bytes_in).toBeGreaterThanOrEqual(sent);
    expect(row!.bytes_in).toBeLessThan(bytes);
  }, 60_000);

  it('without REX_HOST it is placed by load on the other host (the origin excluded) and prints the same lines', async () => {
    const r = await run(join(NATIVE, 'build', 'bin', 'test_rfork_1'), [], { REX_SOCKET: env.REX_SOCKET! });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^parent \d+ runs on host \S+ - load: \S+\nchild \d+ parent (\d+) origin pid \d+ origin parent \d+ origin host \S+ runs on host \S+ - REX loadavg: \S+\n$/);
    const executor = Number(/child \d+ parent (\d+)/.exec(r.stdout)![1]);
    expect(executor, "the child's parent: beta's rexd").toBe(cluster.host('beta').pid);
  }, 60_000);
});

describe('fidelity: state that moves with rfork() from alpha to beta', () => {
  const programs = [
    ['hello', 'a global, a local and stdout'],
    ['heap_globals', 'heap lists, 3 MiB block, zero and initialised globals'],
    ['deep_stack', 'rfork 20000 frames deep'],
    ['tls', '__thread variables and the thread pointer'],
    ['signals', 'handlers, flags, masks, ignored signals, sigaltstack'],
    ['signal_after', 'a signal from another process after the move'],
    ['vdso_clock', 'clock_gettime through the vDSO, the monotonic clock never back'],
    ['malloc_after', 'malloc/free/realloc and sbrk after the move'],
    ['dlopen_after', 'dlopen of a library after the move'],
    ['mutex_held', "mutexes held by the parent's thread, as after fork()"],
    ['env_cwd', 'environment, cwd, umask, rlimits, cmdline bounds, comm'],
    ['sparse1g', 'a sparse 1 GiB mapping'],
    ['guard', 'mprotect and PROT_NONE guard regions'],
    ['rseq_brk', 'rseq registration and the mm bounds'],
    ['file_maps', 'private file pages copied on write'],
  ] as const;
  for (const [name, what] of programs) {
    it(`${name}: ${what}`, async () => {
      const t = traced();
      const r = await run(join(BIN, name), ['rfork'], t.env);
      expect(r.stdout + r.stderr, name).toContain(`PASS ${name}`);
      expect(r.stdout).not.toMatch(/FAIL|RFORKFAIL/);
      expect(r.code).toBe(0);
      expectRanOn(t.where(), 'beta', 1);
    }, 60_000);
  }

  it('mem256: 256 MiB of touched memory', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_mem'), ['rfork', '256'], t.env, { timeoutMs: 120_000 });
    expect(r.stdout).toContain('PASS rf_mem');
    expect(r.code).toBe(0);
    expectRanOn(t.where(), 'beta', 1);
  }, 150_000);

  it('atexit_order: handlers registered before rfork run in the moved child, in reverse order', async () => {
    const t = traced();
    const r = await run(join(BIN, 'atexit_order'), ['rfork'], t.env);
    expect(r.stdout).toBe('PASS atexit_order (handlers follow)\nATEXIT second\nATEXIT first\n');
    expect(r.code).toBe(0);
    expectRanOn(t.where(), 'beta', 1);
  }, 60_000);

  it('rf_fpu: MXCSR, the x87 control word and a floating-point series across rfork, errno kept', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_fpu'), ['rfork'], t.env);
    expect(r.stdout).toContain('PASS rf_fpu');
    expect(r.code).toBe(0);
    expectRanOn(t.where(), 'beta', 1);
  }, 60_000);

  it('rf_ids: rgetpid/rgetppid/rgethostname in the child, errno unchanged by a successful rfork', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_ids'), ['rfork'], t.env);
    expect(r.stdout).toContain('PASS rf_ids');
    expect(r.stdout).toContain(`CHILD-HOST ${NETNS ? 'beta' : hostname()} PPID ${cluster.host('beta').pid}`);
    expect(r.code).toBe(0);
    expectRanOn(t.where(), 'beta', 1);
  }, 60_000);
});

describe('glibc tunables: other XSAVE components in use, real migrations from alpha to beta', () => {
  // GLIBC_TUNABLES glibc.cpu.hwcaps turns features off for glibc's IFUNC selection (string functions, memcpy, libm),
  // so that other code, and other XSAVE components, are in use at the dump: on an AVX-512 CPU the EVEX functions leave
  // ZMM16-31 (component 7) in use, without AVX-512 the AVX2 ones YMM (2), with SSE only neither. glibc 2.36 (Debian
  // 12) spells the names as below: it ignores the older "-AVX2_Usable" (ld.so --list-diagnostics shows what a setting
  // turned off). On a CPU without a feature its '-' changes nothing: what is asserted holds on every CPU; which
  // components the image stored is only printed.
  const AVX512 = '-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD';
  const variants = [
    ['no AVX-512', `glibc.cpu.hwcaps=${AVX512}`],
    ['AVX-512 code not preferred, no VZEROUPPER', 'glibc.cpu.hwcaps=Prefer_No_AVX512,Prefer_No_VZEROUPPER'],
    ['AVX but no AVX2', `glibc.cpu.hwcaps=-AVX2,${AVX512}`],
    ['SSE only (no AVX, no FMA)', `glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,${AVX512}`],
    ['x86-64 baseline (SSE2), no ERMS', `glibc.cpu.hwcaps=-SSE4_2,-SSE4_1,-SSSE3,-POPCNT,-AVX,-AVX2,-FMA,-ERMS,${AVX512}`],
  ] as const;
  const programs: readonly (readonly [string, string[], RegExp])[] = [
    ['hello', ['rfork'], /PASS hello/],
    ['heap_globals', ['rfork'], /PASS heap_globals/],
    ['dlopen_after', ['rfork'], /PASS dlopen_after/],
    ['rf_fpu', ['rfork'], /PASS rf_fpu/],
    ['rf_file', ['rfork', '<dir>'], /^PASS rf_file\nPARENT-OK\n$/],
  ];
  variants.forEach(([what, tunables], i) => {
    it(`${what}: ${tunables}`, async () => {
      // The XSAVE state a dump under these tunables stores, from the image itself (readImageInfo): printed, not asserted.
      const image = join(dir, `tunables-${i}.img`);
      const d = await run(join(BIN, 'hello'), [image], { GLIBC_TUNABLES: tunables });
      expect(d.stdout, d.stderr).toMatch(/^DUMPED hello/);
      const info = readImageInfo(image);
      rmSync(image);
      const stored = info.xsaveComponents.filter((c) => c.offset + c.size <= info.xsaveLen).map((c) => c.index);
      console.log(`${what}: XCR0 0x${info.xcr0.toString(16)}, XSAVE ${info.xsaveLen} of ${info.xsaveSize} bytes stored, components ${stored.join(',') || 'none past the legacy area'}`);
      expect(info.xsaveLen).toBeGreaterThanOrEqual(576);
      for (const [name, args, want] of programs) {
        const t = traced({ GLIBC_TUNABLES: tunables });
        const r = await run(join(BIN, name), args.map((a) => (a === '<dir>' ? dir : a)), t.env);
        expect(r.stdout, `${name} under ${tunables}: ${r.stderr}`).toMatch(want);
        expect(r.stdout).not.toMatch(/FAIL|RFORKFAIL/);
        expect(r.code).toBe(0);
        expectRanOn(t.where(), 'beta', 1);
      }
    }, 120_000);
  });
});

describe('descriptors the child had at rfork time keep working through the stub', () => {
  it('rf_pipes: pipes in both directions with the parent, EOF included', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_pipes'), ['rfork'], t.env);
    expect(r.stdout).toBe('PASS rf_pipes\nPARENT-OK\n');
    expectRanOn(t.where(), 'beta', 1);
  }, 60_000);

  it('rf_socket: a TCP connection to a server in the parent on the origin', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_socket'), ['rfork'], t.env);
    expect(r.stdout).toBe('PASS rf_socket\nPARENT-OK\n');
    expectRanOn(t.where(), 'beta', 1);
  }, 60_000);

  it('rf_file: a read-only file continues at the shared offset, an O_APPEND file gets the child lines between the parent ones', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_file'), ['rfork', dir], t.env);
    expect(r.stdout).toBe('PASS rf_file\nPARENT-OK\n');
    expectRanOn(t.where(), 'beta', 1);
  }, 60_000);

  it('rf_order: stdout and stderr of parent and child in the order written', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_order'), ['rfork'], t.env);
    expectRanOn(t.where(), 'beta', 1);
    const want = ['P1', 'P2', ...Array.from({ length: 50 }, (_, i) => `C${i}`), 'P3 0', ''];
    expect(r.stdout.split('\n')).toEqual(want);
    expect(r.stderr.split('\n')).toEqual(['p-err-1', ...Array.from({ length: 50 }, (_, i) => `c-err-${i}`), '']);
  }, 60_000);

  // Files are served call by call since RFORK.md 4.1 (no read-ahead); as streams (REX_RFORK_FILES=stream, or where the
  // seccomp filter cannot be installed) the stub reads them ahead, which is how the hang came about: both ways are run.
  it.each(['served', 'stream'] as const)('rf_reads, 200 runs, files %s: blocking reads on a relayed file and pipe, and every wait() returns (issue 13: the hang)', async (files) => {
    // Each run: the stub reads the file ahead by 1 MiB before the parent writes the pipe the child waits on. With one
    // credit window for every descriptor that read-ahead took it all and the pipe was never read again; odd runs exit
    // with the file unread, whose EXIT waited for the executor's 2 s orphan check. 200 runs in one process, one cluster.
    const t = traced();
    const runs = 200;
    const env = files === 'stream' ? { ...t.env, REX_RFORK_FILES: 'stream' } : t.env;
    const r = await run(join(BIN, 'rf_reads'), ['rfork', dir, String(runs), '10000'], env, { timeoutMs: 170_000 });
    const hang = /^HANG run .*$/m.exec(r.stdout)?.[0];
    const done = r.stdout.split('\n').filter((l) => l.startsWith('RUN ')).length;
    expect(hang, `a run whose wait() did not return (after ${done} good runs)`).toBeUndefined();
    expect(r.stdout, `stderr: ${r.stderr}`).not.toMatch(/FAIL/);
    const ok = /^OK RUNS (\d+) MS (\d+) SLOW (\d+)$/m.exec(r.stdout);
    expect(ok, r.stdout.slice(-2000)).not.toBeNull();
    expect(Number(ok![1])).toBe(runs);
    // A slow wait (2 s or more) was the orphan check's: none expected, a few tolerated on a loaded machine.
    expect(Number(ok![3]), 'waits of 2 s or more').toBeLessThanOrEqual(runs / 20);
    console.log(`rf_reads (files ${files}): ${runs} runs in ${ok![2]} ms, ${ok![3]} slow`);
    expect(r.code).toBe(0);
    expectRanOn(t.where(), 'beta', runs);
  }, 180_000);
});

describe("signals and exit statuses, as the parent's wait() sees them", () => {
  it('rf_exit: every exit code 0-255 and death by each fatal signal', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_exit'), ['rfork', '24'], t.env, { timeoutMs: 240_000 });
    expect(r.stdout).toBe('OK 276 children\n');
    expect(r.code).toBe(0);
    expectRanOn(t.where(), 'beta', 276);
  }, 250_000);

  it('rf_kill: USR1 to the stub runs the child handler, TERM kills it, KILL of the stub ends it', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_kill'), ['rfork'], t.env);
    expect(r.stdout).toMatch(/^KCHILD \d+\nOK\n$/);
    expectRanOn(t.where(), 'beta', 4);
    // The child of the KILLed stub ends too: its rexd ends a job whose stub vanished (HUP, then KILL).
    const pid = Number(/KCHILD (\d+)/.exec(r.stdout)![1]);
    for (let i = 0; i < 100 && alive(pid); i++) await new Promise((res) => setTimeout(res, 50));
    expect(alive(pid)).toBe(false);
  }, 60_000);

  it('rf_nested: the moved child rforks again, from beta back onto alpha', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_nested'), ['rfork', 'alpha'], t.env);
    expect(r.stdout).toBe('PASS rf_nested\n');
    expect(r.code).toBe(0);
    const ws = t.where();
    expect(ws.map((w) => w.name)).toEqual(['rf_nested', 'rf_nested']);
    expectRanOn(ws.slice(0, 1), 'beta', 1);
    expectRanOn(ws.slice(1), 'alpha', 1);
  }, 60_000);

  it('rf_loop: 100 children rforked in a loop, then waited for', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_loop'), ['rfork', '100'], t.env, { timeoutMs: 120_000 });
    expect(r.stdout).toBe('OK 100 children\n');
    expectRanOn(t.where(), 'beta', 100);
  }, 150_000);

  it('concurrent rforks from four processes, placed by load (no REX_HOST; the origin excluded)', async () => {
    const t = traced();
    const placed = { ...t.env };
    delete placed.REX_HOST;
    const rs = await Promise.all(Array.from({ length: 4 }, () => run(join(BIN, 'rf_loop'), ['rfork', '10'], placed, { timeoutMs: 120_000 })));
    for (const r of rs) expect(r.stdout).toBe('OK 10 children\n');
    expectRanOn(t.where(), 'beta', 40);
  }, 150_000);
});

describe('files the image maps are matched by content, and fetched when the executor lacks them', () => {
  it('a program missing on beta is sent once into its cache, mapped from there with --file, and reused by the next rfork', async () => {
    // Test seam REX_EXEC_TEST_HIDE: beta's executor treats the suite's programs as absent (the hosts share one file system).
    process.env.REX_EXEC_TEST_HIDE = BIN + '/';
    // A cache of its own: the default temp directory is shared with every other cluster's beta on this machine.
    const temps = ownTempDirectories();
    const c2 = await startCluster(2, { rc: [temps.rc] }).finally(() => delete process.env.REX_EXEC_TEST_HIDE);
    try {
      await c2.cluster.waitAllReachable();
      const e2 = { REX_SOCKET: c2.cluster.host('alpha').socket, REX_HOST: 'beta' };
      const transferred = () => readFileSync(c2.cluster.host('beta').logFile, 'utf8').split('\n').filter((l) => l.includes('program transferred from the origin') && l.includes(join(BIN, 'rf_maps')));
      const t = traced();
      const first = await run(join(BIN, 'rf_maps'), ['rfork'], { ...e2, REX_TEST_WHERE: t.env.REX_TEST_WHERE! });
      expect(first.stdout, first.stderr).toMatch(/^MAPPED \S+\/cache\/[0-9a-f]{64}\nPASS rf_maps\n$/);
      expectRanOn(t.where(), 'beta', 1, c2.cluster);
      expect(transferred()).toHaveLength(1);
      const second = await run(join(BIN, 'rf_maps'), ['rfork'], e2);
      expect(second.stdout).toBe(first.stdout);
      expect(transferred()).toHaveLength(1);
      // The origin's own rfork to itself maps the very files (no copy).
      const self = await run(join(BIN, 'rf_maps'), ['rfork'], { REX_SOCKET: e2.REX_SOCKET, REX_HOST: 'alpha' });
      expect(self.stdout).toBe(`MAPPED ${join(BIN, 'rf_maps')}\nPASS rf_maps\n`);
    } finally {
      await c2.stop();
      temps.remove();
    }
  }, 120_000);
});

describe('a spare restorer', () => {
  /** beta's spare: a rex-restore --args-fd 3 whose parent is beta's rexd. */
  function spareOf(rexd: number): number | undefined {
    for (const e of readdirSync('/proc')) {
      if (!/^\d+$/.test(e)) continue;
      try {
        const argv = readFileSync(`/proc/${e}/cmdline`, 'utf8').split('\0');
        const ppid = Number(readFileSync(`/proc/${e}/stat`, 'utf8').replace(/^.*\) /s, '').split(' ')[1]);
        if (argv[0]!.endsWith('/rex-restore') && argv[1] === '--args-fd' && argv[2] === '3' && ppid === rexd) return Number(e);
      } catch {
        /* gone meanwhile */
      }
    }
    return undefined;
  }

  /** Runs hello with descriptors 0-2 only (whatever this test process inherited above 2 is closed first). */
  const hello = (e = env) => run('bash', ['-c', 'for f in /proc/$$/fd/*; do n=${f##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done 2>/dev/null; exec "$0" rfork', join(BIN, 'hello')], e);

  it('waits on beta after an rfork of a child with descriptors 0-2, and becomes the next such child', async () => {
    const beta = cluster.host('beta').pid!;
    expect((await hello()).stdout).toContain('PASS hello');
    const spare: number | undefined = await vi.waitFor(
      () => {
        const s = spareOf(beta);
        if (!s) throw new Error('no spare restorer under beta yet');
        return s;
      },
      { timeout: 10_000, interval: 50 },
    );
    expect(spare, 'a spare restorer under beta').toBeDefined();
    const t = traced();
    const r = await hello(t.env);
    expect(r.stdout).toContain(`hello again: pid ${spare},`);
    expect(r.stdout).toContain('PASS hello');
    expectRanOn(t.where(), 'beta', 1);
  }, 60_000);
});

describe('refusals and faults', () => {
  it('rf_shared: shared memory makes rfork fail with EOPNOTSUPP naming the mapping; REX_RFORK_LOCAL forks locally', async () => {
    const t = traced();
    const r = await run(join(BIN, 'rf_shared'), ['rfork'], t.env);
    expect(r.stdout).toMatch(/^REFUSED rfork: .*shared anonymous mapping [0-9a-f]+-[0-9a-f]+ .*REX_RFORK_LOCAL/m);
    expect(r.stdout).toContain('PASS rf_shared');
    expect(t.where(), 'no child moved (the REX_RFORK_LOCAL one stayed here)').toEqual([]);
  }, 60_000);

  it('a restore that fails on the executor: rfork returns -1 with errno and the reason, nothing is left running', async () => {
    // A second cluster whose rexds damage each image they receive (test seam REX_TEST_CORRUPT_IMAGE): the real restorer refuses it.
    process.env.REX_TEST_CORRUPT_IMAGE = '1';
    const bad = await startCluster(2).finally(() => delete process.env.REX_TEST_CORRUPT_IMAGE);
    try {
      await bad.cluster.waitAllReachable();
      const before = restored();
      const r = await run(join(BIN, 'rf_fail'), ['rfork', '-'], { REX_SOCKET: bad.cluster.host('alpha').socket, REX_HOST: 'beta' });
      expect(r.stdout).toMatch(/^RFORK -1 EINVAL rfork: .*restore failed on beta \(rex-restore exit 3\): .*(hash|magic|header)/m);
      expect(r.stdout).toContain('NO-CHILD');
      expect(r.code).toBe(0);
      expect(restored().filter((p) => !before.includes(p))).toEqual([]);
    } finally {
      await bad.stop();
    }
  }, 90_000);

  it('a large image streamed into the restorer (FETCH into a FIFO): damaged in transit, refused by its sha256 before the restorer gets its trailer; damaged after the check, refused by the restorer; nothing restored either way', async () => {
    for (const [mode, why] of [
      ['stream', /transfer to beta failed: the image received has sha256 [0-9a-f]{64}, expected [0-9a-f]{64}; not restored/],
      ['1', /restore failed on beta \(rex-restore exit 3\): .*(hash|magic|header)/],
    ] as const) {
      process.env.REX_TEST_CORRUPT_IMAGE = mode;
      const bad = await startCluster(2).finally(() => delete process.env.REX_TEST_CORRUPT_IMAGE);
      try {
        await bad.cluster.waitAllReachable();
        const before = restored();
        // 4 MiB touched: past the inline limit (768 KiB), so the image is fetched by hash and streamed.
        const r = await run(join(BIN, 'rf_fail'), ['rfork', '-', '4'], { REX_SOCKET: bad.cluster.host('alpha').socket, REX_HOST: 'beta' });
        expect(r.stdout, mode).toMatch(/^RFORK -1 \S+ rfork: /m);
        expect(r.stdout, mode).toMatch(why);
        expect(r.stdout, mode).not.toContain('CHILD-RAN');
        expect(r.stdout, mode).toContain('NO-CHILD');
        expect(r.code).toBe(0);
        expect(restored().filter((p) => !before.includes(p)), mode).toEqual([]);
        const log = readFileSync(bad.cluster.host('beta').logFile, 'utf8');
        // The path under test: a refused stream is never logged as transferred; the restorer read the image from the FIFO.
        if (mode === 'stream') expect(log).not.toContain('"streamed":true');
        else expect(r.stdout).toMatch(/exec-images\/\S+\.fifo: corrupt image/);
      } finally {
        await bad.stop();
      }
    }
  }, 120_000);

  it('a child whose cwd was removed cannot be dumped: -1 with the reason, no child', async () => {
    const r = await run(join(BIN, 'rf_fail'), ['rfork', join(dir, 'gone')], env);
    expect(r.stdout).toMatch(/^RFORK -1 ENOENT rfork: \S+/m);
    expect(r.stdout).toContain('NO-CHILD');
  }, 60_000);

  it('rfork with no rexd: -1 with EHOSTUNREACH, and the process goes on', async () => {
    const r = await run(join(BIN, 'rf_fail'), ['rfork', '-'], { REX_SOCKET: '/nonexistent/rexd.sock' });
    expect(r.stdout).toMatch(/^RFORK -1 EHOSTUNREACH rfork: connect \/nonexistent\/rexd\.sock/m);
    expect(r.stdout).toContain('NO-CHILD');
  }, 60_000);

  it('the executor dies after the move: the stub says so in one line and exits 255; the restarted rexd ends the orphan', async () => {
    let childPid = 0;
    const t = traced();
    const r = await run(join(BIN, 'sleeper'), ['rfork'], t.env, {
      onStdout: (s) => {
        const m = /^READY (\d+)\n/.exec(s);
        if (m && !childPid) {
          childPid = Number(m[1]);
          cluster.kill('beta', 'SIGKILL');
        }
      },
    });
    expect(r.code).toBe(255);
    expect(r.stderr).toMatch(/^rfork: .*lost beta.*\n$/);
    expect(childPid).toBeGreaterThan(0);
    expect(t.where().map((w) => w.pid)).toEqual([childPid]);
    await cluster.waitExit('beta');
    await cluster.startHost(cluster.host('beta'));
    for (let i = 0; i < 100 && alive(childPid); i++) await new Promise((res) => setTimeout(res, 50));
    expect(alive(childPid)).toBe(false);
    await cluster.waitAllReachable();
  }, 90_000);
});

it('the programs of this suite exist (built by npm install)', () => {
  for (const p of ['rf_reads', 'rf_maps', 'rf_pipes', 'rf_socket', 'rf_file', 'rf_order', 'rf_exit', 'rf_kill', 'rf_nested', 'rf_loop', 'rf_ids', 'rf_shared', 'rf_fail', 'rf_fpu', 'rf_mem']) {
    expect(existsSync(join(BIN, p)), p).toBe(true);
  }
  expect(readFileSync(join(NATIVE, 'examples', 'test_rfork_1.c'), 'utf8')).toContain('rfork()');
});
