/**
 * The metadata file itself: SQLite's own integrity, the backup `check --repair` keeps
 * before it rewrites anything, REINDEX, and the needs_check marker of a pool that cannot
 * be opened. The pool's space-map check (check.ts) and the namespace check (fs/check.ts)
 * read rows; this looks below them, at the b-trees SQLite keeps the rows in. The rebuild
 * of damaged tables is rebuild.ts.
 *
 * Check. `PRAGMA integrity_check` (not only quick_check: it also compares every index
 * with its table) and `PRAGMA foreign_key_check`. On a damaged page integrity_check may
 * stop with SQLITE_CORRUPT instead of listing problems; then it is asked for fewer lines,
 * and each table is checked on its own to name the damaged ones.
 *
 * Backup. Before a repair rewrites the metadata: `VACUUM INTO` where the database reads,
 * else the raw bytes of metadata.db (after a checkpoint) and of a -wal that still holds
 * frames, so a damaged page is kept exactly as found.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { fail } from '../errors.js';
import type { Db } from './metadata.js';
import { tryLockExclusive } from './punch.js';

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
  /** Rows whose foreign key points at nothing, per foreign key. */
  foreignKeys: ForeignKeyViolations[];
}

/** Rows of `table` whose foreign key `fkid` finds no row of `parent`. */
export interface ForeignKeyViolations {
  table: string;
  parent: string;
  fkid: number;
  rows: number;
  /** The key's ON DELETE action: CASCADE and SET NULL say what the deletion of the parent row would have done. */
  onDelete: string;
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
    out.foreignKeys = foreignKeyViolations(db);
  } catch (err) {
    if (out.ok) {
      out.ok = false;
      out.lines = [`foreign_key_check failed: ${(err as Error).message}`];
    }
  }
  return out;
}

/** PRAGMA foreign_key_check, counted per foreign key. */
export function foreignKeyViolations(db: Db): ForeignKeyViolations[] {
  const counts = new Map<string, ForeignKeyViolations>();
  for (const r of db.pragma('foreign_key_check') as { table: string; parent: string; fkid: number }[]) {
    const k = `${r.table}\u0000${r.fkid}`;
    let c = counts.get(k);
    if (c === undefined) {
      const key = foreignKey(db, r.table, r.fkid);
      c = { table: r.table, parent: r.parent, fkid: r.fkid, rows: 0, onDelete: key[0]?.on_delete ?? 'NO ACTION' };
      counts.set(k, c);
    }
    c.rows++;
  }
  return [...counts.values()];
}

interface ForeignKeyColumn {
  id: number;
  table: string;
  from: string;
  to: string | null;
  on_delete: string;
}

function foreignKey(db: Db, table: string, fkid: number): ForeignKeyColumn[] {
  return (db.prepare(`PRAGMA foreign_key_list(${quote(table)})`).all() as ForeignKeyColumn[]).filter((c) => c.id === fkid);
}

/**
 * Do for the rows in `violations` what their ON DELETE action would have done when the
 * parent row went (CASCADE: delete them; SET NULL: clear the key); keys without such an
 * action are left. Returns the rows changed. Precondition: inside a write transaction.
 */
export function applyForeignKeyActions(db: Db, violations: ForeignKeyViolations[]): number {
  let changed = 0;
  for (const v of violations) {
    const cols = foreignKey(db, v.table, v.fkid);
    if (cols.length === 0 || !(v.onDelete === 'CASCADE' || v.onDelete === 'SET NULL')) continue;
    const parentKey =
      cols[0]!.to === null
        ? (db.prepare(`PRAGMA table_info(${quote(v.parent)})`).all() as { name: string; pk: number }[]).filter((c) => c.pk > 0).sort((a, b) => a.pk - b.pk).map((c) => c.name)
        : cols.map((c) => c.to!);
    const t = `t_${v.fkid}`;
    const missing =
      cols.map((c) => `${t}.${quote(c.from)} IS NOT NULL`).join(' AND ') +
      ` AND NOT EXISTS (SELECT 1 FROM ${quote(v.parent)} p WHERE ${cols.map((c, i) => `p.${quote(parentKey[i] ?? 'rowid')} = ${t}.${quote(c.from)}`).join(' AND ')})`;
    const sql =
      v.onDelete === 'CASCADE'
        ? `DELETE FROM ${quote(v.table)} AS ${t} WHERE ${missing}`
        : `UPDATE ${quote(v.table)} AS ${t} SET ${cols.map((c) => `${quote(c.from)} = NULL`).join(', ')} WHERE ${missing}`;
    changed += db.prepare(sql).run().changes;
  }
  return changed;
}

/**
 * Run `fn` with a connection of its own on `file`, and remove the -wal/-shm companions that
 * opening it created when they hold nothing (a damaged file that SQLite could not read
 * must not leave new files in the pool: bad input changes nothing).
 */
function withOwnConnection<T>(file: string, opts: Database.Options, fn: (db: Db) => T): T {
  const fresh = [`${file}-wal`, `${file}-shm`].filter((f) => !fs.existsSync(f));
  let db: Db | undefined;
  try {
    db = new Database(file, opts);
    return fn(db);
  } finally {
    try {
      db?.close();
    } catch {
      /* closing a damaged file */
    }
    const wal = `${file}-wal`;
    if (fresh.includes(wal) && (!fs.existsSync(wal) || fs.statSync(wal).size === 0)) {
      for (const f of fresh) fs.rmSync(f, { force: true });
    }
  }
}

/** Check the metadata file with a connection of its own (read-only); never throws. */
export function checkSqliteFile(file: string): SqliteCheck {
  try {
    return withOwnConnection(file, { readonly: true, fileMustExist: true }, (db) => {
      try {
        db.prepare('SELECT count(*) FROM sqlite_master').get();
      } catch (err) {
        const message = `cannot be read as SQLite (${(err as Error).message})`;
        return { ok: false, unreadable: message, lines: [message], damagedTables: [], foreignKeys: [] };
      }
      return checkSqlite(db);
    });
  } catch (err) {
    const message = `cannot be read as SQLite (${(err as Error).message})`;
    return { ok: false, unreadable: message, lines: [message], damagedTables: [], foreignKeys: [] };
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
    return withOwnConnection(file, { readonly: true, fileMustExist: true }, read);
  } catch {
    return 'unknown';
  }
}

/** Move the WAL's frames into the main file (best effort: a damaged file may refuse). */
export function checkpoint(file: string, db?: Db): void {
  try {
    if (db !== undefined) {
      db.pragma('wal_checkpoint(TRUNCATE)');
      return;
    }
    withOwnConnection(file, { fileMustExist: true }, (own) => own.pragma('wal_checkpoint(TRUNCATE)'));
  } catch {
    /* the raw copy (with its -wal) is the backup then */
  }
}

// ---------------------------------------------------------------- reindex

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
    withOwnConnection(file, { fileMustExist: true }, (db) => reindex(db));
  } catch {
    /* checked below */
  }
  return checkSqliteFile(file);
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

/** `name` as an SQL identifier. */
export function quote(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** fsync a file by name. */
export function fsyncFile(file: string): void {
  const fd = fs.openSync(file, 'r+');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** fsync a directory (after a rename or a new file in it). */
export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}
