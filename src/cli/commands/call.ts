/**
 * `rex call TARGET [ARGS...]` and `rex entries TARGET`: remote entry points
 * from a shell, as grpcurl does for gRPC: the entry point's definition comes
 * from rexd (ENTRIES), arguments are encoded and the output frame decoded with
 * the runtime's one frame codec.
 */
import type { Command } from 'commander';
import { CallChannel } from '../../runtime/transport.js';
import { parseTarget, formatTarget } from '../../calls/target.js';
import { planEntry, isByteType, encodeInput, decodeOutput, type EntryPlan, type TypeDesc, type EntryDesc } from '../../runtime/frames/index.js';
import { fromReadableArgs, resultJson, resultText } from '../../runtime/frames/values.js';
import { ErrorCodes, RexError } from '../../util/errors.js';
import { toJson } from '../format.js';
import { formatError } from '../main.js';
import { clientOptions, connectFor } from './hosts.js';

interface CallOpts {
  socket?: string;
  config?: string;
  json?: boolean;
  hex?: string;
  timeout?: string;
}

function usage(message: string, hint?: string): never {
  throw new RexError(ErrorCodes.USAGE, message, hint ? { hint } : {});
}

/** Parses one command-line argument as a value of type `t` (numbers, booleans, enum constants by name, JSON for structs and arrays, hex for bytes). */
export function parseArg(t: TypeDesc, text: string, name: string): unknown {
  const fromJson = (): unknown => {
    try {
      return JSON.parse(text) as unknown;
    } catch {
      return usage(`argument ${name}: '${text}' is not JSON`, 'structs and arrays are written as JSON: {"x":1,"y":2} or [1,2,3]');
    }
  };
  switch (t.kind) {
    case 'prim':
    case 'enum': {
      if (t.prim === 'bool') {
        if (/^(true|1)$/i.test(text)) return true;
        if (/^(false|0)$/i.test(text)) return false;
        return usage(`argument ${name}: expected true or false, got '${text}'`);
      }
      if (t.prim === 'float' || t.prim === 'double') {
        const v = Number(text);
        if (text.trim() === '' || Number.isNaN(v) && text !== 'NaN') usage(`argument ${name}: expected a number, got '${text}'`);
        return v;
      }
      // An enum constant by name is looked up in the definition (fromReadableArgs).
      if (t.kind === 'enum' && /^[A-Za-z_][A-Za-z0-9_]*$/.test(text)) return text;
      if (!/^-?(0x[0-9a-f]+|\d+)$/i.test(text)) usage(`argument ${name}: expected an integer (${t.kind === 'enum' ? `enum ${t.name}: a constant's name or a number` : t.prim}), got '${text}'`);
      const neg = text.startsWith('-');
      const b = BigInt(neg ? text.slice(1) : text) * (neg ? -1n : 1n);
      return /64|128/.test(t.prim) ? b : Number(b);
    }
    case 'pointer':
      if (isByteType(t.target) || t.target.kind === 'void') return text.startsWith('hex:') ? Buffer.from(text.slice(4), 'hex') : text;
      return fromJson();
    default:
      return reviveBigints(fromJson());
  }
}

function reviveBigints(v: unknown): unknown {
  // 64-bit members may be written as strings ("9007199254740993"); the codec takes bigint or safe numbers.
  if (typeof v === 'string' && /^-?\d{16,}$/.test(v)) return BigInt(v);
  if (Array.isArray(v)) return v.map(reviveBigints);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, reviveBigints(x)]));
  return v;
}

/** The parameters a caller gives, in order (out buffers and sizes filled from buffers are left out). */
export function inputParams(plan: EntryPlan): EntryDesc['params'] {
  return plan.desc.params.filter((p) => p.direction !== 'out' && !plan.derived.has(p.name));
}

/** The `rex call` options callCommand reads (the connection's own, --socket and -c, are the caller's). */
export interface CallCommandOpts {
  json?: boolean;
  hex?: string;
  timeout?: string;
}

/** What `rex call` prints and its exit status. */
export interface CommandOutput {
  stdout: string;
  stderr: string;
  status: number;
}

/** The channel `rex call` uses: a {@link CallChannel} over a client's connection, or rexd's own request table (src/calls/cli.ts). */
export type CallCommandChannel = Pick<CallChannel, 'entry' | 'call'>;

/**
 * The whole of `rex call TARGET ARGS...` after commander parsed it: the Node CLI runs it, and rexd runs it for
 * the native front end's CALL_CLI (docs/PROTOCOL.md 4.7.1), so both print the same bytes and exit the same.
 * `connect` is called after the target and --timeout were checked, as the CLI connects; every error becomes
 * the one line and status the CLI's runMain would give it.
 */
export async function callCommand(target: string, args: readonly string[], opts: CallCommandOpts, connect: () => Promise<{ channel: CallCommandChannel; close(): void }>): Promise<CommandOutput> {
  try {
    return { stdout: await callOutput(target, args, opts, connect), stderr: '', status: 0 };
  } catch (e) {
    const { text, status } = formatError('rex', e);
    return { stdout: '', stderr: text, status };
  }
}

