/**
 * thin_repair's part for the metadata file: rebuild a damaged database from the rows that
 * can still be read, and swap it in.
 *
 * A fresh database gets the same schema (a schema row that is lost or does not parse
 * takes thinfs's own definition, see fs/check.ts currentSchema) and is filled table by
 * table: by SQL where a table reads cleanly, else from its pages (sqlite-pages.ts),
 * skipping the pages and cells that cannot be read, each value checked against its
 * column's type. Pages that a damaged interior page cut off from their tree are read too
 * and go to the one damaged table whose rows they fit. The result must pass
 * integrity_check and hold the superblock; then it is fsynced and renamed over
 * metadata.db (the old, empty -wal and the -shm removed first).
 *
 * Failure contract: metadata.db is only replaced once the fresh file is complete and
 * checked; on any failure it is as it was. Precondition: the pool is closed and its lock
 * held (integrity.ts lockPool): nothing else has the file open.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { fail } from '../errors.js';
import { checkpoint, checkSqlite, checkSqliteFile, fsyncDir, fsyncFile, quote } from './integrity.js';
import { MAGIC, type Db } from './metadata.js';
import { PageFile, TextValue, type RawRecord, type RawValue, type TreeKind } from './sqlite-pages.js';

/** What a rebuild copied, per table. */
export interface RebuiltTable {
  name: string;
  rows: number;
  /** 'sql' when the table read cleanly, 'pages' when it was read page by page. */
  source: 'sql' | 'pages';
  /** Pages of the table that could not be read (their rows are lost). */
  badPages: number;
  /** Rows on readable pages that could not be decoded or did not fit the columns. */
  badRows: number;
  /** Rows found on pages cut off from the table's tree (a damaged interior page). */
  orphanRows: number;
}

export interface RebuildReport {
  tables: RebuiltTable[];
  /** Rows lost in all: on unreadable pages (estimated from the pages) plus undecodable ones. */
  summary: string;
}

/** One row of sqlite_master. */
export interface SchemaEntry {
  type: string;
  name: string;
  tblName: string;
  /** The b-tree's root page; 0 when unknown (its schema row was lost). */
  rootpage: number;
  sql: string | null;
}

/**
 * Rebuild the metadata file from the rows that can still be read, and swap it in.
 * `known` is the schema this thinfs writes (see fs/check.ts currentSchema): it stands in
 * for schema rows that are lost or unreadable (their tables' pages are then found among
 * the cut-off pages by the shape of their rows).
 * Precondition: the pool is closed and its lock held (see lockPool); nothing has the file
 * open. On failure metadata.db is unchanged.
 */
export function rebuildMetadata(file: string, known: SchemaEntry[] = []): RebuildReport {
  checkpoint(file);
  const wal = `${file}-wal`;
  if (fs.existsSync(wal) && fs.statSync(wal).size > 0) {
    throw fail('EIO', 'check --repair', file, 'the write-ahead log could not be merged into the damaged database; restore pool/metadata.db from the backup');
  }
  const health = checkSqliteFile(file);
  const pages = PageFile.open(file);
  const tmp = `${file}.rebuild-${process.pid}`;
  fs.rmSync(tmp, { force: true });
  let out: Db | undefined;
  try {
    out = new Database(tmp);
    out.pragma('foreign_keys = OFF');
    out.pragma('synchronous = FULL');
    const schema = readSchema(file, pages, known);
    const tables = createSchema(out, schema, known, 'table');
    const damaged = new Set(health.unreadable !== undefined ? tables.map((t) => t.name) : health.damagedTables);
    for (const t of tables) if (t.rootpage === 0) damaged.add(t.name);
    const attached = attach(out, file);
    const report: RebuiltTable[] = [];
    const viaPages: SchemaEntry[] = [];
    for (const t of tables) {
      if (attached && !damaged.has(t.name) && copyBySql(out, t.name)) {
        report.push({ name: t.name, rows: count(out, t.name), source: 'sql', badPages: 0, badRows: 0, orphanRows: 0 });
      } else {
        viaPages.push(t);
      }
    }
    if (attached) out.exec('DETACH DATABASE old');
    if (viaPages.length > 0) report.push(...copyByPages(out, pages, schema, viaPages));
    createSchema(out, schema, known, 'index');
    const check = checkSqlite(out);
    if (!check.ok) throw fail('EIO', 'check --repair', file, `the rebuilt database does not check clean (${check.lines[0]})`);
    if (!hasSuperblock(out)) {
      throw fail('EIO', 'check --repair', file, 'the superblock is on an unreadable page, so the pool cannot be rebuilt from what is left; restore pool/metadata.db from a backup');
    }
    out.close();
    out = undefined;
    fsyncFile(tmp);
    // The old file's -wal (empty after the checkpoint) and -shm must not be read with the new one.
    for (const f of [`${file}-wal`, `${file}-shm`]) fs.rmSync(f, { force: true });
    fs.renameSync(tmp, file);
    fsyncDir(path.dirname(file));
    report.sort((a, b) => a.name.localeCompare(b.name));
    const lostPages = report.reduce((n, t) => n + t.badPages, 0);
    const badRows = report.reduce((n, t) => n + t.badRows, 0);
    const rows = report.reduce((n, t) => n + t.rows, 0);
    const damagedNames = report
      .filter((t) => t.source === 'pages')
      .map((t) => `${t.name} (${t.rows} rows recovered${t.badPages > 0 ? `, ${t.badPages} unreadable page(s)` : ''}${t.orphanRows > 0 ? `, ${t.orphanRows} from cut-off pages` : ''})`);
    return {
      tables: report,
      summary:
        `copied ${rows} rows of ${report.length} tables` +
        (damagedNames.length > 0 ? `; read page by page: ${damagedNames.join(', ')}` : '') +
        (lostPages > 0 ? `; the rows on ${lostPages} unreadable page(s) are lost` : '') +
        (badRows > 0 ? `; ${badRows} undecodable row(s) skipped` : ''),
    };
  } finally {
    pages.close();
    out?.close();
    fs.rmSync(tmp, { force: true });
    fs.rmSync(`${tmp}-journal`, { force: true });
  }
}

