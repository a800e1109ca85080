// The protocol's one description, the TypeScript table of src/protocol/, as
// the scripts read it: tsc's output in dist/, built first when a source is
// newer than it (scripts/gen-protocol.mjs says why the table stays TypeScript).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

/** { constants, messages, signals }: the modules of src/protocol/, from an up-to-date dist/. */
export async function loadProtocol() {
  const sources = [...readdirSync(join(root, 'src', 'protocol')).map((f) => `protocol/${f}`), 'util/errors.ts'].filter((f) => f.endsWith('.ts'));
  const stale = sources.some((f) => {
    const js = join(root, 'dist', f.replace(/\.ts$/, '.js'));
    return !existsSync(js) || statSync(join(root, 'src', f)).mtimeMs > statSync(js).mtimeMs;
  });
  if (stale) execFileSync(process.execPath, [join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', join(root, 'tsconfig.json')], { cwd: root, stdio: 'inherit' });
  const load = (rel) => import(pathToFileURL(join(root, 'dist', rel)).href);
  return { constants: await load('protocol/constants.js'), messages: await load('protocol/messages.js'), signals: await load('protocol/signals.js') };
}
