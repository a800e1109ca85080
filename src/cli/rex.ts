#!/usr/bin/env node
/**
 * `rex`: the user's command line. Each subcommand lives in src/cli/commands/ and
 * registers itself on the program; this file only wires them together.
 *
 * Start-up time matters: `rex run` is used in shell loops and pipelines, where it
 * competes with ssh. So a command module imports only commander and small helpers
 * at its top and loads its real work (config loader, keys, the log database,
 * the protocol client) inside its action; and when the first argument names a
 * command, only the module that registers it is imported at all.
 */
import { Command } from 'commander';
import { runMain } from './main.js';

type Register = (program: Command) => void;

/** Each module's commands, and how to load the module that registers them. */
const MODULES: { commands: string[]; load: () => Promise<Register> }[] = [
  { commands: ['hosts', 'load', 'ping'], load: async () => (await import('./commands/hosts.js')).registerHostCommands },
  { commands: ['cluster'], load: async () => (await import('./commands/cluster.js')).registerClusterCommands },
  { commands: ['config'], load: async () => (await import('./commands/config.js')).registerConfigCommands },
  { commands: ['log'], load: async () => (await import('./commands/log.js')).registerLogCommands },
  { commands: ['log-server'], load: async () => (await import('./commands/log-server.js')).registerLogServerCommands },
  { commands: ['call', 'entries'], load: async () => (await import('./commands/call.js')).registerCallCommands },
  { commands: ['run'], load: async () => (await import('./commands/run.js')).registerRunCommands },
  // Last: its script is made from every command registered before it (`rex completion` registers them all).
  { commands: [], load: async () => (await import('./commands/completion.js')).registerCompletionCommand },
];

const program = new Command('rex').description('REX: Remote EXecution Services');

// `rex run ...`: register only run. Anything else (help, completion, a typo, no argument) registers
// everything, in this order, so that help lists every command and commander can suggest one.
const first = process.argv[2];
const only = MODULES.find((m) => first !== undefined && m.commands.includes(first));
for (const m of only ? [only] : MODULES) (await m.load())(program);

await runMain(program);
