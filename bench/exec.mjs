#!/usr/bin/env node
// Benchmark: remote execution (docs/EXEC.md) against its peers, in the same run.
//   1. starting /bin/true on another host: rexecve()'s C stub, the native `rex run`
//      (native/frontend/rex.c, what the `rex` command runs), `rex run` through the Node
//      CLI (its start-up is most of it), the in-process stub (spawn()'s path),
//      against a local posix_spawn and against ssh to a private sshd on loopback
//      (full handshake, and ControlMaster multiplexing);
//   2. 1,000 short jobs placed over a three-host cluster: jobs/s and how evenly
//      they landed;
//   3. 100 MB of stdout (BENCH_MB): rexecve()'s stub against `ssh cat`.
// The ssh peer needs sshd (openssh-server): when it is missing, the setup tries
// `apt-get install openssh-server` as root; otherwise that peer is skipped with a note.
// It is measured as users run ssh: as root the bench logs into a dedicated account
// (rexbench-ssh) whose shell is /bin/sh and whose home has no rc files, with no
// motd or last-log lines; not as root, into this user with `exec` before the
// command, and the output says that the user's shell still starts (bash sourcing
// ~/.bashrc for sshd, for instance, is then part of the ssh figure).
//   4. (also alone with `--call`; not with `--stdout`): `rex call beta.m.cbrt 27` (libm's cbrt on another host, from the shell) through the
//      native front end (CALL_CLI to the local rexd, docs/PROTOCOL.md 4.7.1), through the Node CLI, and the
//      peer: ssh with ControlMaster running a tiny C program that computes and prints cbrt(27) (the same
//      computation and output, the work ssh would do for a user who has no REX), and rcall() from C (the floor).
// Run: `node bench/exec.mjs [N] [--stdout]` (BENCH_ROUNDS=R: rounds of part 3, alternating) after `npx tsc` and `make -C native`.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { record } from './lib.mjs';
import { LocalCluster } from '../dist/cluster/cluster.js';
import { RemoteProcess } from '../dist/exec/origin/stub.js';
import { RexClient } from '../dist/runtime/client.js';

const args = process.argv.slice(2);
// `--stdout`: only part 3, in ROUNDS rounds alternating REX and ssh (medians and the ratio of the medians).
const ONLY_STDOUT = args.includes('--stdout');
// `--call`: only part 4.
const ONLY_CALL = args.includes('--call');
const N = Number(args.find((a) => /^\d+$/.test(a)) ?? 200);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? (ONLY_STDOUT ? 5 : 1));
const HOSTS = ONLY_STDOUT ? 2 : 3;
// BENCH_MB: the size of part 3's stdout (issue 17 names 200 MB; 100 by default, as the figures in docs/PERFORMANCE.md).
const MB = Number(process.env.BENCH_MB ?? 100);
const JOBS = 1000;
const root = fileURLToPath(new URL('..', import.meta.url));
const native = join(root, 'native');

function stats(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { median: q(0.5), p90: q(0.9), min: s[0] };
}
const ms = (x) => `${x.toFixed(2)} ms`;
const line = (name, xs) => {
  const s = stats(xs);
  console.log(`${name.padEnd(44)} median ${ms(s.median).padStart(10)}  p90 ${ms(s.p90).padStart(10)}  min ${ms(s.min).padStart(10)}`);
  return s.median;
};

/** Time from spawn to exit of a command, n times (after a few warm-ups). */
async function timeSpawn(cmd, args, env, n = N) {
  const out = [];
  for (let i = 0; i < n + 5; i++) {
    const t0 = process.hrtime.bigint();
    await new Promise((resolve, reject) => {
      const c = spawn(cmd, args, { env, stdio: ['ignore', 'ignore', 'inherit'] });
      c.on('error', reject);
      c.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`${cmd} ${args.join(' ')} exited ${code}`))));
    });
    if (i >= 5) out.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  return out;
}

function buildStub() {
  execFileSync('make', ['-s', '-C', native, 'build/lib/librex.a'], { stdio: 'pipe' });
  mkdirSync(join(native, 'build', 'test'), { recursive: true });
  const bin = join(native, 'build', 'test', 'rexecve_demo');
  execFileSync('cc', ['-O2', '-I', join(native, 'include'), '-o', bin, join(native, 'test', 'rexecve_demo.c'), join(native, 'build', 'lib', 'librex.a'), '-lm']);
  return bin;
}

