/**
 * The native `rex` front end (native/frontend/rex.c, rex(1) NATIVE FRONT END) against the Node CLI
 * it stands in for: the same `rex run` cases through both, on a real cluster, with identical exit
 * statuses, stdout, stderr and --json records (the remote pid aside); what it hands to the Node CLI
 * (other commands, usage errors, --help, --version, a rex.rc it does not fully understand); and
 * that `rex run` did not start Node at all.
 */
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, chmodSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { KEYS_BY_NAME } from '../../src/config/keys.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { NETNS, startCluster } from '../helpers/cluster.js';
import { haveScript, terminalResizeScript, underScript } from '../helpers/script.js';

const NATIVE = join(packageRoot(), 'native', 'build', 'bin', 'rex');
type Front = 'native' | 'node';
interface Result {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs `rex ARGS` through one front end; resolves with what a parent's wait() sees. */
function rex(front: Front, args: string[], opts: { env: NodeJS.ProcessEnv; input?: string; cwd?: string; onStdout?: (s: string, pid: number) => void }): Promise<Result> {
  return new Promise((resolve, reject) => {
    const child = front === 'native' ? spawn(NATIVE, args, { env: opts.env, cwd: opts.cwd }) : spawn(process.execPath, [distBin('rex'), ...args], { env: opts.env, cwd: opts.cwd });
    const out: Buffer[] = [];
    let err = '';
    child.on('error', reject);
    child.stdout.on('data', (d: Buffer) => {
      out.push(d);
      opts.onStdout?.(Buffer.concat(out).toString(), child.pid!);
    });
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    child.stdin.on('error', () => {}); // a program that never reads its stdin
    child.stdin.end(opts.input ?? '');
    child.on('close', (code, signal) => resolve({ code, signal, stdout: Buffer.concat(out), stderr: err }));
  });
}

/** The parts both front ends must agree on: --json records compared without the remote pid (a new process each run). */
function comparable(r: Result): { code: number | null; signal: string | null; stdout: string; stderr: string } {
  const stdout = r.stdout.toString().replace(/"pid":\d+/g, '"pid":PID');
  return { code: r.code, signal: r.signal, stdout, stderr: r.stderr };
}

describe(`the native rex front end beside the Node CLI (${NETNS ? 'network namespaces' : 'loopback'})`, () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let dir: string;
  let socket: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(async () => {
    ({ cluster, stop, dir } = await startCluster(2));
    await cluster.waitAllReachable();
    socket = cluster.host('alpha').socket;
    mkdirSync(join(dir, 'home'), { recursive: true });
    env = { PATH: process.env.PATH, HOME: join(dir, 'home'), LANG: 'C', REX_SOCKET: socket, REX_ROOT: join(dir, 'noroot') };
  }, 60_000);
  afterAll(async () => {
    await stop?.();
  });

  async function both(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string; cwd?: string } = {}): Promise<[Result, Result]> {
    const o = { env: opts.env ?? env, cwd: opts.cwd ?? dir, ...(opts.input !== undefined ? { input: opts.input } : {}) };
    return [await rex('native', args, o), await rex('node', args, o)];
  }

  it.each([
    ['exit 0', ['run', '--host', 'beta', '--', 'sh', '-c', 'echo out; echo err >&2; exit 0']],
    ['exit 1, --json', ['run', '--json', '--host', 'beta', 'sh', '-c', 'exit 1']],
    ['exit 2', ['run', '-T', '--host', 'alpha', 'sh', '-c', 'printf partial; exit 2']],
    ['exit 255, --json', ['run', '--host=beta', '--json', '--no-pty', 'sh', '-c', 'exit 255']],
    ['death by SIGTERM, --json', ['run', '--json', '--host', 'beta', 'sh', '-c', 'kill -TERM $$']],
    ['death by SIGKILL', ['run', '--host', 'beta', 'sh', '-c', 'kill -KILL $$']],
    ['death by SIGUSR2, --json', ['run', '--json', '--host', 'alpha', 'sh', '-c', 'kill -USR2 $$']],
    ['unknown host, --json', ['run', '--json', '--host', 'nosuch', '/bin/true']],
    ['missing program, --json', ['run', '--json', '--host', 'beta', '/no/such/program']],
    ['missing program in PATH', ['run', 'no-such-program-rex-frontend']],
    ['not executable, --json', ['run', '--json', '--host', 'beta', '/etc/passwd']],
    ['usage error: no program', ['run', '--json']],
    ['usage error: unknown option', ['run', '--bogus', '/bin/true']],
    ['delegated subcommand, usage error', ['call']],
    ['delegated: run --help', ['run', '--help']],
    ['delegated: --help', ['--help']],
    ['delegated: --version', ['--version']],
    ['delegated: -c with a missing file', ['run', '-c', '/no/such/rex.rc', '/bin/true']],
  ])('%s: same status, stdout, stderr and record', async (_name, args) => {
    const [n, j] = await both(args);
    expect(comparable(n)).toEqual(comparable(j));
  });

