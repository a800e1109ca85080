import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isRexError } from '../../src/util/errors.js';
import { parseRc, parseXmlConfig, toRcText, type RexConfig } from '../../src/config/index.js';
import { KEY_SPECS } from '../../src/config/keys.js';
import { FIXTURES } from './helpers.js';
import { runs } from '../helpers/property.js';

const env = { user: 'tester', home: '/home/tester', systemHostName: 'vm' };
const goodRc = readFileSync(join(FIXTURES, 'good/full.rc'), 'utf8');
const goodXml = readFileSync(join(FIXTURES, 'good/full.xml'), 'utf8');

/** Pieces that steer random text towards the parser's interesting corners. */
const token = fc.constantFrom(
  'servers', 'clients', ':', ',', '@', '[', ']', '::1', '#include "', '#include <', '>', '"', '/*', '*/', '//', '#', '\\\n', '\n', '\r\n',
  '${HOST}', '${', '}', '$$', '~/', 'localnets', '10.0.0.0/8', 'command:', 'on', 'off', '500ms', '1h', '70000', 'log-level', 'host-name',
  '<rex-config>', '</rex-config>', '<servers>', '<server name="a"/>', '<client>', '</client>', '<!DOCTYPE rex-config [', '<!ENTITY e "x">', '&e;', '\u0000', 'é',
);
const noise = fc.array(fc.oneof(token, fc.string({ maxLength: 8 })), { maxLength: 40 }).map((a) => a.join(''));

/** Applies random edits (insert, delete, replace) to a text. */
function mutated(text: string) {
  const edit = fc.tuple(fc.nat({ max: text.length }), fc.nat({ max: 12 }), noise);
  return fc.array(edit, { minLength: 1, maxLength: 6 }).map((edits) => {
    let t = text;
    for (const [at, del, ins] of edits) {
      const p = Math.min(at, t.length);
      t = t.slice(0, p) + ins + t.slice(p + del);
    }
    return t;
  });
}

function onlyRexErrors(fn: () => unknown) {
  try {
    fn();
  } catch (e) {
    if (!isRexError(e)) throw e;
  }
}

async function onlyRexErrorsAsync(fn: () => Promise<unknown>) {
  try {
    await fn();
  } catch (e) {
    if (!isRexError(e)) throw e;
  }
}

describe('parsers survive hostile input', () => {
  it('parseRc throws nothing but RexError on random and mutated text', () => {
    fc.assert(fc.property(fc.oneof(noise, mutated(goodRc), fc.string({ unit: 'binary', maxLength: 300 })), (text) => onlyRexErrors(() => parseRc(text, 'fuzz.rc', env))), { numRuns: runs(1500) });
  });

  it('parseXmlConfig throws nothing but RexError on random and mutated text', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutated(goodXml), noise.map((n) => `<rex-config>${n}</rex-config>`)), (text) => onlyRexErrorsAsync(() => parseXmlConfig(text, 'fuzz.xml', env))),
      { numRuns: runs(300) },
    );
  });

  it('every error message names the file (and a line when one is known)', () => {
    fc.assert(
      fc.property(mutated(goodRc), (text) => {
        try {
          parseRc(text, 'fuzz.rc', env);
        } catch (e) {
          if (!isRexError(e)) throw e;
          for (const line of e.message.split('\n')) expect(line).toMatch(/^fuzz\.rc:\d+: error: /);
        }
      }),
      { numRuns: runs(500) },
    );
  });
});

const name = fc.stringMatching(/^[A-Za-z0-9][A-Za-z0-9_-]{0,20}$/);
const port = fc.integer({ min: 1, max: 65535 });
const address = fc.oneof(fc.ipV4(), fc.ipV6(), fc.domain(), name);
const cidr = fc.oneof(
  fc.tuple(fc.ipV4(), fc.integer({ min: 0, max: 32 })).map(([a, b]) => `${a}/${b}`),
  fc.tuple(fc.ipV6(), fc.integer({ min: 0, max: 128 })).map(([a, b]) => `${a}/${b}`),
);
const path = fc.stringMatching(/^\/[A-Za-z0-9_.${}~ -]{0,40}[A-Za-z0-9_]$/);
const duration = fc.integer({ min: 10, max: 3_600_000 });
const command = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => s === s.trim() && s !== '' && !/[\r\n\u0000-\u001f]|\/\*|\\$/.test(s));

type Arbitraries = { [F in keyof RexConfig]: fc.Arbitrary<RexConfig[F]> };
/** A key without an arbitrary of its own below (one added to the table since) takes its examples from the table. */
const byExample = Object.fromEntries(KEY_SPECS.map((s) => [s.field, fc.constantFrom(...s.examples.map((e) => e.value))])) as unknown as Arbitraries;
const own: Partial<Arbitraries> = {
  hostName: name,
  listen: fc.record({ address, port }),
  servers: fc.uniqueArray(fc.record({ name, address, port }), { selector: (s) => s.name, maxLength: 6 }),
  clients: fc.array(fc.oneof(fc.constant('localnets'), fc.ipV4(), fc.ipV6(), cidr, fc.domain()), { maxLength: 6 }),
  tempDirectory: path,
  autoTransfer: fc.oneof(fc.constant({ mode: 'on' as const }), fc.constant({ mode: 'off' as const }), command.map((c) => ({ mode: 'command' as const, command: c }))),
  placementPolicy: fc.constantFrom('least-loaded' as const, 'round-robin' as const, 'random' as const),
  stateDirectory: path,
  socket: path,
  logLevel: fc.constantFrom('error' as const, 'warn' as const, 'info' as const, 'debug' as const, 'trace' as const),
  loadInterval: duration,
  peerTimeout: duration,
  logDatabase: path,
  logFailClosed: fc.boolean(),
  logHeartbeats: fc.boolean(),
  logRetentionDays: fc.integer({ min: 0, max: 36500 }),
  logMaxSize: fc.oneof(fc.constant(0), fc.integer({ min: 1024 * 1024, max: 1024 ** 4 })),
  programs: fc.uniqueArray(
    fc.oneof(
      fc.record({ name, object: path }),
      fc.record({ name, object: path, xml: path.map((p) => `${p}.xml`) }),
      fc.record({ name, object: path, db: path.map((p) => `${p}.sqlite`) }),
      fc.record({ name, exec: path }),
    ),
    { selector: (p) => p.name, maxLength: 4 },
  ),
  loginGraceTime: fc.integer({ min: 100, max: 3_600_000 }),
  maxStartups: fc.integer({ min: 1, max: 100_000 }),
  perSourceMaxStartups: fc.integer({ min: 1, max: 100_000 }),
  logDenialsBurst: fc.integer({ min: 1, max: 100_000 }),
  logDenialsInterval: fc.integer({ min: 100, max: 3_600_000 }),
};
const rexConfig: fc.Arbitrary<RexConfig> = fc.record({ ...byExample, ...own });

describe('toRcText round trip', () => {
  it('any valid RexConfig printed as rc text parses back to the same config', () => {
    fc.assert(
      fc.property(rexConfig, (config) => {
        const text = toRcText(config);
        expect(parseRc(text, 'round.rc', env).config).toEqual(config);
      }),
      { numRuns: runs(500) },
    );
  });
});
