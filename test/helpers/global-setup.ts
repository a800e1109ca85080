// Compiles src/ to dist/ once before the tests, and bundles the programs into
// dist/bin/ (scripts/bundle.mjs): daemon and CLI tests run the real commands
// (node dist/bin/*.js, what package.json bin names) as separate processes.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';

export default function setup(): void {
  try {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'pipe' });
  } catch (e) {
    // Type errors are reported by the typecheck step of scripts/run-tests.mjs; tsc still emits.
    if (!existsSync('dist/cli/rexd.js')) throw new Error(`build failed:\n${(e as { stdout?: Buffer }).stdout?.toString() ?? e}`);
  }
  execFileSync(process.execPath, ['scripts/bundle.mjs'], { stdio: 'inherit' });
}
