/**
 * The child_process comparison (issue 18 item 4): one table of cases, each run
 * against node:child_process (a local child) and against REX's spawn/exec/
 * execFile running the program on a REMOTE host (beta, through alpha's rexd),
 * and the two observable records compared field by field. The few fields that
 * legitimately differ are named in the case with the reason (docs/EXEC.md,
 * "The child_process API"), and compared in a normalized form on both sides.
 */
import * as nodeCp from 'node:child_process';
import { closeSync, createReadStream, createWriteStream, mkdirSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childProcess, type RemoteChildProcess } from '../../src/runtime/index.js';
import { packageRoot } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';

/** What a case may use of a module: node:child_process's three functions. */
interface CP {
  spawn: typeof nodeCp.spawn;
  exec: typeof nodeCp.exec;
  execFile: typeof nodeCp.execFile;
}
type Rec = Record<string, unknown>;
interface Ctx {
  /** A fresh directory for the case's files (the same path for both runs: they run one after the other). */
  dir: string;
  /** Runs the inherit helper (a Node process using this module) with `stdin`, returning its own stdout and stderr. */
  helper: (which: string, stdin: string) => Promise<{ stdout: string; stderr: string; code: number | null }>;
}
interface Case {
  name: string;
  run: (m: CP, ctx: Ctx) => Promise<Rec>;
  /** Fields that cannot be equal: the reason, and the form both sides are compared in. */
  differs?: Record<string, { reason: string; normalize: (v: unknown) => unknown }>;
}

type Child = nodeCp.ChildProcess;

/** An error's cause as a record: a string reason as it is, an Error (AbortSignal.abort()'s DOMException) by name and message. */
const causeOf = (e: Error): unknown => {
  const c = (e as { cause?: unknown }).cause;
  return c instanceof Error ? { name: c.name, message: c.message } : c;
};

/** Everything a ChildProcess shows: events in order, output of its pipes, its properties after 'close'. */
function watch(child: Child, hooks: { onSpawn?: () => void } = {}): Promise<Rec> {
  const events: string[] = [];
  let stdout = '';
  let stderr = '';
  let pid: string | undefined;
  let errFields: Rec | undefined;
  const before = { exitCode: child.exitCode, signalCode: child.signalCode, killed: child.killed };
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  child.on('spawn', () => {
    events.push('spawn');
    pid = typeof child.pid;
    hooks.onSpawn?.();
  });
  child.on('exit', (c, s) => events.push(`exit ${c} ${s}`));
  child.on('error', (e: NodeJS.ErrnoException & { spawnargs?: string[] }) => {
    events.push(`error ${e.code}`);
    errFields = { name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, spawnargs: e.spawnargs, message: e.message, cause: causeOf(e) };
  });
  return new Promise((resolve) =>
    child.on('close', (c, s) => {
      events.push(`close ${c} ${s}`);
      resolve({
        events,
        stdout,
        stderr,
        before,
        exitCode: child.exitCode,
        signalCode: child.signalCode,
        killed: child.killed,
        pid: pid ?? typeof child.pid,
        stdio: child.stdio.map((x) => (x === null ? null : 'stream')),
        streams: [child.stdin === null, child.stdout === null, child.stderr === null],
        spawnfile: child.spawnfile,
        spawnargs: child.spawnargs,
        connected: child.connected,
        error: errFields,
        killAfterClose: child.kill(),
      });
    }),
  );
}

/** The callback of exec/execFile as a record. */
function cbRecord(err: (Error & Rec) | null, stdout: unknown, stderr: unknown): Rec {
  const e = err ? { name: err.name, message: err.message, keys: Object.keys(err).sort(), code: err.code, killed: err.killed, signal: err.signal, cmd: err.cmd, errno: err.errno, syscall: err.syscall, path: err.path, spawnargs: err.spawnargs } : null;
  const show = (v: unknown): unknown => (Buffer.isBuffer(v) ? { buffer: v.toString('hex') } : v);
  return { err: e, stdout: show(stdout), stderr: show(stderr) };
}

