/**
 * The jobs a rexd runs (EXEC programs, rfork children, call controllers),
 * recorded on disk (one file per job in <state-directory>/exec-jobs/: its pid,
 * the pid's start time, its REX_JOB id and its cgroup) so that a rexd started
 * after a crash (SIGKILL, power cut of the daemon only) can end what its
 * predecessor left running, descendants included: no leaked processes across
 * restarts (docs/EXEC.md, "Containment").
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processStart, reapRecorded, type JobBox } from './contain.js';

// The start time lives with the containment that compares it; re-exported for the record's readers.
export { processStart };

/** The on-disk record of running EXEC programs of one rexd. */
export class JobRecord {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'exec-jobs');
  }

  /** Records a started job (its pid is also its process group). */
  add(pid: number, box?: JobBox): void {
    const start = processStart(pid);
    if (start === undefined && !box?.cgroup) return; // already gone
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(this.dir, String(pid)), `${JSON.stringify({ start: start ?? '', ...(box ? { id: box.id } : {}), ...(box?.cgroup ? { cgroup: box.cgroup } : {}) })}\n`, { mode: 0o600 });
    } catch {
      /* a record that cannot be written only loses the restart clean-up */
    }
  }

  /** Forgets a program that has ended. */
  remove(pid: number): void {
    rmSync(join(this.dir, String(pid)), { force: true });
  }

  /**
   * Ends every recorded job (its cgroup; or its process when it is still the
   * same one by start time, its process group, and every process carrying its
   * REX_JOB id) and clears the record; returns the pids killed.
   */
  reapLeftovers(): number[] {
    let names: string[];
    try {
      names = readdirSync(this.dir);
    } catch {
      return [];
    }
    const killed: number[] = [];
    for (const name of names) {
      const pid = Number(name);
      let text = '';
      try {
        text = readFileSync(join(this.dir, name), 'utf8').trim();
      } catch {
        /* vanished */
      }
      // The first form held the start time alone.
      let rec: { start: string; id?: string; cgroup?: string } = { start: text };
      if (text.startsWith('{')) {
        try {
          rec = JSON.parse(text) as typeof rec;
        } catch {
          rec = { start: '' };
        }
      }
      if (Number.isInteger(pid) && pid > 1 && (rec.start !== '' || rec.cgroup)) killed.push(...reapRecorded({ pid, ...rec }));
      rmSync(join(this.dir, name), { force: true });
    }
    return killed;
  }
}
