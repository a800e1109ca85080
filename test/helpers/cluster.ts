/** Test fixture: a real local cluster of rexd processes, in network namespaces when running as root. */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { installTree } from '../../src/cluster/mountns.js';
import { netnsAvailable } from '../../src/cluster/netns.js';
import { packageRoot } from '../../src/util/paths.js';

/** True when tests can put hosts in network namespaces (root, as in CI). */
export const NETNS = netnsAvailable();

/**
 * Starts `n` hosts in a fresh temp dir; call `stop()` in afterAll. `privateFs` (root only): hosts
 * that share no files, each in its own mount namespace with a `make -C native install` of this
 * checkout (into the temp dir) at /usr and private /etc/rex, /var/lib/rex, /run/rex, /home and
 * /tmp (src/cluster/mountns.ts).
 */
export async function startCluster(n = 3, opts: { netns?: boolean; loadInterval?: string; peerTimeout?: string; rc?: string[]; privateFs?: boolean } = {}): Promise<{ cluster: LocalCluster; dir: string; stop: () => Promise<void> }> {
  const dir = mkdtempSync(join(tmpdir(), opts.privateFs ? 'rex-test-nofs-' : 'rex-test-'));
  try {
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
      ...(opts.privateFs ? { privateFs: installTree(packageRoot(), join(dir, 'tree'), '/usr') } : {}),
    });
    return {
      cluster,
      dir,
      stop: async () => {
        await cluster.down();
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (e) {
    rmSync(dir, { recursive: true, force: true });
    throw e;
  }
}

/** What a program run on a host ended with. */
export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `argv` on host `name` as the cluster runs its rexd there: in its network namespace (and
 * mount namespace, on hosts that share nothing), with its host name, its rex.rc (REX_CONFIG)
 * and its rexd's socket (REX_SOCKET, for librex). Never rejects: the test reads the result.
 */
export function runOn(cluster: LocalCluster, name: string, argv: string[], opts: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<RunResult> {
  const h = cluster.host(name);
  const cmd = cluster.command(name, argv);
  const socket = h.fs ? '/run/rex/rexd.sock' : h.socket;
  return new Promise((resolve) => {
    execFile(cmd[0]!, cmd.slice(1), { env: { ...cluster.hostEnv(h), REX_SOCKET: socket, ...opts.env }, timeout: opts.timeoutMs ?? 30_000, encoding: 'utf8' }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}
