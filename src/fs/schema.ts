/**
 * The filesystem's tables in the pool's metadata database, and the per-pool state every
 * Filesystem of that pool shares (the "fs superblock").
 *
 * Every row is keyed by the pool LAYER it belongs to (`layer REFERENCES layers(id) ON
 * DELETE CASCADE`), so when the pool collects a layer (a deleted container) its
 * namespace rows go with it in the same transaction, and nothing here ever needs to know
 * about device deletion. A device sees the rows of the layers in its chain; the nearest
 * layer wins (see inodes.ts, dirents.ts, xattrs.ts).
 *
 * Inode numbers (and data keys, the FileKeys under which the pool keeps a file's blocks)
 * come from one pool-wide counter in fs_super, so they are unique across every device
 * and never change on copy-up or rename. The root directory is inode 1 in every device.
 *
 * An inode number is never handed out twice, so it can be a FUSE nodeid with generation
 * 0 (the kernel holds nodeids for as long as a mount lives; a stale one must never name a
 * new inode). The counter moves inside the pool's transaction, and a transaction can go
 * back after the kernel saw numbers from it: a failed operation rolls its savepoint back
 * (its numbers were never answered, but they may be again), and SQLite may roll a whole
 * transaction back after an I/O error, or a failed commit put the pool in fail mode while
 * its mounts stay up. So each process also remembers the highest number it handed out per
 * pool and never goes below it; a crash ends the process and the mounts with it.
 *
 * Names are bytes (bytes.ts): entry names, symlink targets and xattr names are BLOBs of
 * the raw bytes; the modules here bind them with bytesOf and read them with byteString.
 */
import { fail } from '../errors.js';
import { migrate, type Db, type DevId, type Pool } from '../pool/index.js';

/** Numbered migrations of the fs tables; step i brings the schema to version i+1. */
const FS_MIGRATIONS: string[] = [
  `
  CREATE TABLE fs_super (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    next_ino INTEGER NOT NULL
  );
  INSERT INTO fs_super (id, next_ino) VALUES (1, 2);
  -- One row per (inode, layer) that has its own copy of the attributes. nlink counts
  -- names; a row with nlink 0 is an unlinked inode kept for open handles (an orphan).
  CREATE TABLE fs_inodes (
    ino INTEGER NOT NULL,
    layer INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    nlink INTEGER NOT NULL,
    rdev INTEGER NOT NULL,
    atime INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL,
    target TEXT,
    data_key INTEGER NOT NULL,
    PRIMARY KEY (ino, layer)
  ) WITHOUT ROWID;
  CREATE INDEX fs_inodes_by_layer ON fs_inodes(layer);
  -- Directory entries; child NULL is a whiteout (only dirents.ts knows that).
  CREATE TABLE fs_dirents (
    parent INTEGER NOT NULL,
    name TEXT NOT NULL,
    layer INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    child INTEGER,
    type INTEGER NOT NULL,
    PRIMARY KEY (parent, name, layer)
  ) WITHOUT ROWID;
  CREATE INDEX fs_dirents_by_layer ON fs_dirents(layer);
  CREATE INDEX fs_dirents_by_child ON fs_dirents(child) WHERE child IS NOT NULL;
  -- Extended attributes; value NULL hides a lower layer's attribute (removed here).
  CREATE TABLE fs_xattrs (
    ino INTEGER NOT NULL,
    name TEXT NOT NULL,
    layer INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    value BLOB,
    PRIMARY KEY (ino, name, layer)
  ) WITHOUT ROWID;
  CREATE INDEX fs_xattrs_by_layer ON fs_xattrs(layer);
  `,
  // 2: names are bytes (bytes.ts). Entry names, symlink targets and xattr names become
  // BLOBs holding the raw bytes, compared with memcmp. Version 1 stored them as TEXT
  // decoded by fuse-native as UTF-8 (so a non-UTF-8 name had already become U+FFFD);
  // CAST(text AS BLOB) is that text's UTF-8 bytes, which is the name as the kernel saw
  // it for every valid UTF-8 name, and distinct TEXT rows stay distinct BLOB rows.
  `
  CREATE TABLE fs_inodes_v2 (
    ino INTEGER NOT NULL,
    layer INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    mode INTEGER NOT NULL,
    uid INTEGER NOT NULL,
    gid INTEGER NOT NULL,
    size INTEGER NOT NULL,
    nlink INTEGER NOT NULL,
    rdev INTEGER NOT NULL,
    atime INTEGER NOT NULL,
    mtime INTEGER NOT NULL,
    ctime INTEGER NOT NULL,
    target BLOB,
    data_key INTEGER NOT NULL,
    PRIMARY KEY (ino, layer)
  ) WITHOUT ROWID;
  INSERT INTO fs_inodes_v2
    SELECT ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, CAST(target AS BLOB), data_key FROM fs_inodes;
  DROP TABLE fs_inodes;
  ALTER TABLE fs_inodes_v2 RENAME TO fs_inodes;
  CREATE INDEX fs_inodes_by_layer ON fs_inodes(layer);

  CREATE TABLE fs_dirents_v2 (
    parent INTEGER NOT NULL,
    name BLOB NOT NULL,
    layer INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    child INTEGER,
    type INTEGER NOT NULL,
    PRIMARY KEY (parent, name, layer)
  ) WITHOUT ROWID;
  INSERT INTO fs_dirents_v2 SELECT parent, CAST(name AS BLOB), layer, child, type FROM fs_dirents;
  DROP TABLE fs_dirents;
  ALTER TABLE fs_dirents_v2 RENAME TO fs_dirents;
  CREATE INDEX fs_dirents_by_layer ON fs_dirents(layer);
  CREATE INDEX fs_dirents_by_child ON fs_dirents(child) WHERE child IS NOT NULL;

  CREATE TABLE fs_xattrs_v2 (
    ino INTEGER NOT NULL,
    name BLOB NOT NULL,
    layer INTEGER NOT NULL REFERENCES layers(id) ON DELETE CASCADE,
    value BLOB,
    PRIMARY KEY (ino, name, layer)
  ) WITHOUT ROWID;
  INSERT INTO fs_xattrs_v2 SELECT ino, CAST(name AS BLOB), layer, value FROM fs_xattrs;
  DROP TABLE fs_xattrs;
  ALTER TABLE fs_xattrs_v2 RENAME TO fs_xattrs;
  CREATE INDEX fs_xattrs_by_layer ON fs_xattrs(layer);
  `,
];

