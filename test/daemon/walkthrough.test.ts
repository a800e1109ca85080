/**
 * The walkthrough of docs/KEYS.md, command by command, as a new user would type
 * it: two hosts of a local cluster, keys created by hand, enrollment with an
 * invite token, a grant, a routed ping, a revocation, the refusal, and the log.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalCluster } from '../../src/cluster/cluster.js';
import { currentUser } from '../../src/keys/identity.js';
import { distBin } from '../../src/util/paths.js';
import { logBarrier } from '../helpers/logsync.js';

const exec = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'rex-walk-'));
const U = currentUser();

/** Runs `rex`/`rex_key` and returns stdout; a failure returns {code, stderr} instead of throwing. */
async function cmd(bin: 'rex' | 'rex_key', ...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await exec(process.execPath, [distBin(bin), ...args], { timeout: 30_000 });
    return { code: 0, ...r };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

afterAll(async () => {
  try {
    await LocalCluster.attach(dir).down();
  } catch {
    /* not started */
  }
  rmSync(dir, { recursive: true, force: true });
});

describe('docs/KEYS.md walkthrough', () => {
  it('create, start, invite, distribute, grant, ping, revoke, refused, logged', async () => {
    const up = await cmd('rex', 'cluster', 'up', '--dir', dir, '--hosts', '2', '--keys', 'none');
    expect(up.code).toBe(0);
    expect(up.stdout).toContain('none is running yet, because none has a key');
    const A = join(dir, 'hosts', 'alpha', 'rex.rc');
    const B = join(dir, 'hosts', 'beta', 'rex.rc');

    // 1. Each host's key.
    const ca = await cmd('rex_key', '--config', A, '--create');
    expect(ca.stdout).toMatch(new RegExp(`^created alpha\\.${U}\\n  ID   ([A-Z2-7]{4}-){7}[A-Z2-7]{4}\\n`));
    const alphaId = /ID {3}(\S+)/.exec(ca.stdout)![1]!;
    const cb = await cmd('rex_key', '--config', B, '--create');
    const betaId = /ID {3}(\S+)/.exec(cb.stdout)![1]!;
    const list = await cmd('rex_key', '--config', B, '--list');
    expect(list.stdout).toContain(`beta.${U}  ${betaId}  ok`);
    expect((await cmd('rex', 'cluster', 'start', '--dir', dir)).code).toBe(0);

    // 2. Enrollment: alpha invites, beta presents the token; both show the other's ID.
    const inv = await cmd('rex_key', '--config', A, '--invite', '--for', `beta.${U}`, '--expires', '10m');
    const token = /^ {2}(rex1:\S+)$/m.exec(inv.stdout)![1]!;
    expect(inv.stdout).toContain(`key ${alphaId}`);
    const dist = await cmd('rex_key', '--config', B, '--distribute', '--token', token);
    expect(dist.code).toBe(0);
    expect(dist.stdout).toContain(`alpha: now knows beta.${U} (key ${betaId}); server alpha.${U} key ${alphaId} verified against the token`);
    expect((await cmd('rex_key', '--config', A, '--list')).stdout).toMatch(new RegExp(`beta\\.${U}\\s+${betaId}\\s+token`));
    // The token is spent.
    const again = await cmd('rex_key', '--config', B, '--distribute', '--token', token);
    expect(again.code).toBe(1);
    expect(again.stdout).toContain('the enrollment token was already used');

    // 3. Known but not granted: refused with the command that fixes it.
    const before = await cmd('rex', 'ping', '-c', B, 'alpha', '-n', '1');
    expect(before.code).toBe(1);
    expect(before.stderr).toContain(`beta.${U} (key ${betaId}) has no grant on alpha.${U}; its owner can run \`rex_key --grant beta.${U}\` there`);

    // 4. Grant, and a transaction between the hosts.
    const g = await cmd('rex_key', '--config', A, '--grant', `beta.${U}`);
    expect(g.stdout).toContain(`granted: grant beta.${U}`);
    const ping = await cmd('rex', 'ping', '-c', B, 'alpha', '-n', '2');
    expect(ping.code).toBe(0);
    expect(ping.stdout).toMatch(/reply from alpha: seq=1 hops=1 time=/);

    // 5. Revoke: the next one is refused, clearly.
    const r = await cmd('rex_key', '--config', A, '--revoke', `beta.${U}`);
    expect(r.stdout).toContain(`removed: grant beta.${U}`);
    expect(r.stdout).toContain(`added:   revoke ${betaId} name=beta.${U} at=`);
    const after = await cmd('rex', 'ping', '-c', B, 'alpha', '-n', '1');
    expect(after.code).toBe(1);
    expect(after.stderr).toMatch(new RegExp(`DENIED: .*key ${betaId} \\(beta\\.${U}\\) was revoked at \\S+ on alpha\\.${U}`));

    // 6. All of it is in alpha's log.
    const alphaDir = join(dir, 'hosts', 'alpha');
    await logBarrier(join(alphaDir, 'run', 'rexd.sock'), join(alphaDir, 'rex-log.sqlite'));
    const log = await cmd('rex', 'log', '-c', A, '--identity', `beta.${U}`, '--json', '-n', '1000');
    const rows = JSON.parse(log.stdout) as { kind: string; outcome: string; message_type: string | null; reason: string | null }[];
    expect(rows.some((x) => x.kind === 'enroll' && x.outcome === 'ok')).toBe(true);
    expect(rows.some((x) => x.kind === 'transaction' && x.outcome === 'ok' && x.message_type === 'PING')).toBe(true);
    expect(rows.some((x) => x.outcome === 'denied' && /has no grant/.test(x.reason ?? ''))).toBe(true);
    expect(rows.some((x) => x.outcome === 'denied' && /was revoked/.test(x.reason ?? ''))).toBe(true);
    const table = await cmd('rex', 'log', '-c', A, '--outcome', 'denied', '--since', '10m');
    expect(table.stdout).toMatch(new RegExp(`alpha\\s+\\S+\\s+beta\\.${U}\\s+.*denied`));
    expect(readFileSync(join(dir, 'hosts', 'alpha', 'grants'), 'utf8')).toContain(`revoke ${betaId}`);
  }, 120_000); // some twenty command runs, on a machine other tests share
});
