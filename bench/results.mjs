// `npm run bench`'s results table (issue 17 item 6): the headline rows every
// benchmark records with lib.mjs record(), rendered as one Markdown table with
// the machine and the date, and written into docs/PERFORMANCE.md between the
// markers below (the rest of the file is left as it is). Not a benchmark.
import { readFileSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, release } from 'node:os';
import { fmtNum } from './lib.mjs';

export const BEGIN = '<!-- bench-results:begin (written by `npm run bench`; edits here are overwritten) -->';
export const END = '<!-- bench-results:end -->';

/** The machine a run was made on, as the table's heading says it. */
export function machine() {
  let model = cpus()[0]?.model?.trim() || 'unknown CPU';
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '';
    model += / avx512f( |$)/.test(flags) ? ', AVX-512' : ', no AVX-512';
  } catch {
    /* not Linux: the model alone */
  }
  return { cpu: model, cores: cpus().length, kernel: release(), node: process.version, load: loadavg()[0] };
}

const cell = (s) => String(s).replace(/\|/g, '\\|').replace(/\n/g, ' ');

/**
 * The table: one row per recorded figure, then the benches that failed to
 * run (a missed target is a row saying so, not a failure).
 */
export function renderTable(rows, { date, before, after, failed = [], only = [] }) {
  const out = [];
  out.push(`Last \`npm run bench\`${only.length ? ` (only: ${only.join(', ')})` : ''}: ${date}, ${before.cpu}, ${before.cores} cores, Linux ${before.kernel}, Node ${before.node}; load average ${before.load.toFixed(2)} at the start, ${after.load.toFixed(2)} at the end (a loaded machine moves every figure; the ratios, measured in the same run, much less).`);
  out.push('');
  out.push('| bench | measure | REX | peer (same run) | ratio | target | |');
  out.push('|---|---|---:|---|---:|---|---|');
  for (const r of rows) {
    const peer = r.peer === undefined || r.peer === null ? '' : `${r.peerName} ${fmtNum(r.peer)} ${r.unit}`;
    const ratio = typeof r.ratio === 'number' ? `${r.ratio.toFixed(2)}x` : '';
    const target = r.target === undefined || r.target === null ? '' : `${r.better === 'higher' ? '>=' : '<='} ${+r.target.toFixed(2)}x`;
    const met = r.met === true ? 'met' : r.met === false ? '**not met**' : '';
    out.push(`| ${cell(r.bench)} | ${cell(r.measure)} | ${fmtNum(r.rex)} ${cell(r.unit)} | ${cell(peer)} | ${ratio} | ${target} | ${met} |`);
  }
  if (rows.length === 0) out.push('| | no figure was recorded | | | | | |');
  for (const f of failed) out.push('', `\`${f.bench}\` could not run (exit ${f.status}): see its output.`);
  return out.join('\n');
}

/** Puts `table` between the markers of `file`, which must have both once. */
export function writeResults(file, table) {
  const text = readFileSync(file, 'utf8');
  const b = text.indexOf(BEGIN);
  const e = text.indexOf(END);
  if (b < 0 || e < b || text.indexOf(BEGIN, b + 1) >= 0 || text.indexOf(END, e + 1) >= 0) {
    throw new Error(`${file}: expected the markers ${BEGIN} and ${END} once each, in that order; put them back where the results table goes`);
  }
  writeFileSync(file, `${text.slice(0, b + BEGIN.length)}\n${table}\n${text.slice(e)}`);
}
