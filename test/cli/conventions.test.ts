// The conventions every REX program keeps (issue 18, item 3; rex(1) EXIT STATUS), as a table:
// every program package.json's `bin` names, and every command of each as its --help lists them
// (walked, not listed here, so that a new command is covered the day it is added), answers
// --help with its usage and exit status 0, and a flag it does not know with a message naming
// the flag and exit status 2; every program's --version is the REX package's own version;
// closed output ends a program quietly; `rex completion` prints scripts the shells accept,
// made from the same commands; `rex run --json` prints the exit record.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalCluster } from '../../src/cluster/cluster.js';
import { distBin, packageRoot } from '../../src/util/paths.js';
import { startCluster } from '../helpers/cluster.js';

const pkg = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')) as { version: string; bin: Record<string, string> };
const PROGRAMS = Object.keys(pkg.bin);
const tmp = mkdtempSync(join(tmpdir(), 'rex-conventions-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

interface Result {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs a program (dist/bin, as package.json `bin` names it) with no rex.rc around, as a user would from an empty directory. */
function run(bin: string, args: string[], env: NodeJS.ProcessEnv = {}): Promise<Result> {
  return new Promise((resolve) => {
    const child = execFile(process.execPath, [distBin(bin), ...args], { cwd: tmp, env: { PATH: process.env.PATH, HOME: tmp, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** The command names in the Commands: section of a --help, commander's own `help` left out. */
function listed(help: string): string[] {
  const at = help.indexOf('\nCommands:\n');
  if (at < 0) return [];
  return [...help.slice(at).matchAll(/^ {2}([a-z][\w-]*)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
}

/** Every command of `bin` below the program itself, as word lists (`['cluster', 'up']`), from the help of each. */
async function commandsOf(bin: string, path: string[] = []): Promise<string[][]> {
  const help = await run(bin, [...path, '--help']);
  const out: string[][] = [];
  for (const c of listed(help.stdout)) out.push([...path, c], ...(await commandsOf(bin, [...path, c])));
  return out;
}

/** The table: [program, command words] for every program and every command of it, the program itself first. */
const TABLE: [string, string[]][] = [];
for (const bin of PROGRAMS) {
  TABLE.push([bin, []]);
  for (const path of await commandsOf(bin)) TABLE.push([bin, path]);
}
const label = (bin: string, path: string[]) => [bin, ...path].join(' ');
const REX_COMMANDS = TABLE.filter(([bin, path]) => bin === 'rex' && path.length > 0).map(([, path]) => path);

describe('the table of commands', () => {
  it('has every program of package.json bin, and the subcommands of rex (cluster up, config show, completion, ...)', () => {
    expect(PROGRAMS.sort()).toEqual(['repdb', 'rex', 'rex_key', 'rexd', 'rtop']);
    const names = REX_COMMANDS.map((p) => p.join(' '));
    for (const c of ['hosts', 'run', 'cluster', 'cluster up', 'cluster status', 'config', 'config check', 'config show', 'log', 'call', 'completion']) expect(names).toContain(c);
  });
});

describe.each(TABLE.map(([bin, path]) => ({ name: label(bin, path), bin, path })))('$name', ({ name, bin, path }) => {
  it('--help: its usage on stdout, exit status 0', async () => {
    const r = await run(bin, [...path, '--help']);
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout).toMatch(new RegExp(`^Usage: ${name.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} `));
    expect(r.stdout).toMatch(/-h, --help +display help for command/);
  });

  // claim: cli.conventions
  it('an unknown flag: one message naming it and pointing to --help, exit status 2', async () => {
    const r = await run(bin, [...path, '--bogus-flag']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(`${bin}: error: unknown option '--bogus-flag'\n(${name} --help shows the usage)\n`);
  });
});

describe.each(PROGRAMS)('%s --version', (bin) => {
  it("prints the REX package's own version, whatever project runs it (npm_package_version is not it)", async () => {
    for (const flag of ['--version', '-V']) {
      const r = await run(bin, [flag], { npm_package_version: '9.9.9' });
      expect(r).toEqual({ code: 0, stdout: `${pkg.version}\n`, stderr: '' });
    }
  });
});

describe('usage errors other than an unknown flag also exit 2', () => {
  it('a missing option value, a missing argument, a bad choice, an unknown command, a group without its subcommand', async () => {
    const cases: [string, string[], RegExp][] = [
      ['rex', ['ping', '-n'], /^rex: error: option '-n, --count <n>' argument missing\n/],
      ['rex', ['run'], /^rex: error: missing required argument 'program'\n/],
      ['rex', ['completion', 'tcsh'], /^rex: error: command-argument value 'tcsh' is invalid for argument 'shell'\. Allowed choices are bash, zsh, fish\.\n/],
      ['rex', ['runn'], /^rex: error: unknown command 'runn'\n\(Did you mean run\?\)\n/],
      ['rex', ['cluster'], /^Usage: rex cluster /],
      ['rex', [], /^Usage: rex /],
      ['rex', ['ping', '-n', 'x'], /^rex: error: --count x: expected 1\.\.100000\n/],
      ['rtop', ['-d', '0'], /^rtop: error: --delay 0: expected seconds from 0\.1 to 3600\n/],
      ['rexd', ['--stop', '--status'], /^rexd: error: --stop and --status go alone\n/],
      ['rexd', ['--json'], /^rexd: error: --json goes with --status\n/],
      ['rexd', ['--set'], /^rexd: error: option '-s, --set <key=value>' argument missing\n/],
      ['rex_key', [], /^rex_key: error: say what to do: --create, --list/],
      ['repdb', ['-x', '-d', '/dev/null'], /^repdb: error: choose one output/],
    ];
    for (const [bin, args, stderr] of cases) {
      const r = await run(bin, args);
      expect({ cmd: [bin, ...args].join(' '), code: r.code }).toEqual({ cmd: [bin, ...args].join(' '), code: 2 });
      expect(r.stderr).toMatch(stderr);
    }
  });

  it('`rex [GROUP] help COMMAND` is that command\'s --help, for every command', async () => {
    for (const path of REX_COMMANDS) {
      const [viaHelp, direct] = await Promise.all([run('rex', [...path.slice(0, -1), 'help', path.at(-1)!]), run('rex', [...path, '--help'])]);
      expect(viaHelp).toMatchObject({ code: 0, stdout: direct.stdout });
    }
  });
});

describe('closed output', () => {
  /** Runs a program whose stdout's reader has gone before it writes (`... | head -0`). */
  function closedStdout(bin: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
    return new Promise((resolve) => {
      const c = spawn(process.execPath, [distBin(bin), ...args], { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'] });
      c.stdout.destroy();
      let stderr = '';
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      c.on('close', (code) => resolve({ code, stderr }));
    });
  }

  it('every program ends quietly with the status of SIGPIPE (141), no stack trace, whatever it prints', async () => {
    for (const bin of PROGRAMS) expect({ bin, ...(await closedStdout(bin, ['--version'])) }).toEqual({ bin, code: 141, stderr: '' });
    expect(await closedStdout('rex', ['completion', 'bash'])).toEqual({ code: 141, stderr: '' });
    expect(await closedStdout('rex', ['cluster', 'up', '--help'])).toEqual({ code: 141, stderr: '' });
  });
});

describe('rex completion', () => {
  const script = (shell: string) => run('rex', ['completion', shell]);
  const have = (shell: string) => spawnSync(shell, ['-c', 'true']).status === 0;

  // claim: cli.completion
  it('bash: bash -n accepts it, and it completes every command and subcommand --help lists, and their options', async () => {
    const r = await script('bash');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const file = join(tmp, 'rex.bash');
    writeFileSync(file, r.stdout);
    expect(spawnSync('bash', ['-n', file], { encoding: 'utf8' })).toMatchObject({ status: 0, stderr: '' });
    // Completes `rex WORDS <TAB>` and `rex WORDS --<TAB>` as bash would, for the program and every command.
    const paths = [[], ...REX_COMMANDS];
    const driver = [
      `source ${file}`,
      't() { COMP_WORDS=(rex "$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); _rex; echo "${COMPREPLY[*]}"; }',
      ...paths.flatMap((p) => [`t ${p.join(' ')} ''`, `t ${p.join(' ')} --`]),
    ].join('\n');
    const lines = spawnSync('bash', ['-c', driver], { encoding: 'utf8' }).stdout.split('\n');
    for (const [i, p] of paths.entries()) {
      const help = (await run('rex', [...p, '--help'])).stdout;
      const subs = listed(help);
      const words = lines[2 * i]!.split(' ').filter(Boolean);
      expect({ path: p.join(' '), words: words.filter((w) => w !== 'help') }).toEqual({ path: p.join(' '), words: p[0] === 'completion' ? ['bash', 'zsh', 'fish'] : subs });
      const longs = [...help.matchAll(/^ {2}(?:-\w, )?(--[\w-]+)/gm)].map((m) => m[1]!);
      expect({ path: p.join(' '), options: lines[2 * i + 1]!.split(' ').filter(Boolean) }).toEqual({ path: p.join(' '), options: longs });
    }
  });

  it.skipIf(!have('zsh'))('zsh: zsh -n accepts it, it names every command, and completes commands, subcommands and choices', async () => {
    const r = await script('zsh');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    expect(r.stdout.split('\n')[0]).toBe('#compdef rex');
    const file = join(tmp, '_rex');
    writeFileSync(file, r.stdout);
    expect(spawnSync('zsh', ['-n', file], { encoding: 'utf8' })).toMatchObject({ status: 0, stderr: '' });
    for (const p of REX_COMMANDS) expect(r.stdout).toContain(`'${p.at(-1)}:`);
    // Completes as zsh would, with _describe and _files standing in for the completion system's output.
    const harness = [
      'autoload -Uz compinit && compinit -D -u',
      `source ${file}`,
      '_describe() { shift 3; local -a a; a=("${(@P)1}"); print -r -- ${a%%:*}; }',
      '_files() { print FILES; }',
      't() { words=(rex "$@"); CURRENT=$#words; _rex; }',
      "t ''", "t cluster ''", "t cluster up --dir ''", "t completion ''",
    ].join('\n');
    const lines = spawnSync('zsh', ['-f', '-c', harness], { encoding: 'utf8', env: { ...process.env, HOME: tmp } }).stdout.split('\n');
    expect(lines[0]!.split(' ').filter((w) => w !== 'help')).toEqual(listed((await run('rex', ['--help'])).stdout));
    expect(lines[1]!.split(' ').filter((w) => w !== 'help')).toEqual(listed((await run('rex', ['cluster', '--help'])).stdout));
    expect(lines.slice(2, 4)).toEqual(['FILES', 'bash zsh fish']);
  });

  it.skipIf(!have('fish'))('fish: fish accepts it, and completes the commands and options --help lists', async () => {
    const r = await script('fish');
    expect(r).toMatchObject({ code: 0, stderr: '' });
    const file = join(tmp, 'rex.fish');
    writeFileSync(file, r.stdout);
    expect(spawnSync('fish', ['--no-execute', file], { encoding: 'utf8' })).toMatchObject({ status: 0, stderr: '' });
    const out = spawnSync('fish', ['-c', `source ${file}; complete -C 'rex '; echo ---; complete -C 'rex cluster '; echo ---; complete -C 'rex cluster up --'`], { encoding: 'utf8', env: { ...process.env, HOME: tmp } });
    const [top, cluster, up] = out.stdout.split('---\n').map((s) => s.split('\n').filter(Boolean).map((l) => l.split('\t')[0]!));
    expect(top!.filter((w) => w !== 'help').sort()).toEqual(listed((await run('rex', ['--help'])).stdout).sort());
    expect(cluster!.filter((w) => w !== 'help').sort()).toEqual(listed((await run('rex', ['cluster', '--help'])).stdout).sort());
    expect(up).toContain('--hosts');
    expect(up).toContain('--json');
  });
});

describe('rex run --json', () => {
  let cluster: LocalCluster;
  let stop: () => Promise<void>;
  beforeAll(async () => {
    ({ cluster, stop } = await startCluster(1, { netns: false }));
  }, 60_000);
  afterAll(async () => stop?.());

  function rexRun(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
    return new Promise((resolve) => {
      const c = spawn(process.execPath, [distBin('rex'), 'run', '--json', '--socket', cluster.host('alpha').socket, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      c.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      c.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      c.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
    });
  }

  it("prints the exit record as one line of JSON after the program's output, and ends as the program did", async () => {
    const r = await rexRun(['--', 'sh', '-c', 'echo out; echo err >&2; exit 3']);
    expect(r.code).toBe(3);
    expect(r.stderr).toBe('err\n');
    const [out, record, end] = r.stdout.split('\n');
    expect([out, end]).toEqual(['out', '']);
    expect(JSON.parse(record!)).toEqual({ host: 'alpha', pid: expect.any(Number), code: 3, signal: null, status: 3 });
  });

  it('a program killed by a signal: its name, and the status a shell reports (128 + its number)', async () => {
    const r = await rexRun(['--', 'sh', '-c', 'kill -TERM $$']);
    expect(r.signal).toBe('SIGTERM');
    expect(JSON.parse(r.stdout)).toEqual({ host: 'alpha', pid: expect.any(Number), code: null, signal: 'TERM', status: 143 });
  });

  it('a program that does not exist: the error, and status 127', async () => {
    const r = await rexRun(['/nonexistent/program']);
    expect(r.code).toBe(127);
    expect(JSON.parse(r.stdout)).toMatchObject({ pid: null, code: null, signal: null, status: 127, error: expect.stringContaining('/nonexistent/program') });
  });
});
