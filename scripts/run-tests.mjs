#!/usr/bin/env node
// `npm test`: every check of the project, counted. Steps: type-check (src and
// tests), the bare-sleep lint, the C tests under ASan/UBSan (make -C native
// check), the vitest suites, and in CI the property tests again at five times
// their cases. Ends with one plain line "N passed, N failed, N skipped", which CI
// reads; the same line is kept in test-results/summary.txt.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const results = join(root, 'test-results');
mkdirSync(results, { recursive: true });
const totals = { passed: 0, failed: 0, skipped: 0 };
/** In CI (and with REX_REQUIRE_ALL_TESTS=1) every test must run: a skip there hides a missing tool or a broken check. */
const requireAll = process.env.CI === 'true' || process.env.REX_REQUIRE_ALL_TESTS === '1';
const steps = [];
/** Failed tests by name with the first line of their error, repeated in the summary (CI shows only the tail). */
const failures = [];

function step(name, cmd, args, opts = {}) {
  console.log(`\n=== ${name}: ${cmd} ${args.join(' ')}`);
  const t0 = Date.now();
  const r = spawnSync(cmd, args, { cwd: root, stdio: opts.capture ? ['ignore', 'pipe', 'inherit'] : 'inherit', encoding: 'utf8', env: { ...process.env, FORCE_COLOR: '0', ...opts.env } });
  if (opts.capture && r.stdout) process.stdout.write(r.stdout);
  const secs = ((Date.now() - t0) / 1000).toFixed(1);
  return { status: r.status ?? 1, stdout: r.stdout ?? '', secs };
}

function count(name, passed, failed, skipped, secs) {
  totals.passed += passed;
  totals.failed += failed;
  totals.skipped += skipped;
  steps.push(`${name}: ${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''} (${secs} s)`);
}

// 1. Type-check: src (what ships) and the tests. Each is one check.
for (const [name, cfg] of [['typecheck src', 'tsconfig.json'], ['typecheck tests', 'tsconfig.test.json']]) {
  const r = step(name, process.execPath, ['node_modules/typescript/bin/tsc', '-p', cfg, '--noEmit']);
  count(name, r.status === 0 ? 1 : 0, r.status === 0 ? 0 : 1, 0, r.secs);
}

// 1b. No bare sleep in test/ (scripts/check-test-sleeps.mjs says why).
{
  const r = step('lint: test sleeps', process.execPath, ['scripts/check-test-sleeps.mjs']);
  count('lint: test sleeps', r.status === 0 ? 1 : 0, r.status === 0 ? 0 : 1, 0, r.secs);
}

// 1c. Every claim the docs mark has a test that names it (scripts/check-claims.mjs; --list shows them all).
{
  const r = step('lint: documented claims', process.execPath, ['scripts/check-claims.mjs']);
  count('lint: documented claims', r.status === 0 ? 1 : 0, r.status === 0 ? 0 : 1, 0, r.secs);
}

// 2. C tests under sanitizers.
{
  const r = step('C tests (ASan+UBSan)', 'make', ['-C', 'native', '--no-print-directory', 'check'], { capture: true });
  const m = /^C tests: (\d+) passed, (\d+) failed/m.exec(r.stdout);
  if (m) count('C tests', Number(m[1]), Number(m[2]) + (r.status !== 0 && Number(m[2]) === 0 ? 1 : 0), 0, r.secs);
  else count('C tests (did not run to the end)', 0, 1, 0, r.secs);
}