/**
 * The account the ssh peer logs into: as root a dedicated one with /bin/sh and an empty home (nothing of a
 * login shell's rc files), otherwise this user. `who` says which, for the output.
 */
function sshAccount(dir) {
  if (process.getuid?.() !== 0) {
    return { user: userInfo().username, prefix: ['exec'], who: `this user (${userInfo().username}, shell ${userInfo().shell}), commands prefixed with exec: the shell's own start (rc files) is in the figure`, remove: () => {} };
  }
  const user = 'rexbench-ssh';
  const home = join(dir, 'home');
  mkdirSync(home, { mode: 0o755 });
  spawnSync('userdel', [user], { stdio: 'ignore' });
  const made = spawnSync('useradd', ['--system', '--shell', '/bin/sh', '--home-dir', home, '--no-create-home', user], { encoding: 'utf8' });
  if (made.status !== 0) throw new Error(`useradd ${user}: ${made.stderr}`);
  execFileSync('chown', [user, home]);
  // useradd leaves the password locked ("!"), which sshd without PAM takes as a locked account; "*" is no password, not locked.
  execFileSync('usermod', ['-p', '*', user]);
  const remove = () => {
    // The ControlMaster's session (ControlPersist) still runs as the account: userdel refuses a user in use.
    spawnSync('pkill', ['-KILL', '-u', user], { stdio: 'ignore' });
    spawnSync('userdel', [user], { stdio: 'ignore' });
  };
  return { user, prefix: [], who: `${user}, shell /bin/sh, an empty home (no rc files), no motd or last-log`, remove };
}

