/**
 * Call targets: the seed's HOST.USER.PROGRAM.FUNCTION quad, with the short
 * forms callers use (docs/CALLS.md).
 */
import { ErrorCodes, RexError } from '../util/errors.js';
import { PLACE_HOSTS_ENV, parsePlaceHosts } from '../placement/hosts.js';

/** A parsed target. `host` undefined or `*`: the receiver picks (the local host, for the manager). */
export interface CallTarget {
  host?: string;
  user?: string;
  program: string;
  /** Absent for ENTRIES_GET targets. */
  function?: string;
}

const NAME = /^[A-Za-z0-9_][A-Za-z0-9_+-]*$/;

function bad(target: string, why: string): never {
  throw new RexError(ErrorCodes.CALL_TARGET, `target '${target}': ${why}`, {
    hint: 'write HOST.USER.PROGRAM.FUNCTION, HOST.PROGRAM.FUNCTION or PROGRAM.FUNCTION (HOST may be * and may contain dots)',
  });
}

/**
 * Parses a call target. Parts are taken from the right, so a host name may
 * contain dots: FUNCTION, PROGRAM, then USER when four or more parts remain.
 * `withFunction` false parses an ENTRIES target: [HOST.][USER.]PROGRAM.
 */
export function parseTarget(target: string, withFunction = true): CallTarget {
  if (target.length === 0 || target.length > 1024) bad(target, 'must be 1..1024 characters');
  // FUNCTION@VERSION (an older symbol version, pow@GLIBC_2.2.5): the version may hold dots, so it comes off first.
  const at = withFunction ? target.indexOf('@') : -1;
  const version = at >= 0 ? target.slice(at + 1) : undefined;
  if (version !== undefined && !/^[A-Za-z0-9_][A-Za-z0-9_.+-]*$/.test(version)) bad(target, `version '${version}' is not a symbol version (FUNCTION@VERSION, as readelf prints it)`);
  const parts = (at >= 0 ? target.slice(0, at) : target).split('.');
  if (parts.some((p) => p === '')) bad(target, 'has an empty part');
  const fn = withFunction ? parts.pop() : undefined;
  if (withFunction && parts.length === 0) bad(target, 'names a function but no program');
  const program = parts.pop()!;
  let user: string | undefined;
  let host: string | undefined;
  if (parts.length >= 2) {
    user = parts.pop();
    host = parts.join('.');
  } else if (parts.length === 1) {
    host = parts[0];
  }
  for (const [what, v] of [['program', program], ['function', fn], ['user', user]] as const) {
    if (v !== undefined && !NAME.test(v)) bad(target, `${what} '${v}' is not a name (letters, digits, _ + -)`);
  }
  if (host !== undefined && host !== '*' && !/^[A-Za-z0-9_.-]+$/.test(host)) bad(target, `host '${host}' is not a host name`);
  const t: CallTarget = { program };
  if (host !== undefined && host !== '*') t.host = host;
  if (user !== undefined) t.user = user;
  if (fn !== undefined) t.function = version !== undefined ? `${fn}@${version}` : fn;
  return t;
}

/**
 * The hosts a call to `target` may be placed on: REX_PLACE_HOSTS (docs/PLACEMENT.md) when the target names
 * no host (`*.PROGRAM.FUNCTION`, `PROGRAM.FUNCTION`), else undefined (a named host is the caller's choice).
 * A target that does not parse is left to rexd, which says why.
 */
export function callAmong(target: string, env: NodeJS.ProcessEnv = process.env): string[] | undefined {
  let t: CallTarget;
  try {
    t = parseTarget(target, true);
  } catch {
    return undefined;
  }
  if (t.host !== undefined) return undefined;
  const among = parsePlaceHosts(env[PLACE_HOSTS_ENV]);
  return among && among.length > 0 ? among : undefined;
}

/** Formats a target back (HOST.USER.PROGRAM[.FUNCTION], `*` for an open host). */
export function formatTarget(t: CallTarget): string {
  const head = t.user !== undefined ? `${t.host ?? '*'}.${t.user}.` : t.host !== undefined ? `${t.host}.` : '';
  return `${head}${t.program}${t.function !== undefined ? `.${t.function}` : ''}`;
}
