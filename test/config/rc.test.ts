import { join } from 'node:path';
import { hostname } from 'node:os';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/util/errors.js';
import { defaultConfig, loadConfig, parseRc, sanitizeHostName, scanRc, formatConfig } from '../../src/config/index.js';
import { ENV, FIXTURES, configError } from './helpers.js';

const env = { user: 'tester', home: '/home/tester', systemHostName: 'vm.example.org' };
const load = (rel: string) => loadConfig({ file: join(FIXTURES, rel), env: ENV });

describe('rc form: good files', () => {
  it('reads the seed example, with defaults for everything else', async () => {
    const { config, sources, files } = await load('good/seed.rc');
    expect(config.servers).toEqual([
      { name: 'my_linux_x86_64_pc_1', address: 'my_linux_x86_64_pc_1', port: 7800 },
      { name: 'my_linux_x86_64_pc_2', address: 'my_linux_x86_64_pc_2', port: 7800 },
    ]);
    expect(config.clients).toEqual(['localnets']);
    const host = sanitizeHostName(hostname());
    expect(config.hostName).toBe(host);
    expect(config.tempDirectory).toBe('/home/tester/.rex/tmp');
    expect(config.stateDirectory).toBe('/home/tester/.rex');
    expect(config.socket).toBe('/home/tester/.rex/run/rexd.sock');
    expect(config.logDatabase).toBe('/home/tester/.rex/rex-log.sqlite');
    expect(config.listen).toEqual({ address: '127.0.0.1', port: 7800 });
    expect(config.autoTransfer).toEqual({ mode: 'on' });
    expect(config.logLevel).toBe('info');
    expect(config.loadInterval).toBe(1000);
    expect(config.peerTimeout).toBe(5000);
    expect(sources.servers).toEqual({ file: join(FIXTURES, 'good/seed.rc'), line: 2 });
    expect(sources.clients).toEqual({ file: join(FIXTURES, 'good/seed.rc'), line: 3 });
    expect(sources.logLevel).toEqual({ file: '(default)' });
    expect(files).toEqual([join(FIXTURES, 'good/seed.rc')]);
  });

  it('reads every key, comments of each kind and a continued line', async () => {
    const f = join(FIXTURES, 'good/full.rc');
    const { config, sources } = await load('good/full.rc');
    // full.rc sets every key it had when written; a key added to the table since keeps its default
    // here, and is read (rc and XML) through the table's own examples by keys.test.ts.
    expect(config).toEqual({
      ...defaultConfig({ user: 'tester', home: '/home/tester', systemHostName: hostname() }),
      hostName: 'alpha',
      listen: { address: '127.0.0.1', port: 7801 },
      servers: [
        { name: 'alpha', address: '127.0.0.1', port: 7801 },
        { name: 'beta', address: '127.0.0.1', port: 7802 },
        { name: 'gamma', address: '::1', port: 7803 },
        { name: 'delta', address: 'delta', port: 7800 },
      ],
      clients: ['localnets', '10.0.0.0/8', '192.168.1.7', 'fd00::/8', 'beta.example.org'],
      tempDirectory: '/tmp/.rex_alpha_tester/x',
      autoTransfer: { mode: 'command', command: 'rsync -a --partial' },
      placementPolicy: 'least-loaded',
      stateDirectory: '/home/tester/.rex-alpha',
      socket: '/home/tester/.rex-alpha/run/rexd.sock',
      logLevel: 'debug',
      loadInterval: 500,
      peerTimeout: 2000,
      logDatabase: '/home/tester/.rex-alpha/rex-log.sqlite',
      logFailClosed: true,
      logHeartbeats: false,
      logRetentionDays: 30,
      logMaxSize: 64 * 1024 * 1024,
      programs: [],
      loginGraceTime: 5000,
      maxStartups: 50,
      perSourceMaxStartups: 5,
      logDenialsBurst: 20,
      logDenialsInterval: 30_000,
    });
    expect(sources.hostName).toEqual({ file: f, line: 5 });
    expect(sources.servers).toEqual({ file: f, line: 7 }); // a continued line keeps its first line
    expect(sources.clients).toEqual({ file: f, line: 9 });
    expect(sources.peerTimeout).toEqual({ file: f, line: 15 });
    expect(sources.socket.file).toBe('(default)');
    expect(sources.socket.note).toContain(`state-directory at ${f}:12`);
  });

  it('lets later definitions override earlier ones and reports the winner', () => {
    const { config, sources } = parseRc('log-level : debug\nlog-level : trace\nservers : a\nservers : b, c\n', 'x.rc', env);
    expect(config.logLevel).toBe('trace');
    expect(sources.logLevel).toEqual({ file: 'x.rc', line: 2 });
    expect(config.servers.map((s) => s.name)).toEqual(['b', 'c']);
  });

  it('derives listen from the servers entry named like this host', () => {
    const { config, sources } = parseRc('host-name: beta\nservers: alpha@10.0.0.1:7801, beta@10.0.0.2:7802\n', 'x.rc', env);
    expect(config.listen).toEqual({ address: '10.0.0.2', port: 7802 });
    expect(sources.listen.note).toBe('from servers entry "beta" at x.rc:2');
    // host-name defaults to the system name before its first dot
    expect(parseRc('', 'x.rc', env).config.hostName).toBe('vm');
  });

  it('rex-temp-directory defaults to <state-directory>/tmp, not a predictable name in /tmp, and follows a configured state-directory', () => {
    expect(parseRc('', 'x.rc', env).config.tempDirectory).toBe('/home/tester/.rex/tmp');
    const { config, sources } = parseRc('state-directory: /srv/rex/${USER}\n', 'x.rc', env);
    expect(config.tempDirectory).toBe('/srv/rex/tester/tmp');
    expect(sources.tempDirectory.note).toBe('from state-directory at x.rc:1');
    expect(parseRc('rex-temp-directory: /var/tmp/rex\n', 'x.rc', env).config.tempDirectory).toBe('/var/tmp/rex');
  });

  it('expands ~, ${HOST}, ${USER}, ${HOME} and $$ in paths', () => {
    const { config } = parseRc('host-name:h1\nrex-temp-directory: /t/${HOST}/${USER}/$$x\nstate-directory: ~\nsocket: ${HOME}/s\n', 'x.rc', env);
    expect(config.tempDirectory).toBe('/t/h1/tester/$x');
    expect(config.stateDirectory).toBe('/home/tester');
    expect(config.socket).toBe('/home/tester/s');
  });

  it('accepts the duration and auto-transfer forms', () => {
    const c = (t: string) => parseRc(t, 'x.rc', env).config;
    expect(c('load-interval: 250').loadInterval).toBe(250);
    expect(c('load-interval: 1.5s').loadInterval).toBe(1500);
    expect(c('peer-timeout: 1m').peerTimeout).toBe(60_000);
    expect(c('peer-timeout: 1h').peerTimeout).toBe(3_600_000);
    expect(c('rex-auto-transfer: off').autoTransfer).toEqual({ mode: 'off' });
    expect(c('rex-auto-transfer: command:scp -q').autoTransfer).toEqual({ mode: 'command', command: 'scp -q' });
    expect(c('listen: [::]:9000').listen).toEqual({ address: '::', port: 9000 });
    expect(c('listen: 0.0.0.0').listen).toEqual({ address: '0.0.0.0', port: 7800 });
    expect(c('servers:').servers).toEqual([]);
    expect(c('clients:').clients).toEqual([]);
  });

  it('reads the transaction log keys, and says what is expected of a bad value', async () => {
    const c = (t: string) => parseRc(t, 'x.rc', env).config;
    expect(c('')).toMatchObject({ logFailClosed: false, logHeartbeats: false, logRetentionDays: 90, logMaxSize: 256 * 1024 * 1024 });
    expect(c('log-fail-closed: YES\nlog-heartbeats: yes')).toMatchObject({ logFailClosed: true, logHeartbeats: true });
    expect(c('log-retention-days: none\nlog-max-size: none')).toMatchObject({ logRetentionDays: 0, logMaxSize: 0 });
    expect(c('log-max-size: 1G').logMaxSize).toBe(1024 ** 3);
    expect(c('log-max-size: 512KiB\nlog-max-size: 2MB').logMaxSize).toBe(2 * 1024 * 1024);
    const problems = async (t: string) => (await configError(() => parseRc(t, 'x.rc', env))).diagnostics.map((d) => `${d.line}:${d.key}: ${d.message}`);
    expect(await problems('log-fail-closed: maybe')).toEqual(['1:log-fail-closed: "maybe" is not valid; expected "yes" or "no"']);
    expect(await problems('\nlog-retention-days: 0')).toEqual(['2:log-retention-days: "0" is not a number of days; expected e.g. 90, or "none" to keep rows forever']);
    expect(await problems('log-retention-days: 99999')).toEqual(['1:log-retention-days: "99999" is out of range; expected a number of days between 1 and 36500, or none']);
    expect(await problems('log-max-size: lots')).toEqual(['1:log-max-size: "lots" is not a size; expected e.g. 256M, 1G, 512K (binary units: 1K = 1024 bytes), or "none" for no bound']);
    expect(await problems('log-max-size: 64K')).toEqual(['1:log-max-size: "64K" is not valid; expected a size between 1M and 1T, or none']);
  });

  it('ignores "#" comments that are not directives, and CRLF line ends', () => {
    const { config } = parseRc('# servers : nope\r\n#comment\r\n  // servers: nope\r\nlog-level : warn\r\n', 'x.rc', env);
    expect(config.logLevel).toBe('warn');
    expect(config.servers).toEqual([]);
  });

  it('formats the effective configuration as valid rc text with origins', async () => {
    const loaded = await load('good/full.rc');
    const text = formatConfig(loaded);
    expect(text).toMatch(new RegExp(`^log-level +: debug +/\\* ${join(FIXTURES, 'good/full.rc')}:13 \\*/$`, 'm'));
    // `rex config show` output is itself a valid rex.rc describing the same configuration.
    expect(parseRc(text, 'shown.rc', env).config).toEqual(loaded.config);
    const json = JSON.parse(formatConfig(loaded, { json: true }));
    expect(json.sources.logLevel).toEqual({ file: join(FIXTURES, 'good/full.rc'), line: 13 });
  });
});

