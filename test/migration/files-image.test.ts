// File identity by content (docs/RFORK.md section 5, docs/IMAGE.md 3.2):
// `rex-restore --file ORIGINAL=LOCAL` maps a copy whose content the caller
// has verified (on another host inode and mtime always differ), checking only
// its size; without --file the file must be the very one of the dump.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { readImageInfo } from '../../src/rfork/image.js';
import { program, restorer, run } from './image.js';

let dir: string;
/** The hello program copied to dir/orig/hello, and an image it wrote of itself there. */
let orig: string;
let image: string;
let size: number;

beforeAll(() => {
  execFileSync('make', ['-s', '-C', join(packageRoot(), 'native'), 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-files-'));
  mkdirSync(join(dir, 'orig'));
  mkdirSync(join(dir, 'copy'));
  orig = join(dir, 'orig', 'hello');
  copyFileSync(program('hello'), orig);
  image = join(dir, 'hello.img');
  const d = run(orig, [image]);
  expect(d.stdout).toMatch(/^DUMPED hello/);
  size = readFileSync(orig).length;
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A fresh copy of the program: same content, another inode and mtime. */
function freshCopy(to: string): string {
  rmSync(to, { force: true });
  copyFileSync(program('hello'), to);
  return to;
}

describe('rex-restore --file', () => {
  it('the strict check stays without --file: a copy at the original path is refused (exit 4)', () => {
    freshCopy(orig);
    const r = run(restorer, [image]);
    expect(r.status).toBe(4);
    expect(r.stderr).toContain(`${orig} is not the file the image was taken from (device/inode/size/mtime`);
    expect(r.stdout).toBe('');
  });

  it('maps a verified copy at another path, checking the size only', () => {
    const copy = freshCopy(join(dir, 'copy', 'hello'));
    for (const args of [['--file', `${orig}=${copy}`], [`--file=${orig}=${copy}`]]) {
      const check = run(restorer, ['--check', ...args, image]);
      expect(check.status, check.stderr).toBe(0);
      const r = run(restorer, [...args, image]);
      expect(r.stdout, r.stderr).toContain('PASS hello');
      expect(r.status).toBe(0);
    }
  });

  it('works when the original path does not exist at all (as on another host)', () => {
    const copy = freshCopy(join(dir, 'copy', 'hello2'));
    rmSync(orig);
    try {
      expect(run(restorer, [image]).status).toBe(4);
      const r = run(restorer, ['--file', `${orig}=${copy}`, image]);
      expect(r.stdout, r.stderr).toContain('PASS hello');
      expect(r.status).toBe(0);
    } finally {
      freshCopy(orig);
    }
  });

  it('a copy of the wrong size is refused (exit 4) naming both paths and sizes', () => {
    const wrong = join(dir, 'copy', 'short');
    writeFileSync(wrong, readFileSync(program('hello')).subarray(0, size - 1));
    const r = run(restorer, ['--file', `${orig}=${wrong}`, image]);
    expect(r.status).toBe(4);
    expect(r.stderr).toContain(`${wrong} (given by --file for ${orig}) is not a copy of it: ${size - 1} bytes here, ${size} in the image`);
    expect(r.stdout).toBe('');
  });

  it('a directory or a missing file in place of the copy is refused (exit 4)', () => {
    const d = run(restorer, ['--file', `${orig}=${dir}`, image]);
    expect(d.status).toBe(4);
    expect(d.stderr).toMatch(/is not a copy of it: \d+ bytes and not a regular file here/);
    const m = run(restorer, ['--file', `${orig}=${join(dir, 'nothing')}`, image]);
    expect(m.status).toBe(4);
    expect(m.stderr).toContain(`cannot open ${join(dir, 'nothing')} (given by --file for ${orig}): ENOENT`);
  });

  it('a shared file mapping cannot be redirected to a copy (writes would not reach the file)', () => {
    const img = join(dir, 'file_maps.img');
    expect(run(program('file_maps'), [img]).status).toBe(0);
    const data = `${img}.data`;
    const copy = join(dir, 'copy', 'data');
    copyFileSync(data, copy);
    const r = run(restorer, ['--file', `${data}=${copy}`, img]);
    expect(r.status).toBe(4);
    expect(r.stderr).toContain(`${data} is mapped shared; --file cannot redirect a shared mapping to another file`);
  });

  it('malformed --file options are usage errors (exit 2)', () => {
    for (const bad of [['--file', 'noequals'], ['--file', 'relative=x'], ['--file', '/abs='], ['--file']]) {
      const r = run(restorer, [...bad, image]);
      expect(r.status, bad.join(' ')).toBe(2);
      expect(r.stderr, bad.join(' ')).toMatch(/ORIGINAL=LOCAL/);
    }
  });

  it('entries for files the image does not map are ignored; the last entry for a path wins', () => {
    const copy = freshCopy(join(dir, 'copy', 'hello3'));
    const r = run(restorer, ['--file', '/nowhere/lib.so=/nowhere/copy.so', '--file', `${orig}=/nowhere/x`, '--file', `${orig}=${copy}`, image]);
    expect(r.stdout, r.stderr).toContain('PASS hello');
  });
});

describe('the executor\'s flow: every mapped file from the image reader, all replaced by copies', () => {
  it('restores with each file (program, libc, ld.so) mapped from a copy, and /proc/PID/maps shows only the copies', async () => {
    const img = join(dir, 'sleeper.img');
    expect(run(program('sleeper'), [img]).status).toBe(0);
    const info = readImageInfo(img);
    expect(info.files.length).toBeGreaterThanOrEqual(3);
    const cache = join(dir, 'cache');
    mkdirSync(cache, { recursive: true });
    const args: string[] = [];
    info.files.forEach((f, i) => {
      const local = join(cache, `${i}-${basename(f.path)}`);
      copyFileSync(f.path, local);
      args.push('--file', `${f.path}=${local}`);
    });
    const child = spawn(restorer, [...args, img], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      const ready = await new Promise<string>((resolve, reject) => {
        let out = '';
        child.stdout.on('data', (d: Buffer) => {
          out += d.toString();
          if (out.includes('\n')) resolve(out);
        });
        child.on('exit', () => reject(new Error(`exited before READY: ${out}`)));
      });
      expect(ready).toMatch(/^READY \d+/);
      const maps = readFileSync(`/proc/${child.pid}/maps`, 'utf8');
      for (const f of info.files) {
        expect(maps).not.toContain(` ${f.path}\n`);
      }
      expect(maps).toContain(cache);
    } finally {
      child.kill('SIGKILL');
    }
  });
});

/** A noexec tmpfs for the next test, when this process may mount one (root); undefined otherwise. */
function noexecMount(): string | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const at = mkdtempSync(join(tmpdir(), 'rex-noexec-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'noexec,size=16m', 'tmpfs', at], { stdio: 'pipe' });
    return at;
  } catch {
    rmSync(at, { recursive: true, force: true });
    return undefined;
  }
}

describe('a copy the kernel will not map', () => {
  const at = noexecMount();
  afterAll(() => {
    if (!at) return;
    execFileSync('umount', [at]);
    rmSync(at, { recursive: true, force: true });
  });

  it.runIf(at !== undefined)('a copy on a noexec mount: exit 5 naming the copy, after the argv it came from is gone', () => {
    const copy = join(at!, 'hello');
    copyFileSync(program('hello'), copy);
    const r = run(restorer, ['--file', `${orig}=${copy}`, image]);
    expect(r.status).toBe(5);
    expect(r.stderr).toMatch(new RegExp(`restore failed: mmap 0x[0-9a-f]+-0x[0-9a-f]+ of ${copy}: EPERM \\(1\\) \\(executable mapping from a noexec mount\\?\\); nothing of the image ran`));
    expect(r.stdout).toBe('');
  });
});

describe('--args-fd: the arguments of a restorer started ahead of its image', () => {
  /** Runs rex-restore --args-fd 3 and writes `payload` on fd 3; resolves with its exit and stderr. */
  function viaFd(payload: Buffer): Promise<{ code: number | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const c = spawn(restorer, ['--args-fd', '3'], { stdio: ['ignore', 'pipe', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      c.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
      c.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
      const fd3 = c.stdio[3] as import('node:net').Socket;
      fd3.on('error', () => {});
      fd3.end(payload);
      c.on('close', (code) => resolve({ code, stdout, stderr }));
    });
  }
  const framed = (args: string[]): Buffer => {
    const text = Buffer.from(args.map((a) => `${a}\0`).join(''));
    const len = Buffer.alloc(4);
    len.writeUInt32LE(text.length);
    return Buffer.concat([len, text]);
  };

  it('restores the image named there, --file included', async () => {
    const local = join(dir, 'copy', 'hello-argsfd');
    copyFileSync(orig, local);
    const r = await viaFd(framed(['--file', `${orig}=${local}`, image]));
    expect(r.stdout, r.stderr).toContain('PASS hello');
    expect(r.code).toBe(0);
  });

  it('refuses a zero or oversized length, cut-off arguments and a missing terminator (exit 2, naming the fd); quiet when nothing comes', async () => {
    const len = (n: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32LE(n);
      return b;
    };
    expect(await viaFd(len(0))).toMatchObject({ code: 2, stderr: expect.stringMatching(/--args-fd 3: 0 bytes of arguments/) });
    expect(await viaFd(len(1 << 20))).toMatchObject({ code: 2, stderr: expect.stringMatching(/--args-fd 3: 1048576 bytes of arguments \(1\.\.65536\)/) });
    expect(await viaFd(Buffer.concat([len(10), Buffer.from('abc')]))).toMatchObject({ code: 2, stderr: expect.stringMatching(/the arguments end after 3 of 10 bytes/) });
    expect(await viaFd(Buffer.concat([len(3), Buffer.from('abc')]))).toMatchObject({ code: 2, stderr: expect.stringMatching(/not NUL-terminated/) });
    expect(await viaFd(Buffer.alloc(0))).toMatchObject({ code: 2, stderr: '' });
  });
});