function hasSuperblock(db: Db): boolean {
  try {
    return db.prepare('SELECT magic FROM superblock WHERE id = 1').pluck().get() === MAGIC;
  } catch {
    return false;
  }
}

/**
 * True when `file` holds thinfs's tables (its schema, read from page 1 itself if SQLite
 * cannot, names the superblock): a damaged pool, as opposed to a file that never was one.
 */
export function looksLikeThinfsMetadata(file: string): boolean {
  let pages: PageFile;
  try {
    pages = PageFile.open(file);
  } catch {
    return false;
  }
  try {
    return pages.readTree(1, 'table').records.some((r) => {
      const [type, name] = r.values;
      return type instanceof TextValue && name instanceof TextValue && type.toString() === 'table' && name.toString() === 'superblock';
    });
  } finally {
    pages.close();
  }
}


/**
 * Create the `kind` objects of `schema` (tables, or everything else) in `db`. An entry
 * whose SQL does not parse takes thinfs's own (`known`); known objects the schema lost
 * are created too (tables with rootpage 0). Returns the tables (or the rest) created.
 */
function createSchema(db: Db, schema: SchemaEntry[], known: SchemaEntry[], kind: 'table' | 'index'): SchemaEntry[] {
  const wanted = (e: SchemaEntry) => !e.name.startsWith('sqlite_') && e.sql !== null && (kind === 'table') === (e.type === 'table');
  const done: SchemaEntry[] = [];
  const names = new Set<string>();
  for (const e of schema.filter(wanted)) {
    if (names.has(e.name)) continue;
    const fallback = known.find((k) => k.name === e.name && k.type === e.type);
    for (const sql of [e.sql!, fallback?.sql]) {
      if (sql === undefined || sql === null) continue;
      try {
        db.exec(sql);
        done.push({ ...e, sql });
        names.add(e.name);
        break;
      } catch {
        /* try thinfs's own definition */
      }
    }
  }
  for (const k of known.filter(wanted)) {
    if (names.has(k.name)) continue;
    db.exec(k.sql!);
    done.push({ ...k, rootpage: 0 });
    names.add(k.name);
  }
  return done;
}

/** The schema, by SQL when sqlite_master reads, else from page 1's tree; `known` when nothing at all reads. */
function readSchema(file: string, pages: PageFile, known: SchemaEntry[]): SchemaEntry[] {
  try {
    const db = new Database(file, { readonly: true, fileMustExist: true });
    try {
      const rows = db.prepare('SELECT type, name, tbl_name AS tblName, rootpage, sql FROM sqlite_master').all() as SchemaEntry[];
      // The tree walk below must still claim page 1 and the schema's own pages.
      pages.readTree(1, 'table');
      return rows;
    } finally {
      db.close();
    }
  } catch {
    const tree = pages.readTree(1, 'table');
    const out: SchemaEntry[] = [];
    for (const r of tree.records) {
      const [type, name, tbl, root, sql] = r.values;
      if (!(type instanceof TextValue && name instanceof TextValue && tbl instanceof TextValue && typeof root === 'bigint')) continue;
      if (!(sql === null || sql instanceof TextValue)) continue;
      out.push({ type: type.toString(), name: name.toString(), tblName: tbl.toString(), rootpage: Number(root), sql: sql === null ? null : sql.toString() });
    }
    if (!out.some((e) => e.type === 'table') && known.length === 0) {
      throw fail('EIO', 'check --repair', file, 'the schema page of the database is unreadable; restore pool/metadata.db from a backup');
    }
    return out;
  }
}

