/**
 * Shared entry-point plumbing for every command: parse, run, and turn errors into
 * one clear line on stderr and an exit status (1 for REX errors, 2 for usage).
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { isRexError } from '../util/errors.js';
import { packageRoot } from '../util/paths.js';
import { quote } from '../util/quote.js';

/** The status of a Unix tool killed by SIGPIPE (128 + 13), as coreutils report under `set -o pipefail`. */
export const EXIT_SIGPIPE = 141;

/**
 * When the reader of stdout (or stderr) goes away (`rex ping -n 1000 | head -1`),
 * exits at once and quietly with the status of a tool killed by SIGPIPE, as
 * `seq`, `cat` and every C tool do; Node ignores SIGPIPE and would otherwise
 * die on an unhandled EPIPE with a stack trace.
 */
export function exitQuietlyOnClosedOutput(): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE' || e.code === 'ERR_STREAM_DESTROYED') process.exit(EXIT_SIGPIPE);
      throw e;
    });
  }
}

/** REX's own version: the `version` of the package.json of the REX package this code was loaded from (not the project that runs it). */
export function rexVersion(): string {
  return (JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string }).version;
}

/** `cmd` and every command below it, parents first. */
export function commandTree(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap((c) => commandTree(c))];
}

/** The words that run `cmd` (`rex cluster up`). */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * The conventions every REX program keeps (rex(1), EXIT STATUS), applied to each command of its tree:
 * `--version` (the root: REX's own version) and `--help`; a usage error (unknown option, missing or
 * surplus argument, bad value) is one line `NAME: error: ...` and a pointer to the command's help on
 * stderr, and exit status 2 (runMain); errors go to runMain instead of process.exit.
 */
export function applyConventions(program: Command): Command {
  if (!program.options.some((o) => o.long === '--version')) program.version(rexVersion(), '-V, --version', "print REX's version");
  for (const cmd of commandTree(program)) {
    cmd.exitOverride();
    // commander's errors echo the argument they refuse: bounded like every quote of untrusted input.
    cmd.configureOutput({ outputError: (str, write) => write(`${program.name()}: ${quote(str, 500, true)}`) });
    cmd.showHelpAfterError(`(${commandPath(cmd)} --help shows the usage)`);
  }
  return program;
}

/** Runs a commander program and reports failures the same way for every REX command. */
export async function runMain(program: Command, argv: string[] = process.argv): Promise<void> {
  exitQuietlyOnClosedOutput();
  applyConventions(program);
  try {
    await program.parseAsync(argv);
  } catch (e) {
    process.exitCode = reportError(program.name(), e);
  }
}

/** Prints an error as `NAME: file:line: error: ...` and returns the exit status to use. */
export function reportError(name: string, e: unknown): number {
  const err = e as { code?: string; exitCode?: number; message?: string };
  if (typeof err.code === 'string' && err.code.startsWith('commander.')) {
    // commander already printed its message: help and version (0), or a usage error, help shown for a
    // command given without its subcommand included (commander's 1: rex(1) documents 2).
    return err.exitCode === 0 ? 0 : 2;
  }
  const { text, status } = formatError(name, e);
  process.stderr.write(text);
  if (status === 70 && process.env.REX_DEBUG) process.stderr.write(`${(e as Error).stack ?? ''}\n`);
  return status;
}

/** A command's error (not commander's) as reportError prints it: the line(s) for stderr and the exit status. */
export function formatError(name: string, e: unknown): { text: string; status: number } {
  if (isRexError(e)) return { text: `${name}: ${e.format()}\n`, status: e.code === 'REX_ERR_USAGE' ? 2 : 1 };
  // EX_SOFTWARE: a bug, not bad input
  return { text: `${name}: internal error: ${(e as { message?: string }).message ?? String(e)}\n`, status: 70 };
}
