/**
 * docs/SLURM.md's batch script, submitted as it stands in the doc with `sbatch --wait` by an ordinary user to
 * a private Slurm of three nodes (test/helpers/slurm.ts): REX comes up on the job's nodes, the script uses it,
 * and when the script ends the allocation ends and REX leaves nothing on any node.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, chownSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';
import { leftovers, slurmUnavailable, untilNothingLeft, startSlurm, type SlurmFixture } from '../helpers/slurm.js';
import { createTestUser, removeTestUser, type TestUser } from '../helpers/users.js';

const reason = slurmUnavailable();
if (reason) console.log(`skipped: the sbatch walk-through needs a private Slurm, which cannot run here: ${reason}`);

/** The script under `<!-- sbatch-example ... -->` in docs/SLURM.md. */
function docScript(): string {
  const doc = readFileSync(join(packageRoot(), 'docs', 'SLURM.md'), 'utf8');
  const m = /<!-- sbatch-example[^>]*-->\n```sh\n([\s\S]*?)```/.exec(doc);
  if (!m) throw new Error('docs/SLURM.md has no ```sh block after <!-- sbatch-example -->');
  return m[1]!;
}

describe.skipIf(reason !== undefined)("docs/SLURM.md's batch script on a Slurm of three nodes", () => {
  let s: SlurmFixture;
  let carol: TestUser;

  beforeAll(async () => {
    s = await startSlurm(3);
    carol = createTestUser('rextest-slurm-c');
  }, 120_000);

  afterAll(async () => {
    await s?.stop();
    if (carol) removeTestUser(carol.name);
  }, 60_000);

  // claim: slurm.sbatch
  it('brings REX up on the job, runs on its nodes, and leaves nothing when the job ends', async () => {
    const script = join(carol.home, 'rex-demo.sh');
    writeFileSync(script, docScript(), { mode: 0o755 });
    chownSync(script, carol.uid, carol.gid);
    // The user's login environment: REX on PATH (this checkout's launcher, as a site would install it).
    const a = s.cmd('setpriv', `--reuid=${carol.uid}`, `--regid=${carol.gid}`, '--init-groups', '--', 'sbatch', '--wait', `--output=${carol.home}/rex-demo-%j.out`, `--chdir=${carol.home}`, script);
    const r = spawnSync(a[0]!, a.slice(1), {
      encoding: 'utf8',
      timeout: 90_000,
      cwd: '/',
      env: { PATH: `${join(packageRoot(), 'bin')}:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: carol.home, USER: carol.name, LOGNAME: carol.name, SLURM_CONF: s.conf },
    });
    const job = /Submitted batch job (\d+)/.exec(r.stdout)?.[1];
    expect(job, `${r.stdout}${r.stderr}`).toMatch(/^\d+$/);
    const out = readFileSync(join(carol.home, `rex-demo-${job}.out`), 'utf8');
    expect(r.status, `${r.stderr}\n${out}\n${s.logs()}`).toBe(0);
    const lines = out.trim().split('\n');
    // rex hosts: a header, then n1 (itself, marked *), n2, n3.
    expect(lines.filter((l) => /^n[123] /.test(l)).map((l) => l.split(' ')[0])).toEqual(['n1', 'n2', 'n3']);
    expect(lines.find((l) => /^n1 \* /.test(l))).toBeDefined();
    const ran = lines.filter((l) => /^n\d+$/.test(l));
    // --host n3, three placed runs, then the run from n3's step onto the batch node n1.
    expect(ran).toHaveLength(5);
    expect(ran[0]).toBe('n3');
    for (const h of ran.slice(1, 4)) expect(['n1', 'n2', 'n3']).toContain(h);
    expect(ran[4]).toBe('n1');
    // The job is over: nothing of carol's on any node.
    await untilNothingLeft(s, s.nodes.map((n) => n.name), carol.uid);
    for (const n of s.nodes) expect(leftovers(s, n.name, carol.uid)).toEqual({ procs: [], tmp: [] });
  }, 120_000);
});
