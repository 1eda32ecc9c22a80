/**
 * The metadata device: one SQLite database (WAL) holding the superblock, the devices,
 * the layer tree, the block mappings (with the bytes of inline blocks, thin.ts) and the
 * space map. Other layers (fs/) keep their tables in the same database so that one
 * commit covers both; they bring their own numbered migrations through
 * `migrate(db, component, steps)`.
 */
import Database from 'better-sqlite3';
import { fail, ThinfsError, type ErrnoCode } from '../errors.js';

export type Db = Database.Database;

export const MAGIC = 'thinfs-pool';
/** The pool schema this code writes; opening a newer one is refused. */
export const POOL_SCHEMA_VERSION = 2;

/** Numbered migrations of the pool's own tables; index i brings the schema to version i+1. */
const POOL_MIGRATIONS: string[] = [
  `
  CREATE TABLE superblock (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    magic TEXT NOT NULL,
    schema_version INTEGER NOT NULL,
    block_size INTEGER NOT NULL,
    data_blocks INTEGER NOT NULL,
    hwm INTEGER NOT NULL,               -- blocks [0, hwm) have been handed out at least once
    transaction_id INTEGER NOT NULL,    -- id of the last committed transaction
    needs_check INTEGER NOT NULL DEFAULT 0,
    base_size INTEGER NOT NULL,
    min_free_pct REAL NOT NULL,
    autoextend_threshold REAL,
    autoextend_percent REAL,
    autoextend_max INTEGER,
    created_ns INTEGER NOT NULL
  );
  CREATE TABLE layers (
    id INTEGER PRIMARY KEY,
    parent_id INTEGER REFERENCES layers(id),
    depth INTEGER NOT NULL,             -- 1 for a root layer
    frozen INTEGER NOT NULL DEFAULT 0,  -- no more writes: it has children or belongs to an image
    mapped INTEGER NOT NULL DEFAULT 0,  -- blocks visible through the chain ending here
    owned INTEGER NOT NULL DEFAULT 0    -- blocks mapped in this layer itself
  );
  CREATE TABLE devices (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    origin_id INTEGER,
    kind TEXT NOT NULL,
    read_only INTEGER NOT NULL DEFAULT 0,
    size_limit INTEGER NOT NULL,
    created_ns INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    layer_id INTEGER NOT NULL REFERENCES layers(id)
  );
  -- (file key, file block, layer) -> pool block; NULL pblock hides lower layers' block.
  CREATE TABLE mappings (
    ino INTEGER NOT NULL,
    fblock INTEGER NOT NULL,
    layer INTEGER NOT NULL,
    pblock INTEGER,
    PRIMARY KEY (ino, fblock, layer)
  ) WITHOUT ROWID;
  CREATE INDEX mappings_by_layer ON mappings(layer, ino, fblock);
  -- Space map: blocks below hwm that are free. A block freed in transaction T has
  -- freed_txn = T and is not handed out again before T commits.
  CREATE TABLE free_blocks (
    pblock INTEGER PRIMARY KEY,
    freed_txn INTEGER NOT NULL
  );
  CREATE TABLE schema_versions (
    component TEXT PRIMARY KEY,
    version INTEGER NOT NULL
  );
  `,
  // 2: inline blocks (thin.ts). A mappings row may point at the block's bytes (inline_id,
  // a row of inline_blocks: the block's first length(data) bytes; the rest reads as zeros)
  // instead of a pool block; pblock NULL + inline_id NULL stays the hiding row. The bytes
  // live in a rowid table of their own, not in mappings: in a WITHOUT ROWID b-tree a cell
  // that spills onto overflow pages is loaded whole at each comparison of a search, which
  // made every lookup of the mappings ~5x slower (see thin.ts). The triggers drop an
  // inline block with the row that points at it (deleted, or pointed elsewhere), whatever
  // deletes it (a discard, a removed layer, a repair). The layers count inline bytes the
  // way mapped/owned count pool blocks; inline_max is the pool's threshold (0: off).
  // Existing pools get the default threshold for their block size (defaultInlineMaxBytes).
  `
  CREATE TABLE inline_blocks (
    id INTEGER PRIMARY KEY,
    data BLOB NOT NULL
  );
  ALTER TABLE mappings ADD COLUMN inline_id INTEGER;
  CREATE TRIGGER mappings_delete_inline AFTER DELETE ON mappings WHEN old.inline_id IS NOT NULL
    BEGIN DELETE FROM inline_blocks WHERE id = old.inline_id; END;
  CREATE TRIGGER mappings_replace_inline AFTER UPDATE OF inline_id ON mappings WHEN old.inline_id IS NOT new.inline_id
    BEGIN DELETE FROM inline_blocks WHERE id = old.inline_id; END;
  ALTER TABLE layers ADD COLUMN inline_mapped INTEGER NOT NULL DEFAULT 0;  -- inline bytes visible through the chain
  ALTER TABLE layers ADD COLUMN inline_owned INTEGER NOT NULL DEFAULT 0;   -- inline bytes in this layer's own rows
  ALTER TABLE superblock ADD COLUMN inline_max INTEGER NOT NULL DEFAULT 0; -- longest inline block, bytes
  UPDATE superblock SET inline_max = block_size / 2;
  `,
];

