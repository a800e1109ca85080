/**
 * Real Unix users and groups for tests that run as root (CI does): made with useradd/groupadd and
 * removed with userdel/groupdel. Every name must start with `rextest-`, so a helper can never
 * touch an account it did not make; a leftover of an interrupted run under the same name is
 * removed first. Test files that run in parallel must use different names (e.g.
 * `rextest-alice` for the cluster tests, `rextest-sess-a` for rex-session's).
 *
 *   const alice = createTestUser('rextest-alice', { groups: [createTestGroup('rextest-staff').name] });
 *   ...
 *   removeTestUser(alice.name); removeTestGroup('rextest-staff');
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';

/** True when this process can create users (and rex-session can switch to them). */
export const isRoot = process.getuid?.() === 0;

/** Why root-only tests skip here; print it with console.warn when skipping. */
export const notRootReason = 'not running as root: tests that create Unix users and switch to them need root (CI runs as root)';

export interface TestUser {
  name: string;
  uid: number;
  /** The primary group. */
  gid: number;
  home: string;
  /** Every group the user is in (initgroups' list: the primary group and the supplementary ones), sorted. */
  groups: number[];
}

export interface TestGroup {
  name: string;
  gid: number;
}

const PREFIX = 'rextest-';

function checkName(name: string): void {
  if (!name.startsWith(PREFIX) || !/^[a-z_][a-z0-9_-]{0,31}$/.test(name)) {
    throw new Error(`test users and groups are named ${PREFIX}... (lower case, at most 32 characters), got ${JSON.stringify(name)}`);
  }
}

/** Runs an account tool, again while another process holds the lock on /etc/passwd or /etc/group. */
function accountTool(cmd: string, args: string[], okStatuses: number[] = [0]): number {
  const pause = new Int32Array(new SharedArrayBuffer(4));
  let last = '';
  for (let attempt = 0; attempt < 50; attempt++) {
    const r = spawnSync(cmd, args, { encoding: 'utf8' });
    if (r.error) throw new Error(`${cmd}: ${r.error.message}`);
    if (okStatuses.includes(r.status ?? -1)) return r.status!;
    last = `${cmd} ${args.join(' ')}: status ${r.status}: ${r.stderr.trim()}`;
    if (!/lock/i.test(r.stderr)) break;
    Atomics.wait(pause, 0, 0, 50 + attempt * 10); // another test file is editing the account files: its lock is held for milliseconds
  }
  throw new Error(last);
}

/** The entry of a name in a colon-separated database (/etc/passwd, /etc/group), or undefined. */
function entry(file: string, name: string): string[] | undefined {
  return readFileSync(file, 'utf8').split('\n').map((l) => l.split(':')).find((f) => f[0] === name);
}

/** Makes a group (removing a leftover of the same name first). */
export function createTestGroup(name: string): TestGroup {
  checkName(name);
  removeTestGroup(name);
  accountTool('groupadd', [name]);
  return { name, gid: Number(entry('/etc/group', name)![2]) };
}

/** Removes a group if it exists. */
export function removeTestGroup(name: string): void {
  checkName(name);
  if (entry('/etc/group', name)) accountTool('groupdel', [name]);
}

/**
 * Makes a user with a group of its own, a home directory (created unless `createHome` is false:
 * a user whose home is missing), login shell /bin/sh, and the given supplementary groups.
 */
export function createTestUser(name: string, opts: { groups?: string[]; home?: string; createHome?: boolean } = {}): TestUser {
  checkName(name);
  removeTestUser(name);
  const home = opts.home ?? `/home/${name}`;
  const args = ['--user-group', '--shell', '/bin/sh', '--home-dir', home, opts.createHome === false ? '--no-create-home' : '--create-home'];
  if (opts.groups?.length) args.push('--groups', opts.groups.join(','));
  accountTool('useradd', [...args, name]);
  const pw = entry('/etc/passwd', name)!;
  const groups = execFileSync('id', ['-G', name], { encoding: 'utf8' }).trim().split(/\s+/).map(Number).sort((a, b) => a - b);
  return { name, uid: Number(pw[2]), gid: Number(pw[3]), home, groups };
}

/** Removes a user, its home directory and its own group, if it exists; kills nothing (the test must end its processes first). */
export function removeTestUser(name: string): void {
  checkName(name);
  const pw = entry('/etc/passwd', name);
  if (!pw) return;
  // userdel --remove deletes the home and mail spool; status 12 is "could not remove the home", e.g. it never existed.
  accountTool('userdel', ['--remove', name], [0, 12]);
  if (pw[5] && pw[5].startsWith('/home/rextest-') && existsSync(pw[5])) execFileSync('rm', ['-rf', '--', pw[5]]);
  if (entry('/etc/group', name)) accountTool('groupdel', [name]);
}
