// Test switches act only in a rexd started with --test-mode (src/util/testmode.ts):
// a production daemon that inherits REX_EXEC_TEST_HIDE or REX_TEST_* ignores them and says so.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { enableTestMode, testModeEnabled, testSwitch } from '../../src/util/testmode.js';

describe('test switches', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('a rexd without --test-mode ignores the switches in its environment and warns; with it, announces TEST MODE', async () => {
    process.env.REX_TEST_CORRUPT_IMAGE = '1';
    process.env.REX_EXEC_TEST_HIDE = '/usr/';
    try {
      for (const testMode of [false, true]) {
        const dir = mkdtempSync(join(tmpdir(), 'rex-testmode-'));
        dirs.push(dir);
        const c = await LocalCluster.up({ dir, hosts: 1, netns: false, testMode });
        try {
          // The start-up lines come before rexd answers on its socket; poll in case the logger writes asynchronously.
          const log = await vi.waitFor(
            () => {
              const text = readFileSync(c.hosts[0]!.logFile, 'utf8');
              if (!/TEST MODE|are ignored/.test(text)) throw new Error('no start-up line about test switches yet');
              return text;
            },
            { timeout: 10_000, interval: 50 },
          );
          if (testMode) {
            expect(log).toMatch(/"msg":"TEST MODE: this rexd honours test switches/);
            expect(log).not.toMatch(/are ignored/);
          } else {
            expect(log).toMatch(/"ignored":\["REX_EXEC_TEST_HIDE","REX_TEST_CORRUPT_IMAGE"\].*"msg":"test switches in the environment are ignored/);
            expect(log).not.toMatch(/TEST MODE/);
          }
        } finally {
          await c.down();
        }
      }
    } finally {
      delete process.env.REX_TEST_CORRUPT_IMAGE;
      delete process.env.REX_EXEC_TEST_HIDE;
    }
  });

  it('testSwitch reads the environment only once test mode is on', () => {
    process.env.REX_TEST_FETCH_DELAY_MS = '10';
    try {
      expect(testModeEnabled()).toBe(false);
      expect(testSwitch('REX_TEST_FETCH_DELAY_MS')).toBeUndefined();
      enableTestMode();
      expect(testSwitch('REX_TEST_FETCH_DELAY_MS')).toBe('10');
    } finally {
      delete process.env.REX_TEST_FETCH_DELAY_MS;
    }
  });
});
