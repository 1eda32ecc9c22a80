/**
 * `check [--repair]`: thin_check and thin_repair for the whole pool. It covers what can be
 * damaged, from the bottom up:
 *   1. the metadata file: SQLite's integrity_check and foreign_key_check (pool/integrity.ts);
 *   2. the space map against the block mappings (pool.check, pool/check.ts);
 *   3. the namespace of every layer: entries, inodes, link counts, orphans, whiteouts,
 *      loops, the inode counter (fs/check.ts).
 * A fatal finding anywhere marks the pool needs_check (pool.markNeedsCheck): read-only —
 * create, import, commit and read-write mounts answer EROFS — until `check --repair`.
 * A damaged thinfs metadata file that cannot even be opened ends in one error line and
 * the needs_check marker file. A file that is not thinfs metadata at all (another
 * program's database, a newer schema) is never touched.
 *
 * Repair keeps a backup of the metadata first (pool/metadata.db.bak-TXID-TIME, named in
 * the result; removed again only when nothing was rewritten), then: REINDEX for index
 * damage; for damaged tables a rebuild of the file from the rows that can still be read
 * (only with the pool closed: through a running daemon it is refused, unmount first);
 * the namespace repair; the space-map repair; and a full check again. needs_check is
 * cleared only when that re-check finds nothing fatal anywhere.
 *
 * Through the daemon, the devices it serves are not repaired (their kernel caches would
 * go stale); the result says so and which views to unmount.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, isThinfsError } from '../../errors.js';
import { checkNamespace, currentSchema, type NamespaceReport } from '../../fs/index.js';
import {
  applyForeignKeyActions,
  backupMetadata,
  checkSqlite,
  checkSqliteFile,
  foreignKeyViolations,
  lockPool,
  looksLikeThinfsMetadata,
  needsCheckMarked,
  Pool,
  rebuildMetadata,
  reindex,
  reindexFile,
  sameBytes,
  saveLeakedBlocks,
  writeNeedsCheckMarker,
  type CheckReport,
  type DevId,
  type SqliteCheck,
} from '../../pool/index.js';
import { argsObject, optBool, type OpContext } from './context.js';

export type CheckArea = 'sqlite' | 'space map' | 'namespace';

export interface CheckFinding {
  area: CheckArea;
  /** fatal: loses or misleads data (the pool is read-only until repaired); leak: only wastes space; info: harmless. */
  severity: 'fatal' | 'leak' | 'info';
  message: string;
  /** How to fix it, one sentence. */
  fix: string;
}

/** One check of the whole pool. */
export interface FullReport {
  /** Nothing fatal and nothing repairable found (info findings allowed). */
  clean: boolean;
  fatal: number;
  leaks: number;
  infos: number;
  issues: CheckFinding[];
  /** True when --repair changed anything (see CheckResult.actions). */
  repaired: boolean;
  blocksChecked: number;
  /** False when the pool did not open: only the metadata file was checked. */
  opened: boolean;
  sqlite: { ok: boolean; lines: string[] };
  /** `error`: the namespace tables could not be read (see the issues). */
  namespace: { checked: boolean; views: number; inodes: number; entries: number; error?: string };
}

export interface CheckResult {
  /** The final verdict: of the re-check after a repair, else of the check. */
  clean: boolean;
  report: FullReport;
  /** After --repair: the pool checked again. */
  recheck: FullReport | null;
  /** The pool's needs_check flag afterwards (it keeps the pool read-only; a clean --repair clears it). */
  needsCheck: boolean;
  /** The backup --repair kept of the metadata before rewriting it. */
  backup: string | null;
  /** What --repair changed, one line each. */
  actions: string[];
}

/** How long --repair waits for the pool while another command has it (as every command does). */
const POOL_WAIT_MS = 60_000;

function tellWaiting(): void {
  if (process.stderr.isTTY) process.stderr.write('thinfs: waiting for the pool (another thinfs command has it open)\n');
}

const REPAIR_FIX =
  'run `thinfs check --repair`: it keeps a backup of pool/metadata.db, rebuilds the indexes, and when tables are damaged rebuilds the database from the rows that can still be read';

/** Check the pool; with `repair`, fix what can be fixed and check again. */
export async function check(ctx: OpContext, raw: unknown): Promise<CheckResult> {
  const repair = optBool('check', argsObject('check', raw), 'repair');
  try {
    if (ctx.pool !== undefined) return inDaemon(ctx, ctx.pool, repair);
    return repair ? repairClosed(ctx.root) : checkClosed(ctx.root);
  } catch (err) {
    throw asThinfsError(err, metadataFile(ctx.root));
  }
}

// ---------------------------------------------------------------- without a daemon