describe('rc form: bad files name file:line and key', () => {
  const cases: [string, number, string | undefined, RegExp][] = [
    ['bad/unknown-key.rc', 3, 'sever', /unknown key; did you mean "servers"\?/],
    ['bad/bad-port.rc', 3, 'servers', /entry "beta": port 70000 is out of range; expected a port number 1-65535/],
    ['bad/bad-duration.rc', 2, 'peer-timeout', /"soon" is not a duration; expected e\.g\. 500ms/],
    ['bad/duplicate-server.rc', 2, 'servers', /duplicate server name "alpha"/],
    ['bad/missing-include.rc', 2, undefined, /cannot find included file "does-not-exist\.rc" \(looked for: .*does-not-exist\.rc/],
    ['bad/unterminated-comment.rc', 2, undefined, /unterminated comment: "\/\*" has no matching "\*\/"/],
    ['bad/no-colon.rc', 3, undefined, /expected "key : value", got "this line has no separator"/],
  ];
  for (const [rel, line, key, re] of cases) {
    it(rel, async () => {
      const e = await configError(() => load(rel));
      expect(e.diagnostics).toHaveLength(1);
      const d = e.diagnostics[0]!;
      expect(d.file).toBe(join(FIXTURES, rel));
      expect(d.line).toBe(line);
      expect(d.key).toBe(key);
      expect(d.message).toMatch(re);
      const prefix = `${join(FIXTURES, rel)}:${line}: error: ${key === undefined ? '' : `key "${key}": `}`;
      expect(e.message.startsWith(prefix)).toBe(true);
    });
  }

  it('reports an include loop with the whole chain', async () => {
    const e = await configError(() => load('bad/loop-a.rc'));
    const a = join(FIXTURES, 'bad/loop-a.rc');
    const b = join(FIXTURES, 'bad/loop-b.rc');
    expect(e.code).toBe(ErrorCodes.CONFIG_INCLUDE);
    expect(e.message).toBe(`${b}:1: error: include loop: ${a}:3 -> ${b}:1 -> ${a}`);
  });

  it('collects every error of a file, in line order, under the first one\'s code', async () => {
    const e = await configError(() => load('bad/multi.rc'));
    expect(e.diagnostics.map((d) => [d.line, d.key])).toEqual([
      [1, 'servers'],
      [2, 'log-levle'],
      [3, 'load-interval'],
    ]);
    expect(e.code).toBe(ErrorCodes.CONFIG_VALUE);
    expect(e.message.split('\n')).toHaveLength(3);
    expect(e.diagnostics[1]!.message).toContain('did you mean "log-level"?');
  });

  it('explains each value error', async () => {
    const msg = async (text: string) => (await configError(() => parseRc(text, 'x.rc', env))).diagnostics.map((d) => `${d.line}:${d.key}: ${d.message}`);
    expect(await msg('listen: ::1:80')).toEqual(['1:listen: listen address "::1:80": write IPv6 addresses in brackets, e.g. [::1]:7801; expected ADDRESS:PORT']);
    expect(await msg('\nclients: 10.0.0.0/33, a b')).toEqual([
      '2:clients: entry "10.0.0.0/33": prefix length "33" must be 0-32',
      '2:clients: entry "a b": expected a host name, an IP address, a CIDR range (10.0.0.0/8) or "localnets"',
    ]);
    expect(await msg('host-name: a.b')).toEqual([expect.stringContaining('"a.b" is not a valid REX host name') as unknown as string]);
    expect(await msg('servers: a.b')).toEqual([expect.stringContaining("'.' is reserved as the HOST.USER.PROGRAM separator") as unknown as string]);
    expect(await msg('servers: a,,b')).toEqual(['1:servers: empty entry (two commas in a row, or a trailing comma); expected NAME[@ADDRESS][:PORT]']);
    expect(await msg('rex-auto-transfer: maybe')).toEqual([expect.stringContaining('expected "on", "off" or "command: <shell command>"') as unknown as string]);
    expect(await msg('rex-temp-directory: tmp/x')).toEqual(['1:rex-temp-directory: "tmp/x" is not valid; expected an absolute path (after ~ and ${HOME}/${USER}/${HOST} expansion)']);
    expect(await msg('socket: /${PWD}/s')).toEqual([expect.stringContaining('unknown variable ${PWD}') as unknown as string]);
    expect(await msg(`socket: /${'s'.repeat(120)}`)).toEqual([expect.stringContaining('is too long; expected an absolute path of at most 107 bytes') as unknown as string]);
    expect(await msg('log-level: loud')).toEqual(['1:log-level: "loud" is not valid; expected one of error, warn, info, debug, trace']);
    expect(await msg('peer-timeout: 2h')).toEqual(['1:peer-timeout: "2h" is out of range; expected a duration between 10ms and 1h']);
    expect(await msg('#ifdef X\n#define Y 1')).toEqual([
      '1:undefined: unsupported preprocessor directive "#ifdef"; only #include is supported (other lines starting with "#" are comments)',
      '2:undefined: unsupported preprocessor directive "#define"; only #include is supported (other lines starting with "#" are comments)',
    ]);
    expect(await msg('#include nothing')).toEqual([expect.stringContaining('#include expects "relative/path" or <name>') as unknown as string]);
    expect(await msg('frobnicate: 1')).toEqual([expect.stringContaining('unknown key; expected one of: host-name, listen, servers') as unknown as string]);
  });

  it('reports an invalid derived default at the definition it came from', async () => {
    const e = await configError(() => parseRc(`log-level: info\nstate-directory: /${'d'.repeat(100)}\n`, 'x.rc', env));
    expect(e.diagnostics).toHaveLength(1);
    expect(e.diagnostics[0]).toMatchObject({ file: 'x.rc', line: 2, key: 'socket' });
    expect(e.diagnostics[0]!.message).toMatch(/is too long; .* \(the default, derived from state-directory\)$/);
    // When the origin is itself invalid, only the origin is reported.
    const e2 = await configError(() => parseRc('state-directory: relative\n', 'x.rc', env));
    expect(e2.diagnostics.map((d) => d.key)).toEqual(['state-directory']);
  });

  it('scans includes in place without reading files', () => {
    const { items } = scanRc('a: 1\n#include "x.rc"\n#  include <y.rc>\nb: 2\n', 'f.rc');
    expect(items.map((i) => (i.kind === 'def' ? i.def.key : `${i.system ? '<' : '"'}${i.path}@${i.line}`))).toEqual(['a', '"x.rc@2', '<y.rc@3', 'b']);
  });
});
