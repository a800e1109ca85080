/**
 * Shared entry-point plumbing for every command: parse, run, and turn errors into
 * one clear line on stderr and an exit status (1 for REX errors, 2 for usage).
 */
import type { Command } from 'commander';
import { isRexError } from '../util/errors.js';
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

/** Runs a commander program and reports failures the same way for every REX command. */
export async function runMain(program: Command, argv: string[] = process.argv): Promise<void> {
  exitQuietlyOnClosedOutput();
  program.exitOverride();
  // commander's errors echo the argument they refuse: bounded like every quote of untrusted input.
  program.configureOutput({ outputError: (str, write) => write(quote(str, 500, true)) });
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
    // commander already printed its message (help, version, usage errors).
    return err.exitCode ?? 2;
  }
  if (isRexError(e)) {
    process.stderr.write(`${name}: ${e.format()}\n`);
    return e.code === 'REX_ERR_USAGE' ? 2 : 1;
  }
  process.stderr.write(`${name}: internal error: ${err.message ?? String(e)}\n`);
  if (process.env.REX_DEBUG) process.stderr.write(`${(e as Error).stack ?? ''}\n`);
  return 70; // EX_SOFTWARE: a bug, not bad input
}
