import { describe, expect, it } from 'vitest';
import { parseRc, parseXmlConfig } from '../../src/config/index.js';
import { configError } from './helpers.js';

const env = { user: 'tester', home: '/home/tester', systemHostName: 'vm.example.org' };

describe('rex-log-database', () => {
  it('defaults to rex-log.sqlite in the state directory, following state-directory with a note', () => {
    expect(parseRc('host-name : h1\n', 'x.rc', env).config.logDatabase).toBe('/home/tester/.rex/rex-log.sqlite');
    const { config, sources } = parseRc('host-name : h1\nstate-directory : /srv/rex/${USER}\n', 'x.rc', env);
    expect(config.logDatabase).toBe('/srv/rex/tester/rex-log.sqlite');
    expect(sources.logDatabase).toEqual({ file: '(default)', note: 'from state-directory at x.rc:2' });
  });

  it('takes an absolute path with variables, in rc and XML form', async () => {
    const rc = parseRc('host-name : h1\nrex-log-database : ~/logs/${HOST}.sqlite\n', 'x.rc', env);
    expect(rc.config.logDatabase).toBe('/home/tester/logs/h1.sqlite');
    expect(rc.sources.logDatabase).toEqual({ file: 'x.rc', line: 2 });
    const xml = await parseXmlConfig('<rex-config>\n  <host-name>h1</host-name>\n  <rex-log-database>/var/log/rex/${USER}.sqlite</rex-log-database>\n</rex-config>\n', 'x.xml', env);
    expect(xml.config.logDatabase).toBe('/var/log/rex/tester.sqlite');
  });

  it('refuses a relative path or an empty one, at file:line', async () => {
    const e = await configError(() => parseRc('host-name : h1\nrex-log-database : logs/rex.sqlite\n', 'x.rc', env));
    expect(e.diagnostics[0]).toMatchObject({ file: 'x.rc', line: 2, key: 'rex-log-database' });
    const e2 = await configError(() => parseRc('rex-log-database :\n', 'y.rc', env));
    expect(e2.diagnostics[0]).toMatchObject({ file: 'y.rc', line: 1, key: 'rex-log-database', message: 'the path is empty; expected an absolute path' });
  });
});
