// rfork places images only on hosts whose CPU can run them (docs/PLACEMENT.md,
// "CPU compatibility"; issue 13). One machine plays hosts that differ: beta's
// rexd advertises this host's profile less one feature this CPU has (test
// switch REX_TEST_CPU_PROFILE), so the test holds on any CPU.
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import type { Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer as createTlsServer, type TLSSocket } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { feature } from '../../src/cpu/features.js';
import { hostCpuProfile, type CpuProfile } from '../../src/cpu/profile.js';
import { profileFromJson, profileToJson, profileToWire } from '../../src/cpu/wire.js';
import { KeyStore } from '../../src/keys/store.js';
import { tlsServerOptions } from '../../src/keys/tls.js';
import { queryLog } from '../../src/log/txlog.js';
import { Connection } from '../../src/protocol/connection.js';
import { ProtocolError } from '../../src/protocol/frame.js';
import { packageRoot } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { logBarrier } from '../helpers/logsync.js';
import { alive } from '../helpers/proc.js';

const NATIVE = join(packageRoot(), 'native');
const BIN = join(NATIVE, 'build', 'test', 'migration');
const REX = join(packageRoot(), 'dist', 'bin', 'rex.js');

/** A feature this CPU has that beta's advertised CPU will lack (the first of these that exists here). */
const host = hostCpuProfile();
const DROPPED = ['AVX2', 'AVX', 'SSE4_2', 'SSSE3', 'SSE3'].find((f) => host.features.includes(f))!;

/** This host's profile without `name`, as a recorded CPU would give it (the bit cleared in the CPUID words). */
function without(name: string): CpuProfile {
  const ft = feature(name)!;
  const reg = { eax: 0, ebx: 1, ecx: 2, edx: 3 }[ft.reg];
  const leaves = { ...host.leaves, [ft.leaf]: host.leaves[ft.leaf].map((w, i) => (i === reg ? (w & ~(1 << ft.bit)) >>> 0 : w)) };
  return profileFromJson(profileToJson({ ...host, leaves, modelName: 'Synthetic CPU without ' + name }), 'synthetic');
}

