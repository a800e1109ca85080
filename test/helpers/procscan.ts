/** Reading /proc for the security tests: descriptor counts, children, and processes marked by a test. */
import { readdirSync, readFileSync } from 'node:fs';
import { procStat } from '../../src/util/proc.js';

/** How many descriptors process `pid` holds. */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

function pids(): number[] {
  return readdirSync('/proc').flatMap((e) => (/^\d+$/.test(e) ? [Number(e)] : []));
}

/** The parent pid of `pid` (field 4 of /proc/PID/stat), or undefined if it is gone. */
export function parentOf(pid: number): number | undefined {
  const f = procStat(pid);
  return f ? Number(f[1]) : undefined;
}

/** The live (not zombie) children of `pid`, each with its argv. */
export function childrenOf(pid: number): { pid: number; argv: string[] }[] {
  const out: { pid: number; argv: string[] }[] = [];
  for (const p of pids()) {
    if (parentOf(p) !== pid) continue;
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0').filter(Boolean);
      if (argv.length > 0) out.push({ pid: p, argv }); // a zombie has an empty cmdline
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}

/** Processes whose argv or environment contains `marker` (this process excluded), with their argv. */
export function marked(marker: string): { pid: number; argv: string }[] {
  const out: { pid: number; argv: string }[] = [];
  for (const p of pids()) {
    if (p === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8');
      let env = '';
      try {
        env = readFileSync(`/proc/${p}/environ`, 'utf8');
      } catch {
        /* another user's process: its argv still counts */
      }
      if (argv.includes(marker) || env.includes(marker)) out.push({ pid: p, argv: argv.split('\0').join(' ').trim() });
    } catch {
      /* gone meanwhile */
    }
  }
  return out;
}
