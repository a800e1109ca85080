import { execFile, execFileSync, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { appendFileSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { renderProgress } from '../../src/exec/origin/stub.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { underScript } from '../helpers/script.js';
import { ownTempDirectories } from './transfer-helper.js';

const run = promisify(execFile);
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('renderProgress', () => {
  it('fits the line to the terminal and shows percent and megabytes', () => {
    const line = renderProgress({ done: 12_000_000, total: 48_000_000, path: '/home/alice/bin/render' }, 80);
    expect(line).toBe('rex: sending render [##########.............................]  25% 12.0/48.0 MB');
    expect(line.length).toBeLessThan(80);
    expect(renderProgress({ done: 5, total: 5, path: '/x/y' }, 40)).toBe('rex: sending y [######] 100% 0.0/0.0 MB');
    expect(renderProgress({ done: 1, total: 2, path: '/p' }, 10)).toHaveLength(9); // a narrow terminal truncates, never wraps
    expect(renderProgress({ done: 3, total: 0, path: '/p' }, 80)).toMatch(/100% 0\.0\/0\.0 MB$/); // size unknown yet: no division by zero
  });
});

/**
 * A program of some tens of megabytes that exists only on the origin (see
 * transfer.test.ts for the REX_EXEC_TEST_HIDE seam): a compiled program with
 * random bytes appended, which the kernel ignores when it runs it.
 */
describe('transfer progress on a terminal, and Ctrl-C during a transfer', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const temps = ownTempDirectories();
  let betaCache: string;
  const hidden = mkdtempSync(join(tmpdir(), 'rex-big-only-on-origin-'));

  const bigProgram = (name: string, mb: number, marker?: string): string => {
    const src = join(hidden, `${name}.c`);
    const body = marker ? `FILE *f = fopen("${marker}", "w"); if (f) fclose(f); ` : '';
    writeFileSync(src, `#include <stdio.h>\nint main(void) { ${body}puts("big program ran"); return 0; }\n`);
    const p = join(hidden, name);
    execFileSync('cc', ['-O1', '-o', p, src]);
    for (let i = 0; i < mb; i++) appendFileSync(p, randomBytes(1 << 20));
    return p;
  };

  beforeAll(async () => {
    process.env.REX_EXEC_TEST_HIDE = hidden;
    // 10 ms before each 256 KiB chunk: a transfer of 32 MB takes over a second however fast the link, so Ctrl-C lands during it.
    process.env.REX_TEST_FETCH_DELAY_MS = '10';
    ({ cluster, stop } = await startCluster(2, { rc: [temps.rc] }).finally(() => {
      delete process.env.REX_EXEC_TEST_HIDE;
      delete process.env.REX_TEST_FETCH_DELAY_MS;
    }));
    await cluster.waitAllReachable();
    betaCache = join(cluster.host('beta').stateDir, 'cache');
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    temps.remove();
    rmSync(hidden, { recursive: true, force: true });
  });

  const rexArgs = (...args: string[]) => [distBin('rex'), 'run', '--socket', cluster.host('alpha').socket, '--host', 'beta', '-T', ...args];

  it('draws a bar on a terminal (stderr a pty), erased before the program\'s output; nothing when stderr is not a terminal', async () => {
    const prog = bigProgram('big-tty', 8);
    // script(1) gives rex run a pseudo-terminal; REX_PROGRESS_AFTER_MS=0 draws even a quick transfer.
    const cmd = [process.execPath, ...rexArgs(prog)].map((a) => `'${a}'`).join(' ');
    const r = await underScript(cmd, { flush: true, env: { ...process.env, REX_PROGRESS_AFTER_MS: '0' } });
    const out = r.stdout;
    expect(out).toMatch(/rex: sending big-tty \[[#.]+\] +\d+% [\d.]+\/8\.4 MB/);
    expect(out).toMatch(/rex: sending big-tty \[#+\] 100% 8\.4\/8\.4 MB/);
    // The bar's line is erased, then the program's output follows.
    expect(out).toMatch(/\r\x1b\[Kbig program ran\r?\n/);

    const again = bigProgram('big-pipe', 8);
    const piped = await run(process.execPath, rexArgs(again), { env: { ...process.env, REX_PROGRESS_AFTER_MS: '0' } });
    expect(piped.stdout).toBe('big program ran\n');
    expect(piped.stderr).toBe('');
  });

  // claim: exec.transfer-cancel
  it('Ctrl-C during a transfer stops it: the partial cache file is removed and the program never runs', async () => {
    const marker = join(hidden, 'it-ran');
    const prog = bigProgram('big-cancel', 32, marker);
    const hex = sha(readFileSync(prog));
    const child = spawn(process.execPath, rexArgs(prog), { stdio: ['ignore', 'pipe', 'pipe'] });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => child.once('exit', (code, signal) => r({ code, signal })));
    const partial = () => {
      try {
        return readdirSync(betaCache).filter((n) => n.startsWith(`.${hex}.`));
      } catch {
        return [];
      }
    };
    const written = () => partial().reduce((n, f) => n + (existsSync(join(betaCache, f)) ? statSync(join(betaCache, f)).size : 0), 0);
    // Wait until beta is writing the copy (bytes arrived, so alpha is sending), then interrupt rex run as the terminal's Ctrl-C would.
    for (let i = 0; i < 3000 && written() === 0; i++) await sleep(10);
    expect(partial()).toHaveLength(1);
    child.kill('SIGINT');
    expect(await exited).toEqual({ code: null, signal: 'SIGINT' });
    for (let i = 0; i < 1000 && partial().length > 0; i++) await sleep(10);
    expect(partial()).toEqual([]);
    expect(existsSync(join(betaCache, hex))).toBe(false);
    const log = readFileSync(cluster.host('beta').logFile, 'utf8');
    // Told by alpha's SIGNAL, or (when beta was between two messages) by alpha's answer to its FETCH.
    expect(log).toMatch(/(cancelled by the origin \(SIGINT\)|cancelled: the client on alpha went away).*transfer failed; partial copy removed/);
    expect(existsSync(marker)).toBe(false);
  }, 60_000);
});
