/**
 * The root installation (docs/ROOT.md): one root rexd (the monitor) per host serving several local
 * users, each through a session controller that runs as that user. Two hosts, alpha and beta, on
 * loopback, each with its host key and knowing the other's; three real Unix users. Root only (CI
 * runs as root): elsewhere the suite says why it does not run.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildLibrary, writeXml } from '../calls/helpers.js';
import { freePort } from '../../src/cluster/cluster.js';
import { KeyStore } from '../../src/keys/store.js';
import { readablePackage } from '../helpers/readable-package.js';
import { startMonitor, stopMonitors } from '../helpers/root.js';
import { createTestUser, isRoot, notRootReason, removeTestUser, type TestUser } from '../helpers/users.js';

if (!isRoot) console.warn(`root installation tests skipped: ${notRootReason}`);


describe.skipIf(!isRoot)('the root installation: one rexd per host for all its users', () => {
  let dir: string;
  let pkg: ReturnType<typeof readablePackage>;
  let alice: TestUser;
  let bob: TestUser;
  let carol: TestUser;
  let dave: TestUser;
  let eve: TestUser;
  const daemons: ChildProcess[] = [];
  /** What each monitor has logged so far. */
  const logs: Record<string, string> = {};
  const rc: Record<string, string> = {};
  const state: Record<string, string> = {};

  /** Runs `rex ARGS` as `user` against host `host`'s rexd; a first contact starts the user's controller, so it is given time. */
  function rexAs(user: string, host: string, args: string[], timeout = 60_000): { status: number | null; stdout: string; stderr: string } {
    const r = spawnSync('runuser', ['-u', user, '--', process.execPath, join(pkg.root, 'dist', 'bin', 'rex.js'), ...args], {
      encoding: 'utf8',
      timeout,
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', REX_CONFIG: rc[host]!, HOME: '/' },
      cwd: '/',
    });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  }

  /** The JSON of `rex log --json`, read as root from one log database: a host's own, or a user's on that host. */
  function logOf(host: string, user?: string): string {
    const db = user ? join(state[host]!, 'users', user, 'rex-log.sqlite') : join(state[host]!, 'rex-log.sqlite');
    return spawnSync(process.execPath, [join(pkg.root, 'dist', 'bin', 'rex.js'), 'log', '--json', '--database', db], { encoding: 'utf8' }).stdout;
  }

  beforeAll(async () => {
    pkg = readablePackage();
    // Processes of an interrupted earlier run would keep userdel from removing its users.
    for (const u of ['rextest-ri-alice', 'rextest-ri-bob', 'rextest-ri-carol', 'rextest-ri-dave', 'rextest-ri-eve']) spawnSync('pkill', ['-KILL', '-u', u]);
    alice = createTestUser('rextest-ri-alice');
    bob = createTestUser('rextest-ri-bob');
    carol = createTestUser('rextest-ri-carol');
    dave = createTestUser('rextest-ri-dave');
    eve = createTestUser('rextest-ri-eve');
    dir = mkdtempSync(join(tmpdir(), 'rex-root-'));
    chmodSync(dir, 0o755);
    const ports = { alpha: await freePort(), beta: await freePort() };
    const servers = `alpha@127.0.0.1:${ports.alpha}, beta@127.0.0.1:${ports.beta}`;
    const keys: Record<string, KeyStore> = {};
    const certs: Record<string, string> = {};
    for (const h of ['alpha', 'beta'] as const) {
      state[h] = join(dir, h, 'state');
      mkdirSync(join(dir, h, 'run'), { recursive: true });
      rc[h] = join(dir, `${h}.rc`);
      writeFileSync(
        rc[h]!,
        [
          `host-name : ${h}`,
          'installation : root',
          // alpha's session controllers, and so their jobs, get these limits (rex-session --rlimit); beta keeps rexd's
          // (a process moved there by rfork keeps limits up to those).
          ...(h === 'alpha' ? ['user-limits : nofile=1000:2000, core=0'] : []),
          `servers : ${servers}`,
          `state-directory : ${state[h]}`,
          `socket : ${join(dir, h, 'run', 'rexd.sock')}`,
          'load-interval : 500ms',
          // beta refuses alpha's carol outright (a user-map refusal), and maps nothing else.
          // beta refuses alpha's carol outright, and maps alpha's dave to alice (whose grants then decide).
          // Every denial gets its own row (the tests read them): carol's peer link is refused again at each retry.
          ...(h === 'beta' ? [`user-map : alpha.${carol.name} = -, alpha.${dave.name} = ${alice.name}`, 'per-source-max-startups : 4', 'log-denials-burst : 100000'] : []),
          '',
        ].join('\n'),
      );
      chmodSync(rc[h]!, 0o644);
      keys[h] = new KeyStore(state[h]!);
      // The administrator's command for the host key, as root.
      const made = spawnSync(process.execPath, [join(pkg.root, 'dist', 'bin', 'rex_key.js'), '--create', '--host-key', '--config', rc[h]!], { encoding: 'utf8' });
      if (made.status !== 0) throw new Error(`rex_key --create --host-key: ${made.stderr}`);
      certs[h] = keys[h]!.load(h).certPem;
    }
    // As an administrator places them (docs/ROOT.md section 3): in the host controller's store (root-join.test.ts joins instead).
    new KeyStore(join(state.alpha!, 'host')).addKnown(certs.beta!, 'test');
    new KeyStore(join(state.beta!, 'host')).addKnown(certs.alpha!, 'test');
    for (const h of ['alpha', 'beta']) {
      logs[h] = '';
      daemons.push(await startMonitor(pkg.root, rc[h]!, (t) => (logs[h] += t)));
    }
  }, 180_000);

  afterAll(async () => {
    await stopMonitors(daemons);
    for (const u of ['rextest-ri-alice', 'rextest-ri-bob', 'rextest-ri-carol', 'rextest-ri-dave', 'rextest-ri-eve']) {
      spawnSync('pkill', ['-KILL', '-u', u]);
      removeTestUser(u);
    }
    if (dir) rmSync(dir, { recursive: true, force: true });
    pkg?.remove();
  }, 60_000);

  // claim: root.jobs-run-as-their-user
  it("runs each user's jobs under that user's uid and groups, on the local host and on another", () => {
    for (const u of [alice, bob]) {
      for (const host of ['alpha', 'beta']) {
        const r = rexAs(u.name, 'alpha', ['run', '--host', host, '/usr/bin/id']);
        expect(r.stderr, `${u.name} on ${host}`).toBe('');
        expect(r.status).toBe(0);
        expect(r.stdout.trim()).toMatch(new RegExp(`^uid=${u.uid}\\(${u.name}\\) gid=${u.gid}\\(${u.name}\\) groups=${u.gid}\\(${u.name}\\)$`));
      }
    }
  }, 180_000);

  // claim: root.jobs-run-as-their-user
  it("moves each user's process with rfork() to beta, where the child runs as that user", () => {
    const prog = join(dir, 'rfuid');
    const src = join(import.meta.dirname, '..', 'fixtures', 'root', 'rfuid.c');
    const cc = spawnSync('cc', ['-std=c11', '-Wall', '-Wextra', '-Werror', '-I', join(pkg.root, 'native', 'include'), src, join(pkg.root, 'native', 'build', 'lib', 'librex.a'), '-o', prog], { encoding: 'utf8' });
    expect(cc.stderr).toBe('');
    chmodSync(prog, 0o755);
    for (const u of [alice, bob]) {
      const r = spawnSync('runuser', ['-u', u.name, '--', prog], {
        encoding: 'utf8',
        timeout: 60_000,
        env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', REX_SOCKET: join(dir, 'alpha', 'run', 'rexd.sock'), REX_HOST: 'beta' },
        cwd: '/',
      });
      expect(r.stderr, u.name).toBe('');
      expect(r.stdout).toBe(`child uid=${u.uid} gid=${u.gid} rforked=1\nparent uid=${u.uid} child-status=0\n`);
    }
    // The image went to beta: the rfork is in each user's log there, and only in theirs.
    for (const u of [alice, bob]) {
      const other = u === alice ? bob : alice;
      const log = logOf('beta', u.name);
      expect(log).toMatch(/"message_type": "RFORK"/);
      expect(log).not.toContain(other.name);
    }
  }, 120_000);

  // claim: root.reload-programs
  it('reloads rex.rc on SIGHUP without a restart: a program added to beta is then called by alice and bob, each in a call controller of their own', async () => {
    const lib = buildLibrary(dir);
    const xml = writeXml(dir, lib);
    for (const f of [lib, xml]) chmodSync(f, 0o644);
    const before = logs.beta!.length;
    const monitorPid = daemons[1]!.pid!;
    writeFileSync(rc.beta!, `${readFileSync(rc.beta!, 'utf8')}programs : calltest=${lib}:${xml}\n`);
    process.kill(monitorPid, 'SIGHUP');
    await vi.waitFor(() => expect(logs.beta!.slice(before)).toContain('configuration reloaded; session controllers told to reload'), { timeout: 30_000, interval: 50 });
    for (const u of [alice, bob]) {
      // The controllers reload on their own SIGHUP: the program appears there a moment later.
      await vi.waitFor(
        () => {
          const r = rexAs(u.name, 'alpha', ['call', 'beta.calltest.neg32', '-5']);
          expect(r.stderr).toBe('');
          expect(r.stdout).toBe('5\n');
        },
        { timeout: 30_000, interval: 200 },
      );
      const ps = spawnSync('pgrep', ['-u', String(u.uid), '-x', 'rex_callctl'], { encoding: 'utf8' });
      expect(ps.stdout.trim().split('\n').filter(Boolean).length, `call controllers of ${u.name}`).toBeGreaterThanOrEqual(1);
    }
    expect(daemons[1]!.exitCode, 'the monitor was not restarted').toBeNull();
  }, 120_000);

  // claim: root.user-limits
  it("gives each user's session controller, and so their jobs, rex.rc user-limits", () => {
    // On alpha itself: placement would send an unpinned job to beta whenever alpha is the busier (beta has no user-limits).
    const r = rexAs(bob.name, 'alpha', ['run', '--host', 'alpha', '/bin/sh', '-c', 'ulimit -Hn; ulimit -c']);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe('2000\n0\n');
  }, 60_000);

  // claim: root.controller-per-user
  it('serves each user through a session controller of their own, whose state only they can read', () => {
    for (const u of [alice, bob]) {
      const st = statSync(join(state.alpha!, 'users', u.name));
      expect(st.uid).toBe(u.uid);
      expect(st.mode & 0o777).toBe(0o700);
      const ps = spawnSync('pgrep', ['-u', String(u.uid), '-f', 'rexd.cjs --session'], { encoding: 'utf8' });
      expect(ps.stdout.trim().split('\n').filter(Boolean).length, `controllers of ${u.name}`).toBeGreaterThanOrEqual(1);
    }
    // bob cannot read alice's log, keys or cache.
    const peek = spawnSync('runuser', ['-u', bob.name, '--', 'ls', join(state.alpha!, 'users', alice.name)], { encoding: 'utf8' });
    expect(peek.status).not.toBe(0);
    expect(peek.stderr).toMatch(/Permission denied/);
    // Each user's own log has their transactions, and no other user's.
    const log = rexAs(bob.name, 'alpha', ['log', '--json']);
    expect(log.status, log.stderr).toBe(0);
    expect(log.stdout).toContain(bob.name);
    expect(log.stdout).not.toContain(alice.name);
    // bob cannot read alice's; root reads anyone's.
    const bobReadsAlice = rexAs(bob.name, 'alpha', ['log', '--json', '--user', alice.name]);
    expect(bobReadsAlice.status).not.toBe(0);
    const rootReadsAlice = spawnSync(process.execPath, [join(pkg.root, 'dist', 'bin', 'rex.js'), 'log', '--json', '--user', alice.name, '--config', rc.alpha!], { encoding: 'utf8' });
    expect(rootReadsAlice.status, rootReadsAlice.stderr).toBe(0);
    expect(rootReadsAlice.stdout).toContain(alice.name);
    expect(rootReadsAlice.stdout).not.toContain(bob.name);
  }, 120_000);

  it('makes the host key only as root, and only in a root installation', () => {
    const asAlice = spawnSync('runuser', ['-u', alice.name, '--', process.execPath, join(pkg.root, 'dist', 'bin', 'rex_key.js'), '--create', '--host-key', '--config', rc.alpha!], { encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, cwd: '/' });
    expect(asAlice.status).toBe(2);
    expect(asAlice.stderr).toMatch(/--host-key: only root makes the host key of a root installation/);
    const userRc = join(dir, 'user.rc');
    writeFileSync(userRc, `host-name : delta\nstate-directory : ${join(dir, 'delta')}\n`);
    const inUserMode = spawnSync(process.execPath, [join(pkg.root, 'dist', 'bin', 'rex_key.js'), '--create', '--host-key', '--config', userRc], { encoding: 'utf8' });
    expect(inUserMode.status).toBe(2);
    expect(inUserMode.stderr).toMatch(/rex\.rc installation: error: --host-key makes the host key of a root installation, and rex\.rc installation is user here/);
    expect(existsSync(join(dir, 'delta', 'keys', 'delta.key'))).toBe(false);
  });

  it('rexd --status as root names the session controllers running, by user', () => {
    const r = spawnSync(process.execPath, [join(pkg.root, 'dist', 'bin', 'rexd.cjs'), '--status', '--config', rc.alpha!], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('installation: root');
    expect(r.stdout).toMatch(new RegExp(`session controllers: .*${alice.name} \\(pid \\d+\\).*${bob.name} \\(pid \\d+\\)`));
  });

  // claim: root.no-symlink-as-root
  it("never writes as root through a link a user left in their own state directory", () => {
    // eve's state directory exists, hers, with session.log pointing at a file of root's.
    const mine = join(state.alpha!, 'users', eve.name);
    mkdirSync(mine, { mode: 0o700 });
    chownSync(mine, eve.uid, eve.gid);
    const target = join(dir, 'root-only');
    writeFileSync(target, 'root\'s\n', { mode: 0o600 });
    symlinkSync(target, join(mine, 'session.log'));
    const r = rexAs(eve.name, 'alpha', ['run', '/usr/bin/id', '-u']);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/DENIED: alpha: cannot start the session controller of rextest-ri-eve: .*session\.log is a symbolic link; refusing to open it as root/);
    const st = statSync(target);
    expect([st.uid, st.mode & 0o777, readFileSync(target, 'utf8')]).toEqual([0, 0o600, "root's\n"]);
    // Once eve removes it, she is served.
    spawnSync('runuser', ['-u', eve.name, '--', 'rm', join(mine, 'session.log')]);
    const ok = rexAs(eve.name, 'alpha', ['run', '/usr/bin/id', '-u']);
    expect([ok.status, ok.stdout], ok.stderr).toEqual([0, `${eve.uid}\n`]);
  }, 60_000);

  // claim: root.root-refused
  it('refuses root on the local socket unless rex.rc permit-root says yes, naming the key', () => {
    const r = spawnSync(process.execPath, [join(pkg.root, 'dist', 'bin', 'rex.js'), 'run', '/usr/bin/id'], { encoding: 'utf8', env: { ...process.env, REX_CONFIG: rc.alpha! } });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/DENIED: alpha: root is not served \(rex\.rc permit-root is no\)/);
  });

  // claim: root.user-map-refusal
  it("refuses a remote user that the receiving host's user-map refuses, and logs it there", () => {
    const r = rexAs(carol.name, 'alpha', ['run', '--host', 'beta', '/usr/bin/id']);
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
    // beta's host log (root's) says why.
    const log = logOf('beta');
    expect(log).toContain(`alpha.${carol.name} is refused by rex.rc user-map alpha.${carol.name} = -`);
  }, 120_000);

  // claim: root.grants-per-user
  it("maps a remote user to a local account by user-map, whose own grants decide: refused and logged until that user grants it", async () => {
    const first = rexAs(dave.name, 'alpha', ['run', '--host', 'beta', '/usr/bin/id']);
    expect(first.status).not.toBe(0);
    expect(first.stderr).toMatch(new RegExp(`alpha\\.${dave.name} .*has no grant on beta\\.${alice.name}`));
    // The refusal is in alice's log on beta (hers: dave acts as alice there), not in bob's.
    const aliceLog = () => logOf('beta', alice.name);
    expect(aliceLog()).toContain(`alpha.${dave.name}`);
    const bobLog = logOf('beta', bob.name);
    expect(bobLog).not.toContain(dave.name);
    // alice grants dave on beta (her grants, in her view of beta's rex.rc); bob's grants are untouched.
    const grant = spawnSync('runuser', ['-u', alice.name, '--', process.execPath, join(pkg.root, 'dist', 'bin', 'rex_key.js'), '--grant', `alpha.${dave.name}`, '--config', rc.beta!], { encoding: 'utf8', env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, cwd: '/' });
    expect(grant.status, grant.stderr).toBe(0);
    expect(existsSync(join(state.beta!, 'users', bob.name, 'grants')) ? readFileSync(join(state.beta!, 'users', bob.name, 'grants'), 'utf8') : '').not.toContain(dave.name);
    // A restricted session ends at login-grace-time; the next one is authenticated with the grant.
    await vi.waitFor(
      () => {
        const r = rexAs(dave.name, 'alpha', ['run', '--host', 'beta', '/usr/bin/id', '-u']);
        expect(r.stderr).toBe('');
        expect(r.stdout.trim()).toBe(String(alice.uid));
      },
      { timeout: 60_000, interval: 1000 },
    );
  }, 120_000);

  // claim: root.signal-other-user
  it("lets no user signal another user's job", async () => {
    const job = spawn('runuser', ['-u', alice.name, '--', process.execPath, join(pkg.root, 'dist', 'bin', 'rex.js'), 'run', '--host', 'beta', '/bin/sleep', '60'], { env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin', REX_CONFIG: rc.alpha! }, stdio: 'ignore' });
    try {
      const pid = await vi.waitFor(
        () => {
          const p = spawnSync('pgrep', ['-u', String(alice.uid), '-x', 'sleep'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
          if (!p) throw new Error("alice's job is not running yet");
          return p;
        },
        { timeout: 30_000, interval: 100 },
      );
      const kill = spawnSync('runuser', ['-u', bob.name, '--', 'kill', '-TERM', pid], { encoding: 'utf8' });
      expect(kill.status).not.toBe(0);
      expect(kill.stderr).toMatch(/Operation not permitted/);
    } finally {
      job.kill('SIGTERM');
      spawnSync('pkill', ['-u', String(alice.uid), '-x', 'sleep']);
    }
  }, 60_000);

  // claim: root.monitor-startup-caps
  it('holds the caps on unauthenticated connections at the monitor: beyond per-source-max-startups a connection is closed at accept, and logged', async () => {
    const { connect } = await import('node:net');
    const port = Number(readFileSync(rc.beta!, 'utf8').match(/beta@127\.0\.0\.1:(\d+)/)![1]);
    const open = async () => {
      const s = connect({ host: '127.0.0.1', port });
      await new Promise((r) => s.once('connect', r));
      return s;
    };
    const idle = [];
    for (let i = 0; i < 4; i++) idle.push(await open());
    const extra = await open();
    const closedAtOnce = await new Promise<boolean>((resolve) => {
      extra.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 5000);
    });
    for (const s of idle) s.destroy();
    expect(closedAtOnce).toBe(true);
    const log = logOf('beta');
    expect(log).toContain('too many unauthenticated connections from 127.0.0.1 (per-source-max-startups 4); refused at accept');
  }, 60_000);

  // claim: root.unknown-host-key-refused
  it('refuses a host key it does not know, before any user is served', async () => {
    const { connectPinned } = await import('../../src/keys/tls.js');
    const stranger = new KeyStore(join(dir, 'stranger'));
    const own = await stranger.create('gamma');
    const port = Number(readFileSync(rc.beta!, 'utf8').match(/beta@127\.0\.0\.1:(\d+)/)![1]);
    const { sock } = await connectPinned({ host: '127.0.0.1', port, own, pin: () => undefined, timeoutMs: 10_000, label: 'beta' });
    sock.write(`REX-ROUTE user=${alice.name}\n`);
    const closed = await new Promise<boolean>((resolve) => {
      sock.once('close', () => resolve(true));
      setTimeout(() => resolve(false), 10_000);
    });
    expect(closed).toBe(true);
    // The row is written as the connection is refused; the log's writer may commit it a moment later.
    await vi.waitFor(
      () => {
        const log = logOf('beta');
        expect(log).toMatch(/host key [A-Z0-9-]+ claims to be host gamma, but it is not a known host key here/);
      },
      { timeout: 10_000, interval: 100 },
    );
    expect(existsSync(join(state.beta!, 'users', 'gamma'))).toBe(false);
  }, 60_000);
});
