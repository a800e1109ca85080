#!/usr/bin/env node
// (Golden files carry a .golden suffix so that tsc and editors do not treat them as sources.)
// Regenerates repdb's golden files in test/fixtures/repdb/golden/ from
// test/fixtures/repdb/demo.xml with the built generator (run `npm run build` first).
// test/gen/repdb/codegen.test.ts fails on any difference, so review the diff before committing.
import { readFileSync, writeFileSync, mkdirSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));
const gen = await import(`${root}dist/gen/index.js`);
const fix = `${root}test/fixtures/repdb/`;
const set = gen.readEntryPointsXml(readFileSync(`${fix}demo.xml`, 'utf8'), 'demo.xml');
mkdirSync(`${fix}golden`, { recursive: true });
const outputs = {
  'libdemo.rex.ts': gen.generateTs(set, 'demo.xml'),
  'libdemo.rex.h': gen.generateCHeader(set, 'demo.xml'),
  'libdemo.sql': gen.writeEntryPointsSql(set, { from: 'demo.xml' }),
  'libdemo.xml': gen.writeEntryPointsXml(set, { from: 'demo.xml' }),
};
for (const [name, text] of Object.entries(outputs)) {
  writeFileSync(`${fix}golden/${name}.golden`, text);
  console.log(`wrote test/fixtures/repdb/golden/${name}.golden`);
}