function viaCallback(start: (cb: (err: any, stdout: any, stderr: any) => void) => Child): Promise<Rec> {
  return new Promise((resolve) => {
    const events: string[] = [];
    const child = start((err, stdout, stderr) => resolve({ ...cbRecord(err as (Error & Rec) | null, stdout, stderr), events, exitCode: child.exitCode, signalCode: child.signalCode, killed: child.killed }));
    child.on('spawn', () => events.push('spawn'));
    child.on('exit', (c, s) => events.push(`exit ${c} ${s}`));
    child.on('error', (e: NodeJS.ErrnoException) => events.push(`error ${e.code}`));
  });
}

async function settle(p: Promise<{ stdout: unknown; stderr: unknown }>): Promise<Rec> {
  try {
    const r = await p;
    return { resolved: Object.keys(r).sort(), ...cbRecord(null, r.stdout, r.stderr) };
  } catch (e) {
    const err = e as Error & Rec;
    return { rejected: true, ...cbRecord(err, err.stdout, err.stderr) };
  }
}

const once = (child: Child, ev: string): Promise<void> => new Promise((r) => child.once(ev, () => r()));

/** REX's message after node's: `spawn F ENOENT: no such program on beta`; compared without REX's reason. */
const nodePart = (v: unknown): unknown => {
  if (!v || typeof v !== 'object') return v;
  const r = { ...(v as Rec) };
  if (typeof r.message === 'string') r.message = r.message.replace(/^(spawn \S+ E[A-Z]+): .*$/s, '$1');
  return r;
};
const ENOENT_MESSAGE = "REX appends the executor's reason to node's message (`spawn F ENOENT: no such program on beta`): the program is missing on another host, which node's message cannot say";