/**
 * The default inline threshold: half a block (32 KiB of a 64 KiB block). Measured on
 * real trees (bench/space.ts; the table is at the top of thin.ts): 16 KiB leaves more
 * tails of larger files in whole blocks (1.08x of ext4 on /usr/share/doc), half a block
 * gets every tree under 1.0x while blocks more than half full stay in the data file,
 * read and written in place. (Migration 2 writes the same rule in SQL: keep them together.)
 */
export function defaultInlineMaxBytes(blockSizeBytes: number): number {
  return blockSizeBytes / 2;
}


/** Open the SQLite file with the pragmas every thinfs process uses. */
export function openDb(file: string, opts: { readOnly?: boolean; mustExist?: boolean } = {}): Db {
  let db: Db;
  try {
    db = new Database(file, { readonly: opts.readOnly ?? false, fileMustExist: opts.mustExist ?? false });
  } catch (err) {
    throw fail('EINVAL', 'open', file, `cannot open metadata: ${(err as Error).message}`);
  }
  try {
    // Probe before changing anything: a file that is not SQLite fails here with
    // SQLITE_NOTADB, and a foreign SQLite file must not be switched to WAL.
    db.prepare('SELECT count(*) FROM sqlite_master').get();
    const ours = db.prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name='superblock'").get();
    if (!opts.readOnly && (ours !== undefined || !opts.mustExist)) db.pragma('journal_mode = WAL');
    // FULL: a COMMIT has fsynced the WAL when it returns (crash rule 3).
    db.pragma('synchronous = FULL');
    db.pragma('foreign_keys = ON');
    db.pragma('busy_timeout = 5000');
    db.pragma('cache_size = -65536');
  } catch (err) {
    db.close();
    throw fail('EINVAL', 'open', file, `metadata is not a thinfs pool or is corrupt (${(err as Error).message})`);
  }
  return db;
}

/** Create the pool tables in an empty database. */
export function createPoolSchema(db: Db): void {
  db.exec(POOL_MIGRATIONS.join('\n'));
  db.prepare('INSERT INTO schema_versions (component, version) VALUES (?, ?)').run('pool', POOL_MIGRATIONS.length);
}

/** Validate that `db` holds a thinfs pool this code understands; run pending pool migrations. */
export function verifyPoolSchema(db: Db, file: string, readOnly: boolean): void {
  const hasSuper = db.prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name='superblock'").get();
  if (!hasSuper) throw fail('EINVAL', 'open', file, 'metadata is not a thinfs pool (no superblock)');
  const row = db.prepare('SELECT magic, schema_version FROM superblock WHERE id = 1').get() as
    | { magic: string; schema_version: number }
    | undefined;
  if (row === undefined || row.magic !== MAGIC) {
    throw fail('EINVAL', 'open', file, 'metadata is not a thinfs pool (bad magic)');
  }
  if (row.schema_version > POOL_SCHEMA_VERSION) {
    throw fail(
      'EINVAL',
      'open',
      file,
      `pool schema version ${row.schema_version} is newer than this thinfs understands (${POOL_SCHEMA_VERSION}); upgrade thinfs`,
    );
  }
  if (readOnly && row.schema_version < POOL_SCHEMA_VERSION) {
    // A read-only connection cannot migrate, and this code reads the newer tables.
    throw fail(
      'EINVAL',
      'open',
      file,
      `pool schema version ${row.schema_version} is older than this thinfs writes (${POOL_SCHEMA_VERSION}); open it read-write once (start its daemon, or run any command that changes it) to upgrade it`,
    );
  }
  if (!readOnly) migrate(db, 'pool', POOL_MIGRATIONS.slice(0, POOL_SCHEMA_VERSION));
}

/**
 * Bring `component`'s tables to the newest of `steps` (step i creates version i+1).
 * Each pending step runs in its own transaction. Refuses a stored version newer than
 * the steps known here.
 */
