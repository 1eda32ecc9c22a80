/**
 * The metadata file itself: SQLite's own integrity, and what `check --repair` does when
 * it is damaged. The pool's space-map check (check.ts) and the namespace check
 * (fs/check.ts) read rows; this looks below them, at the b-trees SQLite keeps the rows in.
 *
 * Check. `PRAGMA integrity_check` (not only quick_check: it also compares every index
 * with its table) and `PRAGMA foreign_key_check`. On a damaged page integrity_check may
 * stop with SQLITE_CORRUPT instead of listing problems; then it is asked for fewer lines,
 * and each table is checked on its own to name the damaged ones.
 *
 * Repair, in the order thin_repair would: first a backup of the file as it is (raw bytes
 * of metadata.db and a non-empty -wal, so a damaged page is kept as found), then REINDEX
 * (index damage: indexes are rebuilt from their tables), and when the tables themselves
 * are damaged, a rebuild: a fresh database with the same schema, filled table by table —
 * by SQL where a table reads cleanly, else from its pages (sqlite-pages.ts), skipping the
 * pages and cells that cannot be read — then swapped in with rename(2). A rebuild needs
 * the pool closed (no connection may hold the old file): the caller holds the pool's
 * lock and has nothing open.
 *
 * Failure contract: a failed rebuild leaves metadata.db as it was (the fresh file is only
 * renamed over it once complete and checked); the backup stays either way.
 *
 * Also here, for the namespace repair: the pool-table reads and writes it needs (layer
 * parents, file keys per layer) and the needs_check marker for a pool that cannot even
 * be opened.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { fail } from '../errors.js';
import { MAGIC, type Db } from './metadata.js';
import type { Pool } from './pool.js';
import { tryLockExclusive } from './punch.js';
import { PageFile, TextValue, type RawRecord, type RawValue, type TreeKind } from './sqlite-pages.js';
import type { LayerId } from './types.js';

/** What SQLite says of the metadata file. */
export interface SqliteCheck {
  /** True when integrity_check says ok. */
  ok: boolean;
  /** Set when the file could not be opened or read as SQLite at all (then nothing else was checked). */
  unreadable?: string;
  /** The first lines integrity_check printed ('ok' when healthy), or the error it stopped with. */
  lines: string[];
  /** Tables whose own integrity check (table and its indexes) failed. */
  damagedTables: string[];
  /** Rows whose foreign key points at nothing, per (table, parent table). */
  foreignKeys: { table: string; parent: string; rows: number }[];
}

const MAX_LINES = 10;

/** Check the database behind `db` (the pool's own connection, or one opened for the check). */
export function checkSqlite(db: Db): SqliteCheck {
  const out: SqliteCheck = { ok: false, lines: [], damagedTables: [], foreignKeys: [] };
  let stopped: string | undefined;
  for (const n of [100, MAX_LINES, 1]) {
    try {
      const lines = (db.pragma(`integrity_check(${n})`) as { integrity_check: string }[]).map((r) => r.integrity_check);
      out.lines = lines.flatMap((l) => l.split('\n')).filter((l) => l !== '*** in database main ***');
      break;
    } catch (err) {
      stopped = (err as Error).message;
    }
  }
  out.ok = out.lines.length === 1 && out.lines[0] === 'ok' && stopped === undefined;
  if (!out.ok) {
    if (out.lines.length > MAX_LINES) out.lines = [...out.lines.slice(0, MAX_LINES), `... (more problems not shown)`];
    if (stopped !== undefined) out.lines.push(`integrity_check stopped: ${stopped}`);
    let tables: string[];
    try {
      tables = db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name").pluck().all() as string[];
    } catch (err) {
      out.unreadable = `the schema cannot be read (${(err as Error).message})`;
      return out;
    }
    for (const t of tables) {
      try {
        const r = db.prepare(`PRAGMA integrity_check(${quote(t)})`).pluck().all() as string[];
        if (!(r.length === 1 && r[0] === 'ok')) out.damagedTables.push(t);
      } catch {
        out.damagedTables.push(t);
      }
    }
    if (out.lines.length === 0) out.lines.push('integrity_check reported nothing, but could not finish');
  }
  try {
    const rows = db.pragma('foreign_key_check') as { table: string; parent: string }[];
    const counts = new Map<string, { table: string; parent: string; rows: number }>();
    for (const r of rows) {
      const k = `${r.table}\u0000${r.parent}`;
      const c = counts.get(k) ?? { table: r.table, parent: r.parent, rows: 0 };
      c.rows++;
      counts.set(k, c);
    }
    out.foreignKeys = [...counts.values()];
  } catch (err) {
    if (out.ok) {
      out.ok = false;
      out.lines = [`foreign_key_check failed: ${(err as Error).message}`];
    }
  }
  return out;
}

