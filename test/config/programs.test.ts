import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseRc, parseXmlConfig } from '../../src/config/index.js';
import { configError } from './helpers.js';
import { runs } from '../helpers/property.js';

const env = { user: 'tester', home: '/home/tester', systemHostName: 'vm.example.org' };

describe('rex.rc programs', () => {
  it('defaults to none', () => {
    expect(parseRc('host-name : h1\n', 'x.rc', env).config.programs).toEqual([]);
  });

  it('reads shared objects with XML, SQLite or DWARF definitions and self-serving executables, with ~ and ${HOST} expanded', async () => {
    const rc = parseRc(
      'host-name : h1\nprograms : demo=~/lib/libdemo.so:~/lib/libdemo.xml, \\\n   calc = /opt/calc/libcalc.so:/opt/calc/calc.sqlite, m=/usr/lib/libm.so.6, \\\n   srv=exec:/opt/${HOST}/server\n',
      'x.rc',
      env,
    );
    expect(rc.config.programs).toEqual([
      { name: 'demo', object: '/home/tester/lib/libdemo.so', xml: '/home/tester/lib/libdemo.xml' },
      { name: 'calc', object: '/opt/calc/libcalc.so', db: '/opt/calc/calc.sqlite' },
      { name: 'm', object: '/usr/lib/libm.so.6' },
      { name: 'srv', exec: '/opt/h1/server' },
    ]);
    expect(rc.sources.programs).toEqual({ file: 'x.rc', line: 2 });
    const xml = await parseXmlConfig('<rex-config>\n  <host-name>h1</host-name>\n  <programs>demo=/l/libdemo.so:/l/libdemo.xml</programs>\n</rex-config>\n', 'x.xml', env);
    expect(xml.config.programs).toEqual([{ name: 'demo', object: '/l/libdemo.so', xml: '/l/libdemo.xml' }]);
  });

  it('reads the executables a program grant lets EXEC run, and prints them back', async () => {
    const rc = parseRc('host-name : h1\nprograms : demo=/l/libdemo.so:/l/libdemo.xml executables=~/bin/demo:/opt/${HOST}/demo-tool, srv=exec:/opt/srv executables=/opt/srv\n', 'x.rc', env);
    expect(rc.config.programs).toEqual([
      { name: 'demo', object: '/l/libdemo.so', xml: '/l/libdemo.xml', executables: ['/home/tester/bin/demo', '/opt/h1/demo-tool'] },
      { name: 'srv', exec: '/opt/srv', executables: ['/opt/srv'] },
    ]);
    const { toRcText } = await import('../../src/config/index.js');
    expect(parseRc(toRcText(rc.config), 'y.rc', env).config.programs).toEqual(rc.config.programs);
    const xml = await parseXmlConfig('<rex-config>\n  <host-name>h1</host-name>\n  <programs>demo=/l/libdemo.so executables=/bin/demo</programs>\n</rex-config>\n', 'x.xml', env);
    expect(xml.config.programs).toEqual([{ name: 'demo', object: '/l/libdemo.so', executables: ['/bin/demo'] }]);
  });

  it('refuses bad entries at file:line, naming the entry and what to write', async () => {
    const cases: [string, RegExp][] = [
      ['programs : demo\n', /entry "demo": no "=" after the program name; expected NAME=/],
      ['programs : de.mo=/l/x.so\n', /"de.mo" is not a program name .*no dots/],
      ['programs : demo=lib/x.so\n', /the shared object "lib\/x.so" is not an absolute path/],
      ['programs : demo=/l/x.so:/l/x.txt\n', /definitions "\/l\/x.txt" must end in .xml \(repdb -gx\) or .sqlite\/.db/],
      ['programs : demo=exec:\n', /the executable path is empty/],
      ['programs : demo=/l/x.so, demo=/l/y.so\n', /program "demo" is defined twice/],
      ['programs : demo=/l/x.so,,b=/l/y.so\n', /empty entry/],
      ['programs : demo=/l/${NOPE}/x.so\n', /unknown variable \$\{NOPE\}/],
      ['programs : demo=/l/x.so executables=\n', /executables= has an empty path/],
      ['programs : demo=/l/x.so executables=/bin/a::/bin/b\n', /executables= has an empty path/],
      ['programs : demo=/l/x.so executables=bin/demo\n', /the executable "bin\/demo" is not an absolute path/],
      ['programs : demo=/l/x.so executables=/bin/a:/bin/a\n', /executable \/bin\/a is listed twice/],
      ['programs : demo=/l/x.so executables=/bin/a /bin/b\n', /contains a space/],
      ['programs : demo=lib/x.so executables=/bin/a\n', /the shared object "lib\/x.so" is not an absolute path/],
    ];
    for (const [text, re] of cases) {
      const e = await configError(() => parseRc(`host-name : h1\n${text}`, 'p.rc', env));
      expect(e.diagnostics[0], text).toMatchObject({ file: 'p.rc', line: 2, key: 'programs' });
      expect(e.diagnostics[0]!.message, text).toMatch(re);
      expect(e.message).toMatch(/^p\.rc:2: error: key "programs": /);
    }
  });

  it('never throws anything but a ConfigError on arbitrary values', async () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 80 }).filter((s) => !/[\r\n\\]|\/\*/.test(s)), (v) => {
        try {
          parseRc(`host-name : h1\nprograms : ${v}\n`, 'f.rc', env);
        } catch (e) {
          expect((e as Error).constructor.name).toBe('ConfigError');
        }
      }),
      { numRuns: runs(300) },
    );
  });
});
