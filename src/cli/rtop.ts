#!/usr/bin/env node
/**
 * `rtop`: top(1) for the cluster. Shows every host's rload, load average, cores,
 * REX jobs and reachability as the local rexd sees them, least loaded first,
 * refreshed every --delay seconds.
 */
import { Command } from 'commander';
import type { HostView as HostEntry } from '../runtime/client.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { clientOptions, connectFor } from './commands/hosts.js';
import { hostsTable, toJson } from './format.js';
import { runMain } from './main.js';

interface Opts {
  delay: string;
  iterations?: string;
  once?: boolean;
  json?: boolean;
  socket?: string;
  config?: string;
}

/** Least loaded first; unreachable hosts last, as placement would rank them. */
export function rank(hosts: HostEntry[]): HostEntry[] {
  return [...hosts].sort((a, b) => Number(b.reachable) - Number(a.reachable) || (a.load ?? Infinity) - (b.load ?? Infinity) || a.name.localeCompare(b.name));
}

const program = clientOptions(new Command('rtop'))
  .description('show the load of every cluster host, least loaded first, refreshed live')
  .option('-d, --delay <seconds>', 'seconds between refreshes', '1')
  .option('-n, --iterations <n>', 'stop after n refreshes')
  .option('-1, --once', 'print one table and exit (same as -n 1)')
  .option('--json', 'one JSON document per refresh')
  .action(async (opts: Opts) => {
    const delay = Number(opts.delay);
    if (!(delay >= 0.1 && delay <= 3600)) throw new RexError(ErrorCodes.USAGE, `--delay ${opts.delay}: expected seconds from 0.1 to 3600`);
    const n = opts.once ? 1 : opts.iterations !== undefined ? Number(opts.iterations) : Infinity;
    if (!(n >= 1)) throw new RexError(ErrorCodes.USAGE, `--iterations ${opts.iterations}: expected a positive number`);
    const tty = process.stdout.isTTY && !opts.json;
    const c = await connectFor(opts);
    let stop = false;
    process.once('SIGINT', () => (stop = true));
    try {
      for (let i = 0; i < n && !stop; i++) {
        const hosts = rank(await c.hosts());
        if (opts.json) process.stdout.write(toJson({ time: new Date().toISOString(), via: c.host, hosts }));
        else {
          const up = hosts.filter((h) => h.reachable).length;
          const head = `rtop - ${new Date().toLocaleTimeString()} - via ${c.host} - ${hosts.length} hosts, ${up} up - least loaded: ${hosts[0]?.reachable ? hosts[0].name : 'none'}\n\n`;
          process.stdout.write((tty ? '\x1b[H\x1b[2J' : i > 0 ? '\n' : '') + head + hostsTable(hosts));
        }
        if (i + 1 < n && !stop) await new Promise((r) => setTimeout(r, delay * 1000));
      }
    } finally {
      c.close();
    }
  });

await runMain(program);
