#!/usr/bin/env node
/**
 * `rex`: the user's command line. Each subcommand lives in src/cli/commands/ and
 * registers itself on the program; this file only wires them together.
 */
import { Command } from 'commander';
import { runMain } from './main.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerConfigCommands } from './commands/config.js';
import { registerHostCommands } from './commands/hosts.js';
import { registerLogCommands } from './commands/log.js';
import { registerCallCommands } from './commands/call.js';
import { registerRunCommands } from './commands/run.js';

const program = new Command('rex')
  .description('REX: Remote EXecution Services')
  .version(process.env.npm_package_version ?? '0.1.0');

registerHostCommands(program);
registerClusterCommands(program);
registerConfigCommands(program);
registerLogCommands(program);
registerCallCommands(program);
registerRunCommands(program);

await runMain(program);