  // claim: frontend.parity
  it('exit statuses 0, 1, 2 and 255 and deaths by signal are the program\'s, through both', async () => {
    for (const code of [0, 1, 2, 255]) {
      const [n, j] = await both(['run', '--host', 'beta', 'sh', '-c', `exit ${code}`]);
      expect([n.code, j.code]).toEqual([code, code]);
    }
    const [n, j] = await both(['run', '--json', '--host', 'beta', 'sh', '-c', 'kill -TERM $$']);
    expect([n.signal, j.signal]).toEqual(['SIGTERM', 'SIGTERM']);
    expect(JSON.parse(n.stdout.toString())).toMatchObject({ host: 'beta', code: null, signal: 'TERM', status: 143 });
  });

  it('relays stdin to EOF and a large stdout intact, the same through both', async () => {
    const input = 'line one\nline two\n'.repeat(10_000);
    const [n, j] = await both(['run', '--host', 'beta', 'cat'], { input });
    expect([n.code, n.stdout.toString() === input]).toEqual([0, true]);
    expect(comparable(n)).toEqual(comparable(j));
    // About 6.9 MB, several windows of credit: the checksum of what arrived is the local one's.
    const want = createHash('sha256').update(spawnSync('seq', ['1', '1000000'], { maxBuffer: 64 << 20 }).stdout).digest('hex');
    const [bn, bj] = await both(['run', '--host', 'beta', 'seq', '1', '1000000']);
    expect([bn.code, createHash('sha256').update(bn.stdout).digest('hex')]).toEqual([0, want]);
    expect([bj.code, createHash('sha256').update(bj.stdout).digest('hex')]).toEqual([0, want]);
  });

  it('REX_HOST and a program only the origin has (sent by hash, found by path as the Node CLI finds it): the same through both', async () => {
    const [n, j] = await both(['run', '--json', 'sh', '-c', 'exit 4'], { env: { ...env, REX_HOST: 'beta' } });
    expect(comparable(n)).toEqual(comparable(j));
    expect(JSON.parse(n.stdout.toString())).toMatchObject({ host: 'beta', code: 4, status: 4 });
    const sub = join(dir, 'progs');
    mkdirSync(join(sub, 'bin'), { recursive: true });
    writeFileSync(join(sub, 'bin', 'only-here'), '#!/bin/sh\necho "only-here $# $1"\n');
    chmodSync(join(sub, 'bin', 'only-here'), 0o755);
    for (const args of [['./bin/../bin/only-here', 'a b'], ['only-here', 'x']]) {
      const [pn, pj] = await both(['run', '--host', 'beta', ...args], { cwd: sub, env: { ...env, PATH: `bin:${env.PATH}` } });
      expect([pn.code, pn.stdout.toString(), pn.stderr]).toEqual([0, `only-here 1 ${args[1]}\n`, '']);
      expect(comparable(pn)).toEqual(comparable(pj));
    }
  });

  it.skipIf(!haveScript)('on a terminal: a pty of the same size, resized with the local one, raw mode undone; none with -T or stdout elsewhere', async () => {
    const shapes: string[] = [];
    for (const [i, cmd] of [`"${NATIVE}"`, `"${process.execPath}" "${distBin('rex')}"`].entries()) {
      const ready = join(dir, `tty-ready-${i}`);
      const script = join(dir, `tty-${i}.sh`);
      writeFileSync(script, terminalResizeScript(`${cmd} run --socket ${socket} --host beta`, ready).join('\n') + '\n');
      const { stdout } = await underScript(`sh ${script}`, { env });
      expect(stdout).toMatch(/\/dev\/pts\/\d+\r\r?\n33 99\r\r?\n40 120\r\r?\nstatus 4\r\nicanon\r\n$/);
      const none = await underScript(`${cmd} run -T --host beta sh -c 'tty || true'; ${cmd} run --host beta sh -c 'tty || true' > ${dir}/out-${i}; cat ${dir}/out-${i}`, { env });
      expect(none.stdout).toBe('not a tty\r\nnot a tty\r\n');
      shapes.push(stdout.replace(/\/dev\/pts\/\d+/, 'PTS'));
    }
    expect(shapes[0]).toBe(shapes[1]);
  });

