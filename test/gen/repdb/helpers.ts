/**
 * Test helpers for repdb: build the demo library with gcc, the marked XML that
 * goes with it, and small runners for gcc and the built CLI.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import type { AggregateDesc, EntryDesc, TypeDesc } from '../../../src/runtime/frames/types.js';

export const ROOT = resolve(import.meta.dirname, '../../..');
export const FIX = join(ROOT, 'test/fixtures/repdb');
export const REPDB = join(ROOT, 'dist/bin/repdb.js');

/** A fresh temporary directory. */
export function tempDir(prefix = 'repdb-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Builds test/fixtures/repdb/demo.c into DIR/libdemo.so with -g. */
export function buildDemo(dir: string, flags: string[] = ['-g']): string {
  const out = join(dir, 'libdemo.so');
  execFileSync('gcc', ['-shared', '-fPIC', ...flags, '-o', out, join(FIX, 'demo.c')], { stdio: 'pipe' });
  return out;
}

/** Compiles and runs a C program; returns its stdout. */
export function runC(dir: string, source: string, includeDirs: string[] = []): string {
  const c = join(dir, `prog${Math.random().toString(36).slice(2)}.c`);
  writeFileSync(c, source);
  const exe = c.replace(/\.c$/, '');
  execFileSync('gcc', ['-std=c11', '-Wall', '-Werror', ...includeDirs.map((d) => `-I${d}`), '-o', exe, c], { stdio: 'pipe' });
  return execFileSync(exe, { encoding: 'utf8' });
}

/** Runs the built repdb CLI. */
export function repdb(args: string[], input?: string | Buffer, cwd?: string): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [REPDB, ...args], { input: input ?? '', cwd, encoding: 'utf8', maxBuffer: 1 << 26 });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** The hand-marked entry-point XML of the demo library (committed fixture). */
export function demoXml(): string {
  return readFileSync(join(FIX, 'demo.xml'), 'utf8');
}

const p = (prim: string): TypeDesc => ({ kind: 'prim', prim } as TypeDesc);
/** Shorthand type constructors for hand-built descriptions. */
export const T = {
  p,
  s: (name: string): TypeDesc => ({ kind: 'struct', name }),
  u: (name: string): TypeDesc => ({ kind: 'union', name }),
  arr: (elem: TypeDesc, count: number): TypeDesc => ({ kind: 'array', elem, count }),
  ptr: (target: TypeDesc): TypeDesc => ({ kind: 'pointer', target }),
};

/** An entry description with defaults. */
export function entry(name: string, params: EntryDesc['params'], returns: TypeDesc = { kind: 'void' }, types: AggregateDesc[] = []): EntryDesc {
  return { name, params, returns, types };
}
