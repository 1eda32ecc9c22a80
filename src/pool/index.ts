/**
 * The pool's public API (the shape of dm-thin-metadata.h): a pool handle and a device
 * handle. Nothing outside src/pool knows where a block sits in the data file.
 *
 * Creation / opening:
 *   Pool.create(root, opts)     new pool (root/pool/data + root/pool/metadata.db)
 *   Pool.open(root, opts)       open; refuses what is not a thinfs pool or a newer schema
 *   pool.close({ commit })
 *
 * Devices (pool handle):
 *   createThin, createSnapshot (O(1)), setReadOnly, renameDevice,
 *   deleteDevice (deferred while open or with snapshots), openDevice -> ThinDevice,
 *   findDevice, getDevice, listDevices, childrenOf, chainOf
 *
 * Block I/O (device handle, keyed by (file key, file block)):
 *   findBlock, read, write (allocate-on-demand, one-block copy-on-write, small blocks
 *   inline in the metadata), discard (free own + hide lower), truncate, removeKey,
 *   keyAllocatedBytes (st_blocks), counts, close
 *
 * Space and transactions:
 *   status, mode, resize (grow only), trim, beginWrite, commit, abort, check({ repair })
 *
 * Filesystem tables live in the same database (metadataDb + migrate) so one commit
 * covers both; addHooks lets them flush before commit and drop caches on abort.
 */
export { Pool, ThinDevice, DEFAULTS, KiB, MiB, GiB } from './pool.js';
export { BLOCK_MAP_INLINE, BLOCK_MAP_ZERO } from './thin.js';
export type { Chain, FoundBlock, TransactionHooks } from './pool.js';
export { migrate, isSqliteCorruption, translateSqliteError } from './metadata.js';
export type { IoFaults, IoOp } from './datafile.js';
export type { Db } from './metadata.js';
export type {
  AutoextendOptions,
  CheckIssue,
  CheckReport,
  DevId,
  DeviceInfo,
  DeviceKind,
  FBlock,
  FileKey,
  LayerId,
  PBlock,
  PoolCreateOptions,
  PoolMode,
  PoolOpenOptions,
  PoolStatus,
} from './types.js';

// The metadata file itself, for `thinfs check [--repair]`: SQLite's integrity check, the
// backup, REINDEX, the needs_check marker of a pool that does not open (integrity.ts);
// the rebuild from the rows that can still be read (rebuild.ts); and the pool rows the
// namespace repair reads and frees (repair-rows.ts).
export {
  applyForeignKeyActions,
  backupMetadata,
  checkSqlite,
  checkSqliteFile,
  foreignKeyViolations,
  lockPool,
  needsCheckMarked,
  reindex,
  reindexFile,
  sameBytes,
  writeNeedsCheckMarker,
} from './integrity.js';
export type { ForeignKeyViolations, SqliteCheck } from './integrity.js';
export { looksLikeThinfsMetadata, rebuildMetadata } from './rebuild.js';
export type { RebuildReport, RebuiltTable, SchemaEntry } from './rebuild.js';
export { dropKeyRows, keyExtentBlocks, keysByLayer, layerParents, saveLeakedBlocks } from './repair-rows.js';
