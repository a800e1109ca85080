/**
 * The private Slurm fixture (test/helpers/slurm.ts): N slurmd, each in a network and UTS namespace of its own.
 */
import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { slurmUnavailable, startSlurm, type SlurmFixture } from '../helpers/slurm.js';

const reason = slurmUnavailable();
if (reason) console.log(`skipped: the Slurm fixture cannot run here: ${reason}`);

/** Pids whose command line mentions `needle`. */
function procsMentioning(needle: string): number[] {
  const out: number[] = [];
  for (const f of readdirSync('/proc')) {
    if (!/^\d+$/.test(f) || Number(f) === process.pid) continue;
    try {
      if (readFileSync(`/proc/${f}/cmdline`, 'utf8').includes(needle)) out.push(Number(f));
    } catch {
      /* gone */
    }
  }
  return out;
}

describe.skipIf(reason !== undefined)('a private Slurm cluster, one network and UTS namespace per node', () => {
  let s: SlurmFixture | undefined;
  let job = '';

  beforeAll(async () => {
    s = await startSlurm(3);
  }, 60_000);

  afterAll(async () => {
    await s?.stop();
  }, 30_000);

  it('has three idle nodes', () => {
    const out = s!.run(['sinfo', '-h', '-N', '-o', '%N %t']);
    expect(out.trim().split('\n').sort()).toEqual(['n1 idle', 'n2 idle', 'n3 idle']);
  });

  it('grants an allocation of 3 nodes; srun -N3 runs on n1..n3, each with its own name and address', () => {
    s!.run(['salloc', '-N3', '--no-shell']); // the grant is on stderr; the job id comes from squeue
    job = s!.run(['squeue', '-h', '-o', '%i']).trim().split('\n')[0]!;
    expect(job).toMatch(/^\d+$/);
    const step = s!.run(['srun', `--jobid=${job}`, '-N3', '-l', 'sh', '-c', 'echo "$(hostname) $SLURMD_NODENAME $(ip -4 -o addr show | awk \'$2 != "lo" {print $4}\')"']);
    const rows = step.trim().split('\n').map((l) => l.replace(/^\d+:\s*/, '')).sort();
    expect(rows).toEqual(s!.nodes.map((n) => `${n.name} ${n.name} ${n.address}/24`));
    expect(new Set(s!.nodes.map((n) => n.address)).size).toBe(3);
  });

  it('a process on n1 reaches a listener on n2 over TCP', async () => {
    const n2 = s!.nodes[1]!;
    const port = 15000 + s!.network.id;
    const server = `require('net').createServer(c=>{c.end(require('os').hostname()+' from '+c.remoteAddress+'\\n');process.exitCode=0;setTimeout(()=>process.exit(0),100)}).listen(${port},'${n2.address}',()=>console.log('listening'))`;
    const a = s!.cmd('srun', `--jobid=${job}`, '--overlap', '-N1', '-w', 'n2', process.execPath, '-e', server);
    const l = spawn(a[0]!, a.slice(1), { env: s!.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let lout = '';
    l.stdout.on('data', (d) => (lout += d));
    l.stderr.on('data', (d) => (lout += d));
    for (let i = 0; i < 100 && !lout.includes('listening'); i++) await new Promise((r) => setTimeout(r, 100));
    expect(lout).toContain('listening');
    const client = `const c=require('net').connect(${port},'${n2.address}');let d='';c.on('data',x=>d+=x);c.on('end',()=>console.log(require('os').hostname()+' got '+d.trim()))`;
    const got = s!.run(['srun', `--jobid=${job}`, '--overlap', '-N1', '-w', 'n1', process.execPath, '-e', client]);
    expect(got.trim()).toBe(`n1 got n2 from ${s!.nodes[0]!.address}`);
    await new Promise((r) => (l.exitCode !== null ? r(null) : l.once('exit', r)));
    expect(l.exitCode).toBe(0);
  }, 30_000);

  it('leaves nothing behind after the teardown', async () => {
    const f = s!;
    s = undefined;
    await f.stop();
    expect(procsMentioning(f.conf)).toEqual([]);
    expect(procsMentioning(f.dir)).toEqual([]);
    for (const n of [...f.nodes, f.ctl]) expect(existsSync(`/run/netns/${n.ns}`)).toBe(false);
    expect(existsSync(`/run/netns/${f.network.switchNs}`)).toBe(false);
    expect(existsSync(f.dir)).toBe(false);
  }, 30_000);
});
