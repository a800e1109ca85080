/**
 * Containment of the jobs a rexd runs (docs/EXEC.md, "Containment"): every
 * job (an EXEC program, an rfork child, a call controller) and everything it
 * starts, whatever it does (setsid, double fork, HUP ignored), ends when the
 * job ends, is cancelled, or loses its client or origin.
 *
 * With cgroup v2 that rexd may write to (root, or a subtree delegated to its
 * user), each job gets a cgroup of its own under one rexd directory and is
 * ended with `cgroup.kill`. Otherwise each job is a process group of its own,
 * rexd is the child subreaper of its jobs' orphans (PR_SET_CHILD_SUBREAPER),
 * and ending a job kills its group and every process that descends from it or
 * carries its REX_JOB marker in its environment. `REX_CONTAINMENT=pgroup` in
 * rexd's environment forces the second way (tests, or a cgroup tree rexd must
 * not touch).
 */
import { createHash, randomBytes } from 'node:crypto';
import { accessSync, constants as fsc, existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, statSync, writeFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import { loadAddon } from '../../util/native.js';
import { procStat } from '../../util/proc.js';

/** The start time of a process in clock ticks since boot (/proc/PID/stat field 22): tells a pid's reuse apart. */
export function processStart(pid: number): string | undefined {
  return procStat(pid)?.[19];
}

/** The environment variable that names a process's job (inherited by everything the job starts). */
export const JOB_ENV = 'REX_JOB';

/** One contained job: what ending it needs, and what its record on disk says. */
export interface JobBox {
  /** Unique name: the REX_JOB value and, with cgroups, the cgroup's name. */
  id: string;
  pid: number;
  /** The job's cgroup directory (cgroup mode). */
  cgroup?: string;
}

/** The cgroup v2 mount point, from /proc/self/mountinfo (the one at /sys/fs/cgroup first); undefined without one. */
export function cgroup2Mount(): string | undefined {
  let info: string;
  try {
    info = readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return undefined;
  }
  const mounts: string[] = [];
  for (const line of info.split('\n')) {
    const [pre, post] = line.split(' - ');
    if (!pre || !post || post.split(' ')[0] !== 'cgroup2') continue;
    mounts.push(pre.split(' ')[4]!.replace(/\\040/g, ' '));
  }
  return mounts.find((m) => m === '/sys/fs/cgroup') ?? mounts[0];
}

/** This process's cgroup v2 path (the "0::" line of /proc/self/cgroup). */
function ownCgroup(): string | undefined {
  try {
    const line = readFileSync('/proc/self/cgroup', 'utf8').split('\n').find((l) => l.startsWith('0::'));
    return line?.slice(3);
  } catch {
    return undefined;
  }
}

function writable(dir: string): boolean {
  try {
    accessSync(dir, fsc.W_OK);
    return statSync(dir).uid === process.getuid!();
  } catch {
    return false;
  }
}

/** Live processes that descend from `root` (by parent pid) or carry `REX_JOB=id` in their environment. */
function members(root: number, id: string): number[] {
  const parent = new Map<number, number>();
  const marked: number[] = [];
  const needle = `${JOB_ENV}=${id}\0`;
  for (const e of readdirSync('/proc')) {
    if (!/^\d+$/.test(e)) continue;
    const pid = Number(e);
    const f = procStat(pid);
    if (!f || f[0] === 'Z') continue;
    try {
      parent.set(pid, Number(f[1]));
      if (readFileSync(`/proc/${pid}/environ`, 'utf8').includes(needle)) marked.push(pid);
    } catch {
      /* gone meanwhile, or not ours to read */
    }
  }
  const out = new Set(marked);
  for (const pid of parent.keys()) {
    for (let p: number | undefined = pid, depth = 0; p !== undefined && p > 1 && depth < 64; p = parent.get(p), depth++) {
      if (p === root) {
        out.add(pid);
        break;
      }
    }
  }
  return [...out];
}

/**
 * Moves `pid` into the cgroup whose cgroup.procs is `procs`, then what it had
 * started before (its children, from /proc/PID/task/PID/children: no scan of
 * /proc), and so on down: a process forked after its parent moved is born in
 * the cgroup, one forked before is listed. posix_spawn cannot start a process
 * in a cgroup (clone3's CLONE_INTO_CGROUP can); this closes the gap.
 */
function moveTree(procs: string, pid: number, depth = 0): void {
  try {
    writeFileSync(procs, String(pid));
  } catch {
    return; // exited meanwhile
  }
  if (depth > 16) return;
  let kids: number[] = [];
  try {
    kids = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').split(' ').filter(Boolean).map(Number);
  } catch {
    /* gone */
  }
  for (const k of kids) moveTree(procs, k, depth + 1);
}

/** The containment of one rexd's jobs. */
export class Containment {
  /** 'cgroup' (a cgroup v2 per job) or 'pgroup' (process group, subreaper and marker). */
  readonly mode: 'cgroup' | 'pgroup';
  /** The directory holding the job cgroups (cgroup mode). */
  readonly base?: string;
  /** Why the fallback is used (printed at start). */
  readonly reason?: string;
  /** Orphans of jobs reparented to this rexd (pgroup mode), reaped once they die. */
  private readonly adopted = new Set<number>();
  private sweeper?: NodeJS.Timeout;

  constructor(hostName: string, stateDir: string, env: NodeJS.ProcessEnv = process.env) {
    const found = env.REX_CONTAINMENT === 'pgroup' ? { reason: 'REX_CONTAINMENT=pgroup' } : Containment.cgroupBase(hostName, stateDir);
    if ('base' in found) {
      this.mode = 'cgroup';
      this.base = found.base;
      return;
    }
    this.mode = 'pgroup';
    this.reason = found.reason;
    try {
      if (!loadAddon().setChildSubreaper()) this.reason += '; PR_SET_CHILD_SUBREAPER refused';
    } catch (e) {
      this.reason += `; no subreaper (${(e as Error).message})`;
    }
  }

  /**
   * Where this rexd's job cgroups go: as root, <mount>/rex-HOST-USER-<hash of
   * the state directory> (several rexds of one host name may run on a test
   * machine); otherwise a directory under rexd's own cgroup when that is
   * delegated to its user (owned and writable, as systemd's Delegate= does).
   */
  static cgroupBase(hostName: string, stateDir: string): { base: string } | { reason: string } {
    const mount = cgroup2Mount();
    if (!mount) return { reason: 'no cgroup2 file system is mounted' };
    const tag = createHash('sha256').update(stateDir).digest('hex').slice(0, 8);
    const name = `rex-${hostName}-${userInfo().username}-${tag}`.replace(/[^A-Za-z0-9_.-]/g, '_');
    const own = ownCgroup();
    const candidates = process.getuid!() === 0 ? [join(mount, name)] : own !== undefined && writable(join(mount, own)) ? [join(mount, own, name)] : [];
    if (candidates.length === 0) return { reason: `${mount} is not writable by ${userInfo().username} (no delegated cgroup)` };
    const base = candidates[0]!;
    try {
      // A probe: create and remove one job cgroup, so that a read-only or foreign tree falls back now, not per job.
      // The directory exists only while jobs run (created by the first, removed after the last).
      mkdirSync(base, { recursive: true });
      const probe = join(base, `probe-${process.pid}`);
      mkdirSync(probe);
      const kill = existsSync(join(probe, 'cgroup.kill'));
      rmdirSync(probe);
      tryRmdir(base);
      if (!kill) return { reason: `${mount} has no cgroup.kill (Linux 5.14 or later needed)` };
    } catch (e) {
      return { reason: `cannot create cgroups under ${base}: ${(e as Error).message}` };
    }
    return { base };
  }

  /** A fresh job id, to put in the job's environment as REX_JOB before it starts. */
  newId(): string {
    return `job-${randomBytes(8).toString('hex')}`;
  }

  /**
   * Puts the started process `pid` in its own container: a new cgroup it is
   * moved into (with the descendants it may have started already), or its
   * process group. Never throws: a cgroup that cannot be made leaves the job
   * to the process-group way.
   */
  enter(pid: number, id: string): JobBox {
    if (this.mode !== 'cgroup') {
      this.startSweeper();
      return { id, pid };
    }
    const cgroup = join(this.base!, id);
    try {
      try {
        mkdirSync(this.base!, { recursive: true });
        mkdirSync(cgroup);
      } catch {
        // The last job's end may have removed the base between the two: once more.
        mkdirSync(this.base!, { recursive: true });
        mkdirSync(cgroup);
      }
      // Each process is moved before its children are read: one it forks later is born in the cgroup.
      moveTree(join(cgroup, 'cgroup.procs'), pid);
      return { id, pid, cgroup };
    } catch {
      return { id, pid };
    }
  }

  /** Ends every process of the job now (SIGKILL): cgroup.kill, or its group, descendants and marked processes. */
  end(box: JobBox): void {
    if (box.cgroup) {
      try {
        writeFileSync(join(box.cgroup, 'cgroup.kill'), '1');
      } catch {
        /* removed already */
      }
      this.removeWhenEmpty(box.cgroup);
      return;
    }
    killTree(box.pid, box.id, this.adopted);
    this.reapAdopted();
  }

  /** Sends `signal` to every process of the job (HUP before the KILL of a grace period). */
  signal(box: JobBox, signal: NodeJS.Signals): void {
    const pids = box.cgroup ? cgroupProcs(box.cgroup) : [box.pid, ...members(box.pid, box.id)];
    for (const p of new Set(pids)) {
      try {
        process.kill(p, signal);
      } catch {
        /* gone */
      }
    }
    try {
      process.kill(-box.pid, signal);
    } catch {
      /* no such group */
    }
  }

  /** Removes an emptied cgroup (rmdir fails while a process is still dying in it: retried briefly). */
  private removeWhenEmpty(cgroup: string, tries = 50): void {
    try {
      rmdirSync(cgroup);
      this.removeBase();
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EBUSY' && tries > 0) setTimeout(() => this.removeWhenEmpty(cgroup, tries - 1), 100).unref();
    }
  }

  /** pgroup mode: reap the adopted orphans that have died (they are nobody else's to wait for). */
  private reapAdopted(): void {
    let addon;
    try {
      addon = loadAddon();
    } catch {
      return;
    }
    for (const pid of this.adopted) if (addon.reapChild(pid)) this.adopted.delete(pid);
  }

  /** pgroup mode: every 2 s, note the live orphans reparented here (children of rexd with a REX_JOB marker) and reap the dead. */
  private startSweeper(): void {
    if (this.sweeper) return;
    this.sweeper = setInterval(() => {
      for (const e of readdirSync('/proc')) {
        if (!/^\d+$/.test(e)) continue;
        const f = procStat(e);
        if (!f || Number(f[1]) !== process.pid || f[0] === 'Z') continue;
        try {
          if (readFileSync(`/proc/${e}/environ`, 'utf8').includes(`${JOB_ENV}=`) && Number(f[2]) !== Number(e)) this.adopted.add(Number(e));
        } catch {
          /* gone */
        }
      }
      this.reapAdopted();
    }, 2000);
    this.sweeper.unref();
  }

  /**
   * cgroup mode, at rexd's start: ends and removes every job cgroup a previous
   * rexd of this state directory left (the base is this rexd's alone, so a job
   * whose record was never written is found too); returns the pids killed.
   */
  reapBase(): number[] {
    if (this.mode !== 'cgroup') return [];
    const killed: number[] = [];
    let names: string[] = [];
    try {
      names = readdirSync(this.base!).filter((n) => n.startsWith('job-'));
    } catch {
      /* no base */
    }
    for (const n of names) killed.push(...reapRecorded({ pid: 0, start: '', cgroup: join(this.base!, n) }));
    this.removeBase();
    return killed;
  }

  /** Stops the sweeper and removes this rexd's cgroup directory if no job cgroup is left (rexd stopping). */
  close(): void {
    clearInterval(this.sweeper);
    this.removeBase();
  }

  /**
   * Removes the base once empty (it fails while another job's cgroup is in it). A cgroup just removed may still be
   * dying in the kernel for a moment, and its parent's rmdir then fails with EBUSY: retried briefly, as for jobs.
   */
  private removeBase(tries = 20): void {
    if (!this.base) return;
    try {
      rmdirSync(this.base);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EBUSY' && tries > 0) setTimeout(() => this.removeBase(tries - 1), 100).unref();
    }
  }
}

function tryRmdir(dir: string): void {
  try {
    rmdirSync(dir);
  } catch {
    /* not empty, or gone */
  }
}

function cgroupProcs(cgroup: string): number[] {
  try {
    return readFileSync(join(cgroup, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    return [];
  }
}

/**
 * SIGKILL for the process group `pid` leads and for every process that
 * descends from it or carries REX_JOB=`id`, repeated until a scan finds none
 * (a process may fork while the scan runs). Children of this process among
 * them go to `adopted`, to be reaped.
 */
export function killTree(pid: number, id: string, adopted?: Set<number>): number[] {
  const killed: number[] = [];
  for (let round = 0; round < 10; round++) {
    if (pid > 1) {
      try {
        process.kill(-pid, 'SIGKILL');
      } catch {
        /* no such group */
      }
    }
    const found = members(pid, id);
    if (found.length === 0) break;
    for (const p of found) {
      try {
        process.kill(p, 'SIGKILL');
        killed.push(p);
      } catch {
        /* gone */
      }
      if (adopted && p !== pid) adopted.add(p);
    }
  }
  return killed;
}

/** Kills what a job record of a previous rexd names: its cgroup, else its process (verified by start time), group and marked processes. */
export function reapRecorded(rec: { pid: number; start: string; id?: string; cgroup?: string }): number[] {
  const killed: number[] = [];
  if (rec.cgroup && existsSync(rec.cgroup)) {
    killed.push(...cgroupProcs(rec.cgroup));
    try {
      writeFileSync(join(rec.cgroup, 'cgroup.kill'), '1');
    } catch {
      /* gone */
    }
    const deadline = Date.now() + 2000;
    for (;;) {
      try {
        rmdirSync(rec.cgroup);
        break;
      } catch {
        if (Date.now() > deadline) break;
        Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20); // rexd is starting: nothing else waits on this loop
      }
    }
  }
  const same = rec.pid > 1 && processStart(rec.pid) === rec.start;
  if (same) {
    try {
      process.kill(-rec.pid, 'SIGKILL');
    } catch {
      /* no group */
    }
    try {
      process.kill(rec.pid, 'SIGKILL');
      killed.push(rec.pid);
    } catch {
      /* gone */
    }
  }
  if (rec.id) killed.push(...killTree(same ? rec.pid : 0, rec.id));
  return [...new Set(killed)];
}
