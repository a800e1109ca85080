// `npm run bench` writes one results table into docs/PERFORMANCE.md (issue 17
// item 6): every benchmark records its headline figures with lib.mjs record(),
// bench/results.mjs renders them with the machine and the date, and writes them
// between two markers without touching the rest of the document.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { packageRoot } from '../../src/util/paths.js';

const root = packageRoot();
const bench = join(root, 'bench');
const results = (await import(join(bench, 'results.mjs'))) as {
  BEGIN: string;
  END: string;
  machine(): { cpu: string; cores: number; kernel: string; node: string; load: number };
  renderTable(rows: object[], o: object): string;
  writeResults(file: string, table: string): void;
};
const scratch = mkdtempSync(join(tmpdir(), 'rex-bench-results-'));
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('npm run bench: one results table', () => {
  it('each benchmark records at least one figure for the table (REX, the peer of the same run, the target)', () => {
    const helpers = new Set(['run.mjs', 'lib.mjs', 'results.mjs', 'echo-server.mjs']);
    const benches = readdirSync(bench).filter((f) => f.endsWith('.mjs') && !helpers.has(f));
    expect(benches.length).toBeGreaterThanOrEqual(10);
    for (const b of benches) {
      const text = readFileSync(join(bench, b), 'utf8');
      expect(text, `${b} imports record() from lib.mjs`).toMatch(/\brecord\b[^;]*from '\.\/lib\.mjs'|import\('\.\/lib\.mjs'\)/);
      expect(text, `${b} calls record({...})`).toMatch(/\brecord\(\{ measure: /);
    }
  });

  it('record() prints the row and appends it as one JSON line to $REX_BENCH_RESULTS', () => {
    const file = join(scratch, 'rows.jsonl');
    const script = join(scratch, 'one.mjs');
    writeFileSync(script, `import { record } from ${JSON.stringify(join(bench, 'lib.mjs'))};\nrecord({ measure: 'm1', rex: 2, peer: 4, peerName: 'p', unit: 'ms', target: 1 });\nrecord({ measure: 'm2', rex: 300, peer: 100, peerName: 'q', unit: 'MB/s', target: 1, better: 'higher' });\nrecord({ measure: 'm3', rex: 5, unit: 'ms' });\n`);
    const r = spawnSync(process.execPath, [script], { encoding: 'utf8', env: { ...process.env, REX_BENCH_RESULTS: file } });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('result: m1: REX 2.00 ms, p 4.00 ms, ratio 0.50x   target <= 1x: met');
    expect(r.stdout).toContain('result: m2: REX 300 MB/s, q 100 MB/s, ratio 3.00x   target >= 1x: met');
    const rows = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(rows.map((x) => [x.bench, x.measure, x.ratio, x.met])).toEqual([
      ['one', 'm1', 0.5, true],
      ['one', 'm2', 3, true],
      ['one', 'm3', undefined, undefined],
    ]);
  });

  it('the table names the machine and the date, says met / not met by the direction of the target, and lists a bench that could not run', () => {
    const m = results.machine();
    expect(m.cores).toBeGreaterThan(0);
    expect(m.cpu).toMatch(/AVX-512/);
    const table = results.renderTable(
      [
        { bench: 'rcall', measure: 'round | trip', rex: 1089, peer: 635, peerName: 'grpc-js unary', unit: 'us', ratio: 1089 / 635, target: 1, better: 'lower', met: false },
        { bench: 'exec', measure: 'stdout', rex: 210, peer: 200, peerName: 'ssh', unit: 'MB/s', ratio: 1.05, target: 1, better: 'higher', met: true },
      ],
      { date: '2026-12-07T18:00:00Z', before: m, after: m, failed: [{ bench: 'rfork', status: 1 }] },
    );
    expect(table).toContain('2026-12-07T18:00:00Z');
    expect(table).toContain(`${m.cores} cores`);
    expect(table).toContain('| rcall | round \\| trip | 1,089 us | grpc-js unary 635 us | 1.71x | <= 1x | **not met** |');
    expect(table).toContain('| exec | stdout | 210 MB/s | ssh 200 MB/s | 1.05x | >= 1x | met |');
    expect(table).toContain('`rfork` could not run (exit 1)');
  });

  it('writing replaces only what is between the markers, and refuses a document without them', () => {
    const doc = join(scratch, 'PERF.md');
    writeFileSync(doc, `# before\n\n${results.BEGIN}\nold table\n${results.END}\n\n# after\n`);
    results.writeResults(doc, 'new table');
    expect(readFileSync(doc, 'utf8')).toBe(`# before\n\n${results.BEGIN}\nnew table\n${results.END}\n\n# after\n`);
    writeFileSync(doc, '# no markers\n');
    expect(() => results.writeResults(doc, 't')).toThrow(/expected the markers/);
    expect(readFileSync(doc, 'utf8')).toBe('# no markers\n');
  });

  it('docs/PERFORMANCE.md has the markers once, with a table written by a run', () => {
    const text = readFileSync(join(root, 'docs', 'PERFORMANCE.md'), 'utf8');
    expect(text.split(results.BEGIN).length).toBe(2);
    expect(text.split(results.END).length).toBe(2);
    const inside = text.slice(text.indexOf(results.BEGIN), text.indexOf(results.END));
    expect(inside).toMatch(/Last `npm run bench`.*\d{4}-\d\d-\d\dT/);
    expect(inside).toContain('| bench | measure | REX | peer (same run) | ratio | target | |');
  });
});
