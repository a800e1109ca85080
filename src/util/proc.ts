/** Reading /proc/PID files of other processes. */
import { readFileSync } from 'node:fs';

/**
 * The fields of /proc/PID/stat after the command name, from field 3 (state) on:
 * [0] state, [1] ppid, [2] pgrp, ... [19] start time. The name (field 2) may
 * contain spaces and parentheses, so the count starts after the last ')'.
 * Undefined when the process is gone or not ours to read.
 */
export function procStat(pid: number | string): string[] | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  } catch {
    return undefined;
  }
}
