#!/usr/bin/env node
/**
 * `repdb`: the remote entry-point database tool of the seed. Reads an ELF object
 * (argument or stdin) and writes its entry points as XML (-x) or SQL (-d) from
 * DWARF (-g), or checks hand-written XML / an existing database against the ELF
 * symbols (so stripped objects work), and generates typed stubs (--ts, --c-header).
 * All logic lives in src/gen/; this file only routes inputs to outputs.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { basename } from 'node:path';
import { Command } from 'commander';
import { runMain } from './main.js';
import { RexError, ErrorCodes } from '../util/errors.js';
import {
  entryPointsFromElf, checkAgainstElf, readEntryPointsXml, readEntryPointsDb, writeEntryPointsXml,
  writeEntryPointsSql, generateTs, generateCHeader, readEntryPointsFrom, writeEntryPointsTo, type ElfInput, type EntryPointSet, type Owner,
} from '../gen/index.js';
import { looksLikeDbTarget, parseDbTarget, redactUrl, type DbTarget } from '../db/target.js';

interface Opts {
  debugInfo?: boolean;
  xmlOut?: boolean;
  sql?: boolean;
  /** -d alone: write SQL text (as --sql); -d TARGET: the REXP table of a database. */
  database?: string | boolean;
  ts?: boolean;
  cHeader?: boolean;
  output?: string;
  xml?: string;
  db?: string;
  elf?: string;
  elfFile?: string;
  host?: string;
  user?: string;
  program?: string;
  config?: string;
  quiet?: boolean;
  internal?: boolean;
}

const HELP_AFTER = `
Inputs: FILE (or stdin when FILE is - or absent) is an ELF object, or entry-point XML.

Examples:
  repdb -gx libdemo.so > libdemo.xml          entry points from DWARF, as XML (validated against rex.dtd)
  repdb -gd libdemo.so | sqlite3 rex.db       the same as SQL text (REXP table; SQLite or PostgreSQL)
  repdb -gd localhost.$USER.sqlite.rex libdemo.so    write the REXP rows into a database (HOST.USER.DBMS.DB_NAME)
  repdb -gd postgresql://rex@db1/rex libdemo.so      the same, named by URL
  repdb -d localhost.$USER.postgresql.rex libdemo.so check the database's rows against the library's symbols
  repdb -gx libdemo.so | repdb --ts -o libdemo.rex.ts    typed TypeScript stubs in one line
  repdb --c-header libdemo.xml -o libdemo.rex.h          C frame structs and prototypes
  strip libdemo.so && repdb --xml libdemo.xml libdemo.so   check definitions made before stripping
  repdb --db rex.db libdemo.so                check database rows against the library's symbols

With -g, entry points are the library's exported functions by the names callers use (cbrt, not
__cbrt; an older symbol version as pow@GLIBC_2.2.5), with prototypes from DWARF; --internal adds
hidden and local functions. Exported functions without DWARF are listed with prototype="no".
Without -g the definitions come from XML (FILE, stdin or --xml) or a database (--db), and
are checked against the ELF symbols when an ELF object is given (FILE or --elf).
Pointer parameters need marks (direction, size-is, string) before they can be called remotely;
see docs/ENTRYPOINTS.md. Errors are reported as FILE:LINE: error: MESSAGE.`;

const program = new Command('repdb')
  .description('Remote entry-point database: ELF/DWARF to entry-point XML, SQL and typed stubs')
  .argument('[file]', 'ELF object or entry-point XML; - or absent: stdin')
  .option('-g, --debug-info', 'read the entry points from the ELF object\'s DWARF (-g) information')
  .option('-x, --xml-out', 'write entry-point XML (the default with -g)')
  .option('-d, --database [target]', 'the REXP table of a database HOST.USER.DBMS.DB_NAME, sqlite:PATH or postgresql://...: written with -g or XML definitions, read otherwise; -d alone: write SQL text (--sql)')
  .option('--sql', 'write SQL text creating and filling the REXP table (SQLite and PostgreSQL)')
  .option('--ts', 'write a TypeScript module of typed stubs (<lib>.rex.ts)')
  .option('--c-header', 'write a C header of frame structs and prototypes (<lib>.rex.h)')
  .option('-o, --output <file>', 'write to FILE instead of stdout')
  .option('--xml <file>', 'without -g: entry-point definitions from this XML file')
  .option('--db <file>', 'without -g: entry-point definitions from this SQLite database (REXP table)')
  .option('--elf <file>', 'check XML given as FILE/stdin against this ELF object\'s symbols')
  .option('--elf-file <name>', 'the elf-file name to record (-g from stdin) or whose rows to read (--db without an ELF object)')
  .option('--host <host>', 'owner host recorded with -g (HOST.USER.PROGRAM)')
  .option('--user <user>', 'owner user recorded with -g')
  .option('--program <program>', 'owner program recorded with -g')
  .option('--config <name>', 'configuration name recorded with -g')
  .option('--internal', 'with -g: also list the functions only DWARF knows (hidden or local, not exported), marked internal="yes"')
  .option('-q, --quiet', 'no warnings or summary on stderr')
  .addHelpText('after', HELP_AFTER)
  .action(async (file: string | undefined, opts: Opts) => {
    await run(file, opts);
  });