/** Cache generation of one device: bumped by every namespace write, so other Filesystems on it drop stale caches. */
export interface DeviceSlot {
  gen: number;
  /** A writable Filesystem is open on this device. */
  writer: boolean;
}

/** State shared by all Filesystems of one pool. */
export interface FsSuper {
  db: Db;
  slots: Map<DevId, DeviceSlot>;
  allocIno: () => number;
  peekNextIno: () => number;
}

const supers = new WeakMap<Pool, FsSuper>();
/** Per pool root: the highest inode number this process has handed out (see the top). */
const issued = new Map<string, number>();

/** The shared fs state of `pool`, creating (and migrating) the tables on first use. */
export function fsSuper(pool: Pool): FsSuper {
  let s = supers.get(pool);
  if (s !== undefined) return s;
  const db = pool.metadataDb();
  if (pool.readOnlyOpen) {
    const have = db.prepare("SELECT version FROM schema_versions WHERE component = 'fs'").pluck().get() as number | undefined;
    if (have === undefined) throw fail('EROFS', 'open', pool.root, 'the pool has no filesystem tables yet; open it writable once');
    if (have > FS_MIGRATIONS.length) throw fail('EINVAL', 'open', pool.root, `fs schema version ${have} is newer than this thinfs understands`);
    if (have < FS_MIGRATIONS.length) {
      throw fail(
        'EROFS',
        'open',
        pool.root,
        `the pool's filesystem tables are from an older thinfs (version ${have}); the next writing open upgrades them (thinfs mount or thinfs import)`,
      );
    }
  } else {
    migrate(db, 'fs', FS_MIGRATIONS);
  }
  const alloc = db.prepare('UPDATE fs_super SET next_ino = next_ino + 1 WHERE id = 1 RETURNING next_ino - 1 AS ino').pluck();
  const skipTo = db.prepare('UPDATE fs_super SET next_ino = ? WHERE id = 1');
  const peek = db.prepare('SELECT next_ino FROM fs_super WHERE id = 1').pluck();
  const root = pool.root;
  s = {
    db,
    slots: new Map(),
    // The caller has joined the pool's transaction (beginWrite), so an abort rolls it back;
    // numbers a rollback gave back are skipped, never handed out again (see the top).
    allocIno: () => {
      const high = issued.get(root) ?? 0;
      let ino = alloc.get() as number;
      if (ino <= high) {
        skipTo.run(high + 1);
        ino = alloc.get() as number;
      }
      issued.set(root, ino);
      return ino;
    },
    peekNextIno: () => Math.max(peek.get() as number, (issued.get(root) ?? 0) + 1),
  };
  supers.set(pool, s);
  return s;
}

/** The cache slot of device `dev` in `sup`. */
export function deviceSlot(sup: FsSuper, dev: DevId): DeviceSlot {
  let slot = sup.slots.get(dev);
  if (slot === undefined) {
    slot = { gen: 0, writer: false };
    sup.slots.set(dev, slot);
  }
  return slot;
}
