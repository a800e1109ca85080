/**
 * Shared entry-point plumbing for every command: parse, run, and turn errors into
 * one clear line on stderr and an exit status (1 for REX errors, 2 for usage).
 */
import type { Command } from 'commander';
import { isRexError } from '../util/errors.js';

/** Runs a commander program and reports failures the same way for every REX command. */
export async function runMain(program: Command, argv: string[] = process.argv): Promise<void> {
  program.exitOverride();
  program.configureOutput({ outputError: (str, write) => write(str) });
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
