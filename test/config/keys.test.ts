// Every key of the table (src/config/keys.ts) read through its own examples,
// in both forms, and refused through its own invalid values: a key added to
// the table is tested without a line here.
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/util/errors.js';
import { KEY_SPECS } from '../../src/config/keys.js';
import { defaultConfig } from '../../src/config/normalize.js';
import { parseRc, parseXmlConfig } from '../../src/config/index.js';
import { configError } from './helpers.js';

// The environment the table's examples are written for.
const env = { user: 'tester', home: '/home/tester', systemHostName: 'vm' };
const xmlText = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/"/g, '&quot;');

/** The XML element of one key: its rc text, or one child element per item of a list written as children. */
function xmlElement(spec: (typeof KEY_SPECS)[number], ex: { rc: string; value: unknown }): string {
  const child = spec.value.list?.xml?.child;
  if (child === undefined) return `<${spec.key}>${xmlText(ex.rc)}</${spec.key}>`;
  const items = (ex.value as unknown[]).map((item) =>
    typeof item === 'string'
      ? `<${child}>${xmlText(item)}</${child}>`
      : `<${child} ${Object.entries(item as Record<string, unknown>).map(([k, v]) => `${k}="${xmlText(String(v))}"`).join(' ')}/>`,
  );
  return `<${spec.key}>${items.join('')}</${spec.key}>`;
}

describe('every key of the table', () => {
  for (const spec of KEY_SPECS) {
    describe(spec.key, () => {
      it('reads each example in the rc form, at its line, and prints it back to the same value', () => {
        expect(spec.examples.length, 'every key has an example').toBeGreaterThan(0);
        for (const ex of spec.examples) {
          const { config, sources } = parseRc(`# examples\n${spec.key} : ${ex.rc}\n`, 'k.rc', env);
          expect(config[spec.field], `${spec.key} : ${ex.rc}`).toEqual(ex.value);
          expect(sources[spec.field]).toEqual({ file: 'k.rc', line: 2 });
          expect(parseRc(`${spec.key} : ${spec.value.print(ex.value)}\n`, 'p.rc', env).config[spec.field]).toEqual(ex.value);
        }
      });

      it('reads each example in the XML form to the same value', async () => {
        for (const ex of spec.examples) {
          const { config, sources } = await parseXmlConfig(`<?xml version="1.0"?>\n<rex-config>\n${xmlElement(spec, ex)}\n</rex-config>\n`, 'k.xml', env);
          expect(config[spec.field], xmlElement(spec, ex)).toEqual(ex.value);
          expect(sources[spec.field]).toEqual({ file: 'k.xml', line: 3 });
        }
      });

      it('refuses each invalid value at file:line, naming the key and what is expected', async () => {
        expect(spec.invalid.length, 'every key has an invalid value').toBeGreaterThan(0);
        for (const bad of spec.invalid) {
          const e = await configError(() => parseRc(`# invalid\n${spec.key} : ${bad}\n`, 'bad.rc', env));
          expect(e.code).toBe(ErrorCodes.CONFIG_VALUE);
          for (const line of e.message.split('\n')) expect(line, `${spec.key} : ${bad}`).toMatch(new RegExp(`^bad\\.rc:2: error: key "${spec.key}": .*expected`));
        }
      });

      it('has a default that is itself a valid value', () => {
        const value = defaultConfig({ ...env, systemHostName: env.systemHostName })[spec.field];
        expect(parseRc(`${spec.key} : ${spec.value.print(value)}\n`, 'd.rc', env).config[spec.field]).toEqual(value);
      });
    });
  }
});
