// docs/EXEC.md, "rexd stops (SIGTERM): it ends the process groups of every program it runs":
// a program on beta, its own child in the same group, and both gone once beta's rexd got SIGTERM.
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { RemoteProcess } from '../../src/exec/origin/stub.js';
import { RexClient } from '../../src/runtime/client.js';
import { startCluster } from '../helpers/cluster.js';
import { alive } from '../helpers/proc.js';

describe('rexd on SIGTERM', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  let client: RexClient;

  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(2));
    await cluster.waitAllReachable();
    client = await RexClient.connect({ socket: cluster.host('alpha').socket });
  }, 60_000);
  afterAll(async () => {
    client?.close();
    await stop?.();
  });

  // claim: exec.sigterm-ends-jobs
  it('ends the programs it runs, their children included, and exits', async () => {
    // The shell and its background sleep share the program's process group; neither writes anything.
    const a = 3000 + (process.pid % 997), b = a + 1; // durations no other test uses
    const script = `sleep ${a} & exec sleep ${b}`;
    const rp = await RemoteProcess.start(client.conn, { path: '/bin/sh', argv: ['/bin/sh', '-c', script], host: 'beta', env: ['PATH=/usr/bin:/bin'] }, (_fd, _d, done) => done());
    const pids = await vi.waitFor(
      () => {
        const found = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).map(Number).filter((p) => {
          try {
            const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8');
            return cmd === `sleep\u0000${a}\u0000` || cmd === `sleep\u0000${b}\u0000`;
          } catch {
            return false;
          }
        });
        if (found.length < 2) throw new Error(`the program and its child are not both running yet (${found.length})`);
        return found;
      },
      { timeout: 10_000, interval: 25 },
    );
    const rexd = cluster.host('beta').pid!;
    cluster.kill('beta', 'SIGTERM');
    await vi.waitFor(() => expect(alive(rexd)).toBe(false), { timeout: 15_000, interval: 50 });
    await vi.waitFor(() => expect(pids.filter(alive)).toEqual([]), { timeout: 10_000, interval: 50 });
    await rp.exited.catch(() => undefined);
  });
});