function usage(message: string, hint: string): RexError {
  return new RexError(ErrorCodes.USAGE, message, { hint });
}

async function readStdin(): Promise<Buffer> {
  if (process.stdin.isTTY) throw usage('no input: give a FILE or pipe one to stdin', 'repdb --help shows examples');
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

function isElf(b: Buffer): boolean {
  return b.length >= 4 && b[0] === 0x7f && b.toString('latin1', 1, 4) === 'ELF';
}

function warn(opts: Opts, where: string, message: string): void {
  if (!opts.quiet) process.stderr.write(`repdb: ${where}: warning: ${message}\n`);
}

/**
 * Sorts out -d: `-d TARGET` names a database; `-d` alone (or followed by what is no database name: `repdb -gd
 * libfoo.so`, as the seed writes it) asks for SQL text, the word after it being the input FILE.
 */
function databaseOption(file: string | undefined, opts: Opts): { file: string | undefined; target?: DbTarget } {
  const d = opts.database;
  delete opts.database;
  if (d === undefined || d === false) return { file };
  if (d === true || !looksLikeDbTarget(d)) {
    opts.sql = true;
    if (d === true) return { file };
    if (file !== undefined) throw usage(`-d ${d}: "${d}" is not a database name (HOST.USER.DBMS.DB_NAME, sqlite:PATH or postgresql://...), and FILE is ${file}`, 'repdb -gd HOST.USER.DBMS.DB_NAME LIB.so writes into a database; repdb -gd LIB.so writes SQL text');
    return { file: d };
  }
  const t = parseDbTarget(d, { cwd: process.cwd() });
  if (typeof t === 'string') throw usage(`-d ${redactUrl(d)}: ${t}`, 'e.g. repdb -gd localhost.$USER.sqlite.rex libfoo.so');
  return { file, target: t };
}

async function run(fileArg: string | undefined, opts: Opts): Promise<void> {
  const { file, target } = databaseOption(fileArg, opts);
  const outputs = [opts.xmlOut, opts.sql, opts.ts, opts.cHeader].filter(Boolean).length;
  if (outputs > 1) throw usage('choose one output: -x, -d, --ts or --c-header', 'run repdb once per output');
  if (opts.internal && !opts.debugInfo) throw usage('--internal lists what DWARF knows, so it needs -g', 'repdb -gx --internal libfoo.so');
  if (opts.debugInfo && (opts.xml || opts.db)) throw usage('-g reads DWARF; --xml and --db are for definitions made without it', 'drop -g, or drop --xml/--db');

  // The positional input: an ELF object or XML, from a file or stdin.
  let input: { bytes: Buffer; name: string } | undefined;
  if (file !== undefined && file !== '-') {
    try {
      input = { bytes: readFileSync(file), name: file };
    } catch (e) {
      throw new RexError(ErrorCodes.USAGE, `cannot read ${file}: ${(e as Error).message}`, { where: file, hint: 'check the path' });
    }
  } else if (file === '-' || !process.stdin.isTTY) {
    // Absent FILE with a terminal on stdin and --xml/--db given: there is simply no positional input.
    input = { bytes: await readStdin(), name: '<stdin>' };
  } else if (!opts.xml && !opts.db) {
    throw usage('no input: give a FILE or pipe one to stdin', 'repdb --help shows examples');
  }
  if (input && input.bytes.length === 0) input = undefined;

  const owner: Owner = {};
  for (const k of ['host', 'user', 'program', 'config'] as const) if (opts[k] !== undefined) owner[k] = opts[k];

  let set: EntryPointSet;
  let from: string;
  let elf: ElfInput | undefined;
  let readFromTarget = false;
  if (opts.debugInfo) {
    if (!input) throw usage('-g needs an ELF object (FILE or stdin)', 'repdb -gx libfoo.so');
    if (!isElf(input.bytes)) throw new RexError(ErrorCodes.ELF_MALFORMED, 'not an ELF object (no \\x7fELF magic)', { where: input.name, hint: '-g reads a shared library or executable built with -g' });
    const elfIn: ElfInput = input.name === '<stdin>' ? { bytes: input.bytes, name: input.name } : { path: input.name };
    if (input.name === '<stdin>' && opts.elfFile === undefined) warn(opts, '<stdin>', 'the ELF object came from stdin, so elf-file is recorded as "<stdin>"; name it with --elf-file NAME');
    const r = entryPointsFromElf(elfIn, owner, opts.elfFile, { internal: opts.internal === true });
    for (const d of r.diagnostics) warn(opts, d.where, d.message);
    set = r.set;
    from = basename(input.name);
    if (!opts.xmlOut && !opts.sql && !opts.ts && !opts.cHeader && !target) opts.xmlOut = true;
  } else {
    if (input && isElf(input.bytes)) {
      elf = input.name === '<stdin>' ? { bytes: input.bytes, name: input.name } : { path: input.name };
      if (!opts.xml && !opts.db && !target) throw usage('without -g, give the definitions with --xml FILE or --db FILE (or use -g to read DWARF)', `repdb -gx ${input.name} writes them from the debug information`);
    } else if (opts.elf) {
      elf = { path: opts.elf };
    }
    if (opts.xml) {
      set = readEntryPointsXml(readFileSync(opts.xml, 'utf8'), opts.xml);
      from = basename(opts.xml);
    } else if (opts.db) {
      const elfName = elf ? basename('path' in elf ? elf.path : elf.name) : opts.elfFile;
      set = readEntryPointsDb(opts.db, elfName);
      from = basename(opts.db);
    } else if (target && (!input || isElf(input.bytes))) {
      // -d TARGET with nothing else to read: the definitions come from the database.
      const elfName = elf ? basename('path' in elf ? elf.path : elf.name) : opts.elfFile;
      set = await readEntryPointsFrom(target, elfName);
      from = target.shown;
      readFromTarget = true;
    } else {
      if (!input) throw usage('no input: give an ELF object with -g, or entry-point XML', 'repdb --help shows examples');
      const text = input.bytes.toString('utf8');
      if (!/^\s*(<\?xml|<!--|<!DOCTYPE|<rex-entry-points)/.test(text)) {
        throw new RexError(ErrorCodes.ENTRY_XML, 'input is neither an ELF object nor entry-point XML', { where: `${input.name}:1`, hint: 'give an ELF object with -g, or XML starting with <?xml or <rex-entry-points' });
      }
      set = readEntryPointsXml(text, input.name);
      from = input.name === '<stdin>' ? set.elfFile : basename(input.name);
    }
    if (elf) for (const w of checkAgainstElf(set, elf)) warn(opts, w.where, w.message);
  }

  const callable = set.entries.filter((e) => e.refusals.length === 0).length;
  const summary = `${set.elfFile}: ${set.entries.length} entry points, ${callable} callable${elf ? ', symbols checked' : ''}`;
  if (target && !readFromTarget) {
    // Definitions from DWARF or XML, and -d TARGET: they go into the database.
    if (outputs > 0) throw usage('-d DATABASE writes the entry points into it; choose no other output', 'run repdb once per output');
    const n = await writeEntryPointsTo(target, set, from);
    if (!opts.quiet) process.stderr.write(`repdb: wrote ${n} entry point${n === 1 ? '' : 's'} of ${set.elfFile} to ${target.shown} table REXP\n`);
    return;
  }

  let text: string | undefined;
  if (opts.xmlOut) text = writeEntryPointsXml(set, { from });
  else if (opts.sql) text = writeEntryPointsSql(set, { from });
  else if (opts.ts) text = generateTs(set, from);
  else if (opts.cHeader) text = generateCHeader(set, from);

  if (text === undefined) {
    process.stdout.write(`ok: ${summary}\n`);
    return;
  }
  if (opts.output) writeFileSync(opts.output, text);
  else process.stdout.write(text);
  if (!opts.quiet && opts.output) process.stderr.write(`repdb: wrote ${opts.output} (${summary})\n`);
}

await runMain(program);