/** A private sshd on loopback for this user, or a reason why there is none. */
function startSshd(dir) {
  let sshd = ['/usr/sbin/sshd', '/usr/bin/sshd'].find(existsSync);
  if (!sshd && process.getuid?.() === 0 && spawnSync('apt-get', ['--version']).status === 0) {
    console.log('(installing openssh-server for the ssh peer...)');
    spawnSync('apt-get', ['install', '-y', '--no-install-recommends', 'openssh-server'], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 300_000 });
    sshd = ['/usr/sbin/sshd', '/usr/bin/sshd'].find(existsSync);
  }
  if (!sshd) return { skip: 'openssh-server is not installed (and could not be installed here): the ssh peer is skipped' };
  const key = join(dir, 'id');
  const hostKey = join(dir, 'host');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', key]);
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', hostKey]);
  writeFileSync(join(dir, 'authorized_keys'), execFileSync('cat', [`${key}.pub`]), { mode: 0o600 });
  const port = 20000 + (process.pid % 20000);
  const conf = join(dir, 'sshd_config');
  const account = sshAccount(dir);
  // sshd reads authorized_keys as the account it logs into.
  if (process.getuid?.() === 0) execFileSync('chown', [account.user, join(dir, 'authorized_keys')]);
  writeFileSync(
    conf,
    [`Port ${port}`, 'ListenAddress 127.0.0.1', `HostKey ${hostKey}`, `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`, 'PasswordAuthentication no', 'StrictModes no', 'UsePAM no', 'PrintMotd no', 'PrintLastLog no', `PidFile ${join(dir, 'sshd.pid')}`, `AllowUsers ${account.user}`].join('\n') + '\n',
  );
  mkdirSync('/run/sshd', { recursive: true });
  const d = spawn(sshd, ['-D', '-e', '-f', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  d.stderr.on('data', (x) => (err += x));
  const base = ['-i', key, '-p', String(port), '-l', account.user, '-o', 'StrictHostKeyChecking=no', '-o', `UserKnownHostsFile=${join(dir, 'known')}`, '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR'];
  const stop = () => {
    spawnSync('ssh', [...base, '-o', `ControlPath=${join(dir, 'mux')}`, '-O', 'exit', '127.0.0.1'], { stdio: 'ignore' });
    d.kill();
    account.remove();
  };
  for (let i = 0; i < 50; i++) {
    if (spawnSync('ssh', [...base, '127.0.0.1', ...account.prefix, 'true']).status === 0) {
      const mux = [...base, '-o', 'ControlMaster=auto', '-o', `ControlPath=${join(dir, 'mux')}`, '-o', 'ControlPersist=120'];
      console.log(`ssh peer: OpenSSH on loopback, logging in as ${account.who}`);
      return { base, mux, prefix: account.prefix, stop };
    }
    spawnSync('sleep', ['0.1']);
  }
  stop();
  return { skip: `sshd did not accept a connection: ${err.trim().split('\n').pop()}` };
}

/** The system's libm, as `cc` links it. */
function systemLibm() {
  return execFileSync('cc', ['-print-file-name=libm.so.6'], { encoding: 'utf8' }).trim();
}

/** Part 4: `rex call` from the shell, native front end vs Node CLI vs ssh ControlMaster running the same computation in C. */
async function callBench() {
  const dir = mkdtempSync(join(tmpdir(), 'rex-bench-call-'));
  chmodSync(dir, 0o755); // the ssh peer's account runs the C program here
  const xml = join(dir, 'libm.xml');
  writeFileSync(
    xml,
    '<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE rex-entry-points SYSTEM "rex.dtd">\n<rex-entry-points version="1" elf-file="libm.so.6" program="m">\n' +
      '  <entry-point name="cbrt"><returns type="double"/><param name="x" type="double"/></entry-point>\n</rex-entry-points>\n',
  );
  const cbrt = join(dir, 'cbrt');
  writeFileSync(`${cbrt}.c`, '#include <math.h>\n#include <stdio.h>\n#include <stdlib.h>\nint main(int argc, char **argv) { printf("%.17g\\n", cbrt(strtod(argc > 1 ? argv[1] : "27", NULL))); return 0; }\n');
  execFileSync('cc', ['-O2', '-o', cbrt, `${cbrt}.c`, '-lm']);
  chmodSync(cbrt, 0o755);
  const rcaller = join(dir, 'rcall-cbrt');
  execFileSync('make', ['-s', '-C', native, 'build/lib/librex.a'], { stdio: 'pipe' });
  writeFileSync(
    `${rcaller}.c`,
    '#include <stdio.h>\n#include <rex.h>\nint main(void) { double in = 27, out; if (rcall("beta.m.cbrt", &in, sizeof in, &out, sizeof out) < 0) { fprintf(stderr, "%s\\n", rex_last_error()); return 1; } printf("%.17g\\n", out); return 0; }\n',
  );
  execFileSync('cc', ['-O2', '-I', join(native, 'include'), '-o', rcaller, `${rcaller}.c`, join(native, 'build', 'lib', 'librex.a'), '-lm']);
  const cluster = await LocalCluster.up({ dir, hosts: 2, netns: false, loadInterval: '200ms', logLevel: 'warn', rc: [`programs : m=${systemLibm()}:${xml}`] });
  let ssh;
  try {
    await cluster.waitAllReachable();
    const env = { ...process.env, REX_SOCKET: cluster.host('alpha').socket };
    const nativeRex = join(native, 'build', 'bin', 'rex');
    if (!existsSync(nativeRex)) execFileSync('make', ['-s', '-C', native, 'build/bin/rex'], { stdio: 'pipe' });
    const want = '3\n';
    for (const [cmd, a] of [[nativeRex, ['call', 'beta.m.cbrt', '27']], [process.execPath, [join(root, 'dist/bin/rex.js'), 'call', 'beta.m.cbrt', '27']]]) {
      const got = execFileSync(cmd, a, { env, encoding: 'utf8' });
      if (got !== want) throw new Error(`${cmd} ${a.join(' ')} printed ${JSON.stringify(got)}, not ${JSON.stringify(want)}`);
    }
    console.log(`## rex call beta.m.cbrt 27 (${N} runs each; spawn to exit; libm's cbrt on beta, from a shell on alpha)`);
    const floor = line('rcall() from C (librex, the floor)', await timeSpawn(rcaller, [], env));
    const nat = line('rex call (native rex, CALL_CLI)', await timeSpawn(nativeRex, ['call', 'beta.m.cbrt', '27'], env));
    const cli = line('rex call (Node CLI)', await timeSpawn(process.execPath, [join(root, 'dist/bin/rex.js'), 'call', 'beta.m.cbrt', '27'], env, Math.min(N, 50)));
    ssh = startSshd(dir);
    if (ssh.skip) console.log(`ssh: skipped: ${ssh.skip}`);
    else {
      spawnSync('ssh', [...ssh.mux, '127.0.0.1', ...ssh.prefix, cbrt, '27']);
      const mux = line('ssh 127.0.0.1 ./cbrt 27 (ControlMaster, C)', await timeSpawn('ssh', [...ssh.mux, '127.0.0.1', ...ssh.prefix, cbrt, '27'], env));
      console.log(`ratio native rex call / ssh ControlMaster: ${(nat / mux).toFixed(2)}x (target <= 1x)`);
      record({ measure: 'rex call beta.m.cbrt 27 (native rex), median', rex: nat, peer: mux, peerName: 'ssh ControlMaster ./cbrt 27', unit: 'ms', target: 1 });
    }
    console.log(`ratio Node CLI rex call / native rex call: ${(cli / nat).toFixed(1)}x; native rex call / rcall(): ${(nat / floor).toFixed(2)}x`);
  } finally {
    ssh?.stop?.();
    await cluster.down();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'rex-bench-exec-'));
  chmodSync(dir, 0o755); // the ssh peer's account reads its authorized_keys and the 100 MB file here
  const cluster = await LocalCluster.up({ dir, hosts: HOSTS, netns: false, loadInterval: '200ms', logLevel: 'warn' });
  let ssh;
  try {
    await cluster.waitAllReachable();
    const socket = cluster.host('alpha').socket;
    const env = { ...process.env, REX_SOCKET: socket };
    const stub = buildStub();
    const client = await RexClient.connect({ socket });
    if (!ONLY_STDOUT) {
      console.log(`## starting /bin/true (${N} runs each; spawn to exit)`);
      const local = line('local posix_spawn /bin/true', await timeSpawn('/bin/true', [], env));
      const cstub = line('rexecve() stub, --host beta', await timeSpawn(stub, ['beta', '/bin/true'], env));
      // The native front end (native/frontend/rex.c): what package.json's bin `rex` and an installed BINDIR/rex run.
      const nativeRex = join(native, 'build', 'bin', 'rex');
      if (!existsSync(nativeRex)) execFileSync('make', ['-s', '-C', native, 'build/bin/rex'], { stdio: 'pipe' });
      const nat = line('rex run --host beta /bin/true (native rex)', await timeSpawn(nativeRex, ['run', '--host', 'beta', '/bin/true'], env));
      const cli = line('rex run --host beta /bin/true (Node CLI)', await timeSpawn(process.execPath, [join(root, 'dist/bin/rex.js'), 'run', '--host', 'beta', '/bin/true'], env, Math.min(N, 50)));
      // The floor under any Node CLI: `rex run` minus this is what REX's own start-up and the run cost.
      const nodeFloor = line('node -e 0 (Node start-up alone: the CLI floor)', await timeSpawn(process.execPath, ['-e', '0'], env, Math.min(N, 50)));
      const inproc = [];
      for (let i = 0; i < N + 5; i++) {
        const t0 = process.hrtime.bigint();
        const rp = await RemoteProcess.start(client.conn, { path: '/bin/true', argv: ['true'], host: 'beta' }, (_f, _d, done) => done());
        rp.end();
        await rp.exited;
        if (i >= 5) inproc.push(Number(process.hrtime.bigint() - t0) / 1e6);
      }
      const api = line('in-process stub (spawn() path), --host beta', inproc);
      ssh = startSshd(dir);
      let mux;
      if (ssh.skip) console.log(`ssh: skipped: ${ssh.skip}`);
      else {
        line('ssh 127.0.0.1 true (full handshake)', await timeSpawn('ssh', [...ssh.base, '127.0.0.1', ...ssh.prefix, 'true'], env, Math.min(N, 50)));
        spawnSync('ssh', [...ssh.mux, '127.0.0.1', ...ssh.prefix, 'true']);
        mux = line('ssh 127.0.0.1 true (ControlMaster)', await timeSpawn('ssh', [...ssh.mux, '127.0.0.1', ...ssh.prefix, 'true'], env));
      }
      console.log(`ratio rexecve stub / local posix_spawn: ${(cstub / local).toFixed(1)}x`);
      if (mux) {
        console.log(`ratio ssh ControlMaster / rexecve stub: ${(mux / cstub).toFixed(2)}x (target >= 3x)`);
        record({ measure: 'rex run --host beta /bin/true (native rex), median', rex: nat, peer: mux, peerName: 'ssh ControlMaster true', unit: 'ms', target: 1 });
        record({ measure: 'rexecve() C stub, beta /bin/true, median', rex: cstub, peer: mux, peerName: 'ssh ControlMaster true', unit: 'ms', target: 1 / 3 });
        console.log(`ratio native rex run / ssh ControlMaster: ${(nat / mux).toFixed(2)}x (target <= 1x: rex run <= ssh)`);
        console.log(`ratio ssh ControlMaster / rex run CLI: ${(mux / cli).toFixed(2)}x; / in-process stub: ${(mux / api).toFixed(2)}x`);
        console.log(`ratio ssh ControlMaster / Node start-up alone: ${(mux / nodeFloor).toFixed(2)}x (the best any Node CLI could reach)`);
      }

      console.log(`\n## ${JOBS} short jobs (/bin/true) placed over 3 hosts, 16 at a time`);
      const where = new Map();
      let next = 0;
      const t0 = process.hrtime.bigint();
      await Promise.all(
        Array.from({ length: 16 }, async () => {
          while (next < JOBS) {
            next++;
            const rp = await RemoteProcess.start(client.conn, { path: '/bin/true', argv: ['true'] }, (_f, _d, done) => done());
            rp.end();
            await rp.exited;
            where.set(rp.host, (where.get(rp.host) ?? 0) + 1);
          }
        }),
      );
      const secs = Number(process.hrtime.bigint() - t0) / 1e9;
      console.log(`${(JOBS / secs).toFixed(0)} jobs/s; landed: ${[...where].map(([h, n]) => `${h} ${n}`).join(', ')}`);
    } else {
      ssh = startSshd(dir);
      if (ssh.skip) console.log(`ssh: skipped: ${ssh.skip}`);
      else spawnSync('ssh', [...ssh.mux, '127.0.0.1', ...ssh.prefix, 'true']);
    }

    console.log(`\n## ${MB} MB of stdout`);
    const big = join(dir, 'big.bin');
    writeFileSync(big, randomBytes(MB << 20), { mode: 0o644 });
    const want = createHash('sha256').update(execFileSync('cat', [big], { maxBuffer: (MB + 100) << 20 })).digest('hex');
    const through = (cmd, args) => {
      const t = process.hrtime.bigint();
      const out = execFileSync(cmd, args, { env, maxBuffer: (MB + 100) << 20 });
      const s = Number(process.hrtime.bigint() - t) / 1e9;
      if (createHash('sha256').update(out).digest('hex') !== want) throw new Error(`${cmd}: checksum mismatch`);
      return MB / s;
    };
    const rexs = [];
    const sshs = [];
    for (let r = 0; r < ROUNDS; r++) {
      rexs.push(through(stub, ['beta', '/bin/cat', 'cat', big]));
      if (!ssh.skip) sshs.push(through('ssh', [...ssh.mux, '127.0.0.1', ...ssh.prefix, 'cat', big]));
      if (ROUNDS > 1) console.log(`round ${r + 1}: rex ${rexs[r].toFixed(0)} MB/s${ssh.skip ? '' : `, ssh ${sshs[r].toFixed(0)} MB/s, ratio ${(rexs[r] / sshs[r]).toFixed(2)}x`}`);
    }
    const med = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
    const rexMB = med(rexs);
    const of = ROUNDS > 1 ? ` (median of ${ROUNDS}, alternating)` : '';
    console.log(`rexecve() stub cat (beta): ${rexMB.toFixed(0)} MB/s${of}`);
    if (!ssh.skip) {
      const sshMB = med(sshs);
      console.log(`ssh cat (ControlMaster):   ${sshMB.toFixed(0)} MB/s${of}`);
      console.log(`ratio rex / ssh throughput: ${(rexMB / sshMB).toFixed(2)}x (target >= 1x)`);
      record({ measure: `${MB} MB of stdout from beta${of}`, rex: rexMB, peer: sshMB, peerName: 'ssh ControlMaster cat', unit: 'MB/s', target: 1, better: 'higher' });
    }
    client.close();
  } finally {
    ssh?.stop?.();
    await cluster.down();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (ONLY_CALL) await callBench();
else {
  await main();
  // `npm run bench` (no arguments) measures the call path too; --stdout stays the stdout part alone.
  if (!ONLY_STDOUT) await callBench();
}
