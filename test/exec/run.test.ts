import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { ENV_DENY } from '../../src/exec/executor/env.js';
import { RemoteProcess, type ExitStatus } from '../../src/exec/origin/stub.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { NETNS, startCluster } from '../helpers/cluster.js';
import { RawPeer } from '../helpers/raw.js';
import { haveScript, terminalResizeScript, underScript } from '../helpers/script.js';
import { encodeFrame } from '../../src/protocol/frame.js';
import { alive } from '../helpers/proc.js';
import { modulesOf } from '../helpers/modules.js';

const run = promisify(execFile);

/** `rex run` commands not ended yet: a test that fails or times out leaves none behind, nor their remote jobs (afterEach). */
const running = new Set<ReturnType<typeof spawn>>();

/** Runs `rex run ARGS` against alpha and resolves with what a parent's wait() would see. */
function rexRun(socket: string, args: string[], opts: { input?: string | Buffer; stdinFile?: string; onStdout?: (s: string, child: ReturnType<typeof spawn>) => void } = {}): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const stdin = opts.stdinFile ? openSync(opts.stdinFile, 'r') : 'pipe';
    const child = spawn(process.execPath, [distBin('rex'), 'run', '--socket', socket, ...args], { stdio: [stdin, 'pipe', 'pipe'] });
    running.add(child);
    child.on('close', () => running.delete(child));
    const out: Buffer[] = [];
    let err = '';
    child.stdout!.on('data', (d: Buffer) => {
      out.push(d);
      opts.onStdout?.(Buffer.concat(out).toString(), child);
    });
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    if (child.stdin) {
      if (opts.input !== undefined) child.stdin.end(opts.input);
      else child.stdin.end();
    }
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err }));
  });
}