const CASES: Case[] = [
  {
    name: "spawn with pipes: stdin to stdout, events spawn, exit, close; pid, exitCode, killed",
    run: async (m) => {
      const c = m.spawn('tr', ['a-z', 'A-Z']);
      const r = watch(c);
      c.stdin!.write('hello ');
      c.stdin!.end('remote world');
      return r;
    },
  },
  {
    name: 'spawn: exit code and stderr',
    run: (m) => watch(m.spawn('sh', ['-c', 'echo out; echo err >&2; exit 3'])),
  },
  {
    name: "kill() with the default SIGTERM: true, then killed and signalCode",
    run: async (m) => {
      const c = m.spawn('sleep', ['30']);
      let ret: boolean | undefined;
      const r = await watch(c, { onSpawn: () => (ret = c.kill()) });
      return { ...r, ret };
    },
  },
  {
    name: 'kill() by number (9 is SIGKILL), and an unknown signal throws ERR_UNKNOWN_SIGNAL',
    run: async (m) => {
      const c = m.spawn('sleep', ['30']);
      let thrown: unknown;
      let ret: boolean | undefined;
      const r = await watch(c, {
        onSpawn: () => {
          try {
            c.kill('SIGNOPE' as NodeJS.Signals);
          } catch (e) {
            thrown = { name: (e as Error).name, code: (e as NodeJS.ErrnoException).code, message: (e as Error).message };
          }
          ret = c.kill(9);
        },
      });
      return { ...r, ret, thrown };
    },
  },
  {
    name: "a nonexistent program: 'error' ENOENT with node's fields, then 'close' -2; no 'spawn', no pid",
    run: (m) => watch(m.spawn('/no/such/program', ['x'])),
    differs: { error: { reason: ENOENT_MESSAGE, normalize: nodePart } },
  },
  {
    name: "a file that is not executable: 'error' EACCES, then 'close' -13",
    run: (m, ctx) => {
      writeFileSync(join(ctx.dir, 'not-x'), '#!/bin/sh\necho ran\n', { mode: 0o644 });
      return watch(m.spawn(join(ctx.dir, 'not-x')));
    },
    differs: { error: { reason: ENOENT_MESSAGE, normalize: nodePart } },
  },
  {
    name: "kill() right after spawn(), before 'spawn': true, and the program dies of it",
    run: async (m) => {
      const c = m.spawn('sleep', ['30']);
      const ret = c.kill();
      return { ...(await watch(c)), ret };
    },
  },
  {
    name: 'exec: callback with stdout and stderr',
    run: (m) => viaCallback((cb) => m.exec('echo $((40 + 2)); echo warn >&2', cb)),
  },
  {
    name: "exec: a failing command's Error (message, code, killed, signal, cmd)",
    run: (m) => viaCallback((cb) => m.exec('echo hi; echo oops >&2; exit 3', cb)),
  },
  {
    name: 'promisify(exec) resolves { stdout, stderr }; the promise has .child',
    run: async (m) => {
      const p = promisify(m.exec)('echo resolved; echo e >&2');
      return { ...(await settle(p)), child: typeof p.child?.on, custom: typeof (m.exec as unknown as Record<symbol, unknown>)[promisify.custom] };
    },
  },
  {
    name: 'promisify(exec) rejects with the Error carrying stdout and stderr',
    run: (m) => settle(promisify(m.exec)('echo partial; echo bad >&2; exit 7')),
  },
  {
    name: 'promisify(execFile) with args resolves { stdout, stderr }',
    run: async (m) => ({ ...(await settle(promisify(m.execFile)('printf', ['%s-%s', 'a', 'b']))), custom: typeof (m.execFile as unknown as Record<symbol, unknown>)[promisify.custom] }),
  },
  {
    name: 'execFile(file, options, callback) without args; cwd as a URL',
    run: (m, ctx) => viaCallback((cb) => m.execFile('pwd', { cwd: pathToFileURL(ctx.dir) }, cb)),
  },
  {
    name: "execFile of a nonexistent program: the callback's error is the spawn error with cmd",
    run: (m) => viaCallback((cb) => m.execFile('/no/such/program', ['a', 'b'], cb)),
    differs: { err: { reason: ENOENT_MESSAGE, normalize: nodePart } },
  },
  {
    // A program that writes no more after the limit: one that does (yes) dies of SIGPIPE or of the killSignal, whichever comes first.
    name: 'maxBuffer on stdout: ERR_CHILD_PROCESS_STDIO_MAXBUFFER, output truncated, the program killed',
    run: (m) => viaCallback((cb) => m.execFile('sh', ['-c', 'printf 0123456789abcdef; exec sleep 30'], { maxBuffer: 10 }, cb)),
  },
  {
    name: 'maxBuffer on stderr through promisify(exec)',
    run: (m) => settle(promisify(m.exec)('echo out; printf 0123456789 >&2; exec sleep 30', { maxBuffer: 7 })),
  },
  {
    name: "encoding 'buffer' gives Buffers",
    run: (m) => viaCallback((cb) => m.exec('printf abc; printf xy >&2', { encoding: 'buffer' }, cb)),
  },
  {
    name: 'exec timeout: killed with the default SIGTERM, Error killed and signal',
    run: (m) => viaCallback((cb) => m.exec('exec sleep 30', { timeout: 200 }, cb)),
  },
  {
    name: 'execFile timeout with killSignal SIGINT',
    run: (m) => viaCallback((cb) => m.execFile('sleep', ['30'], { timeout: 200, killSignal: 'SIGINT' }, cb)),
  },
  {
    name: 'spawn timeout with killSignal SIGUSR1 (a number: 10)',
    run: (m) => watch(m.spawn('sleep', ['30'], { timeout: 200, killSignal: 10 })),
  },
  {
    name: "spawn with an AbortSignal aborted after 'spawn': AbortError, killed with killSignal",
    run: async (m) => {
      const ac = new AbortController();
      const c = m.spawn('sleep', ['30'], { signal: ac.signal, killSignal: 'SIGHUP' });
      return watch(c, { onSpawn: () => ac.abort('enough') });
    },
  },
  {
    name: 'spawn with an AbortSignal already aborted',
    run: (m) => watch(m.spawn('sleep', ['30'], { signal: AbortSignal.abort() })),
  },
  {
    name: 'promisify(exec) with a signal aborted while it runs rejects with AbortError (cmd, stdout, stderr)',
    run: async (m) => {
      const ac = new AbortController();
      const p = promisify(m.exec)('echo before; exec sleep 30', { signal: ac.signal });
      p.child.stdout!.once('data', () => ac.abort());
      return settle(p);
    },
  },
  {
    name: "stdio 'ignore': no streams; stdin reads EOF",
    run: (m) => watch(m.spawn('sh', ['-c', 'cat; echo rc=$?; echo err >&2'], { stdio: 'ignore' })),
  },
  {
    name: "stdio ['ignore', 'pipe', 'ignore']: stdin is empty, stderr discarded",
    run: (m) => watch(m.spawn('sh', ['-c', 'cat; echo rc=$?; echo err >&2'], { stdio: ['ignore', 'pipe', 'ignore'] })),
  },
  {
    name: 'stdio fd numbers: stdout and stderr into a file',
    run: async (m, ctx) => {
      const file = join(ctx.dir, 'out');
      const fd = openSync(file, 'w');
      const r = await watch(m.spawn('sh', ['-c', 'echo to-file; echo err-file >&2'], { stdio: ['ignore', fd, fd] }));
      closeSync(fd);
      return { ...r, file: readFileSync(file, 'utf8') };
    },
  },
  {
    name: 'stdio streams: stdin from a ReadStream, stdout to a WriteStream, stderr a pipe',
    run: async (m, ctx) => {
      writeFileSync(join(ctx.dir, 'in'), 'line one\nline two\n');
      const rs = createReadStream(join(ctx.dir, 'in'));
      const ws = createWriteStream(join(ctx.dir, 'out'));
      await Promise.all([new Promise((r) => rs.once('open', r)), new Promise((r) => ws.once('open', r))]);
      const r = await watch(m.spawn('sh', ['-c', 'wc -l; echo e >&2'], { stdio: [rs, ws, 'pipe'] }));
      rs.destroy();
      await new Promise((r2) => ws.end(r2));
      return { ...r, file: readFileSync(join(ctx.dir, 'out'), 'utf8').trim() };
    },
  },
  {
    name: 'stdio array mixing an fd, a pipe and an extra ignored fd',
    run: async (m, ctx) => {
      writeFileSync(join(ctx.dir, 'in'), 'from the file\n');
      const fd = openSync(join(ctx.dir, 'in'), 'r');
      const r = await watch(m.spawn('sh', ['-c', 'cat; echo e >&2'], { stdio: [fd, 'pipe', 'pipe', 'ignore'] }));
      closeSync(fd);
      return r;
    },
  },
  {
    name: "stdio 'inherit': the program reads and writes its parent's own stdin, stdout, stderr",
    run: (_m, ctx) => ctx.helper('inherit', 'typed\n'),
  },
  {
    name: "stdio ['pipe', 'inherit', 'ignore']",
    run: (_m, ctx) => ctx.helper('mixed', ''),
  },
  {
    name: 'env: only what is given (PATH kept by hand)',
    run: (m) => watch(m.spawn('sh', ['-c', 'echo "$FOO|${BAR-unset}|${HOME-nohome}"'], { env: { FOO: 'foo', PATH: process.env.PATH } })),
  },
  {
    name: 'cwd',
    run: (m, ctx) => watch(m.spawn('pwd', [], { cwd: ctx.dir })),
  },
  {
    name: 'shell: true runs /bin/sh -c with the command and args joined',
    run: (m) => watch(m.spawn('echo $((1 + 2))', ['and', '$0'], { shell: true })),
  },
  {
    name: 'shell as a string names the shell',
    run: (m) => watch(m.spawn('echo', ['$0'], { shell: '/bin/bash' })),
  },
  {
    name: 'argv0',
    run: (m) => watch(m.spawn('sh', ['-c', 'echo $0'], { argv0: 'custom-name' })),
  },
];