/** Runs vitest with a JSON report and counts its results as step `name`; returns the report, if there is one. */
function vitest(name, out, args, env = {}) {
  const r = step(name, process.execPath, ['node_modules/vitest/vitest.mjs', 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${out}`, ...args], { env });
  if (!existsSync(out)) {
    count(`${name} (no report)`, 0, 1, 0, r.secs);
    return undefined;
  }
  const j = JSON.parse(readFileSync(out, 'utf8'));
  // A suite that failed to load has no test results but is a failure.
  const brokenSuites = (j.testResults ?? []).filter((t) => t.status === 'failed' && (t.assertionResults ?? []).length === 0).length;
  count(name, j.numPassedTests ?? 0, (j.numFailedTests ?? 0) + brokenSuites, (j.numPendingTests ?? 0) + (j.numTodoTests ?? 0), r.secs);
  for (const s of j.testResults ?? []) {
    const file = s.name.replace(`${root}/`, '');
    if (s.status === 'failed' && (s.assertionResults ?? []).length === 0) failures.push(`${name}: ${file} (did not load): ${firstLine(s.message)}`);
    for (const a of s.assertionResults ?? []) {
      if (a.status === 'failed') failures.push(`${name}: ${file} > ${a.fullName}: ${firstLine((a.failureMessages ?? [])[0])}`);
    }
  }
  return j;
}

// 3. vitest.
{
  const j = vitest('vitest', join(results, 'vitest.json'), process.argv.slice(2));
  if (j) {
    // Every skipped test is named. Where everything can run (CI: root, iproute2, libc6-dbg, cgroups),
    // a skip is a failure unless test/allowed-skips.txt lists it with its reason.
    const skippedNames = (j.testResults ?? []).flatMap((s) =>
      (s.assertionResults ?? []).filter((a) => a.status === 'skipped' || a.status === 'pending' || a.status === 'todo').map((a) => `${s.name.replace(`${root}/`, '')} > ${a.fullName}`),
    );
    if (skippedNames.length) {
      const allowed = readAllowedSkips();
      const unexpected = skippedNames.filter((n) => !allowed.some((a) => n.includes(a)));
      console.log(`\n=== skipped tests (${skippedNames.length})`);
      for (const n of skippedNames) console.log(`  ${unexpected.includes(n) ? 'UNEXPECTED ' : ''}skipped: ${n}`);
      if (unexpected.length && requireAll) {
        console.log(`  ${unexpected.length} test(s) skipped that this machine should run (CI=true or REX_REQUIRE_ALL_TESTS=1); each counts as a failure.`);
        count('unexpected skips', 0, unexpected.length, 0, '0.0');
      }
    }
  }
}

// 4. CI's long mode for properties: every test file that uses fast-check again, with five times its
// cases and a fresh random seed (a failure prints the seed: REX_FC_SEED=N replays it). Locally:
// REX_LONG_PROPERTIES=1, or `npm run test:long` for the whole suite at ten times.
if ((requireAll || process.env.REX_LONG_PROPERTIES === '1') && process.argv.length <= 2 && !process.env.REX_PROPERTY_SCALE) {
  const files = propertyFiles(join(root, 'test')).map((f) => f.replace(`${root}/`, ''));
  vitest('properties x5 (long mode)', join(results, 'vitest-long.json'), files, { REX_PROPERTY_SCALE: '5' });
}

/** Test files that use fast-check, but not the live fuzzer (it has a time budget of its own). */
function propertyFiles(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...propertyFiles(p));
    else if (name.endsWith('.test.ts') && name !== 'fuzz-live.test.ts' && /from 'fast-check'/.test(readFileSync(p, 'utf8'))) out.push(p);
  }
  return out.sort();
}

/** Substrings of test names allowed to skip even in CI (test/allowed-skips.txt: `SUBSTRING  # reason`). */
function readAllowedSkips() {
  const file = join(root, 'test', 'allowed-skips.txt');
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter(Boolean);
}

/** The first non-empty line of an error message, without colour codes, at most 300 characters. */
function firstLine(msg) {
  const l = String(msg ?? '').replace(/\x1b\[[0-9;]*m/g, '').split('\n').find((x) => x.trim()) ?? '';
  // vitest's JSON report says only this for a test that ran out of time.
  if (/^Error: STACK_TRACE_ERROR$/.test(l.trim())) return 'timed out (the test ran longer than its timeout)';
  return l.trim().slice(0, 300);
}

console.log('\n=== summary');
for (const s of steps) console.log(`  ${s}`);
if (failures.length) {
  console.log(`  failed tests (${failures.length}):`);
  for (const f of failures.slice(0, 20)) console.log(`    ${f}`);
  if (failures.length > 20) console.log(`    ... and ${failures.length - 20} more (test-results/*.json)`);
}
const line = `${totals.passed} passed, ${totals.failed} failed, ${totals.skipped} skipped`;
writeFileSync(join(results, 'summary.txt'), line + '\n');
console.log(line);
process.exit(totals.failed > 0 ? 1 : 0);