async function callOutput(target: string, args: readonly string[], opts: CallCommandOpts, connect: () => Promise<{ channel: CallCommandChannel; close(): void }>): Promise<string> {
  const t = parseTarget(target, true);
  const timeout = opts.timeout ?? '30000';
  const timeoutMs = Number(timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) usage(`--timeout ${timeout}: expected milliseconds`);
  const client = await connect();
  try {
    const ch = client.channel;
    if (opts.hex !== undefined) {
      const out = await ch.call(target, Buffer.from(opts.hex, 'hex'), { timeoutMs });
      return opts.json ? toJson({ output: Buffer.from(out).toString('hex') }) : `${Buffer.from(out).toString('hex')}\n`;
    }
    // Only this entry point's definition travels, however many the program has (ENTRIES_GET name).
    const e = await ch.entry(formatTarget({ ...t, function: undefined } as typeof t), t.function!, { timeoutMs });
    // A refused entry point is said so before its arguments are counted (its prototype may be unknown).
    if (e.callable === false) throw new RexError(ErrorCodes.ENTRY_INVALID, e.refusal ?? `${target} cannot be called remotely`, { where: target, hint: `rex entries ${formatTarget({ ...t, function: undefined } as typeof t)} lists it with the reason` });
    if (!e.definition) usage(`${target}: the program did not publish a definition of ${e.name} (${e.inputSize} bytes in, ${e.outputSize} out)`, 'send a raw frame with --hex');
    const plan = planEntry(JSON.parse(e.definition) as EntryDesc);
    const params = inputParams(plan);
    if (args.length !== params.length) {
      usage(`${e.name} takes ${params.length} argument${params.length === 1 ? '' : 's'} (${params.map((p) => p.name).join(', ')}), got ${args.length}`, e.signature ?? '');
    }
    const values: Record<string, unknown> = {};
    params.forEach((p, i) => (values[p.name] = parseArg(p.type, args[i]!, p.name)));
    const input = encodeInput(plan, fromReadableArgs(plan, values, { json: true }));
    // Values as users read them (docs/CALLS.md; --json defined in rex(1)): text, enum names, out-pointers by name.
    const out = decodeOutput(plan, await ch.call(target, input, { timeoutMs }), { stringBytes: true });
    return opts.json ? toJson(resultJson(plan, out)) : resultText(plan, out);
  } finally {
    client.close();
  }
}

/** Registers `call` and `entries` on the `rex` program. */
export function registerCallCommands(program: Command): void {
  clientOptions(program.command('call'))
    .description('call a remote entry point HOST.USER.PROGRAM.FUNCTION (or PROGRAM.FUNCTION) with arguments encoded from its definition')
    .argument('<target>', 'HOST.USER.PROGRAM.FUNCTION, HOST.PROGRAM.FUNCTION or PROGRAM.FUNCTION')
    .argument('[args...]', 'arguments in parameter order: numbers, true/false, enum constants by name, strings, JSON for structs and arrays (char[N] as text), hex:.. for bytes')
    .option('--json', 'print the results as JSON: return and out-parameters by name, text as {text, bytes}, enums as {name, value} (rex(1))')
    .option('--hex <frame>', 'send this input frame (hex) as is; prints the output frame in hex')
    .option('--timeout <ms>', 'deadline of the call', '30000')
    .action(async (target: string, args: string[], opts: CallOpts) => {
      const r = await callCommand(target, args, opts, async () => {
        const client = await connectFor(opts);
        return { channel: new CallChannel(client.conn), close: () => client.close() };
      });
      if (r.stdout) process.stdout.write(r.stdout);
      if (r.stderr) process.stderr.write(r.stderr);
      if (r.status) process.exitCode = r.status;
    });

  clientOptions(program.command('entries'))
    .description('list the entry points a program offers for remote calls')
    .argument('<target>', '[HOST.][USER.]PROGRAM')
    .option('--json', 'machine-readable output, with each definition')
    .option('--match <glob>', "only names matching a shell glob ('str*', 'f[0-9]?'), evaluated by the serving rexd")
    .option('--timeout <ms>', 'how long each page may take (the first listing of a library waits while its host reads the definitions)', '30000')
    .action(async (target: string, opts: CallOpts & { match?: string }) => {
      parseTarget(target, false);
      const timeoutMs = Number(opts.timeout);
      if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) usage(`--timeout ${opts.timeout}: expected milliseconds`);
      const client = await connectFor(opts);
      try {
        const entries = await new CallChannel(client.conn).entries(target, { timeoutMs, ...(opts.match !== undefined ? { match: opts.match } : {}) });
        if (opts.json) {
          process.stdout.write(toJson(entries.map((e) => ({ ...e, definition: e.definition ? (JSON.parse(e.definition) as unknown) : undefined }))));
          return;
        }
        for (const e of entries) {
          const sig = e.signature ?? `${e.name} (${e.inputSize ?? '?'} bytes in, ${e.outputSize ?? '?'} out)`;
          process.stdout.write(`${e.callable === false ? '-' : '+'} ${sig}${e.callable === false ? `\n    refused: ${e.refusal ?? ''}` : ''}\n`);
        }
      } finally {
        client.close();
      }
    });
}
