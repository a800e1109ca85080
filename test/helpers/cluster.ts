/** Test fixture: a real local cluster of rexd processes, in network namespaces when running as root. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { netnsAvailable } from '../../src/cluster/netns.js';

/** True when tests can put hosts in network namespaces (root, as in CI). */
export const NETNS = netnsAvailable();

/** Starts `n` hosts in a fresh temp dir; call `stop()` in afterAll. */
export async function startCluster(n = 3, opts: { netns?: boolean; loadInterval?: string; peerTimeout?: string; rc?: string[] } = {}): Promise<{ cluster: LocalCluster; dir: string; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), 'rex-test-'));
  const cluster = await LocalCluster.up({
    dir,
    hosts: n,
    netns: opts.netns ?? NETNS,
    loadInterval: opts.loadInterval ?? '200ms',
    peerTimeout: opts.peerTimeout ?? '1s',
    logLevel: 'debug',
    // The suite's clusters honour the test switches (REX_EXEC_TEST_HIDE...): see src/util/testmode.ts.
    testMode: true,
    ...(opts.rc ? { rc: opts.rc } : {}),
  });
  return {
    cluster,
    dir,
    stop: async () => {
      await cluster.down();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
