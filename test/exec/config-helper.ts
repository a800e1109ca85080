/** Loads a rex.rc given as text from a real temporary file (the loader reads files). */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig, type RexConfig } from '../../src/config/index.js';

/** The configuration a rex.rc with `text` gives (defaults for the rest). */
export async function loadConfigFromString(text: string): Promise<RexConfig> {
  const dir = mkdtempSync(join(tmpdir(), 'rex-rc-'));
  try {
    const file = join(dir, 'rex.rc');
    writeFileSync(file, text);
    return (await loadConfig({ file, env: { USER: 'tester', HOME: '/home/tester', REX_ROOT: join(dir, 'sys') } as NodeJS.ProcessEnv })).config;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
