// Local round trips of the rfork core (docs/RFORK.md): each fidelity program
// in native/test/migration/ sets up one kind of state and dumps itself with
// rex_dump_self; `rex-restore IMAGE` rebuilds it in a new process under the
// real kernel, where it checks that state and prints PASS or FAIL.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { readImageInfo } from '../../src/rfork/image.js';
import { H, fds, layout, metaHash, program, regions, restorer, run } from './image.js';

let dir: string;
beforeAll(() => {
  // Up to date after `npm install`; cheap when nothing changed.
  execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-migration-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** Runs program name to dump itself to an image; returns the image path. */
function dump(name: string, extra: string[] = [], image = join(dir, `${name}.img`)): string {
  const r = run(program(name), [image, ...extra]);
  expect(r.stdout + r.stderr, `${name} dump`).toMatch(new RegExp(`^DUMPED ${name}`, 'm'));
  expect(r.status).toBe(0);
  return image;
}

function restore(image: string, timeout?: number) {
  return run(restorer, [image], { timeout });
}

function roundTrip(name: string, extra: string[] = []): void {
  const image = dump(name, extra);
  const r = restore(image);
  expect(r.stdout + r.stderr, `${name} restore`).toContain(`PASS ${name}`);
  expect(r.stdout).not.toContain('FAIL');
  expect(r.status).toBe(0);
}

describe('round trip: state kinds', () => {
  const simple = [
    ['hello', 'a global, a local and stdout'],
    ['heap_globals', 'heap lists, 3 MiB block, zero and initialised globals'],
    ['deep_stack', 'migration 20000 frames deep'],
    ['fpu_regs', 'YMM0-15, MXCSR and x87 control word at the call, a series across it'],
    ['tls', '__thread variables and the thread pointer'],
    ['errno_kept', 'errno in both copies'],
    ['signals', 'handlers, flags, masks, ignored signals, sigaltstack, raise on the alt stack'],
    ['signal_after', 'a signal from another process after the restore'],
    ['vdso_clock', 'vDSO at the same address, clock_gettime, monotonic never back'],
    ['malloc_after', 'malloc/free/realloc, 50 MiB block, sbrk after the restore'],
    ['dlopen_after', 'dlopen of a new library after the restore'],
    ['mutex_held', 'an error-checking mutex held across'],
    ['env_cwd', 'environment, cwd, umask, rlimits, cmdline bounds, comm'],
    ['sparse1g', 'a sparse 1 GiB mapping'],
    ['guard', 'PROT_NONE guards with and without data, read-only pages'],
    ['rseq_brk', 'rseq registration and the mm bounds of /proc/self/stat'],
    ['file_maps', 'private file pages copied on write, a shared file mapping'],
  ] as const;
  for (const [name, what] of simple) it(`${name}: ${what}`, () => roundTrip(name));

  it('stdio_flush: output buffered before the dump appears once', () => {
    const image = join(dir, 'stdio_flush.img');
    const d = run(program('stdio_flush'), [image]);
    expect(d.stdout).toBe('BEFORE-DUMP DUMPED stdio_flush\n');
    const r = restore(image);
    expect(r.stdout).toBe('AFTER-RESTORE\nPASS stdio_flush\n');
  });

  it('atexit_order: handlers registered before the dump run in reverse order after it', () => {
    const r = restore(dump('atexit_order'));
    expect(r.stdout).toBe('PASS atexit_order (handlers follow)\nATEXIT second\nATEXIT first\n');
    expect(r.status).toBe(0);
  });

  it('nested: a restored process dumps itself again and that image restores too', () => {
    const image = dump('nested');
    const first = restore(image);
    expect(first.stdout).toContain('DUMPED nested.2');
    expect(first.status).toBe(0);
    const second = restore(`${image}.2`);
    expect(second.stdout).toContain('PASS nested');
    expect(second.status).toBe(0);
  });

  it('mem256: 256 MiB of touched memory', () => {
    const image = dump('mem256');
    const r = restore(image, 120_000);
    expect(r.stdout).toContain('PASS mem256');
    rmSync(image);
  }, 120_000);
});

describe('exit status and restore from fd 0', () => {
  it('every exit code and death by signal reaches the parent', () => {
    const control = join(dir, 'exit.ctl');
    const image = dump('exit_status', [control]);
    for (const code of [0, 1, 2, 3, 42, 127, 255]) {
      writeFileSync(control, `exit ${code}\n`);
      const r = restore(image);
      expect(r.status, `exit ${code}`).toBe(code);
    }
    for (const [sig, name] of [[15, 'SIGTERM'], [11, 'SIGSEGV'], [9, 'SIGKILL'], [6, 'SIGABRT']] as const) {
      writeFileSync(control, `signal ${sig}\n`);
      const r = restore(image);
      expect(r.signal, `signal ${name}`).toBe(name);
    }
  });

  it('reads the image from fd 0 (no argument, and "-")', () => {
    const image = dump('hello');
    const bytes = readFileSync(image);
    for (const args of [[], ['-']]) {
      const r = run(restorer, args, { input: bytes });
      expect(r.stdout).toContain('PASS hello');
      expect(r.status).toBe(0);
    }
  });

  it('restores the same image 50 times, each a new process', () => {
    const image = dump('hello');
    const pids = new Set<string>();
    for (let i = 0; i < 50; i++) {
      const r = restore(image);
      expect(r.stdout, `restore ${i}`).toContain('PASS hello');
      expect(r.status).toBe(0);
      pids.add(/hello again: pid (\d+)/.exec(r.stdout)![1]!);
    }
    expect(pids.size).toBe(50);
  });
});

describe('the restored process among others', () => {
  it('is killed by its parent like any child (SIGTERM, SIGKILL)', async () => {
    const image = dump('sleeper');
    for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
      const child = spawn(restorer, [image], { stdio: ['ignore', 'pipe', 'pipe'] });
      const ready = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(out);
        });
        child.on('exit', () => reject(new Error(`exited before READY: ${out}`)));
      });
      expect(ready).toMatch(/^READY (\d+)/);
      expect(Number(/READY (\d+)/.exec(ready)![1])).toBe(child.pid);
      const done = new Promise<NodeJS.Signals | null>((resolve) => child.on('exit', (_c, s) => resolve(s)));
      child.kill(sig);
      expect(await done).toBe(sig);
    }
  });

  it('ten restores of one image run concurrently, each its own process', async () => {
    const image = dump('hello');
    const runs = Array.from({ length: 10 }, () => new Promise<{ code: number | null; out: string }>((resolve) => {
      const c = spawn(restorer, [image], { stdio: ['ignore', 'pipe', 'inherit'] });
      let out = '';
      c.stdout.on('data', (d: Buffer) => (out += d.toString()));
      c.on('close', (code) => resolve({ code, out }));
    }));
    const results = await Promise.all(runs);
    for (const r of results) {
      expect(r.out).toContain('PASS hello');
      expect(r.code).toBe(0);
    }
    expect(new Set(results.map((r) => /pid (\d+)/.exec(r.out)![1])).size).toBe(10);
  });

  it('a process with a mapping in the restorer zone is refused at dump time', () => {
    const r = run(program('sleeper'), [join(dir, 'zone.img'), 'zone']);
    expect(r.status).toBe(2);
    expect(r.stdout).toContain("EOPNOTSUPP: rex_dump_self: mapping 71000000-71001000 () lies in 0x70000000-0x80000000, the restorer's zone");
  });
});