function attach(db: Db, file: string): boolean {
  try {
    // (Read-write: this build of SQLite takes no URI filenames. Only SELECTs run on it.)
    db.prepare('ATTACH DATABASE ? AS old').run(file);
    db.prepare('SELECT count(*) FROM old.sqlite_master').get();
    return true;
  } catch {
    try {
      db.exec('DETACH DATABASE old');
    } catch {
      /* was not attached */
    }
    return false;
  }
}

function copyBySql(db: Db, table: string): boolean {
  try {
    db.transaction(() => db.exec(`INSERT INTO main.${quote(table)} SELECT * FROM old.${quote(table)}`))();
    return true;
  } catch {
    db.exec(`DELETE FROM main.${quote(table)}`);
    return false;
  }
}

function count(db: Db, table: string): number {
  return db.prepare(`SELECT count(*) FROM ${quote(table)}`).pluck().get() as number;
}

interface Column {
  name: string;
  affinity: 'INTEGER' | 'TEXT' | 'BLOB' | 'REAL' | 'NUMERIC';
  notNull: boolean;
}

/** How the rows of one table lie in its b-tree records, and how to insert them. */
interface TableShape {
  name: string;
  kind: TreeKind;
  /** Columns in record order (WITHOUT ROWID: primary key first). */
  columns: Column[];
  /** Rowid tables: the INTEGER PRIMARY KEY column (stored as NULL, its value is the rowid). */
  ipk: number;
  inserts: Map<string, Database.Statement>;
}

/** Copy `tables` from their pages; also read orphan pages and give them to the table their rows fit. */
function copyByPages(db: Db, pages: PageFile, schema: SchemaEntry[], tables: SchemaEntry[]): RebuiltTable[] {
  const wanted = new Map<string, { shape: TableShape; report: RebuiltTable }>();
  for (const t of tables) {
    wanted.set(t.name, { shape: shapeOf(db, t.name), report: { name: t.name, rows: 0, source: 'pages', badPages: 0, badRows: 0, orphanRows: 0 } });
  }
  // Walk every tree of the schema, so the pages of healthy trees are claimed too.
  const reads = new Map<string, RawRecord[]>();
  for (const e of schema) {
    if (e.rootpage <= 0 || e.rootpage === 1) continue;
    const w = wanted.get(e.name);
    const kind: TreeKind = e.type === 'index' ? 'index' : w?.shape.kind ?? (isWithoutRowid(e.sql) ? 'index' : 'table');
    const tree = pages.readTree(e.rootpage, kind);
    if (w === undefined) continue;
    w.report.badPages += tree.badPages.length;
    w.report.badRows += tree.badCells;
    reads.set(e.name, tree.records);
  }
  db.transaction(() => {
    for (const [name, records] of reads) {
      const w = wanted.get(name)!;
      for (const r of records) {
        if (insertRaw(db, w.shape, r)) w.report.rows++;
        else w.report.badRows++;
      }
    }
    // Pages a damaged interior page cut off: each subtree goes to the one table its rows fit.
    for (const o of pages.orphanPages()) {
      if (pages.claimed.has(o.page)) continue;
      const tree = pages.readTree(o.page, o.kind);
      const candidates = [...wanted.values()].filter((w) => w.shape.kind === o.kind);
      let best: { w: (typeof candidates)[number]; fit: number } | undefined;
      let tie = false;
      for (const w of candidates) {
        const fit = tree.records.filter((r) => rowOf(w.shape, r) !== undefined).length;
        if (best === undefined || fit > best.fit) {
          best = { w, fit };
          tie = false;
        } else if (fit === best.fit) tie = true;
      }
      if (best === undefined || tie || best.fit * 2 <= tree.records.length) continue;
      for (const r of tree.records) {
        if (insertRaw(db, best.w.shape, r)) {
          best.w.report.rows++;
          best.w.report.orphanRows++;
        }
      }
    }
  })();
  return [...wanted.values()].map((w) => w.report);
}

