/** Text output shared by the commands: aligned tables and the host view. */
import type { HostView } from '../runtime/client.js';

/** Left-aligned columns separated by two spaces; numbers may be right-aligned with `right`. */
export function table(head: string[], rows: string[][], right: Set<number> = new Set()): string {
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(head), ...rows.map(line)].join('\n') + '\n';
}

/** Human form of a figure's age. */
export function formatAge(ms: number | undefined): string {
  if (ms === undefined) return '-';
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  return `${Math.round(ms / 60_000)}m`;
}

/** The `rex hosts` table. */
export function hostsTable(hosts: HostView[]): string {
  const rows = hosts.map((h) => [
    h.name + (h.self ? ' *' : ''),
    h.address !== undefined ? `${h.address.includes(':') ? `[${h.address}]` : h.address}:${h.port ?? ''}` : '-',
    h.load !== undefined ? h.load.toFixed(2) : '-',
    h.loadavg1 !== undefined ? h.loadavg1.toFixed(2) : '-',
    h.cores !== undefined ? String(h.cores) : '-',
    h.jobs !== undefined ? String(h.jobs) : '-',
    h.reachable ? 'up' : `down${h.error ? ` (${h.error})` : ''}`,
    formatAge(h.ageMs),
    h.cpu ? `${h.cpu.class} ${h.cpu.vendor} ${h.cpu.modelName || `family ${h.cpu.family} model ${h.cpu.model}`}` : h.cpuError ? `? (${h.cpuError})` : '-',
  ]);
  return table(['HOST', 'ADDRESS', 'RLOAD', 'LOADAVG1', 'CORES', 'JOBS', 'STATE', 'AGE', 'CPU'], rows, new Set([2, 3, 4, 5, 7]));
}

/** JSON for --json output: stable key order, one document. */
export function toJson(v: unknown): string {
  return JSON.stringify(v, (_k, x) => (typeof x === 'bigint' ? x.toString() : x instanceof Uint8Array ? Buffer.from(x).toString('hex') : x), 2) + '\n';
}