function run(cmd: string, args: string[], env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

let cluster: LocalCluster;
let stop: () => Promise<void>;
let dir: string;
const beta = without(DROPPED);

/** Rows of `name`'s transaction log about rfork images, once the log has caught up. */
async function imageRows(name: string) {
  const h = cluster.host(name);
  const db = join(h.stateDir, 'rex-log.sqlite');
  await logBarrier(h.socket, db);
  return queryLog(db, { limit: 1000 }).filter((r) => r.message_type === 'RFORK' && r.target === 'rfork image');
}

beforeAll(async () => {
  execFileSync('make', ['-s', '-C', NATIVE, 'all', 'restorer', 'migration-tests'], { stdio: 'pipe' });
  dir = mkdtempSync(join(tmpdir(), 'rex-cpu-placement-'));
  // Round-robin: without the CPU check, every third placement would go to beta.
  const c = await startCluster(3, { netns: false, rc: ['placement-policy: round-robin'] });
  cluster = c.cluster;
  stop = c.stop;
  // beta restarts advertising the synthetic CPU (test switch; the suite's clusters run with --test-mode).
  const file = join(dir, 'beta-cpu.json');
  writeFileSync(file, profileToJson(beta));
  cluster.kill('beta');
  await cluster.waitExit('beta');
  // And treats files under `dir` as absent, so that programs there are transferred to it (REX_EXEC_TEST_HIDE).
  process.env.REX_TEST_CPU_PROFILE = file;
  process.env.REX_EXEC_TEST_HIDE = dir;
  try {
    await cluster.startHost(cluster.host('beta'));
  } finally {
    delete process.env.REX_TEST_CPU_PROFILE;
    delete process.env.REX_EXEC_TEST_HIDE;
  }
  // alpha has beta's new profile once its view of beta lacks the dropped feature.
  await cluster.waitFor((hosts, from) => from !== 'alpha' || hosts.every((h) => h.reachable && h.cpu !== undefined && (h.name !== 'beta' || !h.cpu.features.includes(DROPPED))), { from: ['alpha'], timeoutMs: 20_000 });
}, 120_000);
afterAll(async () => {
  await stop?.();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('rfork and the CPU of each host', () => {
  it("rex hosts shows each host's CPU class, vendor and model; beta's is the synthetic one", () => {
    const out = execFileSync(process.execPath, [REX, 'hosts', '--socket', cluster.host('alpha').socket], { encoding: 'utf8' });
    expect(out).toMatch(/^HOST\s+ADDRESS\s+RLOAD\s+LOADAVG1\s+CORES\s+JOBS\s+STATE\s+AGE\s+CPU$/m);
    const line = (name: string) => out.split('\n').find((l) => l.startsWith(`${name} `))!;
    const own = `x86-64-v${host.level} ${host.vendor} ${host.modelName || `family ${host.family} model ${host.model}`}`;
    expect(line('alpha')).toContain(own);
    expect(line('gamma')).toContain(own);
    expect(line('beta')).toContain(`x86-64-v${beta.level} ${host.vendor} Synthetic CPU without ${DROPPED}`);
    const json = JSON.parse(execFileSync(process.execPath, [REX, 'hosts', '--json', '--socket', cluster.host('alpha').socket], { encoding: 'utf8' })) as { name: string; cpu: { class: string; vendor: string; features: string[]; description: string } }[];
    expect(json.find((h) => h.name === 'beta')!.cpu).toMatchObject({ class: `x86-64-v${beta.level}`, vendor: host.vendor });
    expect(json.find((h) => h.name === 'beta')!.cpu.features).not.toContain(DROPPED);
    expect(json.find((h) => h.name === 'alpha')!.cpu.features).toContain(DROPPED);
  });

  it('rfork without a host never lands on beta (round-robin over alpha and gamma)', async () => {
    const before = (await imageRows('gamma')).length;
    for (let i = 0; i < 4; i++) {
      const r = await run(join(NATIVE, 'build', 'bin', 'test_rfork_1'), [], { REX_SOCKET: cluster.host('alpha').socket });
      expect(r.code, r.stdout + r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^parent \d+ runs on host \S+ - load: \S+\nchild \d+ /);
    }
    expect((await imageRows('gamma')).length).toBeGreaterThan(before);
    expect(await imageRows('beta')).toEqual([]);
    // alpha says why beta was left out.
    expect(readFileSync(cluster.host('alpha').logFile, 'utf8')).toContain(`beta cannot run this image: no ${DROPPED}`);
  }, 120_000);

  it('REX_HOST=beta: rfork returns -1 with ENOEXEC and "beta cannot run this image: no F (used by the origin)"; no image reached beta; alpha logs the refusal', async () => {
    const r = await run(join(BIN, 'rf_fail'), ['rfork', '-'], { REX_SOCKET: cluster.host('alpha').socket, REX_HOST: 'beta' });
    expect(r.stdout).toMatch(new RegExp(`^RFORK -1 ENOEXEC rfork: beta cannot run this image: no ${DROPPED}(, [^\\n]*)? \\(used by the origin\\)$`, 'm'));
    expect(r.stdout).toContain('NO-CHILD');
    expect(r.code).toBe(0);
    expect(await imageRows('beta')).toEqual([]);
    const refused = (await imageRows('alpha')).filter((x) => x.outcome === 'error' && x.reason?.includes('beta cannot run this image'));
    expect(refused.length).toBe(1);
    expect(refused[0]!.reason).toContain(`no ${DROPPED}`);
  }, 60_000);

  it('rex run of an executable transferred to beta only warns (origin log and one stderr line naming beta and the missing feature)', async () => {
    const prog = join(dir, 'echo');
    copyFileSync('/bin/echo', prog);
    const r = await run(process.execPath, [REX, 'run', '--socket', cluster.host('alpha').socket, '--host', 'beta', prog, 'ran', 'anyway'], {});
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('ran anyway\n');
    const lines = r.stderr.split('\n').filter((l) => l !== '');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(new RegExp(`^rex: warning: ${prog} was sent to beta, whose CPU lacks what this host's has \\(no ${DROPPED}[,)]`));
    expect(readFileSync(cluster.host('alpha').logFile, 'utf8')).toMatch(new RegExp(`"host":"beta","missing":\\["no ${DROPPED}".*"msg":"EXEC: transferred executable to a host whose CPU lacks features of the origin"`));
  }, 60_000);

  it('a LOAD whose CPU profile is malformed is refused naming the field; the receiving rexd goes on', async () => {
    const g = cluster.host('gamma');
    cluster.kill('gamma');
    await cluster.waitExit('gamma');
    // gamma's own key, its own address: only the profile is wrong (xcr0 without SSE state).
    const own = new KeyStore(g.stateDir).load(g.identity);
    const fake: Server = createTlsServer(tlsServerOptions(own), (sock: TLSSocket) => {
      sock.on('error', () => {});
      const conn = new Connection(sock, {
        initiator: false,
        local: { role: 'daemon', host: 'gamma', software: 'rexd/0.2.0' },
        label: 'fake gamma',
        onRequest: (m) => {
          if (m.type === 'LOAD_GET') return { type: 'LOAD', host: 'gamma', load: 0, loadavg: [0, 0, 0], cores: 2, jobs: 0, time: Date.now(), cpu: { ...profileToWire(host), xcr0: 0x5n } };
          throw new ProtocolError('INTERNAL', 'fake', { fatal: false });
        },
      });
      conn.handshake().catch(() => {});
    });
    fake.on('tlsClientError', () => {});
    await new Promise<void>((r) => fake.listen(g.port, g.address, () => r()));
    try {
      const client = await cluster.client('alpha');
      try {
        const view = await vi.waitFor(
          async () => {
            const v = (await client.hosts()).find((h) => h.name === 'gamma');
            if (!/LOAD from gamma cpu: xcr0 = 0x5: x87 and SSE state/.test(v?.error ?? '')) throw new Error(`alpha has not refused the profile yet: ${JSON.stringify(v)}`);
            return v!;
          },
          { timeout: 15_000, interval: 100 },
        );
        expect(view.reachable).toBe(false);
        expect(view.cpu).toBeUndefined();
      } finally {
        client.close();
      }
      expect(alive(cluster.host('alpha').pid!)).toBe(true);
      // The log line is written when the poll fails; the hosts view may show the error a moment before it is flushed.
      await vi.waitFor(() => expect(readFileSync(cluster.host('alpha').logFile, 'utf8')).toMatch(/"peer":"gamma@[^"]+".*LOAD from gamma cpu: xcr0 = 0x5.*"msg":"peer unreachable"|"msg":"peer unreachable".*LOAD from gamma cpu: xcr0 = 0x5/), { timeout: 10_000, interval: 50 });
      // An rfork placed now still works (gamma is no candidate, beta cannot run it): it stays on alpha.
      const r = await run(join(NATIVE, 'build', 'bin', 'test_rfork_1'), [], { REX_SOCKET: cluster.host('alpha').socket });
      expect(r.code, r.stdout + r.stderr).toBe(0);
    } finally {
      await new Promise<void>((r) => fake.close(() => r()));
    }
  }, 60_000);
});
