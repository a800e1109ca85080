/**
 * Helpers of the remote-call tests: build the test library with -g, write its
 * entry points with repdb -gx and mark its pointer parameters, generate the
 * typed stubs, and start a CallManager over it.
 */
import { execFile, execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer, type Server } from 'node:net';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import type { CallManager } from '../../src/calls/index.js';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { Connection, type Reply } from '../../src/protocol/connection.js';
import type { RexClient } from '../../src/runtime/client.js';
import { setTransport } from '../../src/runtime/codegen-v1.js';
import { startCluster } from '../helpers/cluster.js';

export const ROOT = resolve(import.meta.dirname, '../..');
export const FIX = join(ROOT, 'test/fixtures/calls');
export const NATIVE = join(ROOT, 'native');
export const REPDB = join(ROOT, 'dist/bin/repdb.js');
export const REX = join(ROOT, 'dist/bin/rex.js');

/** A real local cluster of `hosts` whose rex.rc offers `programs` (a `programs :` value), all reachable, and alpha's client. */
export interface CallCluster {
  cluster: LocalCluster;
  alpha: RexClient;
  /** `rex ARGS` on alpha, as a shell user types it: its stdout (rejects on a non-zero exit). */
  rex(...args: string[]): Promise<string>;
  /** Resets the stub transport, closes alpha's client and stops the hosts. */
  stop(): Promise<void>;
}

const run = promisify(execFile);

/** Starts a {@link CallCluster}. */
export async function callCluster(hosts: number, programs: string): Promise<CallCluster> {
  const { cluster, stop } = await startCluster(hosts, { rc: [`programs : ${programs}`] });
  await cluster.waitAllReachable();
  const alpha = await cluster.client('alpha');
  return {
    cluster,
    alpha,
    rex: async (...args) => (await run(process.execPath, [REX, ...args, '--socket', cluster.host('alpha').socket], { encoding: 'utf8' })).stdout,
    stop: async () => {
      setTransport(undefined);
      alpha.close();
      await stop();
    },
  };
}

/** A fresh temporary directory. */
export function tempDir(prefix = 'rex-calls-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Builds test/fixtures/calls/calltest.c into DIR/libcalltest.so with -g. */
export function buildLibrary(dir: string): string {
  const out = join(dir, 'libcalltest.so');
  execFileSync('gcc', ['-g', '-O1', '-shared', '-fPIC', '-Wall', '-o', out, join(FIX, 'calltest.c')], { stdio: 'pipe' });
  return out;
}

/** Runs the built repdb CLI; throws with its stderr on failure. */
export function repdb(args: string[], cwd?: string): string {
  const r = spawnSync(process.execPath, [REPDB, ...args], { cwd, encoding: 'utf8', maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`repdb ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

/** Pointer marks of the test library, per entry point and parameter. */
export const MARKS: Record<string, Record<string, string>> = {
  vnorm: { v: 'direction="inout"' },
  vmake: { out: 'direction="out"' },
  vdot: { a: 'direction="in"', b: 'direction="in"' },
  slen: { s: 'direction="in" string="yes"' },
  upper: { in: 'direction="in" string="yes"', out: 'direction="out" size-is="cap" string="yes"' },
  reverse: { xs: 'direction="inout" size-is="n"' },
  mean: { xs: 'direction="in" size-is="n"' },
  sum4: { xs: 'direction="in" size-is="4"' },
};

/** Adds pointer marks (default MARKS) to repdb's XML and drops the computed frames (repdb recomputes them), as docs/REPDB.md step 2 says. */
export function markXml(xml: string, marks: Record<string, Record<string, string>> = MARKS): string {
  let out = xml.replace(/\s*<(input|output)[^>]*\/>/g, '').replace(/\s*<input[^>]*>[\s\S]*?<\/input>/g, '').replace(/\s*<output[^>]*>[\s\S]*?<\/output>/g, '');
  for (const [fn, params] of Object.entries(marks)) {
    out = out.replace(new RegExp(`(<entry-point name="${fn}"[\\s\\S]*?</entry-point>)`), (block) => {
      let b = block;
      // The marks written by hand replace any repdb inferred (direction-inferred="yes": reverse's `int *xs` is guessed an out of one element).
      for (const [p, m] of Object.entries(params)) b = b.replace(new RegExp(`<param name="${p}" type="([^"]*)"[^/]*/>`), `<param name="${p}" type="$1" ${m}/>`);
      return b;
    });
  }
  return out;
}

/** repdb -gx of the library, marked, written to DIR/libcalltest.xml. */
export function writeXml(dir: string, lib: string): string {
  const xml = markXml(repdb(['-gx', '--program', 'calltest', lib]));
  const file = join(dir, 'libcalltest.xml');
  writeFileSync(file, xml);
  repdb([file]); // checks it
  return file;
}

/** Generates the typed stubs and loads them with their runtime import pointed at src/. */
export async function loadStubs(dir: string, xml: string): Promise<Record<string, (...args: unknown[]) => Promise<unknown>>> {
  const file = join(dir, 'libcalltest.rex.ts');
  repdb(['--ts', xml, '-o', file]);
  const ts = readFileSync(file, 'utf8').replace("'@rex-cluster/rex/runtime/codegen-v1'", `'${join(ROOT, 'src/runtime/codegen-v1.js')}'`);
  writeFileSync(file, ts);
  return (await import(file)) as Record<string, (...args: unknown[]) => Promise<unknown>>;
}

/** The local results of local.c, linked against the library. */
export function localResults(dir: string, lib: string): Record<string, unknown> {
  const exe = join(dir, 'local');
  execFileSync('gcc', ['-Wall', '-o', exe, join(FIX, 'local.c'), lib, `-Wl,-rpath,${dir}`], { stdio: 'pipe' });
  return JSON.parse(execFileSync(exe, { encoding: 'utf8' })) as Record<string, unknown>;
}

/** A collecting logger for the manager's `log` option. */
export function memoryLog(): { entries: { level: string; obj: Record<string, unknown>; msg: string }[]; info: (o: object, m: string) => void; warn: (o: object, m: string) => void } {
  const entries: { level: string; obj: Record<string, unknown>; msg: string }[] = [];
  return {
    entries,
    info: (obj, msg) => entries.push({ level: 'info', obj: obj as Record<string, unknown>, msg }),
    warn: (obj, msg) => entries.push({ level: 'warn', obj: obj as Record<string, unknown>, msg }),
  };
}

/**
 * A protocol v1 stand-in for rexd on a Unix socket that answers every request
 * with `manager.handle`, as rexd does, for callers tested without a daemon.
 */
export async function standInDaemon(manager: CallManager, socket: string): Promise<Server> {
  const server = createServer((sock) => {
    const conn: Connection = new Connection(sock, {
      initiator: false,
      local: { role: 'daemon', host: 'alpha', software: 'calls-test/0' },
      label: 'test client',
      onRequest: (m): Promise<Reply> => manager.handle(m, { name: 'alpha.tester', conn }),
    });
    conn.handshake().catch(() => undefined);
  });
  await new Promise<void>((r) => server.listen(socket, r));
  return server;
}
