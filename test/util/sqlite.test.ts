/**
 * src/util/sqlite.ts: @photostructure/sqlite's addon loaded by path, with the
 * two helpers of better-sqlite3 the callers kept (pragma, transaction) and its
 * open options (readonly, fileMustExist) meaning what they meant.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/util/sqlite.js';

const tmp = mkdtempSync(join(tmpdir(), 'rex-sqlite-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('openDatabase', () => {
  it('pragma(): every row, or with simple the first value; WAL mode takes', () => {
    const db = openDatabase(join(tmp, 'p.sqlite'));
    expect(db.pragma('journal_mode = WAL', { simple: true })).toBe('wal');
    expect(db.pragma('page_size', { simple: true })).toBeTypeOf('number');
    expect(db.pragma('journal_mode')).toEqual([{ journal_mode: 'wal' }]);
    db.close();
  });

  it('transaction(): commits on return, rolls back on a throw, nests as a savepoint', () => {
    const db = openDatabase(join(tmp, 't.sqlite'));
    db.exec('CREATE TABLE t (n INTEGER)');
    const ins = db.prepare('INSERT INTO t VALUES (?)');
    const count = () => (db.prepare('SELECT COUNT(*) AS c FROM t').get() as { c: number }).c;
    db.transaction((a: number, b: number) => {
      ins.run(a);
      ins.run(b);
    })(1, 2);
    expect(count()).toBe(2);
    expect(() =>
      db.transaction(() => {
        ins.run(3);
        throw new Error('no');
      })(),
    ).toThrow('no');
    expect(count()).toBe(2);
    db.transaction(() => {
      ins.run(4);
      expect(() =>
        db.transaction(() => {
          ins.run(5);
          throw new Error('inner');
        })(),
      ).toThrow('inner');
    })();
    expect((db.prepare('SELECT n FROM t ORDER BY n').all() as { n: number }[]).map((r) => r.n)).toEqual([1, 2, 4]);
    db.close();
  });

  it('readonly and fileMustExist refuse a missing file and create nothing; readonly refuses writes', () => {
    const missing = join(tmp, 'missing.sqlite');
    expect(() => openDatabase(missing, { readonly: true, fileMustExist: true })).toThrow(/unable to open database file/);
    expect(() => openDatabase(missing, { fileMustExist: true })).toThrow(/does not exist/);
    expect(existsSync(missing)).toBe(false);
    const file = join(tmp, 'r.sqlite');
    const w = openDatabase(file);
    w.exec('CREATE TABLE t (n INTEGER); INSERT INTO t VALUES (7)');
    w.close();
    const r = openDatabase(file, { readonly: true, fileMustExist: true });
    expect(r.prepare('SELECT n FROM t').all()).toEqual([{ n: 7 }]);
    expect(() => r.exec('INSERT INTO t VALUES (8)')).toThrow(/readonly/);
    r.close();
  });
});
