import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { RexClient } from '../../src/runtime/client.js';
import { distBin } from '../../src/util/paths.js';
import { NETNS, startCluster } from '../helpers/cluster.js';

const run = promisify(execFile);

describe(`a three-host cluster (${NETNS ? 'network namespaces' : 'loopback'})`, () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;

  beforeAll(async () => {
    if (!NETNS) console.log('note: not root, so hosts share the loopback interface; the cut-off test below is skipped');
    ({ cluster, stop } = await startCluster(3));
    await cluster.waitAllReachable();
  });
  afterAll(async () => {
    await stop?.();
  });

  it('every host sees every other one with a fresh load figure', async () => {
    const views = await cluster.waitAllReachable();
    for (const [name, hosts] of views) {
      // Itself first, then its peers in rex.rc order.
      expect(hosts.map((h) => h.name)).toEqual([name, ...['alpha', 'beta', 'gamma'].filter((n) => n !== name)]);
      expect(hosts[0]!.self).toBe(true);
      expect(hosts.slice(1).every((h) => !h.self)).toBe(true);
      for (const h of hosts) {
        expect(h.reachable).toBe(true);
        expect(h.cores).toBeGreaterThanOrEqual(1);
        expect(h.load).toBeGreaterThanOrEqual(0);
        // load-interval is 200 ms: a figure older than a few intervals would mean polling stopped.
        expect(h.ageMs).toBeLessThan(5000);
      }
    }
  });

  it('rex hosts --json lists the cluster with addresses and ports from cluster.rc', async () => {
    const alpha = cluster.host('alpha');
    const { stdout } = await run(process.execPath, [distBin('rex'), 'hosts', '--json', '--socket', alpha.socket]);
    const hosts = JSON.parse(stdout) as { name: string; address: string; port: number; self: boolean }[];
    expect(hosts.map((h) => [h.name, h.address, h.port])).toEqual(cluster.hosts.map((h) => [h.name, h.address, h.port]));
    expect(hosts[0]!.self).toBe(true);
  });

  it('rex hosts prints a table and rex load prints rload', async () => {
    const env = { ...process.env, REX_SOCKET: cluster.host('beta').socket };
    const { stdout } = await run(process.execPath, [distBin('rex'), 'hosts'], { env });
    expect(stdout).toMatch(/^HOST\s+ADDRESS\s+RLOAD\s+LOADAVG1\s+CORES\s+JOBS\s+STATE\s+AGE\s+CPU$/m);
    expect(stdout).toMatch(/^beta \*\s+\S+:\d+\s+\d+\.\d\d/m);
    const load = await run(process.execPath, [distBin('rex'), 'load'], { env });
    expect(Number(load.stdout)).toBeGreaterThanOrEqual(0);
  });

  it('pings every host through alpha: itself directly, the others in one hop', async () => {
    const c = await cluster.client('alpha');
    try {
      expect(await c.ping()).toMatchObject({ host: 'alpha', hops: 0 });
      expect(await c.ping('beta')).toMatchObject({ host: 'beta', hops: 1 });
      const data = new Uint8Array(65536).map((_, i) => i & 0xff);
      expect(await c.ping('gamma', data)).toMatchObject({ host: 'gamma', hops: 1 });
    } finally {
      c.close();
    }
  });

  it('names the known hosts when asked for an unknown one', async () => {
    const c = await cluster.client('alpha');
    try {
      await expect(c.ping('omega')).rejects.toThrow(/NO_HOST: no host "omega" in this cluster \(known: alpha, beta, gamma\)/);
      // The connection survives a refused request.
      expect(await c.ping('beta')).toMatchObject({ host: 'beta' });
    } finally {
      c.close();
    }
  });

  it('many requests in flight on one connection come back to the right caller', async () => {
    const c = await cluster.client('gamma');
    try {
      const targets = Array.from({ length: 300 }, (_, i) => ['alpha', 'beta', 'gamma'][i % 3]!);
      const results = await Promise.all(targets.map((t) => c.ping(t)));
      expect(results.map((r) => r.host)).toEqual(targets);
    } finally {
      c.close();
    }
  });

  it('a peer that dies is reported unreachable with the reason, and comes back when restarted', async () => {
    cluster.kill('beta', 'SIGKILL');
    await cluster.waitExit('beta');
    try {
      const views = await cluster.waitFor((hs) => hs.find((h) => h.name === 'beta')?.reachable === false, { from: ['alpha', 'gamma'] });
      const seen = views.get('alpha')!.find((h) => h.name === 'beta')!;
      // Depending on timing the kernel reports the dead peer as a reset, a refusal or a close.
      expect(seen.error).toMatch(/ECONNREFUSED|ECONNRESET|closed|timed out|EHOSTUNREACH/);
      const c = await cluster.client('alpha');
      try {
        await expect(c.ping('beta')).rejects.toThrow(/UNREACHABLE: host beta@\S+ is unreachable/);
      } finally {
        c.close();
      }
    } finally {
      // Bring beta back even if a check failed, so later tests start from a whole cluster.
      await cluster.startHost(cluster.host('beta'));
    }
    await cluster.waitAllReachable();
  });

  it.skipIf(!NETNS)('a host cut off the network is seen down by the others, and up again when its link returns', async () => {
    cluster.cut('gamma');
    try {
      const views = await cluster.waitFor((hs, from) => hs.filter((h) => !h.self).every((h) => h.reachable === false) || from !== 'gamma', { from: ['gamma'] });
      expect(views.get('gamma')!.filter((h) => !h.self).map((h) => h.reachable)).toEqual([false, false]);
      await cluster.waitFor((hs) => hs.find((h) => h.name === 'gamma')?.reachable === false, { from: ['alpha', 'beta'] });
    } finally {
      cluster.restore('gamma');
    }
    await cluster.waitAllReachable(20_000);
  });

  it('the C client library reads rload and the host list from a live daemon', async () => {
    const { existsSync } = await import('node:fs');
    const { join } = await import('node:path');
    const { packageRoot } = await import('../../src/util/paths.js');
    const demo = join(packageRoot(), 'native', 'build', 'bin', 'rex_hosts_demo');
    // npm install builds it (scripts/build-native.mjs); its absence is a build failure, not a reason to skip.
    expect(existsSync(demo), `${demo} missing: run npm install`).toBe(true);
    const { stdout } = await run(demo, [], { env: { ...process.env, REX_SOCKET: cluster.host('alpha').socket } });
    expect(stdout).toMatch(/rload: \d+\.\d+/);
    for (const h of ['alpha', 'beta', 'gamma']) expect(stdout).toContain(h);
  });

  it('RexClient.connect says clearly when no daemon runs', async () => {
    await expect(RexClient.connect({ socket: '/nonexistent/rexd.sock' })).rejects.toThrow(/no rexd is running for this user \(no socket at \/nonexistent\/rexd.sock\)/);
  });
});
