/**
 * Program definitions for the call manager: what rexd's configuration names
 * (an object and its entry-point definitions, or a program that serves
 * itself) turned into a ProgramSpec. Definitions come from repdb's XML or SQL,
 * or from the object's own debug info; definitions made before the object was
 * stripped are checked against its dynamic symbols.
 *
 * Reading them can take seconds (libc's DWARF), so rexd reads them in a worker
 * thread ({@link loadProgramOffThread}): its event loop keeps serving sessions
 * and answering its peers meanwhile. The repdb stack (src/gen, libxml2-wasm) is
 * imported only where definitions are read, never by rexd's start.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { LayoutEngine } from '../runtime/frames/layout.js';
import type { ProgramSpec } from './manager.js';
import { parseDbTarget, type DbTarget } from '../db/target.js';
import { ErrorCodes, RexError } from '../util/errors.js';

/** One program as configured: a shared object with XML, SQLite or DWARF definitions, or an executable linked with librex. */
export type ProgramConfig =
  | { name: string; object: string; xml?: string; db?: string; database?: string }
  | { name: string; exec: string; args?: string[] };

/** A program's spec, and the entry points whose symbol moved or is missing in the object. */
export interface LoadedProgram {
  spec: ProgramSpec;
  warnings: string[];
}

/** A programs entry's database (HOST.USER.DBMS.DB_NAME or a URL), mapped with rexd's environment now. */
function databaseTarget(text: string): DbTarget {
  const t = parseDbTarget(text);
  if (typeof t === 'string') throw new RexError(ErrorCodes.CONFIG_DATABASE, t, { where: 'rex.rc programs' });
  return t;
}

/** Reads a program's definitions on this thread; `warnings` lists entry points whose symbol moved or is missing in the object. */
export async function loadProgram(c: ProgramConfig): Promise<LoadedProgram> {
  if ('exec' in c) return { spec: { kind: 'program', name: c.name, exec: resolve(c.exec), ...(c.args ? { args: c.args } : {}) }, warnings: [] };
  const { checkAgainstElf, entryPointsFromElf, readEntryPointsDb, readEntryPointsFrom, readEntryPointsXml } = await import('../gen/index.js');
  const object = resolve(c.object);
  const definitions = c.xml
    ? readEntryPointsXml(readFileSync(c.xml, 'utf8'), c.xml)
    : c.db
      ? readEntryPointsDb(c.db, basename(object))
      : c.database
        ? await readEntryPointsFrom(databaseTarget(c.database), basename(object), { trusted: true })
        : entryPointsFromElf({ path: object }).set;
  const warnings = c.xml || c.db || c.database ? checkAgainstElf(definitions, { path: object }).map((w) => `${w.where}: ${w.message}`) : [];
  return { spec: { kind: 'library', name: c.name, object, definitions }, warnings };
}

/**
 * The worker script beside this module once compiled: dist/calls/ (tsc), or dist/bin/ for the bundled programs, where
 * it is an entry point of its own (scripts/bundle.mjs); absent when running from the TypeScript sources.
 */
const WORKER = fileURLToPath(new URL('./program-worker.js', import.meta.url));

/** What the worker posts back: the loaded program, or the error's message. */
export type WorkerAnswer = { ok: LoadedProgram } | { error: string };

/**
 * {@link loadProgram} in a worker thread, so a library's debug info is read
 * while rexd's event loop goes on (a peer link waits for PINGs answered within
 * its timeout). Falls back to this thread where the worker script is not built.
 */
export async function loadProgramOffThread(c: ProgramConfig): Promise<LoadedProgram> {
  if ('exec' in c || !existsSync(WORKER)) return loadProgram(c);
  const answer = await new Promise<WorkerAnswer>((resolveAnswer, reject) => {
    const w = new Worker(WORKER, { workerData: c });
    let got: WorkerAnswer | undefined;
    w.once('message', (m: WorkerAnswer) => (got = m));
    w.once('error', reject);
    w.once('exit', (code) => (got ? resolveAnswer(got) : reject(new Error(`the definitions reader stopped (exit code ${code}) before answering`))));
  });
  if ('error' in answer) throw new Error(answer.error);
  const { spec } = answer.ok;
  // Structured clone keeps plain data only: each plan's layout engine is a class, made again here.
  if (spec.kind === 'library') for (const ep of spec.definitions.entries) ep.plan.engine = new LayoutEngine(ep.plan.desc.types);
  return answer.ok;
}
