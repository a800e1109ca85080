/**
 * The remote-call part of `npm start` (rex cluster demo): a small C library
 * compiled at demo time with gcc -g into the cluster directory, its entry
 * points written with repdb -gx, offered as program `demo` in cluster.rc,
 * then called on another host through the first host's rexd.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RexClient } from '../runtime/client.js';
import { decodeOutput, encodeInput, planEntry } from '../runtime/frames/index.js';
import type { EntryDesc } from '../runtime/frames/types.js';
import { distBin } from '../util/paths.js';

const SOURCE = `/* libdemo: the library npm start's demo calls on another host (rex cluster demo). */
#include <unistd.h>

/* The n-th Fibonacci number, computed the slow way so the call does some work. */
long fib(int n) { return n < 2 ? n : fib(n - 1) + fib(n - 2); }

/* The process id of the call controller that ran the call. */
int controller_pid(void) { return (int)getpid(); }

/* x raised to an integer power. */
double power(double x, int n) { double r = 1; while (n-- > 0) r *= x; return r; }
`;

/** The demo library as built: its program name and the rex.rc line that offers it. */
export interface DemoLibrary {
  program: string;
  object: string;
  xml: string;
  rcLine: string;
}

/** Builds libdemo.so with gcc -g and writes its XML with repdb -gx into DIR/demo; throws with gcc's or repdb's message. */
export function buildDemoLibrary(dir: string): DemoLibrary {
  const d = join(dir, 'demo');
  mkdirSync(d, { recursive: true });
  const src = join(d, 'demo.c');
  const object = join(d, 'libdemo.so');
  const xml = join(d, 'libdemo.xml');
  writeFileSync(src, SOURCE);
  execFileSync('gcc', ['-g', '-O1', '-shared', '-fPIC', '-o', object, src], { stdio: 'pipe' });
  writeFileSync(xml, execFileSync(process.execPath, [distBin('repdb'), '-gx', '--program', 'demo', object], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }));
  return { program: 'demo', object, xml, rcLine: `programs : demo=${object}:${xml}` };
}

/** One demo call: what was called, its result, where it ran and how long the round trip took. */
export interface DemoCall {
  call: string;
  result: string;
  host: string;
  ms: number;
}

/** Calls `fn` of program demo at `target` (HOST or `*`) through `client` with named arguments, decoding the result from the definition rexd lists. */
export async function demoCall(client: RexClient, host: string, fn: string, args: Record<string, unknown>): Promise<DemoCall> {
  const entries = await client.entries(`${host}.demo`);
  const e = entries.find((x) => x.name === fn);
  if (!e?.definition) throw new Error(`demo.${fn} is not listed by ${host}`);
  const plan = planEntry(JSON.parse(e.definition) as EntryDesc);
  const t0 = process.hrtime.bigint();
  const r = await client.call(`${host}.demo.${fn}`, encodeInput(plan, args));
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  const out = decodeOutput(plan, r.output);
  return { call: `${host}.demo.${fn}(${Object.values(args).join(', ')})`, result: String(out.return), host: r.host ?? '?', ms };
}