/** The table with each case's index (its directory's name). */
const TABLE = CASES.map((c, i) => ({ ...c, i }));

/** The helper of the inherit cases: a Node process whose own stdio the program inherits. */
const HELPER = `
const [impl, which] = process.argv.slice(2);
const m = impl === 'node' ? await import('node:child_process') : (await import(process.env.REX_RUNTIME)).childProcess({ host: process.env.REX_TEST_HOST });
const child = which === 'inherit'
  ? m.spawn('sh', ['-c', 'read x; echo "got $x"; echo to-stderr >&2'], { stdio: 'inherit' })
  : m.spawn('sh', ['-c', 'cat; echo "rc=$?"; echo lost >&2'], { stdio: ['pipe', 'inherit', 'ignore'] });
const events = [];
if (child.stdin) child.stdin.end('from-pipe\\n');
child.on('spawn', () => events.push('spawn'));
child.on('exit', (c, s) => events.push('exit ' + c + ' ' + s));
child.on('close', (c, s) => {
  events.push('close ' + c + ' ' + s);
  process.stdout.write(JSON.stringify({ events, stdio: child.stdio.map((x) => (x === null ? null : 'stream')) }) + '\\n');
});
`;

describe('node:child_process parity: the same cases locally and through REX on a remote host', () => {
  let stop: () => Promise<void>;
  let rex: CP;
  let top: string;
  let helperFile: string;
  let socket: string;

  beforeAll(async () => {
    const c = await startCluster(2);
    stop = c.stop;
    await c.cluster.waitAllReachable();
    socket = c.cluster.host('alpha').socket;
    // alpha's rexd is the one the caller talks to; every program runs on beta.
    rex = childProcess({ socket, host: 'beta' }) as unknown as CP;
    top = mkdtempSync(join(tmpdir(), 'rex-cp-parity-'));
    helperFile = join(top, 'helper.mjs');
    writeFileSync(helperFile, HELPER);
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    if (top) rmSync(top, { recursive: true, force: true });
  });

  const runOne = async (impl: 'node' | 'rex', c: Case, n: number): Promise<Rec> => {
    const dir = join(top, `case-${n}`);
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir);
    const ctx: Ctx = {
      dir,
      helper: (which, stdin) =>
        new Promise((resolve) => {
          const h = nodeCp.execFile(process.execPath, [helperFile, impl, which], { env: { ...process.env, REX_SOCKET: socket, REX_TEST_HOST: 'beta', REX_RUNTIME: pathToFileURL(join(packageRoot(), 'dist/runtime/index.js')).href }, timeout: 20_000 }, (err, stdout, stderr) =>
            resolve({ stdout, stderr, code: err ? ((err as { code?: number }).code ?? null) : 0 }),
          );
          h.stdin!.end(stdin);
        }),
    };
    const rec = await c.run(impl === 'node' ? (nodeCp as CP) : rex, ctx);
    for (const [field, d] of Object.entries(c.differs ?? {})) rec[field] = d.normalize(rec[field]);
    return rec;
  };

  it("REX's side of the table runs on beta, not on alpha whose rexd the caller talks to", async () => {
    const child = rex.spawn('true') as unknown as RemoteChildProcess;
    await new Promise((r) => child.once('spawn', r));
    expect(child.host).toBe('beta');
    await new Promise((r) => child.once('close', r));
  });

  it('the types are node\'s: promisify gives { stdout, stderr } (strings, or Buffers with encoding: buffer), pipes are not null', async () => {
    const m = childProcess({ socket, host: 'beta' });
    const a: { stdout: string; stderr: string } = await promisify(m.exec)('echo typed');
    const b: { stdout: Buffer; stderr: Buffer } = await promisify(m.execFile)('printf', ['x'], { encoding: 'buffer' });
    const c = m.spawn('true');
    const piped: Readable = c.stdout; // stdio left at 'pipe': not null
    await new Promise((r) => c.once('close', r));
    expect([a.stdout, b.stdout.toString(), piped.readableEnded]).toEqual(['typed\n', 'x', true]);
  });

  // claim: exec.child-process-parity
  it.each(TABLE)('$name', async (c) => {
    const local = await runOne('node', c, c.i);
    const remote = await runOne('rex', c, c.i);
    expect(remote).toEqual(local);
  });
});