function isWithoutRowid(sql: string | null): boolean {
  return sql !== null && /\bwithout\s+rowid\b/i.test(sql);
}

function shapeOf(db: Db, table: string): TableShape {
  const info = db.prepare(`PRAGMA table_xinfo(${quote(table)})`).all() as { cid: number; name: string; type: string; notnull: number; pk: number; hidden: number }[];
  const cols = info.filter((c) => c.hidden === 0);
  const list = db.prepare('SELECT wr FROM pragma_table_list WHERE name = ? AND schema = ?').pluck().get(table, 'main') as number;
  const column = (c: (typeof cols)[number]): Column => ({ name: c.name, affinity: affinityOf(c.type), notNull: c.notnull === 1 });
  if (list === 1) {
    const pk = (db.prepare(`PRAGMA index_list(${quote(table)})`).all() as { name: string; origin: string }[]).find((i) => i.origin === 'pk')!;
    const order = (db.prepare(`PRAGMA index_xinfo(${quote(pk.name)})`).all() as { cid: number }[]).map((x) => x.cid);
    return { name: table, kind: 'index', columns: order.map((cid) => column(cols.find((c) => c.cid === cid)!)), ipk: -1, inserts: new Map() };
  }
  const pks = cols.filter((c) => c.pk > 0);
  const ipk = pks.length === 1 && pks[0]!.type.toUpperCase() === 'INTEGER' ? cols.indexOf(pks[0]!) : -1;
  return { name: table, kind: 'table', columns: cols.map(column), ipk, inserts: new Map() };
}

/** SQLite's column affinity rules (https://www.sqlite.org/datatype3.html#affname). */
function affinityOf(declared: string): Column['affinity'] {
  const t = declared.toUpperCase();
  if (t.includes('INT')) return 'INTEGER';
  if (t.includes('CHAR') || t.includes('CLOB') || t.includes('TEXT')) return 'TEXT';
  if (t === '' || t.includes('BLOB')) return 'BLOB';
  if (t.includes('REAL') || t.includes('FLOA') || t.includes('DOUB')) return 'REAL';
  return 'NUMERIC';
}

/** The values to insert for record `r` (with the rowid where it belongs), or undefined when they do not fit. */
function rowOf(shape: TableShape, r: RawRecord): { names: string[]; values: RawValue[] } | undefined {
  const values = [...r.values];
  if (values.length > shape.columns.length) return undefined;
  while (values.length < shape.columns.length) values.push(null);
  const names = shape.columns.map((c) => c.name);
  if (shape.kind === 'table') {
    if (r.rowid === undefined) return undefined;
    if (shape.ipk >= 0) {
      if (values[shape.ipk] !== null) return undefined;
      values[shape.ipk] = r.rowid;
    } else {
      names.unshift('rowid');
      values.unshift(r.rowid);
    }
  }
  const offset = names.length - shape.columns.length;
  for (let i = 0; i < shape.columns.length; i++) if (!fits(values[i + offset]!, shape.columns[i]!)) return undefined;
  return { names, values };
}

function fits(v: RawValue, c: Column): boolean {
  if (v === null) return !c.notNull;
  switch (c.affinity) {
    case 'INTEGER':
      return typeof v === 'bigint';
    case 'REAL':
    case 'NUMERIC':
      return typeof v === 'bigint' || typeof v === 'number';
    case 'TEXT':
      // Names may be kept as BLOBs (names are bytes); both are text to this column.
      return v instanceof TextValue || Buffer.isBuffer(v);
    default:
      return true;
  }
}

/** Insert one recovered record (OR IGNORE: a row read twice, or one that breaks a constraint, is skipped). */
function insertRaw(db: Db, shape: TableShape, r: RawRecord): boolean {
  const row = rowOf(shape, r);
  if (row === undefined) return false;
  const mask = row.values.map((v) => (v instanceof TextValue ? 't' : '-')).join('');
  let st = shape.inserts.get(mask);
  if (st === undefined) {
    const marks = row.values.map((v) => (v instanceof TextValue ? 'CAST(? AS TEXT)' : '?'));
    st = db.prepare(`INSERT OR IGNORE INTO ${quote(shape.name)} (${row.names.map(quote).join(', ')}) VALUES (${marks.join(', ')})`);
    shape.inserts.set(mask, st);
  }
  try {
    return st.run(...row.values.map((v) => (v instanceof TextValue ? v.bytes : v))).changes === 1;
  } catch {
    return false;
  }
}
