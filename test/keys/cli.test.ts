import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { distBin } from '../../src/util/paths.js';

const exec = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'rex-key-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const rc = join(dir, 'rex.rc');
writeFileSync(rc, `host-name : kilo\nstate-directory : ${dir}/state\nservers : kilo@127.0.0.1:9, lima@127.0.0.1:9\n`);
const env = { ...process.env, REX_USER: 'ann' };

async function rexKey(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    return { code: 0, ...(await exec(process.execPath, [distBin('rex_key'), '--config', rc, ...args], { env })) };
  } catch (e) {
    const err = e as { code: number; stdout: string; stderr: string };
    return { code: err.code, stdout: err.stdout, stderr: err.stderr };
  }
}

describe('rex_key command line', () => {
  it('-c and -c -p P create the host-user and program keys; --list shows their IDs', async () => {
    const a = await rexKey('-c');
    expect(a.code).toBe(0);
    expect(a.stdout).toMatch(/^created kilo\.ann\n {2}ID {3}([A-Z2-7]{4}-){7}[A-Z2-7]{4}\n {2}key {2}\S+kilo\.ann\.key \(mode 0600\)/);
    const p = await rexKey('-c', '-p', 'render');
    expect(p.stdout).toMatch(/^created kilo\.ann\.render\n/);
    const list = await rexKey('--list');
    expect(list.stdout).toMatch(/kilo\.ann +([A-Z2-7]{4}-){7}[A-Z2-7]{4} {2}ok/);
    expect(list.stdout).toMatch(/kilo\.ann\.render {2}([A-Z2-7]{4}-){7}[A-Z2-7]{4} {2}ok/);
    expect(list.stdout).toContain('none: nobody else may use this host as this user');
    const json = JSON.parse((await rexKey('--list', '--json')).stdout) as { identity: string; own: { name: string }[] };
    expect(json.identity).toBe('kilo.ann');
    expect(json.own.map((o) => o.name)).toEqual(['kilo.ann', 'kilo.ann.render']);
  });

  it('refuses a second --create without --force, naming the existing ID', async () => {
    const r = await rexKey('--create');
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/kilo\.ann already has a key \(ID \S+\) in \S+kilo\.ann\.key/);
    expect(r.stderr).toContain('rex_key --create --force');
  });

  it('grants, lists and revokes by name, with options, in the grants file', async () => {
    const g = await rexKey('--grant', 'lima.bob', '--program', 'render', '--from', '10.0.0.0/8', '--expires', '2030-01-31T12:00:00Z');
    expect(g.stdout).toContain('granted: grant lima.bob program=render from=10.0.0.0/8 expires=2030-01-31T12:00:00.000Z');
    expect(g.stdout).toContain('no key of lima.bob is known here yet');
    expect(readFileSync(join(dir, 'state', 'grants'), 'utf8')).toContain('grant lima.bob program=render from=10.0.0.0/8 expires=2030-01-31T12:00:00.000Z\n');
    expect((await rexKey('--list')).stdout).toContain('  grant lima.bob program=render');
    const r = await rexKey('--revoke', 'lima.bob');
    expect(r.stdout).toContain('removed: grant lima.bob program=render');
  });

  it('usage errors: no action, two actions, a bad name, a bad duration, a bad token', async () => {
    expect(await rexKey()).toMatchObject({ code: 2, stderr: expect.stringContaining('say what to do: --create, --list, --invite, --distribute, --join, --grant or --revoke') as unknown as string });
    expect(await rexKey('--list', '--create')).toMatchObject({ code: 2, stderr: expect.stringContaining('one action at a time, got --create, --list') as unknown as string });
    expect((await rexKey('--grant', 'lima')).stderr).toContain('"lima" is neither an identity name (HOST.USER[.PROGRAM]) nor a key ID');
    expect((await rexKey('--grant', 'lima.bob', '--expires', 'soon')).stderr).toContain('--expires soon: expected a duration (30m, 2h, 7d) or an ISO-8601 time');
    expect((await rexKey('--distribute', '--token', 'rex1:lima.bob:xyz')).stderr).toContain('not an enrollment token: expected 4 parts separated by ":", found 3');
  });

  it('--invite needs --for NAME (an identity, not this host\'s own), --key takes an ID, and --for/--key/--replace go with --invite only', async () => {
    expect(await rexKey('--invite')).toMatchObject({ code: 2, stderr: expect.stringContaining('--invite needs --for NAME: the one identity (HOST.USER or HOST.USER.PROGRAM) the token may enroll') as unknown as string });
    expect((await rexKey('--invite', '--for', 'lima')).stderr).toContain('--for lima: "lima" is not an identity name; expected HOST.USER or HOST.USER.PROGRAM');
    expect((await rexKey('--invite', '--for', 'lima.bob', '--key', 'XYZ')).stderr).toContain('--key XYZ: not a key ID');
    expect((await rexKey('--invite', '--for', 'kilo.ann')).stderr).toContain("--for kilo.ann is this host's own identity");
    expect((await rexKey('--list', '--replace')).stderr).toContain('--replace goes with --invite only');
  });

  it('--invite prints a token that names this identity and its ID, valid for --expires', async () => {
    const r = await rexKey('--invite', '--for', 'lima.bob', '--expires', '2h');
    const id = /key (\S+)\)/.exec(r.stdout)![1]!;
    const token = /^ {2}(rex1:\S+)$/m.exec(r.stdout)![1]!;
    expect(token.startsWith(`rex1:kilo.ann:${id.replace(/-/g, '')}:`)).toBe(true);
    expect((await rexKey('--list')).stdout).toMatch(/Open invitations: 1/);
    expect(readFileSync(join(dir, 'state', 'tokens'), 'utf8')).not.toContain(token.split(':')[3]);
  });

  it('--json with --create and --invite: the key, and the token, as data; with other actions a usage error', async () => {
    const c = await rexKey('--create', '--program', 'plot', '--json');
    expect(c.code).toBe(0);
    const key = JSON.parse(c.stdout) as { name: string; id: string; keyFile: string; certFile: string };
    expect(key).toEqual({ name: 'kilo.ann.plot', id: expect.stringMatching(/^([A-Z2-7]{4}-){7}[A-Z2-7]{4}$/), keyFile: expect.stringMatching(/kilo\.ann\.plot\.key$/), certFile: expect.any(String) });
    const i = await rexKey('--invite', '--for', 'lima.bob', '--json');
    expect(i.code).toBe(0);
    const own = (JSON.parse((await rexKey('--list', '--json')).stdout) as { own: { name: string; id: string }[] }).own.find((o) => o.name === 'kilo.ann')!;
    expect(JSON.parse(i.stdout)).toEqual({ token: expect.stringMatching(/^rex1:kilo\.ann:/), expires: expect.any(String), for: 'lima.bob', replace: false, server: 'kilo.ann', serverId: own.id, knownKeys: [] });
    const j = JSON.parse((await rexKey('--invite', '--join', 'lima', '--json')).stdout) as { join: string; for: string; token: string };
    expect(j).toMatchObject({ join: 'lima', for: 'lima.ann', token: expect.stringMatching(/^rex1:kilo\.ann:/) });
    expect(await rexKey('--grant', 'lima.bob', '--json')).toMatchObject({ code: 2, stderr: expect.stringContaining('--json goes with --list, --create or --invite, not --grant') as unknown as string });
  });
});