export function migrate(db: Db, component: string, steps: string[]): void {
  const row = db.prepare('SELECT version FROM schema_versions WHERE component = ?').get(component) as
    | { version: number }
    | undefined;
  const have = row?.version ?? 0;
  if (have > steps.length) {
    throw fail('EINVAL', 'open', component, `${component} schema version ${have} is newer than this thinfs understands`);
  }
  for (let v = have; v < steps.length; v++) {
    db.transaction(() => {
      db.exec(steps[v]!);
      db.prepare(
        'INSERT INTO schema_versions (component, version) VALUES (?, ?) ON CONFLICT(component) DO UPDATE SET version = excluded.version',
      ).run(component, v + 1);
      if (component === 'pool') db.prepare('UPDATE superblock SET schema_version = ?').run(v + 1);
    })();
  }
}

/** The SQLite result codes that mean the metadata device is full or failing, as errnos. */
function sqliteErrno(code: string): ErrnoCode | undefined {
  if (code === 'SQLITE_FULL') return 'ENOSPC';
  if (code.startsWith('SQLITE_IOERR')) return code === 'SQLITE_IOERR_NOMEM' ? 'ENOMEM' : 'EIO';
  if (code === 'SQLITE_CORRUPT' || code.startsWith('SQLITE_CORRUPT_') || code === 'SQLITE_NOTADB') return 'EIO';
  if (code === 'SQLITE_BUSY' || code.startsWith('SQLITE_BUSY_') || code === 'SQLITE_LOCKED') return 'EBUSY';
  if (code === 'SQLITE_READONLY' || code.startsWith('SQLITE_READONLY_')) return 'EROFS';
  if (code === 'SQLITE_NOMEM') return 'ENOMEM';
  if (code === 'SQLITE_CANTOPEN') return 'EIO';
  return undefined;
}

/** True when `err` says the metadata file itself is damaged (a check is needed). */
export function isSqliteCorruption(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' && (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT'));
}

/**
 * The one translation of SQLite errors into errnos (a full metadata disk is ENOSPC, not
 * EIO). Anything that is not a SQLite error is returned unchanged.
 */
export function translateSqliteError(err: unknown, syscall: string, file: string): unknown {
  const code = (err as { code?: unknown }).code;
  if (err instanceof ThinfsError || typeof code !== 'string' || !code.startsWith('SQLITE_')) return err;
  const errno = sqliteErrno(code);
  if (errno === undefined) return err;
  const what = isSqliteCorruption(err) ? 'metadata is damaged; run `thinfs check`' : (err as Error).message;
  return fail(errno, syscall, file, `${what} (${code})`);
}

/** A fault plan for the metadata: called before every statement runs (see datafile.ts IoFaults). */
export interface SqlFaults {
  before(op: 'sql' | 'commit'): void;
}

const STATEMENT_RUNNERS = new Set(['run', 'get', 'all', 'iterate']);
const STATEMENT_CHAINERS = new Set(['pluck', 'raw', 'expand', 'safeIntegers', 'bind']);

/**
 * `db` with `faults.before('sql')` called before each statement (and exec), for fault-
 * injection tests; the fs tables reach the database through the same handle, so their
 * statements fail too. Without faults, the plain handle is used (no overhead).
 */
export function instrumentDb(db: Db, faults: SqlFaults): Db {
  const wrapStatement = (stmt: Database.Statement): Database.Statement => {
    const proxy: Database.Statement = new Proxy(stmt, {
      get(target, prop) {
        const value = Reflect.get(target, prop, target) as unknown;
        if (typeof value !== 'function') return value;
        if (STATEMENT_RUNNERS.has(prop as string)) {
          return (...args: unknown[]) => {
            faults.before('sql');
            return (value as (...a: unknown[]) => unknown).apply(target, args);
          };
        }
        if (STATEMENT_CHAINERS.has(prop as string)) {
          return (...args: unknown[]) => {
            (value as (...a: unknown[]) => unknown).apply(target, args);
            return proxy;
          };
        }
        return (value as (...a: unknown[]) => unknown).bind(target);
      },
    });
    return proxy;
  };
  return new Proxy(db, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      if (prop === 'prepare') return (sql: string) => wrapStatement(target.prepare(sql));
      if (prop === 'exec') {
        return (sql: string) => {
          faults.before(/^\s*COMMIT/i.test(sql) ? 'commit' : 'sql');
          return target.exec(sql);
        };
      }
      return (value as (...a: unknown[]) => unknown).bind(target);
    },
  });
}
