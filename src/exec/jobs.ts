/**
 * The programs a rexd runs for EXEC, recorded on disk (one file per process
 * in <state-directory>/exec-jobs/) so that a rexd started after a crash
 * (SIGKILL, power cut of the daemon only) can end what its predecessor left
 * running: no leaked children across restarts (docs/EXEC.md, "Faults").
 */
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** The start time of a process in clock ticks since boot (/proc/PID/stat field 22): tells a pid's reuse apart. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name (field 2) may contain spaces and parentheses: count fields after the last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The on-disk record of running EXEC programs of one rexd. */
export class JobRecord {
  private readonly dir: string;

  constructor(stateDir: string) {
    this.dir = join(stateDir, 'exec-jobs');
  }

  /** Records a started program (its pid is also its process group). */
  add(pid: number): void {
    const start = processStart(pid);
    if (start === undefined) return; // already gone
    try {
      mkdirSync(this.dir, { recursive: true, mode: 0o700 });
      writeFileSync(join(this.dir, String(pid)), `${start}\n`);
    } catch {
      /* a record that cannot be written only loses the restart clean-up */
    }
  }

  /** Forgets a program that has ended. */
  remove(pid: number): void {
    rmSync(join(this.dir, String(pid)), { force: true });
  }

  /**
   * Kills (SIGKILL, whole process group) every recorded program that is still
   * the same process, and clears the record; returns the pids killed.
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
      let recorded = '';
      try {
        recorded = readFileSync(join(this.dir, name), 'utf8').trim();
      } catch {
        /* vanished */
      }
      if (Number.isInteger(pid) && pid > 1 && recorded !== '' && processStart(pid) === recorded) {
        try {
          process.kill(-pid, 'SIGKILL');
          killed.push(pid);
        } catch {
          try {
            process.kill(pid, 'SIGKILL');
            killed.push(pid);
          } catch {
            /* gone meanwhile */
          }
        }
      }
      rmSync(join(this.dir, name), { force: true });
    }
    return killed;
  }
}
