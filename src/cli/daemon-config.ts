/**
 * The configuration a running rexd loaded, found from its socket: commands that
 * read a daemon's files rather than talk to it (`rex log`) use it so that
 * $REX_SOCKET picks the daemon's files, not whatever rex.rc this shell would find.
 *
 * rexd writes its pid next to its socket (run/rexd.pid, src/daemon/paths.ts);
 * /proc/PID holds the arguments, working directory and environment it was
 * started with, which is everything loadConfig() used. Loading the same files
 * again is exact while they are unchanged; an edited rex.rc is read as it is now,
 * which is also what that daemon would use after a restart. The result is
 * checked against the socket it was found from.
 */
import { readFileSync, readlinkSync, realpathSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { LoadedConfig } from '../config/index.js';
import { readPid } from '../daemon/paths.js';
import { ErrorCodes, RexError } from '../util/errors.js';
import { isRexdProgram } from '../util/paths.js';

/** What rexd's command line said about its configuration (`--config`, `--set`). */
export interface RexdArgs {
  config?: string;
  sets: Record<string, string>;
}

/**
 * Picks `-c/--config FILE` and `-s/--set KEY=VALUE` out of rexd's arguments
 * (those after the script), in every form commander accepts: `--config F`,
 * `--config=F`, `-c F`, `-cF`, and short flags bundled as in `-fc F`.
 */
export function parseRexdArgs(args: readonly string[]): RexdArgs {
  const out: RexdArgs = { sets: {} };
  const take = (opt: 'c' | 's', value: string | undefined): void => {
    if (value === undefined) return; // commander would have refused to start: nothing to learn
    if (opt === 'c') out.config = value;
    else {
      const i = value.indexOf('=');
      if (i > 0) out.sets[value.slice(0, i).trim()] = value.slice(i + 1).trim();
    }
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--') break;
    const long = /^--(config|set)(?:=(.*))?$/s.exec(a);
    if (long) {
      take(long[1] === 'config' ? 'c' : 's', long[2] ?? args[++i]);
      continue;
    }
    if (/^-[^-]/.test(a)) {
      for (let j = 1; j < a.length; j++) {
        const ch = a[j]!;
        if (ch === 'c' || ch === 's') {
          take(ch, j + 1 < a.length ? a.slice(j + 1) : args[++i]);
          break;
        }
      }
    }
  }
  return out;
}

/** NAME=VALUE\0 ... as /proc/PID/environ holds it. */
function parseEnviron(text: string): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const kv of text.split('\0')) {
    const i = kv.indexOf('=');
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

function samePath(a: string, b: string): boolean {
  const real = (p: string) => {
    try {
      return realpathSync(p);
    } catch {
      return resolve(p);
    }
  };
  return real(a) === real(b);
}

/** The rexd serving `socket`, and the configuration it loaded. */
export async function daemonConfig(socket: string): Promise<{ pid: number; config: LoadedConfig }> {
  const pidFile = join(dirname(resolve(socket)), 'rexd.pid');
  const hint = 'start that rexd, or name the configuration with --config or the file with --database';
  const pid = readPid(pidFile);
  if (pid === undefined) {
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `no rexd pidfile beside the socket ${socket} (looked for ${pidFile})`, { where: pidFile, hint });
  }
  let argv: string[];
  let env: NodeJS.ProcessEnv;
  let cwd: string;
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, -1);
    env = parseEnviron(readFileSync(`/proc/${pid}/environ`, 'utf8'));
    cwd = readlinkSync(`/proc/${pid}/cwd`);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'is not running (a stale pidfile)' : code === 'EACCES' || code === 'EPERM' ? 'belongs to another user' : `cannot be inspected (${code ?? (e as Error).message})`;
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd pid ${pid} (from ${pidFile}) ${why}`, { where: pidFile, hint });
  }
  // node [node options] .../rexd.cjs [rexd options]; an installed `rexd` shim is the script itself.
  const script = argv.findIndex((a, i) => i > 0 && isRexdProgram(a));
  if (script < 0) {
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `pid ${pid} in ${pidFile} is not rexd (its command line: ${argv.join(' ').slice(0, 200)})`, { where: pidFile, hint });
  }
  const args = parseRexdArgs(argv.slice(script + 1));
  const { loadConfig } = await import('../config/index.js');
  const config = await loadConfig({ ...(args.config !== undefined ? { file: args.config } : {}), overrides: args.sets, cwd, env });
  if (!samePath(config.config.socket, socket)) {
    throw new RexError(ErrorCodes.DAEMON_NOT_RUNNING, `rexd pid ${pid} (from ${pidFile}) now reads a configuration whose socket is ${config.config.socket}, not ${socket}`, {
      where: config.files[0] ?? pidFile,
      hint: 'its rex.rc changed since it started: restart it, or name the log with --database',
    });
  }
  return { pid, config };
}