function checkClosed(root: string): CheckResult {
  const created = companionsToClean(root);
  const ins = inspect(root);
  if (ins.pool === undefined) {
    created();
    throw refuseUnopenable(root, ins);
  }
  try {
    const needsCheck = markIfFatal(ins.pool, ins.report);
    return { clean: ins.report.clean, report: ins.report, recheck: null, needsCheck, backup: null, actions: [] };
  } finally {
    ins.pool.close();
  }
}

function repairClosed(root: string): CheckResult {
  const file = metadataFile(root);
  const actions: string[] = [];
  let backup: string | null = null;
  let first: Inspection;
  let rebuilt = false;
  const release = lockPool(root, { waitMs: POOL_WAIT_MS, onWait: tellWaiting });
  try {
    const created = companionsToClean(root);
    first = inspect(root);
    first.pool?.close();
    if (first.pool === undefined && (first.sqlite.ok || !first.ours)) {
      created();
      throw refuseUnopenable(root, first);
    }
    if (!first.sqlite.ok) {
      writeNeedsCheckMarker(root, `SQLite: ${first.sqlite.lines[0] ?? 'damaged'}`);
      backup = backupMetadata(file);
      try {
        if (reindexFile(file).ok) actions.push('rebuilt the indexes of pool/metadata.db (REINDEX)');
        else {
          actions.push(`rebuilt pool/metadata.db from the rows that could still be read: ${rebuildMetadata(file, currentSchema()).summary}`);
          rebuilt = true;
        }
      } catch (err) {
        if (sameBytes(file, backup)) {
          fs.rmSync(backup, { force: true });
          fs.rmSync(`${backup}-wal`, { force: true });
          backup = null;
        }
        throw err;
      }
    }
  } finally {
    release();
  }
  const pool = Pool.open(root, { waitMs: POOL_WAIT_MS, onWait: tellWaiting });
  try {
    // Should the repair stop half-way, the pool stays read-only (the marker file is enough for that).
    const fatal = first.report.issues.find((i) => i.severity === 'fatal');
    if (fatal !== undefined) writeNeedsCheckMarker(root, `${fatal.area}: ${fatal.message}`);
    if (backup === null && first.report.issues.length > 0) {
      pool.commit();
      backup = backupMetadata(file, pool.metadataDb());
    }
    actions.push(...repairOpen(pool, [], false, rebuilt && backup !== null ? `${backup}-blocks` : undefined));
    const recheck = inspect(root, pool).report;
    const needsCheck = settle(pool, recheck);
    return { clean: recheck.clean, report: { ...first.report, repaired: actions.length > 0 }, recheck, needsCheck, backup, actions };
  } finally {
    pool.close();
  }
}

/** A pool that does not open: one line; and when it is damaged thinfs metadata, the needs_check marker. */
function refuseUnopenable(root: string, ins: Inspection): Error {
  const file = metadataFile(root);
  if (ins.ours && !ins.sqlite.ok) {
    const what = ins.sqlite.lines[0] ?? 'damaged';
    writeNeedsCheckMarker(root, `SQLite: ${what}`);
    return fail('EIO', 'check', file, `metadata is damaged: ${what}; the pool stays read-only until \`thinfs check --repair\` repairs it`);
  }
  return asThinfsError(ins.openError ?? new Error(ins.sqlite.lines[0] ?? 'cannot be read'), file);
}

// ---------------------------------------------------------------- in the daemon

function inDaemon(ctx: OpContext, pool: Pool, repair: boolean): CheckResult {
  const mounted = (ctx.mounts?.list() ?? []).map((m) => m.devId as DevId);
  // A repair writes in transactions of its own (and VACUUM INTO needs none open).
  if (repair && pool.mode() !== 'fail') pool.commit();
  const first = inspect(ctx.root, pool, mounted);
  if (!repair) {
    const needsCheck = markIfFatal(pool, first.report);
    return { clean: first.report.clean, report: first.report, recheck: null, needsCheck, backup: null, actions: [] };
  }
  const file = metadataFile(ctx.root);
  const actions: string[] = [];
  let backup: string | null = null;
  if (first.report.issues.length > 0) backup = backupMetadata(file, pool.metadataDb());
  if (!first.sqlite.ok) {
    pool.markNeedsCheck(`SQLite: ${first.sqlite.lines[0] ?? 'damaged'}`);
    if (reindex(pool.metadataDb()) && checkSqlite(pool.metadataDb()).ok) {
      actions.push('rebuilt the indexes of pool/metadata.db (REINDEX)');
    } else {
      if (backup !== null && sameBytesAfterCheckpoint(pool, file, backup)) {
        fs.rmSync(backup, { force: true });
        fs.rmSync(`${backup}-wal`, { force: true });
      }
      throw fail(
        'EBUSY',
        'check --repair',
        file,
        'tables of the metadata are damaged and can only be rebuilt with the pool closed: unmount every view (`thinfs umount NAME`; the daemon then exits), then run `thinfs check --repair` again',
      );
    }
  }
  actions.push(...repairOpen(pool, mounted, true));
  const recheck = inspect(ctx.root, pool, mounted).report;
  const needsCheck = settle(pool, recheck);
  return { clean: recheck.clean, report: { ...first.report, repaired: actions.length > 0 }, recheck, needsCheck, backup, actions };
}