  it('no rexd: the Node CLI\'s message and status (exit 1), through both', async () => {
    const [n, j] = await both(['run', '--json', '/bin/true'], { env: { ...env, REX_SOCKET: join(dir, 'no-rexd.sock') } });
    expect(comparable(n)).toEqual(comparable(j));
    expect(n.code).toBe(1);
    expect(n.stderr).toContain(`no rexd is running for this user (no socket at ${join(dir, 'no-rexd.sock')})`);
  });

  it('a reader that goes away: both end with SIGPIPE\'s 141 in the pipeline, as yes | head would', async () => {
    for (const front of ['native', 'node'] as const) {
      const cmd = front === 'native' ? `"${NATIVE}"` : `"${process.execPath}" "${distBin('rex')}"`;
      const r = spawnSync('bash', ['-c', `${cmd} run --host beta yes | head -2; echo "status \${PIPESTATUS[0]}"`], { env, encoding: 'utf8', timeout: 30_000 });
      expect([front, r.stdout]).toEqual([front, 'y\ny\nstatus 141\n']);
    }
  });

  it('finds the socket the Node CLI would: rex.rc socket, state-directory, the ~/.rex default', async () => {
    const { REX_SOCKET: _, ...noSocket } = env;
    const cwd = join(dir, 'rc-socket');
    mkdirSync(cwd, { recursive: true });
    writeFileSync(join(cwd, 'rex.rc'), `# the socket of alpha\nhost-name : alpha\nsocket : ${socket}\n`);
    const [n, j] = await both(['run', '--json', '--host', 'beta', 'echo', 'from rex.rc'], { env: noSocket, cwd });
    expect(comparable(n)).toEqual(comparable(j));
    expect(n.stdout.toString()).toMatch(/^from rex.rc\n\{"host":"beta"/);
    // state-directory: STATE/run/rexd.sock (a symbolic link to alpha's socket here).
    const state = join(dir, 'st');
    mkdirSync(join(state, 'run'), { recursive: true });
    symlinkSync(socket, join(state, 'run', 'rexd.sock'));
    writeFileSync(join(cwd, 'rex.rc'), `state-directory: ${state}//\n`);
    const [sn, sj] = await both(['run', '--host', 'beta', 'echo', 'from state-directory'], { env: noSocket, cwd });
    expect([sn.code, sn.stdout.toString(), sn.stderr]).toEqual([0, 'from state-directory\n', '']);
    expect(comparable(sn)).toEqual(comparable(sj));
    // No rex.rc anywhere: ~/.rex/run/rexd.sock.
    mkdirSync(join(env.HOME!, '.rex', 'run'), { recursive: true });
    symlinkSync(socket, join(env.HOME!, '.rex', 'run', 'rexd.sock'));
    const [hn, hj] = await both(['run', '--host', 'beta', 'echo', 'from HOME'], { env: noSocket, cwd: join(dir, 'home') });
    expect([hn.code, hn.stdout.toString()]).toEqual([0, 'from HOME\n']);
    expect(comparable(hn)).toEqual(comparable(hj));
  });

  /** A stand-in node that says what it was asked to run: shows when the front end delegates. */
  function fakeNode(): string {
    const p = join(dir, 'fake-node');
    writeFileSync(p, '#!/bin/sh\necho "delegated: $*"\nexit 42\n');
    chmodSync(p, 0o755);
    return p;
  }

  it('delegates to $REX_NODE with the same argv: other commands, -c, and a rex.rc it does not fully understand', async () => {
    const node = fakeNode();
    const cli = realpathSync(distBin('rex'));
    const cases: [string[], string | undefined][] = [
      [['hosts', '--json'], undefined],
      [['entries', 'x'], undefined],
      [['call', '-c', 'rc', 'x.f'], undefined],
      [['run', '-c', 'rc', 'ls'], undefined],
      [['run', '--host', 'beta', 'echo', 'x'], '#include "other.rc"\n'],
      [['run', '--host', 'beta', 'echo', 'x'], 'socket: ${HOME}/s.sock\n'],
      [['run', '--host', 'beta', 'echo', 'x'], 'no-such-key: 1\n'],
    ];
    const { REX_SOCKET: _, ...noSocket } = env;
    for (const [i, [args, rc]] of cases.entries()) {
      const cwd = join(dir, `deleg-${i}`);
      mkdirSync(cwd, { recursive: true });
      if (rc !== undefined) writeFileSync(join(cwd, 'rex.rc'), rc);
      const r = await rex('native', args, { env: { ...(rc !== undefined ? noSocket : env), REX_NODE: node }, cwd });
      expect([r.code, realpathOf(r.stdout.toString())]).toEqual([42, `delegated: ${cli} ${args.join(' ')}\n`]);
    }
    // A rex.rc it does understand: no Node.
    const cwd = join(dir, 'deleg-ok');
    mkdirSync(cwd, { recursive: true });
    writeFileSync(join(cwd, 'rex.rc'), `// fine\nservers: alpha@127.0.0.1:1\nsocket: ${socket}\n`);
    const r = await rex('native', ['run', '--host', 'beta', 'echo', 'native'], { env: { ...noSocket, REX_NODE: node }, cwd });
    expect([r.code, r.stdout.toString(), r.stderr]).toEqual([0, 'native\n', '']);
  });

  /** The CLI's path as the front end names it (through ../../../ from its own directory), resolved. */
  function realpathOf(line: string): string {
    return line.replace(/^delegated: (\S+)/, (_m, p: string) => `delegated: ${realpathSync(p)}`);
  }

  // claim: frontend.no-node
  it('rex run starts no Node: the process is the native binary, with no child, while its job runs', async () => {
    let seen: { exe: string; children: string; cmdline: string } | undefined;
    const r = await rex('native', ['run', '--host', 'beta', 'sh', '-c', 'echo ready; exec sleep 60'], {
      env,
      onStdout: (s, pid) => {
        if (seen || !s.includes('ready')) return;
        seen = { exe: readlinkSync(`/proc/${pid}/exe`), children: readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim(), cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8') };
        process.kill(pid, 'SIGTERM'); // forwarded: the remote sleep dies of it, and so does rex run
      },
    });
    expect(seen).toEqual({ exe: realpathSync(NATIVE), children: '', cmdline: `${NATIVE}\0run\0--host\0beta\0sh\0-c\0echo ready; exec sleep 60\0` });
    expect([r.code, r.signal]).toEqual([null, 'SIGTERM']);
  });

  it("bin.rex, the launcher of the native front end, works through a link as npm makes one: it runs a job and hands --version to the Node CLI", () => {
    const root = packageRoot();
    const pkg = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')) as { bin: Record<string, string>; version: string };
    // bin/rex, not native/build/bin/rex: npm links bins before the install script builds that (issue 18).
    expect(pkg.bin.rex).toBe('bin/rex');
    // node_modules/.bin/rex is a symbolic link to the bin file: the launcher and the front end find what they run
    // from their own location, not from the link's. (Not through npx: in a clone npx installs the project into its
    // cache and runs its build first, tens of seconds.)
    const bin = mkdtempSync(join(tmpdir(), 'rex-bin-link-'));
    symlinkSync(join(root, pkg.bin.rex), join(bin, 'rex'));
    try {
      const v = spawnSync(join(bin, 'rex'), ['--version'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
      expect([v.status, v.stdout, v.stderr]).toEqual([0, `${pkg.version}\n`, '']);
      const r = spawnSync(join(bin, 'rex'), ['run', '--host', 'alpha', 'sh', '-c', 'echo through the link'], { env: { ...process.env, ...env }, encoding: 'utf8', timeout: 60_000 });
      expect([r.status, r.stdout, r.stderr]).toEqual([0, 'through the link\n', '']);
    } finally {
      rmSync(bin, { recursive: true, force: true });
    }
  });

  it("the scanner's rex.rc keys are src/config/keys.ts's", () => {
    const src = readFileSync(join(packageRoot(), 'native', 'frontend', 'frontend.c'), 'utf8');
    const block = /fe_rc_keys: begin[^\n]*\n([\s\S]*?)\/\* fe_rc_keys: end/.exec(src)![1]!;
    expect([...block.matchAll(/"([^"]+)"/g)].map((m) => m[1])).toEqual([...KEYS_BY_NAME.keys()]);
  });
});

/** A program only the origin has (REX_EXEC_TEST_HIDE hides it from the executors): the transfer and its bar. */
describe('the native rex front end during a transfer', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const hidden = mkdtempSync(join(tmpdir(), 'rex-frontend-only-on-origin-'));
  const temps = mkdtempSync(join(tmpdir(), 'rex-frontend-temps-'));

  /** A compiled program with random megabytes appended (ignored when it runs). */
  const bigProgram = (name: string, mb: number): string => {
    const src = join(hidden, `${name}.c`);
    writeFileSync(src, '#include <stdio.h>\nint main(void) { puts("big program ran"); return 0; }\n');
    const p = join(hidden, name);
    spawnSync('cc', ['-O1', '-o', p, src]);
    for (let i = 0; i < mb; i++) appendFileSync(p, randomBytes(1 << 20));
    return p;
  };

  beforeAll(async () => {
    process.env.REX_EXEC_TEST_HIDE = hidden;
    ({ cluster, stop } = await startCluster(2, { rc: [`rex-temp-directory : ${temps}/\${HOST}`] }).finally(() => delete process.env.REX_EXEC_TEST_HIDE));
    await cluster.waitAllReachable();
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    rmSync(hidden, { recursive: true, force: true });
    rmSync(temps, { recursive: true, force: true });
  });

  it.skipIf(!haveScript)("draws the Node CLI's bar on a terminal, erased before the program's output; nothing when stderr is not one", async () => {
    const env = { PATH: process.env.PATH, HOME: hidden, LANG: 'C', REX_SOCKET: cluster.host('alpha').socket, REX_PROGRESS_AFTER_MS: '0' };
    for (const [i, cmd] of [`'${NATIVE}'`, `'${process.execPath}' '${distBin('rex')}'`].entries()) {
      const prog = bigProgram(`big-tty-${i}`, 8);
      const r = await underScript(`${cmd} run --host beta -T '${prog}'`, { flush: true, env });
      expect(r.stdout).toMatch(new RegExp(`rex: sending big-tty-${i} \\[[#.]+\\] +\\d+% [\\d.]+/8\\.4 MB`));
      expect(r.stdout).toMatch(new RegExp(`rex: sending big-tty-${i} \\[#+\\] 100% 8\\.4/8\\.4 MB`));
      expect(r.stdout).toMatch(/\r\x1b\[Kbig program ran\r?\n/);
      const piped = await rex(i === 0 ? 'native' : 'node', ['run', '--host', 'beta', bigProgram(`big-pipe-${i}`, 8)], { env });
      expect([piped.code, piped.stdout.toString(), piped.stderr]).toEqual([0, 'big program ran\n', '']);
    }
  });

  // Last in this cluster: it kills alpha's rexd (and starts it again).
  it('rexd lost while the program runs: the same message, record and status 255 through both', async () => {
    const alpha = cluster.host('alpha');
    const env = { PATH: process.env.PATH, HOME: hidden, LANG: 'C', REX_SOCKET: alpha.socket };
    const results: ReturnType<typeof comparable>[] = [];
    for (const front of ['native', 'node'] as const) {
      let killed = false;
      const r = await rex(front, ['run', '--json', '--host', 'beta', 'sh', '-c', 'echo started; exec sleep 30'], {
        env,
        onStdout: (s) => {
          if (killed || !s.includes('started')) return;
          killed = true;
          cluster.kill('alpha', 'SIGKILL');
        },
      });
      results.push(comparable(r));
      await cluster.startHost(alpha);
      await cluster.waitAllReachable();
    }
    // Closed (end of file) or reset (bytes were in flight when rexd died): a race, for the Node CLI as for the native one.
    for (const how of ['closed', 'failed: read ECONNRESET']) {
      const shape = { code: 255, signal: null, stdout: `started\n{"host":"beta","pid":PID,"code":null,"signal":null,"status":255,"error":"connection to rexd at ${alpha.socket} ${how}"}\n`, stderr: `rex run: connection to rexd at ${alpha.socket} ${how}\n` };
      for (const r of results) if (r.stderr.includes(how)) expect(r).toEqual(shape);
    }
    expect(results.every((r) => /(closed|failed: read ECONNRESET)\n$/.test(r.stderr))).toBe(true);
  }, 60_000);
});
