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

/** Whether process `pid` exists (kill 0; EPERM: it does, as another user's). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** The stop signals (STOP, TSTP, TTIN, TTOU) as bits of a /proc signal mask (bit N-1 is signal N). */
export const STOP_SIGNALS_MASK = (1n << 18n) | (1n << 19n) | (1n << 20n) | (1n << 21n);

/**
 * The signals pending for process `pid` as a whole (ShdPnd of /proc/PID/status,
 * where kill(2) puts them), as a bit mask; undefined when the process is gone.
 */
export function pendingSignals(pid: number): bigint | undefined {
  try {
    const m = /^ShdPnd:\s*([0-9a-f]+)$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? BigInt(`0x${m[1]}`) : undefined;
  } catch {
    return undefined;
  }
}
