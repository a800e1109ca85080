import { execFile, execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { transferCommandLine } from '../../src/exec/origin/transfer.js';
import { distBin } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';
import { ownTempDirectories } from './transfer-helper.js';

const run = promisify(execFile);
const sha = (b: Buffer | string) => createHash('sha256').update(b).digest('hex');

function build(dir: string, name: string, text: string): string {
  writeFileSync(join(dir, `${name}.c`), `#include <stdio.h>\nint main(void) { puts("${text}"); return 0; }\n`);
  execFileSync('cc', ['-O1', '-o', join(dir, name), join(dir, `${name}.c`)]);
  return join(dir, name);
}

const rexRun = (cluster: LocalCluster, ...args: string[]) =>
  run(process.execPath, [distBin('rex'), 'run', '--socket', cluster.host('alpha').socket, '--host', 'beta', ...args]).then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

describe('transferCommandLine (rex-auto-transfer: command: ...)', () => {
  const v = { source: "/home/o'neil/bin/a b", host: '10.0.0.2', name: 'beta', destination: '/tmp/.rex_beta_x/cache/.ab12' };

  it('replaces the placeholders with shell-quoted words', () => {
    const line = transferCommandLine('cp {source} {destination} # to {name} at {host}', v);
    expect(line).toBe(`cp '/home/o'\\''neil/bin/a b' '/tmp/.rex_beta_x/cache/.ab12' # to 'beta' at '10.0.0.2'`);
    // The quoting holds in a real shell: the words arrive intact.
    expect(execFileSync('/bin/sh', ['-c', transferCommandLine('printf "%s|" {source} {host} {destination}', v)], { encoding: 'utf8' })).toBe(`${v.source}|${v.host}|${v.destination}|`);
  });

  it('appends "{source} {host}:{destination}" to a command that names none of them (rsync -a, scp -q)', () => {
    expect(transferCommandLine('rsync -a', v)).toBe(`rsync -a '/home/o'\\''neil/bin/a b' '10.0.0.2':'/tmp/.rex_beta_x/cache/.ab12'`);
    expect(transferCommandLine('my-copy {name}', v)).toBe(`my-copy 'beta' '/home/o'\\''neil/bin/a b' '10.0.0.2':'/tmp/.rex_beta_x/cache/.ab12'`);
  });
});

describe('rex-auto-transfer: command: copies with an external program on the origin', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const temps = ownTempDirectories();
  let betaState: string;
  const hidden = mkdtempSync(join(tmpdir(), 'rex-cmd-only-on-origin-'));
  const tools = mkdtempSync(join(tmpdir(), 'rex-cmd-tools-'));
  const script = join(tools, 'copy.sh');
  const calls = join(tools, 'calls.log');
  const failFlag = join(tools, 'fail');
  const slowFlag = join(tools, 'slow');

  beforeAll(async () => {
    // cp stands in for rsync/scp: the hosts of the local cluster share one file system.
    writeFileSync(script, `#!/bin/sh\nprintf '%s\\n' "$*" >> '${calls}'\nif [ -e '${failFlag}' ]; then echo "copy.sh: no route to $2" >&2; exit 3; fi\nif [ -e '${slowFlag}' ]; then sleep 2; fi\nexec cp "$1" "$3"\n`);
    chmodSync(script, 0o755);
    process.env.REX_EXEC_TEST_HIDE = hidden;
    ({ cluster, stop } = await startCluster(2, { rc: [`rex-auto-transfer : command: ${script} {source} {host} {destination}`, temps.rc] }));
    delete process.env.REX_EXEC_TEST_HIDE;
    await cluster.waitAllReachable();
    betaState = cluster.host('beta').stateDir;
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    temps.remove();
    rmSync(hidden, { recursive: true, force: true });
    rmSync(tools, { recursive: true, force: true });
  });

  it('runs the command with source, the executor address and a destination in its cache; the copy is verified and reused', async () => {
    const prog = build(hidden, 'hello', 'copied by the command');
    const r = await rexRun(cluster, prog);
    expect(r).toEqual({ code: 0, stdout: 'copied by the command\n', stderr: '' });
    const lines = readFileSync(calls, 'utf8').trim().split('\n');
    expect(lines).toHaveLength(1);
    const [source, host, dest] = lines[0]!.split(' ');
    expect(source).toBe(prog);
    expect(host).toBe(cluster.host('beta').address);
    expect(dest!.startsWith(join(betaState, 'cache', '.'))).toBe(true);
    expect(existsSync(dest!)).toBe(false); // renamed into the cache once verified
    expect(sha(readFileSync(join(betaState, 'cache', sha(readFileSync(prog)))))).toBe(sha(readFileSync(prog)));
    const logged = readFileSync(cluster.host('beta').logFile, 'utf8').split('\n').filter((l) => l.includes('program transferred from the origin'));
    expect(logged).toHaveLength(1);
    expect(JSON.parse(logged[0]!)).toMatchObject({ by: 'command', program: prog });
    // Second run: cached, the command is not run again.
    expect(await rexRun(cluster, prog)).toEqual({ code: 0, stdout: 'copied by the command\n', stderr: '' });
    expect(readFileSync(calls, 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('a command slower than peer-timeout (1 s here) is waited for: the executor is silent because the origin is busy', async () => {
    const prog = build(hidden, 'slow', 'worth the wait');
    writeFileSync(slowFlag, '');
    try {
      expect(await rexRun(cluster, prog)).toEqual({ code: 0, stdout: 'worth the wait\n', stderr: '' });
    } finally {
      rmSync(slowFlag, { force: true });
    }
  });

  it('a failing command is the run\'s error, with its status and last words; nothing is left in the cache', async () => {
    const prog = build(hidden, 'other', 'never copied');
    writeFileSync(failFlag, '');
    try {
      const r = await rexRun(cluster, prog);
      expect(r.code).toBe(127);
      expect(r.stderr).toMatch(/transfer to beta failed: rex-auto-transfer command on alpha failed: exit status 3: copy\.sh: no route to /);
    } finally {
      rmSync(failFlag, { force: true });
    }
    expect(readdirSync(join(betaState, 'cache')).filter((n) => n.startsWith('.'))).toEqual([]);
    expect(existsSync(join(betaState, 'cache', sha(readFileSync(prog))))).toBe(false);
  });
});

describe('rex-auto-transfer: off', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  const temps = ownTempDirectories();
  const hidden = mkdtempSync(join(tmpdir(), 'rex-off-only-on-origin-'));

  beforeAll(async () => {
    process.env.REX_EXEC_TEST_HIDE = hidden;
    ({ cluster, stop } = await startCluster(2, { rc: ['rex-auto-transfer : off', temps.rc] }));
    delete process.env.REX_EXEC_TEST_HIDE;
    await cluster.waitAllReachable();
  }, 60_000);
  afterAll(async () => {
    await stop?.();
    temps.remove();
    rmSync(hidden, { recursive: true, force: true });
  });

  it('a program missing on the executor is "no such program" (127), and nothing is transferred', async () => {
    const prog = build(hidden, 'absent', 'should not run');
    const r = await rexRun(cluster, prog);
    expect(r.code).toBe(127);
    expect(r.stderr).toMatch(/no such program on beta, and rex-auto-transfer is off there/);
    expect(readFileSync(cluster.host('beta').logFile, 'utf8')).not.toMatch(/program transferred from the origin/);
  });
});
