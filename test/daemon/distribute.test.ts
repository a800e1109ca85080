/**
 * rex_key --distribute without a token: re-sends the key to every known host,
 * reports a host that is down and retries it on the next run, and refuses to
 * contact a host whose key it does not know.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { startCluster } from '../helpers/cluster.js';

describe('rex_key --distribute to the servers list', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(3, { netns: false }));
    await cluster.waitAllReachable();
  });
  afterAll(async () => {
    await stop?.();
  });

  const fail = (p: Promise<string>) => p.then(() => 'succeeded', (e: Error) => e.message);

  it('re-sends to every host; a host that is down is reported, remembered, and retried on the next run', async () => {
    const ok = await cluster.rexKey('alpha', ['--distribute']);
    expect(ok).toMatch(/beta: already knows alpha\.\S+ \(key [A-Z2-7-]+\); server beta\.\S+ key [A-Z2-7-]+ verified/);
    expect(ok).toMatch(/gamma: already knows alpha\./);

    cluster.kill('gamma', 'SIGKILL');
    await cluster.waitExit('gamma');
    const down = await fail(cluster.rexKey('alpha', ['--distribute']));
    expect(down).toMatch(/beta: already knows/);
    expect(down).toMatch(/gamma: FAILED: TLS connection to gamma@127\.0\.0\.1:\d+ failed: connect ECONNREFUSED/);
    expect(down).toContain('(will be retried by the next rex_key --distribute)');
    expect(down).toContain('1 of 2 hosts did not receive the key');
    const pendingFile = join(cluster.host('alpha').stateDir, 'distribute.pending');
    expect(readFileSync(pendingFile, 'utf8')).toMatch(/^gamma \S+ unreachable$/m);
    expect(await cluster.rexKey('alpha', ['--list'])).toMatch(/Hosts still waiting for our key.*\n {2}gamma since \S+: unreachable/);

    await cluster.startHost(cluster.host('gamma'));
    const back = await cluster.rexKey('alpha', ['--distribute', '--host', 'gamma']);
    expect(back).toMatch(/gamma: retrying \(pending since \S+\)\n {2}gamma: already knows alpha\./);
    expect(readFileSync(pendingFile, 'utf8')).not.toMatch(/^gamma/m);
  });

  it('refuses to send to a host whose key is not known, and says how to get a token', async () => {
    // A fourth server appears in alpha's rex.rc; nobody enrolled with it.
    const rc = cluster.host('alpha').rcFile;
    const text = readFileSync(rc, 'utf8');
    writeFileSync(rc, `${text}servers : ${cluster.hosts.map((h) => `${h.name}@${h.address}:${h.port}`).join(', ')}, delta@127.0.0.1:9\n`);
    try {
      const out = await fail(cluster.rexKey('alpha', ['--distribute', '--host', 'delta']));
      expect(out).toContain('delta: FAILED: delta: no key is known for this host, so it cannot be verified');
      expect(out).toContain('hint: ask its owner to run `rex_key --invite --for alpha.root` on delta, then run `rex_key --distribute --token TOKEN` here');
      const pending = join(cluster.host('alpha').stateDir, 'distribute.pending');
      expect(existsSync(pending) && readFileSync(pending, 'utf8')).toMatch(/^delta \S+ needs a token$/m);
    } finally {
      writeFileSync(rc, text);
    }
  });
});
