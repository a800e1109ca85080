/**
 * REX_PLACE_HOSTS, the client's limit on placement (docs/PLACEMENT.md, "Limiting placement"): parsed by every
 * client that sends EXEC, RFORK or CALL without a host. Its own module, with nothing heavy behind it: `rex run`
 * loads it, and loads no config loader (test/exec/run.test.ts checks what `rex run` loads).
 */
import { ErrorCodes, RexError } from '../util/errors.js';

/** The environment variable that limits placement to some hosts (EXEC/RFORK/CALL `among`). */
export const PLACE_HOSTS_ENV = 'REX_PLACE_HOSTS';

/** A REX host name, as rex.rc `servers` names hosts (src/config/values.ts isRexName; librex checks the same). */
const REX_NAME = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/**
 * The hosts a client's placement is limited to, from `value` (REX_PLACE_HOSTS: REX host names, as rex.rc
 * `servers` names them, separated by commas or white space), or undefined when it is unset or empty. A bad
 * name is a usage error naming the variable, since silently placing anywhere would defeat the limit (another
 * user's Slurm allocation).
 */
export function parsePlaceHosts(value: string | undefined, source = PLACE_HOSTS_ENV): string[] | undefined {
  if (value === undefined || value.trim() === '') return undefined;
  const names = [...new Set(value.split(/[\s,]+/).filter(Boolean))];
  for (const n of names) {
    if (!REX_NAME.test(n)) throw new RexError(ErrorCodes.USAGE, `${source}: ${JSON.stringify(n.slice(0, 80))} is not a host name`, { hint: `set ${source} to host names separated by commas (n1,n2,n3), or unset it` });
  }
  if (names.length > 1024) throw new RexError(ErrorCodes.USAGE, `${source}: ${names.length} hosts, at most 1024`, { hint: `name fewer hosts in ${source}` });
  return names;
}