function sameBytesAfterCheckpoint(pool: Pool, file: string, backup: string): boolean {
  try {
    pool.metadataDb().pragma('wal_checkpoint(TRUNCATE)');
    return sameBytes(file, backup);
  } catch {
    return false;
  }
}

// ---------------------------------------------------------------- the checks

interface Inspection {
  report: FullReport;
  sqlite: SqliteCheck;
  /** The pool, when it opened (read-only here, unless it was given). */
  pool?: Pool;
  openError?: unknown;
  /** The file is thinfs metadata (damaged or not), not some other file. */
  ours: boolean;
}

/** Check everything: on `pool` when given (the daemon's, or one opened for a repair), else on a read-only open. */
function inspect(root: string, given?: Pool, mounted: DevId[] = []): Inspection {
  const file = metadataFile(root);
  let pool = given;
  let openError: unknown;
  let sqlite: SqliteCheck;
  if (pool !== undefined) {
    try {
      sqlite = checkSqlite(pool.metadataDb());
    } catch (err) {
      sqlite = { ok: false, lines: [(err as Error).message], damagedTables: [], foreignKeys: [] };
    }
  } else {
    if (!fs.existsSync(file)) throw fail('ENOENT', 'open', root, 'no thinfs pool here; run `thinfs init` first');
    sqlite = checkSqliteFile(file);
    try {
      pool = Pool.open(root, { readOnly: true });
    } catch (err) {
      openError = err;
    }
  }
  // Damaged thinfs metadata, as opposed to a file that never was (another program's
  // database, which reads fine and has no superblock): a pool that opens, a schema that
  // names the superblock, or a SQLite file whose schema cannot even be read.
  const ours = pool !== undefined || looksLikeThinfsMetadata(file) || (sqlite.unreadable !== undefined && hasSqliteMagic(file));
  const findings: CheckFinding[] = [];
  const add = (area: CheckArea, severity: CheckFinding['severity'], message: string, fix: string) => findings.push({ area, severity, message, fix });
  if (sqlite.unreadable !== undefined) add('sqlite', 'fatal', `pool/metadata.db ${sqlite.unreadable}`, REPAIR_FIX);
  else if (!sqlite.ok) {
    const where = sqlite.damagedTables.length > 0 ? ` in ${sqlite.damagedTables.join(', ')}` : '';
    add('sqlite', 'fatal', `SQLite integrity_check found damage${where}: ${sqlite.lines.slice(0, 3).join('; ')}`, REPAIR_FIX);
  }
  for (const f of otherForeignKeys(sqlite.foreignKeys)) {
    if (f.onDelete === 'CASCADE' || f.onDelete === 'SET NULL') {
      // What deleting the parent rows would have done: rows kept for nothing.
      add('sqlite', 'leak', `${f.rows} row(s) of ${f.table} refer to rows of ${f.parent} that no longer exist`, `run \`thinfs check --repair\` to ${f.onDelete === 'CASCADE' ? 'delete them' : 'clear those references'}`);
    } else {
      add('sqlite', 'fatal', `${f.rows} row(s) of ${f.table} refer to rows of ${f.parent} that do not exist`, 'restore pool/metadata.db from a backup');
    }
  }
  let space: CheckReport | undefined;
  let ns: NamespaceReport | undefined;
  let nsError: string | undefined;
  if (pool !== undefined) {
    const p = pool;
    space = safe(() => p.check(), (m) => void add('space map', 'fatal', `the space map cannot be read (${m})`, REPAIR_FIX));
    ns = safe(
      () => checkNamespace(p, { mounted }),
      (m) => {
        nsError = m;
        add('namespace', 'fatal', `the namespace tables cannot be read (${m})`, REPAIR_FIX);
      },
    );
  }
  for (const i of space?.issues ?? []) add('space map', i.severity, i.message, i.fix);
  for (const i of ns?.issues ?? []) add('namespace', i.severity, i.message, i.fix);
  const fatal = findings.filter((f) => f.severity === 'fatal').length;
  const leaks = findings.filter((f) => f.severity === 'leak').length;
  const report: FullReport = {
    clean: fatal + leaks === 0,
    fatal,
    leaks,
    infos: findings.length - fatal - leaks,
    issues: findings,
    repaired: false,
    blocksChecked: space?.blocksChecked ?? 0,
    opened: pool !== undefined,
    sqlite: { ok: sqlite.ok, lines: sqlite.lines },
    namespace: { checked: ns?.checked ?? false, views: ns?.views ?? 0, inodes: ns?.inodes ?? 0, entries: ns?.entries ?? 0, ...(nsError === undefined ? {} : { error: nsError }) },
  };
  return { report, sqlite, pool, openError, ours };
}