describe('unprivileged', () => {
  // PR_SET_MM_MAP, the vDSO move and rseq work without privilege; check it as uid 65534 when root can switch.
  it.skipIf(process.getuid?.() !== 0)('dump and restore as uid 65534 (nobody)', () => {
    const sub = mkdtempSync(join(tmpdir(), 'rex-nobody-'));
    try {
      execFileSync('chmod', ['0777', sub]);
      for (const name of ['hello', 'malloc_after', 'rseq_brk', 'vdso_clock']) {
        const image = join(sub, `${name}.img`);
        const r = run('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', 'sh', '-c',
          `"${program(name)}" "${image}" >/dev/null && "${restorer}" "${image}"`]);
        expect(r.stdout + r.stderr, name).toContain(`PASS ${name}`);
        expect(r.status).toBe(0);
      }
    } finally {
      rmSync(sub, { recursive: true, force: true });
    }
  });
});

describe('what the image holds', () => {
  it('matches docs/IMAGE.md: header fields, table layout and meta_hash computed independently', () => {
    const image = dump('hello');
    const img = readFileSync(image);
    expect(img.toString('latin1', 0, 8)).toBe('REXIMG\r\n');
    expect(img.readUInt32LE(H.version)).toBe(5);
    expect(img.readUInt32LE(H.headerSize)).toBe(H.size);
    expect(H.size).toBe(3552); // docs/IMAGE.md section 2, independently of the generated offsets
    expect(img.readUInt32LE(H.arch)).toBe(62);
    expect(img.readBigUInt64LE(H.metaHash)).toBe(metaHash(img));
    const l = layout(img);
    const dataPages = Number(img.readBigUInt64LE(H.dataPages));
    expect(img.length).toBe(l.data + dataPages * 4096 + 16);
    expect(img.toString('latin1', img.length - 16, img.length - 8)).toBe('REXEND\r\n');
    const regs = regions(img);
    expect(regs.some((r) => r.name === '[stack]' && r.kind === 3)).toBe(true);
    expect(regs.some((r) => r.name.includes('libc.so') && r.kind === 4)).toBe(true);
    // Regions sorted, disjoint, clear of the restorer's zone.
    for (let i = 1; i < regs.length; i++) expect(regs[i]!.start >= regs[i - 1]!.end).toBe(true);
    for (const r of regs) expect(r.end <= 0x70000000n || r.start >= 0x80000000n).toBe(true);
    // The bound (docs/IMAGE.md): private pages + 16 KiB of metadata + the XSAVE area in use, as the image stores it
    // (xsave_len: up to the last component in use, 2.7 KiB and more on CPUs with AVX-512). Every carried page is private.
    const info = readImageInfo(image);
    expect(info.imageBytes - info.dataPages * 4096).toBe(info.metadataBytes);
    expect(info.metadataBytes).toBeLessThanOrEqual(16 * 1024 + info.xsaveLen);
    expect(info.imageBytes).toBeLessThanOrEqual(info.dataPages * 4096 + 16 * 1024 + info.xsaveLen);
  });

  it('lists the descriptors open at dump time for the integration to proxy', () => {
    const image = join(dir, 'fds_listed.img');
    const d = run(program('fds_listed'), [image]);
    expect(d.status).toBe(0);
    const m = /FDS file=(\d+) pipe=(\d+),(\d+) socket=(\d+),(\d+) dir=(\d+)/.exec(d.stdout)!;
    const [file, p0, p1, s0, , dfd] = m.slice(1).map(Number) as [number, number, number, number, number, number];
    const list = fds(readFileSync(image));
    const byFd = new Map(list.map((f) => [f.fd, f]));
    expect(byFd.get(file)).toMatchObject({ kind: 1, path: `${image}.file`, pos: 10n });
    expect(byFd.get(file)!.flFlags & 0o2000).toBe(0o2000); // O_APPEND
    expect(byFd.get(p0)!.kind).toBe(3);
    expect(byFd.get(p0)!.path).toMatch(/^pipe:\[\d+\]$/);
    expect(byFd.get(p1)!.kind).toBe(3);
    expect(byFd.get(s0)!.kind).toBe(4);
    expect(byFd.get(dfd)).toMatchObject({ kind: 2, path: '/tmp' });
    expect(list.filter((f) => f.flags & 1).map((f) => f.path)).toEqual([image]); // the image's own fd
    const r = restore(image);
    expect(r.stdout).toContain('PASS fds_listed');
  });
});