/** Check the metadata file with a connection of its own (read-only); never throws. */
export function checkSqliteFile(file: string): SqliteCheck {
  let db: Db;
  try {
    db = new Database(file, { readonly: true, fileMustExist: true });
    db.prepare('SELECT count(*) FROM sqlite_master').get();
  } catch (err) {
    const message = `cannot be read as SQLite (${(err as Error).message})`;
    return { ok: false, unreadable: message, lines: [message], damagedTables: [], foreignKeys: [] };
  }
  try {
    return checkSqlite(db);
  } finally {
    db.close();
  }
}

// ---------------------------------------------------------------- backup

/**
 * Keep a copy of the metadata before a repair rewrites it: pool/metadata.db.bak-TXID-TIME.
 * With `db` (a readable database and no open transaction on it) by `VACUUM INTO`, a
 * consistent copy; without, the raw bytes after a checkpoint (a -wal that still has
 * frames is copied beside it as BACKUP-wal, which SQLite reads with it). Returns its path.
 */
export function backupMetadata(file: string, db?: Db): string {
  const txid = transactionIdOf(db, file);
  const stamp = new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
  let backup = `${file}.bak-${txid}-${stamp}`;
  for (let i = 1; fs.existsSync(backup); i++) backup = `${file}.bak-${txid}-${stamp}.${i}`;
  if (db !== undefined) {
    try {
      db.prepare('VACUUM INTO ?').run(backup);
      fsyncFile(backup);
      return backup;
    } catch {
      fs.rmSync(backup, { force: true });
    }
  }
  checkpoint(file, db);
  fs.copyFileSync(file, backup);
  fsyncFile(backup);
  const wal = `${file}-wal`;
  if (fs.existsSync(wal) && fs.statSync(wal).size > 0) {
    fs.copyFileSync(wal, `${backup}-wal`);
    fsyncFile(`${backup}-wal`);
  }
  fsyncDir(path.dirname(file));
  return backup;
}

function transactionIdOf(db: Db | undefined, file: string): string {
  const read = (d: Db) => String(d.prepare('SELECT transaction_id FROM superblock WHERE id = 1').pluck().get());
  try {
    if (db !== undefined) return read(db);
    const own = new Database(file, { readonly: true, fileMustExist: true });
    try {
      return read(own);
    } finally {
      own.close();
    }
  } catch {
    return 'unknown';
  }
}

/** Move the WAL's frames into the main file (best effort: a damaged file may refuse). */
function checkpoint(file: string, db?: Db): void {
  try {
    if (db !== undefined) {
      db.pragma('wal_checkpoint(TRUNCATE)');
      return;
    }
    const own = new Database(file, { fileMustExist: true });
    try {
      own.pragma('wal_checkpoint(TRUNCATE)');
    } finally {
      own.close();
    }
  } catch {
    /* the raw copy (with its -wal) is the backup then */
  }
}

// ---------------------------------------------------------------- reindex and rebuild

/** Rebuild every index from its table; false when that fails (the tables are damaged too). */
export function reindex(db: Db): boolean {
  try {
    db.exec('REINDEX');
    return true;
  } catch {
    return false;
  }
}

