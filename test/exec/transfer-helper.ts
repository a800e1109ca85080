/** Shared by the transfer tests: each cluster gets rex-temp-directories of its own. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * A rex.rc line giving every host of a test cluster its own, fresh
 * rex-temp-directory, and its removal. The default (/tmp/.rex_${HOST}_${USER})
 * is the same for every "beta" of every test file running at once, so one
 * file's clean-up would delete the cache another is writing into.
 */
export function ownTempDirectories(): { rc: string; remove: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'rex-temps-'));
  return { rc: `rex-temp-directory : ${dir}/\${HOST}`, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
