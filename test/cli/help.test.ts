import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { distBin } from '../../src/util/paths.js';

/** Every command of `rex`; src/cli/rex.ts loads only the module of the one named, so help must still list them all. */
const COMMANDS = ['hosts', 'load', 'ping', 'cluster', 'config', 'log', 'log-server', 'call', 'entries', 'run', 'completion', 'help'];

function rex(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [distBin('rex'), ...args], { encoding: 'utf8', env: { PATH: process.env.PATH, HOME: '/nonexistent' } });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The command names in commander's help listing. */
function listed(help: string): string[] {
  const section = help.slice(help.indexOf('Commands:'));
  return [...section.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1]!);
}

describe('rex help with commands loaded on demand', () => {
  it('rex --help, rex help and rex with no command list every command', () => {
    expect(listed(rex(['--help']).stdout)).toEqual(COMMANDS);
    expect(listed(rex(['help']).stdout)).toEqual(COMMANDS);
    const bare = rex([]);
    expect(listed(bare.stdout + bare.stderr)).toEqual(COMMANDS);
  });

  it('each command\'s own help shows its options when only its module is loaded', () => {
    const run = rex(['run', '--help']);
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/^Usage: rex run \[options\] <program> \[args\.\.\.\]/);
    expect(run.stdout).toMatch(/--host <host>/);
    expect(run.stdout).toMatch(/-T, --no-pty/);
    expect(rex(['log', '--help']).stdout).toMatch(/--socket <path>\s+read the log of the rexd serving this socket/);
    expect(rex(['help', 'entries']).stdout).toMatch(/^Usage: rex entries \[options\] <target>/);
    expect(rex(['cluster', 'up', '--help']).stdout).toMatch(/--hosts <n>/);
  });

  it('an unknown command is a usage error that suggests the nearest one', () => {
    const r = rex(['runn', 'x']);
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("error: unknown command 'runn'");
    expect(r.stderr).toContain('(Did you mean run?)');
  });
});
