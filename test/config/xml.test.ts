import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/util/errors.js';
import { loadConfig, parseXmlConfig } from '../../src/config/index.js';
import { ENV, FIXTURES, configError } from './helpers.js';

const env = { user: 'tester', home: '/home/tester', systemHostName: 'vm' };
const wrap = (body: string) => `<?xml version="1.0"?>\n<rex-config>\n${body}\n</rex-config>\n`;

describe('XML form', () => {
  it('expresses every key and normalises to the same config as the rc form', async () => {
    const xml = await loadConfig({ file: join(FIXTURES, 'good/full.xml'), env: ENV });
    const rc = await loadConfig({ file: join(FIXTURES, 'good/full.rc'), env: ENV });
    expect(xml.config).toEqual(rc.config);
    const f = join(FIXTURES, 'good/full.xml');
    expect(xml.sources.hostName).toEqual({ file: f, line: 4 });
    expect(xml.sources.servers).toEqual({ file: f, line: 6 });
    expect(xml.sources.peerTimeout).toEqual({ file: f, line: 24 });
  });

  it('is read when included from an rc file, in place, with provenance', async () => {
    const { config, sources, files } = await loadConfig({ file: join(FIXTURES, 'good/main.rc'), env: ENV });
    const rel = (p: string) => join(FIXTURES, 'good', p);
    expect(files).toEqual([rel('main.rc'), rel('parts/cluster.rc'), rel('parts/cluster.xml'), join(FIXTURES, 'sys/etc/rex.d/site.rc')]);
    expect(config.hostName).toBe('beta');
    expect(sources.hostName).toEqual({ file: rel('parts/cluster.xml'), line: 4 });
    expect(config.clients).toEqual(['localnets', '10.1.0.0/16']);
    expect(sources.clients).toEqual({ file: rel('parts/cluster.xml'), line: 5 });
    // log-level: main.rc:2 says warn, then the included cluster.rc:2 says error, and nothing later overrides it.
    expect(config.logLevel).toBe('error');
    expect(sources.logLevel).toEqual({ file: rel('parts/cluster.rc'), line: 2 });
    // #include <site.rc> found in ${REX_ROOT}/etc/rex.d/
    expect(sources.peerTimeout).toEqual({ file: join(FIXTURES, 'sys/etc/rex.d/site.rc'), line: 1 });
    expect(config.listen).toEqual({ address: '127.0.0.1', port: 7802 });
  });

  it('reports DTD violations with libxml2\'s line, and does not interpret the document', async () => {
    const f = join(FIXTURES, 'bad/invalid.xml');
    const e = await configError(() => loadConfig({ file: f, env: ENV }));
    expect(e.code).toBe(ErrorCodes.CONFIG_XML);
    expect(e.message.split('\n')).toEqual([
      `${f}:5: error: key "servers": does not match schema/rex.dtd: Element server does not carry attribute name`,
      `${f}:7: error: key "sevrers": does not match schema/rex.dtd: unknown element <sevrers>; did you mean <servers>?`,
    ]);
  });

  it('reports an invalid XML file included from rc at the XML file\'s line', async () => {
    const e = await configError(() => loadConfig({ file: join(FIXTURES, 'bad/includes-bad-xml.rc'), env: ENV }));
    expect(e.diagnostics.map((d) => `${d.file}:${d.line}`)).toEqual([`${join(FIXTURES, 'bad/invalid.xml')}:5`, `${join(FIXTURES, 'bad/invalid.xml')}:7`]);
  });

  it('reports malformed XML and a wrong root element', async () => {
    let e = await configError(() => parseXmlConfig(wrap('  <log-level>debug</log-level>\n  <servers>'), 'm.xml', env));
    expect(e.diagnostics[0]).toMatchObject({ file: 'm.xml', line: 5, code: ErrorCodes.CONFIG_XML });
    expect(e.diagnostics[0]!.message).toMatch(/^malformed XML: .*mismatch/);
    e = await configError(() => parseXmlConfig('<?xml version="1.0"?>\n<client>x</client>\n', 'r.xml', env));
    expect(e.message).toBe('r.xml:2: error: the root element is <client>; a configuration file\'s root element must be <rex-config>');
  });

  it('maps value errors to the line of the element, and of the list item', async () => {
    const text = wrap('  <servers>\n    <server name="a" port="7801"/>\n    <server name="b" address="::1" port="99999"/>\n  </servers>\n  <load-interval>fast</load-interval>');
    const e = await configError(() => parseXmlConfig(text, 'v.xml', env));
    expect(e.message.split('\n')).toEqual([
      'v.xml:5: error: key "servers": entry "b": port 99999 is out of range; expected a port number 1-65535',
      'v.xml:7: error: key "load-interval": "fast" is not a duration; expected e.g. 500ms, 2s, 1m, 1h, or a bare number of milliseconds',
    ]);
    const ok = await parseXmlConfig(wrap('<servers><server name="b" address="::1" port="9"/></servers>'), 'v.xml', env);
    expect(ok.config.servers).toEqual([{ name: 'b', address: '::1', port: 9 }]);
  });

  it('does not fetch external entities', async () => {
    const text = `<?xml version="1.0"?>\n<!DOCTYPE rex-config [<!ENTITY x SYSTEM "file:///etc/passwd">]>\n<rex-config>\n<host-name>&x;</host-name>\n</rex-config>\n`;
    const e = await configError(() => parseXmlConfig(text, 'x.xml', env));
    expect(e.message).toBe('x.xml:4: error: key "host-name": "" is not a valid REX host name; expected letters, digits, \'_\' and \'-\', starting with a letter or digit (\'.\' separates HOST.USER.PROGRAM)');
  });
});
