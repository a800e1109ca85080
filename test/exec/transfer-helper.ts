/** Shared by the transfer tests: each cluster gets rex-temp-directories of its own. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A rex.rc line giving every host of a test cluster its own, fresh
 * rex-temp-directory outside its state directory, and its removal: the
 * transfer tests run with a temp directory that is configured, not the
 * default <state-directory>/tmp (the cache is in the state directory either way).
 */
export function ownTempDirectories(): { rc: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'rex-temps-'));
  return { rc: `rex-temp-directory : ${dir}/\${HOST}`, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