describe(`remote execution on a three-host cluster (${NETNS ? 'network namespaces' : 'loopback'})`, () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let dir: string;
  let socket: string;
  let client: RexClient;

  /** Runs through the stub in-process (fast enough for 256 exit codes) and collects stdout. */
  async function viaStub(argv: string[], host?: string, extra: { cwd?: string; env?: string[] } = {}): Promise<{ status: ExitStatus; stdout: string; stderr: string; rp: RemoteProcess }> {
    let stdout = '';
    let stderr = '';
    const rp = await RemoteProcess.start(client.conn, { path: argv[0]!, argv, ...(host ? { host } : {}), env: extra.env ?? ['PATH=/usr/bin:/bin'], ...(extra.cwd ? { cwd: extra.cwd } : {}) }, (fd, data, done) => {
      if (data) {
        if (fd === 1) stdout += data.toString();
        else stderr += data.toString();
      }
      done();
    });
    rp.end();
    return { status: await rp.exited, stdout, stderr, rp };
  }

  beforeAll(async () => {
    ({ cluster, stop, dir } = await startCluster(3));
    await cluster.waitAllReachable();
    socket = cluster.host('alpha').socket;
    client = await RexClient.connect({ socket });
  }, 60_000);
  afterEach(async () => {
    for (const c of running) {
      const closed = new Promise((r) => c.once('close', r));
      c.kill('SIGKILL');
      await closed;
    }
  });

  afterAll(async () => {
    client?.close();
    await stop?.();
  });

  it('rex run --host beta echoes, relays stdin to EOF, and ends with the remote code', async () => {
    const r = await rexRun(socket, ['--host', 'beta', '/bin/echo', 'hello', 'world']);
    expect(r).toMatchObject({ code: 0, signal: null });
    expect(r.stdout.toString()).toBe('hello world\n');
    const cat = await rexRun(socket, ['--host', 'gamma', 'cat'], { input: 'line one\nline two' });
    expect(cat.stdout.toString()).toBe('line one\nline two');
    // Output written just before exit arrives, and the code is the remote's.
    const last = await rexRun(socket, ['--host', 'beta', '--', 'sh', '-c', 'printf "last words"; printf " on stderr" >&2; exit 7']);
    expect(last).toMatchObject({ code: 7, signal: null, stderr: ' on stderr' });
    expect(last.stdout.toString()).toBe('last words');
  });

  // claim: exec.exit-status
  it('reproduces every exit code 0-255 and death by signal', async () => {
    const codes: number[] = [];
    for (let n = 0; n < 256; n++) codes.push((await viaStub(['sh', '-c', `exit ${n}`], n % 2 ? 'beta' : 'gamma')).status.code!);
    expect(codes).toEqual([...Array(256).keys()]);
    for (const sig of ['TERM', 'KILL', 'INT', 'HUP', 'SEGV', 'USR1', 'ABRT']) {
      expect((await viaStub(['sh', '-c', `kill -${sig} $$`], 'beta')).status).toEqual({ signal: sig, host: 'beta' });
    }
    // rex run itself dies of the same signal, as a local child would.
    for (const sig of ['SIGTERM', 'SIGKILL', 'SIGHUP', 'SIGUSR2'] as const) {
      const r = await rexRun(socket, ['--host', 'beta', 'sh', '-c', `kill -${sig.slice(3)} $$`]);
      expect(r).toMatchObject({ code: null, signal: sig });
    }
  });

  // claim: exec.signals
  it('forwards signals sent to rex run to the remote program', async () => {
    const script = 'trap "echo got INT" INT; trap "echo got USR1" USR1; trap "echo got TERM; exit 3" TERM; echo ready; while :; do sleep 0.05; done';
    const sent = new Set<string>();
    const r = await rexRun(socket, ['--host', 'gamma', 'sh', '-c', script], {
      onStdout: (s, child) => {
        const step = (want: string, sig: NodeJS.Signals) => {
          if (s.includes(want) && !sent.has(sig)) {
            sent.add(sig);
            child.kill(sig);
          }
        };
        step('ready', 'SIGINT');
        step('got INT', 'SIGUSR1');
        step('got USR1', 'SIGTERM');
      },
    });
    expect(r.stdout.toString()).toBe('ready\ngot INT\ngot USR1\ngot TERM\n');
    expect(r).toMatchObject({ code: 3, signal: null });
  });

  // claim: exec.signals
  it('forwards HUP, QUIT, USR2, WINCH and ALRM too', async () => {
    const sigs = ['HUP', 'QUIT', 'USR2', 'WINCH', 'ALRM'] as const;
    const script = `${sigs.map((x) => `trap "echo got ${x}" ${x};`).join(' ')} trap "exit 5" TERM; echo ready; while :; do sleep 0.05; done`;
    let next = 0;
    const r = await rexRun(socket, ['--host', 'beta', 'sh', '-c', script], {
      onStdout: (s, child) => {
        // One signal at a time, each after the previous one was seen: the shell runs one trap per wake-up.
        const want = next === 0 ? 'ready' : `got ${sigs[next - 1]}`;
        if (!s.includes(want)) return;
        child.kill(next < sigs.length ? `SIG${sigs[next]}` : 'SIGTERM');
        next++;
      },
    });
    expect(r.stdout.toString()).toBe(`ready\n${sigs.map((x) => `got ${x}\n`).join('')}`);
    expect(r).toMatchObject({ code: 5, signal: null });
  });

  // claim: exec.signals
  it('TSTP reaches the remote program and stops rex run; CONT continues rex run and reaches the program', async () => {
    const state = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '')[0];
    // dash runs pending traps in signal-number order (CONT before TSTP), so the order of the two lines is not fixed.
    const script = 'trap "echo got TSTP" TSTP; trap "echo got CONT" CONT; trap "exit 0" TERM; echo ready; while :; do sleep 0.05; done';
    let stopped = false;
    let wasStopped = false;
    let ended = false;
    const r = await rexRun(socket, ['--host', 'gamma', 'sh', '-c', script], {
      onStdout: (s, child) => {
        if (s === 'ready\n' && !stopped) {
          stopped = true;
          child.kill('SIGTSTP');
          void (async () => {
            // rex run stops itself, as a local child with a terminal would; wait until the kernel says so.
            await vi.waitFor(() => expect(state(child.pid!)).toBe('T'), { timeout: 10_000, interval: 20 });
            wasStopped = true;
            child.kill('SIGCONT');
          })();
        }
        if (s.includes('got TSTP') && s.includes('got CONT') && !ended) {
          ended = true;
          child.kill('SIGTERM');
        }
      },
    });
    expect(wasStopped).toBe(true);
    expect(r.stdout.toString().split('\n').sort()).toEqual(['', 'got CONT', 'got TSTP', 'ready']);
    expect(r).toMatchObject({ code: 0, signal: null });
  });

  // claim: exec.signal-order
  it('a TSTP relayed right before a CONT reaches a program that has TSTP blocked for a moment (a pending stop signal is dropped by a CONT)', async () => {
    // The program blocks TSTP (as a shell does while it forks), waits until one is pending, holds it 300 ms, then takes it.
    // The CONT the origin sent right after it must not be delivered meanwhile: the kernel would drop the pending TSTP.
    const src = join(dir, 'tstp-blocked.c');
    writeFileSync(
      src,
      `#define _POSIX_C_SOURCE 200809L
#include <signal.h>
#include <stdio.h>
#include <time.h>
static volatile sig_atomic_t tstp, cont;
static void on(int s) { if (s == SIGTSTP) tstp = 1; else cont = 1; }
static void nap(long ms) { struct timespec t = { ms / 1000, (ms % 1000) * 1000000L }; nanosleep(&t, 0); }
int main(void) {
  struct sigaction sa = { 0 };
  sa.sa_handler = on;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTSTP, &sa, 0);
  sigaction(SIGCONT, &sa, 0);
  sigset_t m, p;
  sigemptyset(&m);
  sigaddset(&m, SIGTSTP);
  sigprocmask(SIG_BLOCK, &m, 0);
  puts("ready");
  fflush(stdout);
  for (int i = 0; i < 5000; i++) { sigpending(&p); if (sigismember(&p, SIGTSTP)) break; nap(1); }
  nap(300);
  sigprocmask(SIG_UNBLOCK, &m, 0);
  for (int i = 0; i < 5000 && !cont; i++) nap(1);
  printf("tstp=%d cont=%d\\n", tstp, cont);
  return 0;
}
`,
    );
    const bin = join(dir, 'tstp-blocked');
    execFileSync('cc', ['-o', bin, src]);
    let stdout = '';
    let ready!: () => void;
    const isReady = new Promise<void>((r) => (ready = r));
    const rp = await RemoteProcess.start(
      client.conn,
      { path: bin, argv: [bin], host: 'gamma', env: ['PATH=/usr/bin:/bin'], sha256: createHash('sha256').update(readFileSync(bin)).digest() },
      (fd, data, done) => {
        if (data && fd === 1) stdout += data.toString();
        if (stdout.startsWith('ready\n')) ready();
        done();
      },
    );
    rp.end();
    await isReady;
    // Back to back, as Ctrl-Z then fg would arrive from a slow link: one read on the executor's side.
    rp.signal('TSTP');
    rp.signal('CONT');
    expect(await rp.exited).toMatchObject({ code: 0 });
    expect(stdout).toBe('ready\ntstp=1 cont=1\n');
  });

  // claim: exec.exit-status
  it('a missing program is 127 and a file that is not executable is 126, each with one line naming it', async () => {
    const missing = await rexRun(socket, ['--host', 'beta', '/no/such/program']);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toMatch(/^rex run: .*\/no\/such\/program: no such program on beta\n$/);
    const file = join(dir, 'not-executable.sh');
    writeFileSync(file, '#!/bin/sh\necho hi\n');
    chmodSync(file, 0o644);
    const denied = await rexRun(socket, ['--host', 'gamma', file]);
    expect(denied.code).toBe(126);
    expect(denied.stderr).toMatch(/not-executable\.sh on gamma: permission denied/);
    const unknown = await rexRun(socket, ['--host', 'omega', '/bin/true']);
    expect(unknown.code).toBe(255);
    expect(unknown.stderr).toMatch(/no host "omega" in this cluster/);
  });

  it('runs in the same directory when it exists there, else in the temp directory said once on stderr; the deny list is not passed', async () => {
    const here = await viaStub(['pwd'], 'beta', { cwd: dir });
    expect(here.stdout).toBe(`${dir}\n`);
    const gone = await viaStub(['sh', '-c', 'pwd; echo "FOO=$FOO DISPLAY=${DISPLAY:-unset}"'], 'beta', { cwd: '/nonexistent/dir', env: ['PATH=/usr/bin:/bin', 'FOO=bar', 'DISPLAY=:0'] });
    expect(gone.stderr).toBe(`rex: beta: /nonexistent/dir does not exist here; running in ${gone.rp.cwd}\n`);
    expect(gone.stdout).toBe(`${gone.rp.cwd}\nFOO=bar DISPLAY=unset\n`);
  });

  // claim: exec.env-deny
  it('the executor drops every variable of the deny list (docs/EXEC.md), LD_PRELOAD and LD_AUDIT included, whatever the client sends', async () => {
    // Sent straight in the EXEC, as a client that skips the library's own filtering would.
    const r = await viaStub(['env'], 'beta', { env: ['PATH=/usr/bin:/bin', 'KEPT=yes', ...ENV_DENY.map((n) => `${n}=from-origin`)] });
    expect(r.stdout).toMatch(/^KEPT=yes$/m);
    for (const n of ENV_DENY) expect(r.stdout, n).not.toMatch(new RegExp(`^${n}=from-origin$`, 'm'));
    expect(r.stderr).not.toMatch(/preload|audit/i);
  });

  it('relays 100 MB of stdout and of stdin with matching checksums', async () => {
    const file = join(dir, 'big.bin');
    const chunk = randomBytes(1 << 20);
    const parts: Buffer[] = [];
    for (let i = 0; i < 100; i++) parts.push(Buffer.from(chunk.map((b) => b ^ i)));
    const data = Buffer.concat(parts);
    writeFileSync(file, data);
    const want = createHash('sha256').update(data).digest('hex');
    const out = await rexRun(socket, ['--host', 'beta', 'cat', file]);
    expect(out.code).toBe(0);
    expect(out.stdout.length).toBe(data.length);
    expect(createHash('sha256').update(out.stdout).digest('hex')).toBe(want);
    const sum = await rexRun(socket, ['--host', 'gamma', 'sha256sum'], { stdinFile: file });
    expect(sum.code).toBe(0);
    expect(sum.stdout.toString()).toBe(`${want}  -\n`);
  }, 120_000);

  // claim: exec.output-order
  it('keeps the order of stdout and stderr lines written one write each', async () => {
    // Each line is one write(2); the executor sends in read order, rex run writes in arrival order.
    const script = 'for i in $(seq 1 200); do echo "out $i"; echo "err $i" >&2; done';
    const r = await run('sh', ['-c', `${process.execPath} ${distBin('rex')} run --socket ${socket} --host beta sh -c '${script}' 2>&1`]);
    const lines = r.stdout.trim().split('\n');
    expect(lines.length).toBe(400);
    // Within each stream the order is exact; no line is torn.
    expect(lines.filter((l) => l.startsWith('out'))).toEqual([...Array(200).keys()].map((i) => `out ${i + 1}`));
    expect(lines.filter((l) => l.startsWith('err'))).toEqual([...Array(200).keys()].map((i) => `err ${i + 1}`));
  });

  // claim: exec.pty
  it('gives the program a pseudo-terminal of the asked size, and window size changes follow', async () => {
    let out = '';
    let sawReady!: () => void;
    const ready = new Promise<void>((r) => (sawReady = r));
    // The output may arrive before start() resolves: the resize waits for both (rp is not there before).
    const rp = await RemoteProcess.start(
      client.conn,
      { path: '/bin/sh', argv: ['sh', '-c', 'tty; stty size; trap "stty size; exit 4" WINCH; echo ready; while :; do sleep 0.05; done'], host: 'beta', env: ['PATH=/usr/bin:/bin'], pty: { rows: 33, cols: 99 } },
      (_fd, d, done) => {
        if (d) out += d.toString();
        if (out.includes('ready')) sawReady();
        done();
      },
    );
    await ready;
    rp.winsize(40, 120);
    const status = await rp.exited;
    expect(status.code).toBe(4);
    // The terminal's line discipline turns \n into \r\n, as on any terminal.
    expect(out).toMatch(/^\/dev\/pts\/\d+\r\n33 99\r\nready\r\n40 120\r\n$/);
  });

  it.skipIf(!haveScript)('under a real terminal (script(1)) rex run gives the program one of the local size, follows a resize, and restores the local terminal', async () => {
    const ready = join(dir, 'tty-ready');
    const test = join(dir, 'tty.sh');
    // rex run in the background with the terminal as stdin, so that this shell can resize the terminal once the program runs.
    writeFileSync(test, terminalResizeScript(`${process.execPath} ${distBin('rex')} run --socket ${socket} --host beta`, ready).join('\n') + '\n');
    const { stdout } = await underScript(`sh ${test}`);
    // The remote terminal's \r\n passes through the local one, which adds its own \r (libuv's raw mode keeps ONLCR).
    expect(stdout).toMatch(/\/dev\/pts\/\d+\r\r?\n33 99\r\r?\n40 120\r\r?\nstatus 4\r\nicanon\r\n$/);
  });

  it('refuses bad EXEC requests on the wire with errors that name the attribute, and nothing runs', async () => {
    const raw = await RawPeer.open({ path: socket });
    raw.hello();
    await raw.waitFrames(1);
    raw.write(encodeFrame({ type: 0x40, flags: 0, stream: 1, attrs: [{ tag: 2, kind: 'string', value: 'echo' }] }));
    raw.send({ type: 'EXEC', stream: 3, path: '/bin/echo', argv: ['echo'], window: 0 });
    raw.send({ type: 'DATA', stream: 5, fd: 0, data: Buffer.from('stray') });
    const got = (await raw.waitFrames(4)).slice(1);
    const byStream = new Map(got.map((m) => [m.stream, m]));
    expect(byStream.get(1)).toMatchObject({ type: 'ERROR', code: 12, message: expect.stringMatching(/EXEC: required attribute path \(tag 1\) missing/) });
    expect(byStream.get(3)).toMatchObject({ type: 'STARTED' }); // a zero window is legal: output waits for credit
    expect(byStream.get(5)).toMatchObject({ type: 'ERROR', code: 4, message: expect.stringMatching(/DATA is not a request rexd serves/) });
    // A wrongly typed argv entry breaks the frame itself: fatal, and the connection closes.
    raw.write(encodeFrame({ type: 0x40, flags: 0, stream: 7, attrs: [{ tag: 1, kind: 'string', value: '/bin/echo' }, { tag: 2, kind: 'uint', value: 1n }] }));
    await raw.closed;
    const last = (await raw.waitFrames(5)).at(-1);
    expect(last).toMatchObject({ type: 'ERROR', code: 1, message: expect.stringMatching(/attribute argv \(tag 2\) must be string, got uint/) });
  });

  // claim: placement.spread
  it('places work without --host on the least-loaded hosts: three jobs at once land on three hosts', async () => {
    // Wait until alpha holds figures from every peer taken after this point, with the jobs of the tests
    // before all ended: placement then starts from a cluster where nothing runs.
    const since = Date.now();
    await vi.waitFor(
      async () => {
        const now = Date.now();
        for (const h of await client.hosts()) {
          if (!h.reachable || h.jobs !== 0 || (!h.self && now - (h.ageMs ?? Infinity) < since)) throw new Error(`${h.name}: jobs ${h.jobs}, figure ${h.ageMs} ms old`);
        }
      },
      { timeout: 20_000, interval: 50 },
    );
    const rps = await Promise.all(
      [0, 1, 2].map(async () => {
        const rp = await RemoteProcess.start(client.conn, { path: 'sleep', argv: ['sleep', '2'], env: ['PATH=/usr/bin:/bin'] }, (_fd, _d, done) => done());
        rp.end();
        return rp;
      }),
    );
    expect(new Set(rps.map((r) => r.host))).toEqual(new Set(['alpha', 'beta', 'gamma']));
    for (const rp of rps) expect((await rp.exited).code).toBe(0);
    const r = await rexRun(socket, ['hostname']);
    expect(r.code).toBe(0);
  });

  // claim: exec.pipelines
  it('stands for the program in shell pipelines and scripts', async () => {
    const rex = `${process.execPath} ${distBin('rex')} run --socket ${socket}`;
    const sh = (script: string) => run('/bin/sh', ['-c', script], { encoding: 'utf8' }).then(
      (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
    );
    // Two remote stages between local ones.
    expect(await sh(`printf 'pear\\napple\\nfig\\n' | ${rex} --host beta sort | ${rex} --host gamma tr a-z A-Z | wc -l`)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^\s*3\n$/) });
    expect((await sh(`printf 'pear\\napple\\n' | ${rex} --host beta sort | ${rex} --host gamma tr a-z A-Z`)).stdout).toBe('APPLE\nPEAR\n');
    // Command substitution, `if`, and set -e see the remote status as they would the local one.
    expect((await sh(`x=$(${rex} --host beta echo hi); echo "[$x]"`)).stdout).toBe('[hi]\n');
    expect((await sh(`if ${rex} --host beta test -d /; then echo dir; fi; if ! ${rex} --host beta test -d /nonexistent; then echo none; fi`)).stdout).toBe('dir\nnone\n');
    expect(await sh(`set -e; ${rex} --host beta false; echo not reached`)).toMatchObject({ code: 1, stdout: '' });
    // Closed stdin and /dev/null: the remote sees EOF at once, as a local cat would.
    expect(await sh(`${rex} --host beta cat <&-; echo "closed $?"`)).toMatchObject({ code: 0, stdout: 'closed 0\n' });
    expect(await sh(`${rex} --host beta wc -c </dev/null`)).toMatchObject({ code: 0, stdout: expect.stringMatching(/^0\n$/) });
  });

  it('a reader that goes away ends the writer with SIGPIPE, as in `yes | head -1`', async () => {
    const rex = `${process.execPath} ${distBin('rex')} run --socket ${socket}`;
    // Without SIGPIPE for the remote program this pipeline would never end.
    const { stdout } = await run('/bin/sh', ['-c', `${rex} --host beta yes | head -n 1`], { encoding: 'utf8' });
    expect(stdout).toBe('y\n');
    // And rex run itself dies of SIGPIPE, as the remote program did, so the shell's status is 128+13.
    const r = await rexRun(socket, ['--host', 'gamma', 'yes'], {
      onStdout: (_s, child) => child.stdout!.destroy(),
    });
    expect([r.code, r.signal]).toEqual([null, 'SIGPIPE']);
  });

  it('rex run loads only what running needs: no config loader, keys, daemon, cluster or log database', async () => {
    // A module resolve hook records every module the CLI loads (ESM and CommonJS imported from ESM).
    const trace = join(dir, 'modules.txt');
    const hook = join(dir, 'trace-hook.mjs');
    writeFileSync(
      hook,
      `import { register } from 'node:module';\n` +
        `register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(
          `import { appendFileSync } from 'node:fs';\nexport async function resolve(s, c, next) { const r = await next(s, c); appendFileSync(${JSON.stringify(trace)}, r.url + '\\n'); return r; }`,
        )}));\n`,
    );
    const r = await run(process.execPath, ['--import', hook, distBin('rex'), 'run', '--socket', socket, '--host', 'beta', 'echo', 'ok'], { encoding: 'utf8' });
    expect(r.stdout).toBe('ok\n');
    // The program is a bundle (dist/bin/): its chunks' source maps name the modules in them.
    const loaded = modulesOf(readFileSync(trace, 'utf8').split('\n').filter((u) => u.startsWith('file:')));
    expect(loaded).toContain('src/cli/commands/run.ts');
    const heavy = loaded.filter((u) => /^src\/(config|keys|daemon|cluster|log|gen)\/|^src\/cli\/commands\/(?!run\.ts)|^node_modules\/(ajv|@peculiar|@photostructure\/sqlite|handlebars|pino|libxml2-wasm)\//.test(u));
    expect(heavy).toEqual([]);
  });

  // claim: exec.exit-status
  it('when the remote rexd dies mid-run, rex run says so in one line and exits 255', async () => {
    const r = rexRun(socket, ['--host', 'gamma', 'sh', '-c', 'echo started; sleep 30'], {
      onStdout: (s) => {
        if (s === 'started\n') cluster.kill('gamma', 'SIGKILL');
      },
    });
    const res = await r;
    expect(res.code).toBe(255);
    expect(res.stdout.toString()).toBe('started\n');
    expect(res.stderr).toMatch(/^rex run: .*lost gamma while \S*sh ran there.*\n$/);
  }, 30_000);
});

describe('a rexd restarted after a crash ends what its predecessor left running', () => {
  it('kills the program of an EXEC whose rexd was SIGKILLed, when that rexd starts again', async () => {
    const { cluster, stop } = await startCluster(2);
    try {
      await cluster.waitAllReachable();
      const client = await RexClient.connect({ socket: cluster.host('alpha').socket });
      const rp = await RemoteProcess.start(client.conn, { path: 'sleep', argv: ['sleep', '60'], host: 'beta', env: ['PATH=/usr/bin:/bin'] }, (_f, _d, done) => done());
      const failed = rp.exited.then(
        () => 'exited',
        (e: Error) => e.message,
      );
      expect(alive(rp.pid)).toBe(true);
      cluster.kill('beta', 'SIGKILL');
      await cluster.waitExit('beta');
      expect(await failed).toMatch(/lost beta while .*sleep ran there/);
      expect(alive(rp.pid)).toBe(true); // orphaned: nothing could end it yet
      await cluster.startHost(cluster.host('beta'));
      for (let i = 0; i < 100 && alive(rp.pid); i++) await new Promise((r) => setTimeout(r, 50));
      expect(alive(rp.pid)).toBe(false);
      client.close();
    } finally {
      await stop();
    }
  }, 60_000);
});
