/** `rex hosts`, `rex load` and `rex ping`: the cluster as the local rexd sees it. */
import type { Command } from 'commander';
import type { RexClient } from '../../runtime/client.js';
import { ErrorCodes, RexError } from '../../util/errors.js';
import { hostsTable, toJson } from '../format.js';

interface CommonOpts {
  socket?: string;
  config?: string;
  json?: boolean;
}

/** Connects to the rexd named by --socket, $REX_SOCKET, or rex.rc. */
export async function connectFor(opts: CommonOpts): Promise<RexClient> {
  // Imported on use: `rex --help` and commands that need no daemon do not load the protocol.
  const { RexClient } = await import('../../runtime/client.js');
  return RexClient.connect({ ...(opts.socket ? { socket: opts.socket } : {}), ...(opts.config ? { config: { file: opts.config } } : {}) });
}

async function withClient<T>(opts: CommonOpts, fn: (c: RexClient) => Promise<T>): Promise<T> {
  const c = await connectFor(opts);
  try {
    return await fn(c);
  } finally {
    c.close();
  }
}

/** Adds the options every client command takes. */
export function clientOptions(cmd: Command): Command {
  return cmd.option('--socket <path>', 'rexd socket (default: $REX_SOCKET, else rex.rc socket)').option('-c, --config <file>', 'rex.rc to read');
}

/** Registers hosts, load and ping on the `rex` program. */
export function registerHostCommands(program: Command): void {
  clientOptions(program.command('hosts'))
    .description('list the cluster: name, address, rload, load average, cores, REX jobs, reachability, age of the figure, CPU class and model')
    .option('--json', 'machine-readable output')
    .action(async (opts: CommonOpts) => {
      const hosts = await withClient(opts, (c) => c.hosts());
      process.stdout.write(opts.json ? toJson(hosts) : hostsTable(hosts));
    });

  clientOptions(program.command('load'))
    .description("print this host's rload (load average plus unseen REX work, per core), as rload(3) returns it")
    .option('--json', 'all parts of the figure')
    .action(async (opts: CommonOpts) => {
      const m = await withClient(opts, (c) => c.load());
      const { type: _t, stream: _s, end: _e, ...fig } = m;
      process.stdout.write(opts.json ? toJson(fig) : `${m.load.toFixed(3)}\n`);
    });

  clientOptions(program.command('ping'))
    .description('round trip to the local rexd, or through it to HOST')
    .argument('[host]', 'cluster host to reach through the local rexd')
    .option('-n, --count <n>', 'number of pings', '4')
    .option('-s, --size <bytes>', 'data bytes per ping', '0')
    .option('--json', 'machine-readable output')
    .action(async (host: string | undefined, opts: CommonOpts & { count: string; size: string }) => {
      const count = Number(opts.count);
      const size = Number(opts.size);
      if (!Number.isInteger(count) || count < 1 || count > 100000) throw new RexError(ErrorCodes.USAGE, `--count ${opts.count}: expected 1..100000`);
      if (!Number.isInteger(size) || size < 0 || size > 65536) throw new RexError(ErrorCodes.USAGE, `--size ${opts.size}: expected 0..65536`);
      const data = size > 0 ? new Uint8Array(size) : undefined;
      const results = await withClient(opts, async (c) => {
        const out: { rttMs: number; host: string; hops: number }[] = [];
        for (let i = 0; i < count; i++) {
          const r = await c.ping(host, data);
          out.push(r);
          if (!opts.json) process.stdout.write(`reply from ${r.host}: seq=${i + 1} hops=${r.hops} time=${r.rttMs.toFixed(3)} ms\n`);
        }
        return out;
      });
      const rtts = results.map((r) => r.rttMs).sort((a, b) => a - b);
      const summary = { count, min: rtts[0]!, median: rtts[Math.floor(rtts.length / 2)]!, max: rtts[rtts.length - 1]! };
      process.stdout.write(opts.json ? toJson({ results, summary }) : `${count} replies, rtt min/median/max = ${summary.min.toFixed(3)}/${summary.median.toFixed(3)}/${summary.max.toFixed(3)} ms\n`);
    });
}