describe('refused dumps', () => {
  it('a shared anonymous mapping makes the dump fail with EOPNOTSUPP naming it', () => {
    const r = run(program('neg_shared'), [join(dir, 'ns.img'), 'anon']);
    const addr = /MAPPING ([0-9a-f]+)/.exec(r.stdout)![1];
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('DUMPFAIL neg_shared: EOPNOTSUPP: rex_dump_self: shared anonymous mapping');
    expect(r.stdout).toContain(`${addr}-`);
    expect(r.stdout).toContain('REX_DUMP_SKIP_SHARED');
  });

  it('System V shared memory is refused the same way', () => {
    const r = run(program('neg_shared'), [join(dir, 'ns.img'), 'sysv']);
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('EOPNOTSUPP: rex_dump_self: System V shared memory segment');
    expect(r.stdout).toContain('/SYSV');
  });

  it('REX_DUMP_SKIP_SHARED leaves shared memory out and the dump succeeds', () => {
    const image = join(dir, 'ns-skip.img');
    const r = run(program('neg_shared'), [image, 'skip']);
    expect(r.stdout).toContain('DUMPED neg_shared');
    expect(readFileSync(image).readUInt32LE(H.flags) & 1).toBe(1);
    expect(restore(image).stdout).toContain('PASS neg_shared');
  });

  it('a process with two threads is refused with EBUSY naming the count', () => {
    const r = run(program('neg_threads'), [join(dir, 'nt.img')]);
    expect(r.status).toBe(2);
    expect(r.stdout).toContain('DUMPFAIL neg_threads: EBUSY: rex_dump_self: the process has 2 threads');
  });

  it('a mapped file that changed after the dump makes the restore refuse (exit 4) naming it', () => {
    const image = dump('file_maps');
    utimesSync(`${image}.data`, new Date(), new Date(Date.now() + 60_000));
    const r = restore(image);
    expect(r.status).toBe(4);
    expect(r.stderr).toContain(`${image}.data is not the file the image was taken from`);
    expect(r.stdout).toBe('');
  });
});
