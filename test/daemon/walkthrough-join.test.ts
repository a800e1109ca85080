/**
 * The second walkthrough of docs/KEYS.md, command by command: a three-host
 * cluster whose keys are made by hand, joined with two `rex_key --join`
 * commands (each after its token is issued), the token given on stdin; then
 * every host reaches every other.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { currentUser } from '../../src/keys/identity.js';
import { distBin } from '../../src/util/paths.js';
import { runWithInput } from '../helpers/stdin.js';

const exec = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'rex-walk-join-'));
const U = currentUser();

/** Runs `rex`/`rex_key` with `input` on stdin; returns its exit code and output. */
function cmd(bin: 'rex' | 'rex_key', args: string[], input = ''): Promise<{ code: number; stdout: string; stderr: string }> {
  return runWithInput([process.execPath, distBin(bin), ...args], input);
}

afterAll(async () => {
  try {
    await LocalCluster.attach(dir).down();
  } catch {
    /* not started */
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('docs/KEYS.md walkthrough: three hosts, two joins', () => {
  it('create, start, invite --join and join twice, then every pair pings', async () => {
    expect((await cmd('rex', ['cluster', 'up', '--dir', dir, '--hosts', '3', '--keys', 'none'])).code).toBe(0);
    const rc = (h: string) => join(dir, 'hosts', h, 'rex.rc');
    const [A, B, C] = [rc('alpha'), rc('beta'), rc('gamma')];
    for (const r of [A, B, C]) expect((await cmd('rex_key', ['--config', r, '--create'])).code).toBe(0);
    expect((await cmd('rex', ['cluster', 'start', '--dir', dir])).code).toBe(0);

    // 1. beta joins through alpha.
    const inv = await cmd('rex_key', ['--config', A, '--invite', '--join', 'beta']);
    expect(inv.stdout).toContain(`One-time join token for host beta (its rexd, beta.${U}) to join the cluster through alpha.${U}`);
    expect(inv.stdout).toContain('On beta run:  rex_key --join alpha');
    const t1 = /^ {2}(rex1:\S+)$/m.exec(inv.stdout)![1]!;
    const j1 = await cmd('rex_key', ['--config', B, '--join', 'alpha'], `${t1}\n`);
    expect(j1.code, j1.stderr).toBe(0);
    expect(j1.stdout).toMatch(new RegExp(`alpha: now knows beta\\.${U} \\(key \\S+\\) as a peer; server alpha\\.${U} key \\S+ verified against the token`));

    // 2. gamma joins through alpha, which introduces it to beta.
    const t2 = /^ {2}(rex1:\S+)$/m.exec((await cmd('rex_key', ['--config', A, '--invite', '--join', 'gamma'])).stdout)![1]!;
    const j2 = await cmd('rex_key', ['--config', C, '--join', 'alpha'], `${t2}\n`);
    expect(j2.code, j2.stderr).toBe(0);
    expect(j2.stdout).toMatch(new RegExp(`beta\\.${U}: key \\S+ at \\S+, introduced by alpha\\.${U}`));
    expect(j2.stdout).toContain(`Peers: alpha.${U}, beta.${U}`);

    // Every host reaches every other, with no grant given by hand.
    await vi.waitFor(
      async () => {
        for (const r of [A, B, C]) {
          const { stdout } = await exec(process.execPath, [distBin('rex'), 'hosts', '-c', r]);
          expect(stdout.match(/ up /g)?.length ?? 0, stdout).toBeGreaterThanOrEqual(3);
        }
      },
      { timeout: 30_000, interval: 250 },
    );
    for (const [from, to] of [[A, 'beta'], [A, 'gamma'], [B, 'alpha'], [B, 'gamma'], [C, 'alpha'], [C, 'beta']] as const) {
      const p = await cmd('rex', ['ping', '-c', from, to, '-n', '1']);
      expect(p.code, p.stderr).toBe(0);
      expect(p.stdout).toMatch(new RegExp(`reply from ${to}: seq=1 hops=1`));
    }
  }, 120_000);
});
