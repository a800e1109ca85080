import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, RexError } from '../../src/util/errors.js';
import { configCandidates, findConfigFile, loadConfig, MAX_INCLUDE_DEPTH } from '../../src/config/index.js';
import { configError } from './helpers.js';

let base: string;
let cwd: string;
let home: string;
let root: string;

beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'rex-config-lookup-'));
  cwd = join(base, 'work');
  home = join(base, 'home');
  root = join(base, 'root');
  for (const d of [cwd, home, join(root, 'etc', 'rex.d')]) mkdirSync(d, { recursive: true });
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

const env = () => ({ USER: 'tester', HOME: home, REX_ROOT: root }) as NodeJS.ProcessEnv;
const opts = () => ({ cwd, home, rexRoot: root, env: env() });

describe('finding the active configuration file', () => {
  it('follows the seed\'s order: ./rex.rc, ~/rex.rc, ${REX_ROOT}/etc/rex.rc, then the root installation\'s etc/rex/rex.rc', async () => {
    expect(configCandidates(opts())).toEqual([join(cwd, 'rex.rc'), join(home, 'rex.rc'), join(root, 'etc/rex.rc'), join(root, 'etc/rex/rex.rc')]);
    expect(findConfigFile(opts())).toBeUndefined();
    mkdirSync(join(root, 'etc/rex'), { recursive: true });
    writeFileSync(join(root, 'etc/rex/rex.rc'), 'log-level : warn\n');
    expect(findConfigFile(opts())).toBe(join(root, 'etc/rex/rex.rc'));
    rmSync(join(root, 'etc/rex'), { recursive: true });
    // No file anywhere: defaults only, not an error.
    const none = await loadConfig(opts());
    expect(none.files).toEqual([]);
    expect(none.config.stateDirectory).toBe(join(home, '.rex'));

    writeFileSync(join(root, 'etc/rex.rc'), 'log-level : error\n');
    expect(findConfigFile(opts())).toBe(join(root, 'etc/rex.rc'));
    writeFileSync(join(home, 'rex.rc'), 'log-level : warn\n');
    expect(findConfigFile(opts())).toBe(join(home, 'rex.rc'));
    writeFileSync(join(cwd, 'rex.rc'), 'log-level : debug\n');
    expect(findConfigFile(opts())).toBe(join(cwd, 'rex.rc'));

    // Only the first file found is read; the others are not merged in.
    const loaded = await loadConfig(opts());
    expect(loaded.config.logLevel).toBe('debug');
    expect(loaded.files).toEqual([join(cwd, 'rex.rc')]);
    expect(loaded.sources.logLevel).toEqual({ file: join(cwd, 'rex.rc'), line: 1 });
  });

  it('takes $REX_CONFIG first, and reports it when missing', async () => {
    writeFileSync(join(base, 'explicit.rc'), 'log-level : trace\n');
    const e = { ...env(), REX_CONFIG: join(base, 'explicit.rc') };
    expect(findConfigFile({ ...opts(), env: e })).toBe(join(base, 'explicit.rc'));
    expect((await loadConfig({ ...opts(), env: e })).config.logLevel).toBe('trace');
    const missing = { ...env(), REX_CONFIG: join(base, 'nope.rc') };
    await expect(loadConfig({ ...opts(), env: missing })).rejects.toMatchObject({
      code: ErrorCodes.CONFIG_NOT_FOUND,
      where: join(base, 'nope.rc'),
      message: 'configuration file not found (named by $REX_CONFIG)',
    });
  });

  it('reports an explicit file that does not exist as CONFIG_NOT_FOUND', async () => {
    const err = await loadConfig({ ...opts(), file: 'missing.rc' }).catch((x: unknown) => x);
    expect(err).toBeInstanceOf(RexError);
    expect((err as RexError).code).toBe(ErrorCodes.CONFIG_NOT_FOUND);
    expect((err as RexError).where).toBe(join(cwd, 'missing.rc'));
  });

  it('applies overrides last, reported as (override)', async () => {
    const loaded = await loadConfig({ ...opts(), overrides: { 'log-level': 'info', 'peer-timeout': '9s' } });
    expect(loaded.config.logLevel).toBe('info');
    expect(loaded.sources.logLevel).toEqual({ file: '(override)' });
    const e = await configError(() => loadConfig({ ...opts(), overrides: { 'log-lvl': 'info' } }));
    expect(e.message).toBe('(override): error: key "log-lvl": unknown key; did you mean "log-level"?');
  });
});

