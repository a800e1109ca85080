/**
 * EXEC under a program grant (docs/EXEC.md, "EXEC under a program grant"): a
 * requester authorized only for program P (a grant with program=P, or a
 * program key HOST.USER.P) may run only P's executables as this host's rex.rc
 * lists them (`programs` entry P, `executables=`), compared after resolving
 * the path the way the executor would run it (cwd, PATH, symbolic links, `..`).
 * It never runs a file the client sends (no transfer, no libraries), and no
 * rfork image: an image cannot be tied to a program's executables. The
 * program gets the environment OpenSSH gives a forced command by default
 * (limitedEnv), not the client's: variables such as BASH_FUNC_*, BASH_ENV or
 * LD_LIBRARY_PATH would let the client run code inside an allowed script.
 */
import { realpathSync } from 'node:fs';
import { ProtocolError } from '../../protocol/frame.js';

/** What a requester granted only one program may run here. */
export interface ExecLimit {
  /** The program the grant (or the program key) is limited to. */
  program: string;
  /** The requester in messages: HOST.USER[.PROGRAM] (key ID). */
  who: string;
  /** The base name HOST.USER, for the rex_key command a message suggests. */
  name: string;
  /** This host (HOST.USER) in messages. */
  host: string;
  /** The rex.rc `programs` entry's executables; undefined when there is no entry or it lists none. */
  executables?: readonly string[];
  /** True when rex.rc has a `programs` entry for the program. */
  hasEntry: boolean;
  /** The grant's `functions=`: such a grant allows those calls and no EXEC. */
  functions?: readonly string[];
}

function refuse(message: string): ProtocolError {
  return new ProtocolError('DENIED', message, { fatal: false });
}

/** The refusal of an rfork image under a program grant. */
export function imageRefused(limit: ExecLimit): ProtocolError {
  return refuse(
    `RFORK refused: ${limit.who} is granted only program ${limit.program} on ${limit.host}, and an image cannot be tied to that program's executables; ` +
      `rfork needs a grant for all programs (rex_key --grant ${limit.name} without --program)`,
  );
}

/**
 * The file to run for `path` under `limit`: the real path of one of the
 * program's executables, or a DENIED saying what to add to rex.rc. `resolve`
 * finds the file the executor would run (it throws when there is none); a
 * path that does not exist is refused like any other, so that the answer
 * tells nothing about this host's files.
 */
export function allowedExecutable(path: string, limit: ExecLimit, resolve: () => string): string {
  const head = `EXEC of ${path} refused: ${limit.who} is granted only`;
  if (limit.functions) {
    throw refuse(`${head} functions ${limit.functions.join(', ')} of program ${limit.program} on ${limit.host} (functions=), which allows those calls and no EXEC; grant the program without --functions to let it run the program's executables`);
  }
  if (!limit.hasEntry) {
    throw refuse(`${head} program ${limit.program} on ${limit.host}, whose rex.rc has no programs entry ${limit.program}; to let it run the program, add one with its executables there (programs : ${limit.program}=... executables=/path/to/${limit.program})`);
  }
  if (!limit.executables || limit.executables.length === 0) {
    throw refuse(`${head} program ${limit.program} on ${limit.host}, whose rex.rc programs entry ${limit.program} lists no executables; add executables=/path/to/${limit.program} to that entry to let it run them`);
  }
  const allowed = new Map<string, string>();
  for (const e of limit.executables) {
    try {
      allowed.set(realpathSync(e), e);
    } catch {
      /* not on this host: matches nothing */
    }
  }
  let real: string | undefined;
  try {
    real = realpathSync(resolve());
  } catch {
    real = undefined;
  }
  if (real === undefined || !allowed.has(real)) {
    throw refuse(
      `${head} program ${limit.program} on ${limit.host}, and ${path} is not one of its executables (${limit.executables.join(', ')}); ` +
        `to allow it, add it to executables= of the programs entry ${limit.program} in rex.rc there`,
    );
  }
  return real;
}

/** Client variables a program run under a program grant still gets (OpenSSH's usual AcceptEnv: LANG LC_*), and TERM. */
function accepted(name: string): boolean {
  return name === 'LANG' || name.startsWith('LC_') || name === 'TERM';
}

/** The default PATH of a program run under a program grant (the client's is not used). */
export const LIMITED_PATH = '/usr/local/bin:/usr/bin:/bin';

/**
 * The environment of a program run under a program grant: LANG, LC_* and TERM
 * from the client; PATH the default; HOME, USER, LOGNAME and SHELL those of
 * the user rexd runs as. Nothing else the client sent.
 */
export function limitedEnv(client: Record<string, string>, own: NodeJS.ProcessEnv = process.env): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(client)) if (accepted(k)) out[k] = v;
  out.PATH = LIMITED_PATH;
  for (const k of ['HOME', 'USER', 'LOGNAME', 'SHELL']) {
    const v = own[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}
