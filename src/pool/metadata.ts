/**
 * The metadata device: one SQLite database (WAL) holding the superblock, the devices,
 * the layer tree, the block mappings and the space map. Other layers (fs/) keep their
 * tables in the same database so that one commit covers both; they bring their own
 * numbered migrations through `migrate(db, component, steps)`.
 */
import Database from 'better-sqlite3';
import { fail } from '../errors.js';

export type Db = Database.Database;

export const MAGIC = 'thinfs-pool';
/** The pool schema this code writes; opening a newer one is refused. */
export const POOL_SCHEMA_VERSION = 1;

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
];

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