/** REINDEX the file with a connection of its own (the pool closed, its lock held); then check again. */
export function reindexFile(file: string): SqliteCheck {
  try {
    const db = new Database(file, { fileMustExist: true });
    try {
      reindex(db);
    } finally {
      db.close();
    }
  } catch {
    /* checked below */
  }
  return checkSqliteFile(file);
}

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

/** True when two files hold the same bytes. */
export function sameBytes(a: string, b: string): boolean {
  if (fs.statSync(a).size !== fs.statSync(b).size) return false;
  const fa = fs.openSync(a, 'r');
  const fb = fs.openSync(b, 'r');
  try {
    const ba = Buffer.alloc(1 << 20);
    const bb = Buffer.alloc(1 << 20);
    for (let pos = 0; ; pos += ba.length) {
      const na = fs.readSync(fa, ba, 0, ba.length, pos);
      const nb = fs.readSync(fb, bb, 0, bb.length, pos);
      if (na !== nb || !ba.subarray(0, na).equals(bb.subarray(0, nb))) return false;
      if (na === 0) return true;
    }
  } finally {
    fs.closeSync(fa);
    fs.closeSync(fb);
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

// ---------------------------------------------------------------- the pool closed: its lock, its marker

/**
 * Take the pool's writer lock (pool/lock) without opening the pool, waiting up to
 * `waitMs` for another writer (as Pool.open does); EBUSY after that. Returns the release.
 */
export function lockPool(root: string, opts: { waitMs?: number; onWait?: () => void } = {}): () => void {
  const fd = fs.openSync(path.join(root, 'pool', 'lock'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
  const deadline = Date.now() + (opts.waitMs ?? 0);
  let told = false;
  while (!tryLockExclusive(fd)) {
    if (Date.now() >= deadline) {
      fs.closeSync(fd);
      throw fail('EBUSY', 'check --repair', root, 'the pool is open for writing by another process (a running thinfs daemon or command?)');
    }
    if (!told) opts.onWait?.();
    told = true;
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 50);
  }
  return () => fs.closeSync(fd);
}

/**
 * Set the needs_check marker file of a pool that cannot be opened (pool.markNeedsCheck
 * does this, and more, for one that can): pool/needs_check, which Pool.open honours.
 */
export function writeNeedsCheckMarker(root: string, reason: string): void {
  const marker = path.join(root, 'pool', 'needs_check');
  const fd = fs.openSync(marker, 'w', 0o600);
  try {
    fs.writeSync(fd, `${reason}\n`);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** True when the needs_check marker file is there. */
export function needsCheckMarked(root: string): boolean {
  return fs.existsSync(path.join(root, 'pool', 'needs_check'));
}

// ---------------------------------------------------------------- pool tables the namespace repair needs

/** Every layer with its parent, for views of layers that no device has on top. */
export function layerParents(pool: Pool): { id: LayerId; parentId: LayerId | null; depth: number }[] {
  return pool
    .metadataDb()
    .prepare('SELECT id, parent_id AS parentId, depth FROM layers ORDER BY depth, id')
    .all() as { id: LayerId; parentId: LayerId | null; depth: number }[];
}

/** The file keys that hold rows in each layer's mappings (blocks or hiding rows). */
export function keysByLayer(pool: Pool): Map<LayerId, Set<number>> {
  const out = new Map<LayerId, Set<number>>();
  for (const r of pool.metadataDb().prepare('SELECT DISTINCT layer, ino FROM mappings').iterate() as Iterable<{ layer: LayerId; ino: number }>) {
    let s = out.get(r.layer);
    if (s === undefined) out.set(r.layer, (s = new Set()));
    s.add(r.ino);
  }
  return out;
}

/**
 * Drop the mapping rows of `key` in `layer` (a file that is gone there, freed by the
 * namespace repair). Its blocks then belong to nobody: the space-map repair that must
 * follow (pool.check({ repair: true })) returns them to the free list and recounts.
 * Precondition: inside the pool's write transaction (pool.beginWrite).
 */
export function dropKeyRows(pool: Pool, layer: LayerId, key: number): number {
  return pool.metadataDb().prepare('DELETE FROM mappings WHERE layer = ? AND ino = ?').run(layer, key).changes;
}

function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