/** Foreign keys the space map and namespace checks do not answer for (they check devices, layers and the fs tables). */
function otherForeignKeys(violations: SqliteCheck['foreignKeys']): SqliteCheck['foreignKeys'] {
  return violations.filter((f) => !['devices', 'layers'].includes(f.table) && !f.table.startsWith('fs_'));
}

/** Stray rows of other tables (by their ON DELETE action), the namespace, then the space map (which frees the blocks the namespace let go). */
function repairOpen(pool: Pool, mounted: DevId[], live = false, saveLeakedTo?: string): string[] {
  const actions: string[] = [];
  const stray = otherForeignKeys(foreignKeyViolations(pool.metadataDb()));
  if (stray.length > 0) {
    pool.beginWrite();
    try {
      const n = applyForeignKeyActions(pool.metadataDb(), stray);
      pool.commit();
      if (n > 0) actions.push(`deleted or cleared ${n} row(s) that referred to rows that no longer exist (${[...new Set(stray.map((f) => f.table))].join(', ')})`);
    } catch (err) {
      pool.abort();
      throw err;
    }
  }
  actions.push(...checkNamespace(pool, { repair: true, mounted, live }).repaired);
  if (saveLeakedTo !== undefined) {
    // After a rebuild, leaked blocks may hold data whose mapping rows were lost: keep them before the punch.
    const n = saveLeakedBlocks(pool, saveLeakedTo);
    if (n > 0) actions.push(`kept a copy of ${n} block(s) that no mapping names any more in ${saveLeakedTo} (their pool block numbers: ${saveLeakedTo}.index)`);
  }
  const space = pool.check({ repair: true });
  if (space.repaired) {
    const fixed = space.issues.filter((i) => i.severity === 'leak').map((i) => i.message);
    actions.push(`space map: ${fixed.length > 0 ? fixed.join('; ') : 'repaired'}`);
  }
  return actions;
}

/** After a repair: clear needs_check when nothing fatal is left, else keep (or set) it. Returns the flag. */
function settle(pool: Pool, recheck: FullReport): boolean {
  if (recheck.fatal === 0) {
    if (pool.status().needsCheck || needsCheckMarked(pool.root)) pool.clearNeedsCheck();
    return false;
  }
  return markIfFatal(pool, recheck);
}

/** A fatal finding makes the pool read-only until `check --repair` (the flag and the marker file). */
function markIfFatal(pool: Pool, report: FullReport): boolean {
  const first = report.issues.find((i) => i.severity === 'fatal');
  if (first !== undefined) pool.markNeedsCheck(`${first.area}: ${first.message}`);
  return pool.status().needsCheck;
}

function safe<T>(fn: () => T, onError: (message: string) => T | void): T | undefined {
  try {
    return fn();
  } catch (err) {
    return onError((err as Error).message) ?? undefined;
  }
}

/**
 * The SQLite companions (-wal, -shm) that do not exist yet; the returned function removes
 * those the check's own connections created, when the log is empty. Only for a pool that
 * did not open: nothing of anybody's is lost, and bad metadata is left as it was found.
 */
function companionsToClean(root: string): () => void {
  const meta = metadataFile(root);
  const missing = [`${meta}-wal`, `${meta}-shm`].filter((f) => !fs.existsSync(f));
  return () => {
    const wal = `${meta}-wal`;
    if (missing.includes(wal) && fs.existsSync(wal) && fs.statSync(wal).size > 0) return;
    for (const f of missing) fs.rmSync(f, { force: true });
  };
}

function hasSqliteMagic(file: string): boolean {
  try {
    const fd = fs.openSync(file, 'r');
    try {
      const head = Buffer.alloc(16);
      fs.readSync(fd, head, 0, 16, 0);
      return head.toString('latin1') === 'SQLite format 3\u0000';
    } finally {
      fs.closeSync(fd);
    }
  } catch {
    return false;
  }
}

function metadataFile(root: string): string {
  return path.join(root, 'pool', 'metadata.db');
}

function asThinfsError(err: unknown, file: string): Error {
  if (isThinfsError(err)) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = (err as Error).message;
  if (typeof code === 'string' && (code.startsWith('SQLITE_CORRUPT') || code === 'SQLITE_NOTADB')) {
    return fail('EIO', 'check', file, `metadata is damaged (${message}); run \`thinfs check --repair\``);
  }
  if (code === 'SQLITE_FULL' || code === 'ENOSPC') return fail('ENOSPC', 'check', file, message);
  return fail('EIO', 'check', file, message);
}