describe('#include resolution', () => {
  it('resolves "x" beside the includer, then the system directories; <x> in ${REX_ROOT}/etc/rex.d then /etc', async () => {
    const d = join(base, 'inc');
    mkdirSync(join(d, 'sub'), { recursive: true });
    writeFileSync(join(d, 'top.rc'), '#include "sub/mid.rc"\n#include <only-in-etc.rc>\n#include "only-in-rexd.rc"\n');
    writeFileSync(join(d, 'sub/mid.rc'), '#include "leaf.rc"\nlog-level : warn\n');
    writeFileSync(join(d, 'sub/leaf.rc'), 'log-level : error\nload-interval : 2s\n');
    writeFileSync(join(root, 'etc/only-in-etc.rc'), 'peer-timeout : 7s\n');
    writeFileSync(join(root, 'etc/rex.d/only-in-rexd.rc'), 'rex-auto-transfer : off\n');
    const { config, sources, files } = await loadConfig({ ...opts(), file: join(d, 'top.rc') });
    expect(config.logLevel).toBe('warn'); // mid.rc:2 comes after leaf.rc is included at mid.rc:1
    expect(sources.logLevel).toEqual({ file: join(d, 'sub/mid.rc'), line: 2 });
    expect(sources.loadInterval).toEqual({ file: join(d, 'sub/leaf.rc'), line: 2 });
    expect(config.peerTimeout).toBe(7000);
    expect(config.autoTransfer).toEqual({ mode: 'off' });
    expect(files).toEqual([join(d, 'top.rc'), join(d, 'sub/mid.rc'), join(d, 'sub/leaf.rc'), join(root, 'etc/only-in-etc.rc'), join(root, 'etc/rex.d/only-in-rexd.rc')]);
  });

  it(`refuses includes nested deeper than ${MAX_INCLUDE_DEPTH}, naming the chain`, async () => {
    const d = join(base, 'deep');
    mkdirSync(d, { recursive: true });
    for (let i = 0; i < 20; i++) writeFileSync(join(d, `f${i}.rc`), `#include "f${i + 1}.rc"\n`);
    writeFileSync(join(d, 'f20.rc'), 'log-level : info\n');
    const e = await configError(() => loadConfig({ ...opts(), file: join(d, 'f0.rc') }));
    expect(e.diagnostics).toHaveLength(1);
    expect(e.diagnostics[0]).toMatchObject({ file: join(d, `f${MAX_INCLUDE_DEPTH - 1}.rc`), line: 1, code: ErrorCodes.CONFIG_INCLUDE });
    expect(e.diagnostics[0]!.message).toMatch(new RegExp(`^includes nested deeper than 16: .*f0\\.rc:1 -> .* -> .*f16\\.rc$`));
  });

  it('lets an XML file include an rc file, in place', async () => {
    const d = join(base, 'xmlinc');
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, 'top.xml'), '<rex-config>\n  <log-level>warn</log-level>\n  <include file="more.rc"/>\n  <peer-timeout>8s</peer-timeout>\n</rex-config>\n');
    writeFileSync(join(d, 'more.rc'), 'log-level : debug\npeer-timeout : 1s\n');
    const { config, sources, files } = await loadConfig({ ...opts(), file: join(d, 'top.xml') });
    expect(config.logLevel).toBe('debug');
    expect(sources.logLevel).toEqual({ file: join(d, 'more.rc'), line: 1 });
    expect(config.peerTimeout).toBe(8000);
    expect(sources.peerTimeout).toEqual({ file: join(d, 'top.xml'), line: 4 });
    expect(files).toEqual([join(d, 'top.xml'), join(d, 'more.rc')]);
  });

  it('detects a file including itself', async () => {
    const f = join(base, 'self.rc');
    writeFileSync(f, 'log-level : info\n\n#include "self.rc"\n');
    const e = await configError(() => loadConfig({ ...opts(), file: f }));
    expect(e.message).toBe(`${f}:3: error: include loop: ${f}:3 -> ${f}`);
  });
});
