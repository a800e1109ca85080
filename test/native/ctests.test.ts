// Runs the C side's own programs as built by `make all` (scripts/build-native.mjs):
// the C test runner (vectors, codec, fuzz loop, client against stand-in daemons;
// `make -C native check` runs the same tests under ASan+UBSan) and the demo
// program with no daemon to talk to.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';

const native = join(packageRoot(), 'native');
const testBin = join(native, 'build', 'test', 'rex_tests');
const demoBin = join(native, 'build', 'bin', 'rex_hosts_demo');

describe('C programs', () => {
  it('are built', () => {
    for (const f of [testBin, demoBin, join(native, 'build', 'lib', 'librex.so'), join(native, 'build', 'lib', 'librex.a')]) {
      expect(existsSync(f), `${f} missing: run node scripts/build-native.mjs`).toBe(true);
    }
  });

  it('rex_tests passes every C test', () => {
    const r = spawnSync(testBin, [], {
      encoding: 'utf8',
      env: { ...process.env, REX_VECTORS: join(packageRoot(), 'test', 'vectors', 'protocol-v1.json') },
      timeout: 120_000,
    });
    const lines = r.stdout.trimEnd().split('\n');
    const failed = lines.filter((l) => l.startsWith('not ok'));
    expect(failed, r.stdout + r.stderr).toEqual([]);
    expect(lines.at(-1)).toMatch(/^C tests: \d+ passed, 0 failed$/);
    expect(Number(/C tests: (\d+) passed/.exec(lines.at(-1)!)![1])).toBeGreaterThanOrEqual(25);
    expect(r.status).toBe(0);
  });

  it('rex_hosts_demo fails cleanly when no rexd runs', () => {
    const home = mkdtempSync(join(tmpdir(), 'rex-demo-'));
    try {
      const env: NodeJS.ProcessEnv = { ...process.env, HOME: home };
      delete env.REX_SOCKET;
      const r = spawnSync(demoBin, [], { encoding: 'utf8', env });
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('rload: No such file or directory');
      expect(r.stderr).toContain(`connect ${home}/.rex/run/rexd.sock`);
      expect(r.stderr).toContain('is rexd running?');
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
