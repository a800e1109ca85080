// Compiles src/ to dist/ once before the tests, and bundles the programs into
// dist/bin/ (scripts/bundle.mjs): daemon and CLI tests run the real commands
// (node dist/bin/*.js, what package.json bin names) as separate processes.
// Then builds native/'s test-only programs (make test-programs: the C test program, the image
// fidelity programs, the XSAVE converter), which `npm install` leaves out (issue 18).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';

export default function setup(): void {
  try {
    execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'], { stdio: 'pipe' });
  } catch (e) {
    // Type errors are reported by the typecheck step of scripts/run-tests.mjs; tsc still emits.
    if (!existsSync('dist/cli/rexd.js')) throw new Error(`build failed:\n${(e as { stdout?: Buffer }).stdout?.toString() ?? e}`);
  }
  execFileSync(process.execPath, ['scripts/bundle.mjs'], { stdio: 'inherit' });
  // REX_BUILD_NODE as scripts/build-native.mjs passes it, should `all` be (re)built here.
  execFileSync('make', ['-s', '-C', 'native', `-j${availableParallelism()}`, 'test-programs', `REX_BUILD_NODE=${process.execPath}`], { stdio: 'inherit' });
}
