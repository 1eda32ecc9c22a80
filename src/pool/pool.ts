/**
 * The thin pool: fixed-size blocks in one sparse data file, mapped by SQLite metadata.
 * This file holds the pool handle: opening and closing, transactions and atomic
 * operations, the device verbs and the pool's status. Its parts, one concern each:
 *   datafile.ts   the data file (pread/pwrite runs, fdatasync, punch) and the host reserve
 *   spacemap.ts   allocation, free list, high-water mark, free-space floor, autoextend
 *   snapshots.ts  layers, devices, chains (the snapshot tree)
 *   thin.ts       a thin device's block I/O (find/read/write/discard/truncate/remove),
 *                 pool blocks and inline blocks (small blocks kept in their mapping row)
 *   check.ts      the space-map check and repair
 *   metadata.ts   the SQLite file, schema, migrations, SQLite error translation
 *
 * Addressing. A device stores only the blocks it wrote itself, keyed by
 * (file key, file block index, layer) -> pool block. The file key is the filesystem's
 * inode data number: thinfs's filesystem keys file data that way, so a block device
 * offset space (and a second index from file offsets to device offsets) is not needed.
 * A lookup reads all rows of (file key, block range) in one index range scan and picks,
 * per block, the row of the nearest layer: its cost does not depend on the chain's depth.
 * A row maps a pool block, or carries the block's bytes itself (an inline block: small
 * files and tails cost about their size, thin.ts), or hides the lower rows.
 *
 * Crash rules (dm-thin's, kept here):
 *  1. A newly allocated block's data is written to the data file before its mapping
 *     enters the transaction, and the data file is fdatasynced before the COMMIT. An
 *     inline block that grows into a pool block too: block first, then the row replaced.
 *     Inline bytes themselves are metadata: they commit with their row, atomically.
 *  2. A block freed in a transaction is never handed out before that transaction commits
 *     (spacemap.ts), in case we need to roll back.
 *  3. A requested commit is durable when it returns: data fdatasync + SQLite COMMIT with
 *     synchronous=FULL.
 *  4. Freed blocks are punched out of the data file only after the commit that frees
 *     them; blocks allocated by an aborted transaction are punched on abort.
 *  5. After a crash the uncommitted transaction is simply gone: its allocations are free
 *     again (the high-water mark is in the superblock), their stray data is punched on
 *     the next open beyond the high-water mark, or by `trim`.
 *  6. A pool block the device already owns is overwritten in place (as dm-thin does; a
 *     copy per write after every commit would cost 16x on 4 KiB random writes). Such
 *     unsynced overwrites may or may not survive a crash — like a file system without data
 *     journaling; fsync (commit) makes them durable. Changes that only metadata decides
 *     (truncate's zeroed tail) never overwrite committed data: they move it. Inline blocks
 *     are never written in place: after a crash they read exactly as at the last commit.
 *  7. One writer: a read-write open holds flock on pool/lock (others wait, bounded, or
 *     get EBUSY).
 *  8. Inconsistency found on open or by `check` (data file shorter than the mapped
 *     blocks, damaged metadata, needs_check set) leaves the pool read-only until
 *     `check --repair`.
 *
 * Failure rules (what holds when a verb fails halfway):
 *  - Every changing verb is one atomic operation (atomically): a SQLite savepoint plus the
 *    in-memory counters (pool blocks and inline bytes per layer), both rolled back when it
 *    throws; inline rows are in the savepoint, so a failed write leaves them as they were. A failing verb changes nothing
 *    in the metadata; the caller gets the errno (ENOSPC for a full pool, device limit,
 *    host disk or metadata disk; EIO for an I/O error) and may go on using the pool.
 *    Operations nest: an inner verb joins the outer operation, which is atomic as a whole
 *    (the filesystem makes each of its calls one operation).
 *  - When an allocation runs short and blocks freed in the open transaction would make
 *    room, the operation is rolled back, the transaction committed (its frees become
 *    reusable and are punched) and the operation retried once — dm-thin commits to
 *    reclaim too. The same when the host disk is full and frees are pending.
 *  - A full host disk answers ENOSPC to the write that met it (rolled back like any
 *    failure) and marks the pool out-of-data-space until a data write succeeds again;
 *    commits go on in the metadata log's preallocated space (datafile.ts), so frees do too.
 *    Inline blocks grow the metadata instead of the data file, which no pwrite would
 *    refuse until the commit: so their writes first ask the host for room (statfs, looked
 *    at again only after half of what was free has been used) and get ENOSPC when less
 *    than METADATA_HEADROOM_BYTES would be left.
 *  - A failed commit (fdatasync or COMMIT) puts the pool in fail mode, as dm-thin's: the
 *    transaction is rolled back (reads show the last commit, exactly what a reopen
 *    shows), nothing more is written, every change is refused with EIO (the commit that
 *    failed answered its own errno, e.g. ENOSPC), `status().mode` is 'fail' with the
 *    reason. A half-done commit is never
 *    retried: reopen the pool (restart the daemon) to go on from the last commit.
 *  - Damaged metadata seen by any verb (SQLITE_CORRUPT) marks the pool needs_check.
 *
 * All work is synchronous: one process (the daemon) owns the pool, on one thread.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, isThinfsError, ThinfsError, type ErrnoCode } from '../errors.js';
import { logger } from '../log.js';
import { checkSpaceMap } from './check.js';
import { DataFile, hostError, reserveWalSpace, type IoFaults } from './datafile.js';
import {
  createPoolSchema,
  instrumentDb,
  defaultInlineMaxBytes,
  isSqliteCorruption,
  MAGIC,
  openDb,
  POOL_SCHEMA_VERSION,
  translateSqliteError,
  verifyPoolSchema,
  type Db,
} from './metadata.js';
import { tryLockExclusive } from './punch.js';
import { SnapshotTree, type Chain, type DeviceRow } from './snapshots.js';
import { ReclaimNeeded, SpaceMap } from './spacemap.js';
import { BlockIo, ThinDevice, type BlockPool } from './thin.js';
import type {
  AutoextendOptions,
  CheckReport,
  DevId,
  DeviceInfo,
  DeviceKind,
  PBlock,
  PoolCreateOptions,
  PoolMode,
  PoolOpenOptions,
  PoolStatus,
} from './types.js';

export type { Chain } from './snapshots.js';
export type { FoundBlock } from './thin.js';
export { ThinDevice } from './thin.js';

const log = logger('pool');

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export const DEFAULTS = {
  blockSizeBytes: 64 * KiB,
  dataSizeBytes: 100 * GiB,
  baseSizeBytes: 10 * GiB,
  minFreePercent: 10,
};

/** A file beside the metadata that keeps the pool read-only when set (see markNeedsCheck). */
const NEEDS_CHECK_MARKER = 'needs_check';
/** Host space allocated ahead for the metadata log, so commits go on when the host disk fills (datafile.ts). */
const WAL_RESERVE_BYTES = 32 * MiB;
/**
 * Host space inline data may never eat into (reserveMetadataBytes): what commits and
 * checkpoints need besides the bytes themselves, so that a filling host answers ENOSPC to
 * the writes instead of failing a commit (fail mode).
 */
const METADATA_HEADROOM_BYTES = 4 * MiB;
/** Free rows punched at each writable open (about 1 ms per 10k rows here); more: whole-block writes. */
const FREE_PUNCH_AT_OPEN_MAX = 200_000;

export interface TransactionHooks {
  /** Called after a rollback (an abort, a failed operation, fail mode): caches built on the metadata must be dropped. */
  onAbort?: () => void;
  /** Called before the metadata COMMIT, inside the transaction: flush cached state. */
  beforeCommit?: () => void;
  /**
   * Called before blocks freed by a commit (or allocated by an aborted transaction) are
   * punched and may be handed out again: a reader of mappings outside JS (the FUSE C hot
   * path) lets the reads and writes it started on old mappings finish.
   */
  beforeReuse?: () => void;
  /** Called when a layer is frozen or a device moves to another layer (a snapshot): own blocks may now be shared. */
  onLayout?: () => void;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

function sleepMs(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** A thin pool opened by this process. Create with Pool.create, open with Pool.open. */
export class Pool implements BlockPool {
  readonly root: string;
  readonly dataFile: string;
  readonly metadataFile: string;
  readonly blockSizeBytes: number;
  /** Blocks whose bytes end at most this far in are kept inline in the metadata (thin.ts); 0: off. */
  readonly inlineMaxBytes: number;
  /** See DataFile.freshBlocksReadZero (BlockPool). */
  get freshBlocksReadZero(): boolean {
    return this.data.freshBlocksReadZero;
  }
  readonly readOnlyOpen: boolean;

  private readonly db: Db;
  private readonly data: DataFile;
  private readonly space: SpaceMap;
  private readonly tree: SnapshotTree;
  private readonly io: BlockIo;
  private transactionId: number;
  private needsCheck: boolean;
  private baseSizeBytes: number;

  private inTx = false;
  /** Depth of atomically() calls on the stack; only the outermost keeps a savepoint. */
  private opDepth = 0;
  /** Data to put back if the current operation fails (see BlockIo.truncate). */
  private undo: (() => void)[] = [];
  /** Set when a commit failed: the pool is in fail mode (see the top of this file). */
  private failure: { code: ErrnoCode; reason: string } | undefined;
  private hostFull = false;
  /** Bytes of metadata writes may still add before the host's free space is looked at again (reserveMetadataBytes). */
  private metadataBudget = 0;
  private hooks: TransactionHooks[] = [];
  /** noteExternalWrites() since the last fdatasync of the data file. */
  private externalWrites = false;
  private lockFd = -1;
  private readonly st;

  private constructor(root: string, db: Db, fd: number, readOnlyOpen: boolean, faults: IoFaults | undefined) {
    this.root = root;
    this.dataFile = path.join(root, 'pool', 'data');
    this.metadataFile = path.join(root, 'pool', 'metadata.db');
    this.db = faults === undefined ? db : instrumentDb(db, faults);
    this.readOnlyOpen = readOnlyOpen;
    const sb = db.prepare('SELECT * FROM superblock WHERE id = 1').get() as Record<string, number | null>;
    this.blockSizeBytes = sb.block_size as number;
    this.inlineMaxBytes = (sb.inline_max as number | undefined) ?? 0;
    this.transactionId = sb.transaction_id as number;
    this.needsCheck = sb.needs_check === 1;
    this.baseSizeBytes = sb.base_size as number;
    const autoextend: AutoextendOptions | null =
      sb.autoextend_threshold != null && sb.autoextend_percent != null && sb.autoextend_max != null
        ? { thresholdPercent: sb.autoextend_threshold, percent: sb.autoextend_percent, maxBytes: sb.autoextend_max }
        : null;
    this.data = new DataFile(this.dataFile, fd, this.blockSizeBytes, faults);
    this.space = new SpaceMap(this.db, this.data, sb.min_free_pct as number, autoextend);
    this.tree = new SnapshotTree(this.db, this.blockSizeBytes);
    this.tree.onLayout = () => this.callHooks('onLayout');
    this.io = new BlockIo(this.db, this, this.tree, this.data);
    this.st = {
      savepoint: this.db.prepare('SAVEPOINT thinfs_op'),
      release: this.db.prepare('RELEASE thinfs_op'),
      rollbackTo: this.db.prepare('ROLLBACK TO thinfs_op'),
      setTransactionId: this.db.prepare('UPDATE superblock SET transaction_id = ?'),
      freelistPages: this.db.prepare('PRAGMA freelist_count').pluck() as unknown as { get(): number },
      pageSize: this.db.prepare('PRAGMA page_size').pluck() as unknown as { get(): number },
    };
    this.loadState();
  }

  // ---------------------------------------------------------------- creation

  /**
   * Create a new pool under `root` (root/pool/data + root/pool/metadata.db). Refuses an
   * existing pool. On failure nothing of the new pool remains (the metadata is published
   * by one rename, last).
   */
  static create(root: string, opts: PoolCreateOptions = {}): Pool {
    const blockSizeBytes = opts.blockSizeBytes ?? DEFAULTS.blockSizeBytes;
    const dataSizeBytes = opts.dataSizeBytes ?? DEFAULTS.dataSizeBytes;
    const baseSizeBytes = opts.baseSizeBytes ?? DEFAULTS.baseSizeBytes;
    const minFreePercent = opts.minFreePercent ?? DEFAULTS.minFreePercent;
    const inlineMaxBytes = opts.inlineMaxBytes ?? defaultInlineMaxBytes(blockSizeBytes);
    if (!isPowerOfTwo(blockSizeBytes) || blockSizeBytes < 4 * KiB || blockSizeBytes > MiB) {
      throw fail('EINVAL', 'init', undefined, `block size must be a power of two from 4K to 1M, got ${blockSizeBytes}`);
    }
    if (!Number.isSafeInteger(dataSizeBytes) || dataSizeBytes < blockSizeBytes) {
      throw fail('EINVAL', 'init', undefined, `data size must be at least one block (${blockSizeBytes} bytes)`);
    }
    if (!Number.isSafeInteger(baseSizeBytes) || baseSizeBytes < blockSizeBytes) {
      throw fail('EINVAL', 'init', undefined, `base device size must be at least one block (${blockSizeBytes} bytes)`);
    }
    if (!(minFreePercent >= 0 && minFreePercent < 100)) {
      throw fail('EINVAL', 'init', undefined, `minimum free space must be a percentage from 0 to 99, got ${minFreePercent}`);
    }
    if (!(Number.isSafeInteger(inlineMaxBytes) && inlineMaxBytes >= 0 && inlineMaxBytes <= blockSizeBytes)) {
      throw fail('EINVAL', 'init', undefined, `the inline threshold must be from 0 (off) to the block size (${blockSizeBytes} bytes), got ${inlineMaxBytes}`);
    }
    if (opts.autoextend) validateAutoextend(opts.autoextend, dataSizeBytes);
    const poolDir = path.join(root, 'pool');
    const metadataFile = path.join(poolDir, 'metadata.db');
    if (fs.existsSync(metadataFile)) throw fail('EEXIST', 'init', root, 'a thinfs pool already exists here');
    fs.mkdirSync(poolDir, { recursive: true, mode: 0o700 });
    const dataFile = path.join(poolDir, 'data');
    const tmp = `${metadataFile}.init-${process.pid}`;
    let fd = -1;
    try {
      fd = fs.openSync(dataFile, 'w+', 0o600);
      const dataBlocks = Math.floor(dataSizeBytes / blockSizeBytes);
      fs.ftruncateSync(fd, dataBlocks * blockSizeBytes);
      const db = openDb(tmp);
      db.transaction(() => {
        createPoolSchema(db);
        db.prepare(
          `INSERT INTO superblock (id, magic, schema_version, block_size, data_blocks, hwm, transaction_id,
             needs_check, base_size, min_free_pct, autoextend_threshold, autoextend_percent, autoextend_max, created_ns, inline_max)
           VALUES (1, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?, ?, ?, ?, ?)`,
        ).run(
          MAGIC,
          POOL_SCHEMA_VERSION,
          blockSizeBytes,
          dataBlocks,
          baseSizeBytes,
          minFreePercent,
          opts.autoextend?.thresholdPercent ?? null,
          opts.autoextend?.percent ?? null,
          opts.autoextend?.maxBytes ?? null,
          nowNs(),
          inlineMaxBytes,
        );
      })();
      db.pragma('wal_checkpoint(TRUNCATE)');
      db.close();
      // Publish the metadata only when complete: a half-made init leaves no pool behind.
      fs.renameSync(tmp, metadataFile);
      for (const suffix of ['-wal', '-shm']) fs.rmSync(tmp + suffix, { force: true });
    } catch (err) {
      for (const f of [tmp, `${tmp}-wal`, `${tmp}-shm`]) fs.rmSync(f, { force: true });
      if (fd >= 0) fs.closeSync(fd);
      fs.rmSync(dataFile, { force: true });
      throw hostError(translateSqliteError(err, 'init', metadataFile), 'init', root);
    }
    fs.closeSync(fd);
    return Pool.open(root);
  }

  /**
   * Open the pool under `root`. Refuses what is not a thinfs pool or a newer schema. A
   * read-write open takes the pool's lock, waiting up to `waitMs` for another writer.
   * On failure nothing was changed and nothing stays open.
   */
  static open(root: string, opts: PoolOpenOptions = {}): Pool {
    const metadataFile = path.join(root, 'pool', 'metadata.db');
    if (!fs.existsSync(metadataFile)) {
      throw fail('ENOENT', 'open', root, 'no thinfs pool here; run `thinfs init` first');
    }
    const readOnly = opts.readOnly ?? false;
    // One writer per pool: a read-write open holds flock on pool/lock for its lifetime
    // (the kernel drops it if the process dies, so a killed daemon leaves no stale lock).
    let lockFd = -1;
    if (!readOnly) lockFd = Pool.lock(root, opts);
    let db: Db;
    try {
      db = openDb(metadataFile, { readOnly, mustExist: true });
    } catch (err) {
      if (lockFd >= 0) fs.closeSync(lockFd);
      throw err;
    }
    let fd = -1;
    try {
      verifyPoolSchema(db, metadataFile, readOnly);
      const dataFile = path.join(root, 'pool', 'data');
      try {
        fd = fs.openSync(dataFile, readOnly ? 'r' : 'r+');
      } catch (err) {
        throw fail('EINVAL', 'open', dataFile, `cannot open the pool data file (${(err as Error).message})`);
      }
      const pool = new Pool(root, db, fd, readOnly, opts.faults);
      pool.lockFd = lockFd;
      pool.checkOnOpen();
      return pool;
    } catch (err) {
      if (fd >= 0) fs.closeSync(fd);
      if (lockFd >= 0) fs.closeSync(lockFd);
      db.close();
      if (err instanceof ThinfsError) throw err;
      throw fail('EINVAL', 'open', metadataFile, `metadata is corrupt (${(err as Error).message}); run \`thinfs check\``);
    }
  }

  private static lock(root: string, opts: PoolOpenOptions): number {
    const lockFd = fs.openSync(path.join(root, 'pool', 'lock'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
    const deadline = Date.now() + (opts.waitMs ?? 0);
    let told = false;
    while (!tryLockExclusive(lockFd)) {
      if (Date.now() >= deadline) {
        fs.closeSync(lockFd);
        const waited = opts.waitMs ? ` (waited ${Math.round(opts.waitMs / 1000)} s)` : '';
        throw fail('EBUSY', 'open', root, `the pool is open for writing by another process (a running thinfs daemon or command?)${waited}`);
      }
      if (!told) opts.onWait?.();
      told = true;
      sleepMs(25 + Math.floor(Math.random() * 50));
    }
    return lockFd;
  }

  /**
   * Close the pool. By default commits first (not in fail mode). `commit: false` drops the
   * open transaction as a crash would (used by crash tests). Always releases the files,
   * even when the commit fails (that error is then thrown).
   */
  close(opts: { commit?: boolean } = {}): void {
    let error: unknown;
    try {
      if (opts.commit ?? true) {
        if (this.failure === undefined && !this.readOnlyOpen) this.commit();
      } else if (this.inTx) {
        this.db.exec('ROLLBACK');
        this.inTx = false;
      }
    } catch (err) {
      error = err;
    }
    try {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
    } catch {
      /* closing discards it anyway */
    }
    this.db.close();
    this.data.close();
    if (this.lockFd >= 0) fs.closeSync(this.lockFd);
    this.lockFd = -1;
    if (error !== undefined) throw error;
  }

  /** Register transaction hooks (the filesystem flushes and drops its caches through them). */
  addHooks(hooks: TransactionHooks): () => void {
    this.hooks.push(hooks);
    return () => {
      this.hooks = this.hooks.filter((h) => h !== hooks);
    };
  }

  /**
   * The metadata database, for layers that keep their tables next to the pool's (fs/).
   * Write only inside pool.atomically (or after beginWrite) so the change joins the
   * pool's transaction and is rolled back with the operation.
   */
  metadataDb(): Db {
    return this.db;
  }

  // ---------------------------------------------------------------- operations and transactions

  /**
   * Run `fn` as one atomic operation: when it throws, the metadata and every in-memory
   * counter are as before the call (see the failure rules at the top), the caches built
   * on them are dropped (hooks.onAbort), and the error is thrown as a ThinfsError with
   * an errno. Calls nest: an inner call joins the outer operation.
   * Precondition: the pool takes writes (checked: EIO/ENOSPC in fail mode, EROFS read-only).
   */
  atomically<T>(op: string, fn: () => T): T {
    if (this.opDepth > 0) return fn();
    for (let attempt = 0; ; attempt++) {
      this.checkWritablePool(op);
      this.beginWrite();
      const pendingBefore = this.space.freePending;
      this.undo = [];
      try {
        this.st.savepoint.run();
      } catch (err) {
        throw this.storageError(err, op);
      }
      this.opDepth = 1;
      try {
        const result = fn();
        this.space.flush();
        this.tree.flush();
        this.st.release.run();
        this.undo = [];
        return result;
      } catch (err) {
        const e = this.rollbackOperation(op, err);
        const reclaim = e instanceof ReclaimNeeded || (isThinfsError(e, 'ENOSPC') && this.hostFull && pendingBefore > 0);
        if (reclaim && attempt === 0 && this.failure === undefined) {
          // Blocks freed in this transaction would make room: commit to reclaim, retry once.
          this.opDepth = 0;
          this.commit();
          continue;
        }
        if (e instanceof ReclaimNeeded) throw fail('ENOSPC', op, this.root, 'thin pool out of data space');
        throw e;
      } finally {
        this.opDepth = 0;
      }
    }
  }

  /** Join (or open) the current metadata transaction. Every metadata write goes through here. */
  beginWrite(): void {
    if (this.inTx) {
      if (!this.db.inTransaction) this.lostTransaction('begin');
      else return;
    }
    if (this.readOnlyOpen) throw fail('EROFS', 'write', this.root, 'pool opened read-only');
    if (this.failure !== undefined) throw this.failError('write');
    try {
      this.db.exec('BEGIN IMMEDIATE');
    } catch (err) {
      throw this.storageError(err, 'begin');
    }
    this.inTx = true;
  }

  /** True when there are uncommitted changes. */
  dirty(): boolean {
    return this.inTx;
  }

  /**
   * Commit the current transaction durably: flush counters, fdatasync the data file,
   * COMMIT the metadata, then punch the blocks this transaction freed.
   * If it fails the pool is in fail mode (see the top); the error says why (ENOSPC, EIO).
   * Precondition: not inside an operation.
   */
  commit(): void {
    if (this.opDepth > 0) throw new Error('Pool.commit() inside an operation');
    if (this.failure !== undefined) throw this.failError('commit');
    if (!this.inTx) {
      if (this.externalWrites) this.syncExternalWrites();
      return;
    }
    let freed: PBlock[];
    try {
      if (!this.db.inTransaction) throw fail('EIO', 'commit', this.metadataFile, 'the open transaction was rolled back by SQLite');
      for (const h of this.hooks) h.beforeCommit?.();
      this.io.inline.flush(); // inline rows rewritten in this transaction (inline-cache.ts), after the hooks' writes
      this.space.flush();
      this.tree.flush();
      this.st.setTransactionId.run(this.transactionId + 1);
      freed = this.space.freedInTx(this.transactionId);
      this.externalWrites = false;
      this.data.fdatasync();
      this.db.exec('COMMIT');
    } catch (err) {
      throw this.enterFailMode(err);
    }
    this.inTx = false;
    this.transactionId += 1;
    this.space.committed();
    if (freed.length > 0) this.callHooks('beforeReuse');
    this.data.punchBlocks(freed);
  }

  /**
   * Bytes were written into own blocks in place from outside JS (the FUSE C hot path,
   * through dataFileDescriptor): the next commit() fdatasyncs the data file even when no
   * metadata changed, so an fsync covers them.
   */
  noteExternalWrites(): void {
    this.externalWrites = true;
  }

  /** The data file's descriptor, for the FUSE C hot path (reads, and writes in place into own blocks). Never close it. */
  dataFileDescriptor(): number {
    return this.data.descriptor;
  }

  /** commit() with no open transaction after external writes: only the data needs to reach the disk. A failure is a failed commit. */
  private syncExternalWrites(): void {
    try {
      this.externalWrites = false;
      this.data.fdatasync();
    } catch (err) {
      throw this.enterFailMode(err);
    }
  }

  private callHooks(name: 'onLayout' | 'beforeReuse'): void {
    for (const h of this.hooks) {
      try {
        h[name]?.();
      } catch (err) {
        log.error({ err, hook: name }, 'a transaction hook failed');
      }
    }
  }

  /**
   * Write the data file's dirty pages back off the JS thread (see DataFile.flushAsync), so
   * that a following commit() holds the thread briefly. Durability still comes from commit().
   */
  flushDataAsync(): Promise<void> {
    return this.data.flushAsync();
  }

  /** Roll back everything since the last commit; in-memory state is reloaded from metadata. */
  abort(): void {
    if (this.opDepth > 0) throw new Error('Pool.abort() inside an operation');
    if (!this.inTx) return;
    try {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
    } finally {
      this.inTx = false;
    }
    const stray = [...this.space.allocatedInTx];
    this.space.allocatedInTx = new Set();
    this.reload();
    // Blocks this transaction allocated hold data nobody maps now: give them back.
    if (stray.length > 0) this.callHooks('beforeReuse');
    if (this.failure === undefined) this.data.punchBlocks(stray);
  }

  // ---------------------------------------------------------------- devices

  /** Create a new, empty thin device. On failure: no device, nothing changed. */
  createThin(name: string, opts: { kind?: DeviceKind; sizeLimitBytes?: number } = {}): DevId {
    return this.atomically('create', () => {
      this.validateNewName(name);
      const layer = this.tree.insertLayer(null, 0, 0);
      return this.tree.insertDevice(name, null, opts.kind ?? 'thin', false, opts.sizeLimitBytes ?? this.baseSizeBytes, layer.id);
    });
  }

  /**
   * Create a snapshot of `originId` in O(1). A read-only snapshot of a writable origin
   * (committing a container to an image) takes the origin's layer as it is and moves
   * the origin onto a new layer; otherwise the snapshot gets a new layer over the
   * origin's (which is frozen, forking a writable origin too).
   * On failure: no snapshot, the origin on its old layer, nothing changed.
   */
  createSnapshot(originId: DevId, name: string, opts: { kind?: DeviceKind; readOnly?: boolean; sizeLimitBytes?: number } = {}): DevId {
    return this.atomically('snapshot', () => {
      const origin = this.tree.requireDevice(originId, 'snapshot');
      if (origin.state !== 'active') throw fail('ENOENT', 'snapshot', origin.name, 'device is being deleted');
      this.validateNewName(name);
      const originLayer = this.tree.layers.get(origin.layerId)!;
      const readOnly = opts.readOnly ?? false;
      const kind = opts.kind ?? (readOnly ? 'image' : 'container');
      const sizeLimit = opts.sizeLimitBytes ?? origin.sizeLimitBytes;
      if (!originLayer.frozen) {
        this.tree.freezeLayer(originLayer);
        const moved = this.tree.insertLayer(originLayer.id, originLayer.mapped, originLayer.inlineMapped);
        this.tree.moveDevice(origin, moved.id);
        // The snapshot keeps the frozen layer: its blocks become the image's own.
        if (readOnly) return this.tree.insertDevice(name, origin.id, kind, true, sizeLimit, originLayer.id);
      }
      const layer = this.tree.insertLayer(originLayer.id, originLayer.mapped, originLayer.inlineMapped);
      if (readOnly) this.tree.freezeLayer(layer);
      return this.tree.insertDevice(name, origin.id, kind, readOnly, sizeLimit, layer.id);
    });
  }

  /** Make a device read-only for good (an image); its layer is frozen. On failure: unchanged. */
  setReadOnly(id: DevId): void {
    this.atomically('set read-only', () => {
      const dev = this.tree.requireDevice(id, 'set read-only');
      if (dev.readOnly) return;
      const kind = dev.kind === 'container' ? 'image' : dev.kind;
      this.db.prepare('UPDATE devices SET read_only = 1, kind = ? WHERE id = ?').run(kind, dev.id);
      dev.readOnly = true;
      dev.kind = kind;
      this.tree.freezeLayer(this.tree.layers.get(dev.layerId)!);
    });
  }

  /** Rename a device. On failure: the old name. */
  renameDevice(id: DevId, newName: string): void {
    this.atomically('rename', () => {
      const dev = this.tree.requireDevice(id, 'rename');
      this.validateNewName(newName);
      this.db.prepare('UPDATE devices SET name = ? WHERE id = ?').run(newName, id);
      dev.name = newName;
    });
  }

  /**
   * Delete a device. While it is open or has snapshots the deletion is deferred (as
   * devicemapper's deferred deletion): recorded, counted in status, completed when the
   * last handle closes or the last child goes. Returns which happened.
   * On failure: the device is as before (not deleted, not deferred).
   */
  deleteDevice(id: DevId): 'deleted' | 'deferred' {
    return this.atomically('delete', () => {
      const dev = this.tree.requireDevice(id, 'delete');
      if (this.tree.isBusy(dev)) {
        if (dev.state !== 'deferred') {
          this.db.prepare("UPDATE devices SET state = 'deferred' WHERE id = ?").run(id);
          dev.state = 'deferred';
          log.info({ device: dev.name }, 'deletion deferred: device is open or has snapshots');
        }
        return 'deferred';
      }
      this.removeDevice(dev);
      return 'deleted';
    });
  }

  /** Open a handle on a device for block I/O. Counts as "in use" for deferred deletion. */
  openDevice(id: DevId): ThinDevice {
    const dev = this.tree.requireDevice(id, 'open');
    if (dev.state === 'deferred') throw fail('ENOENT', 'open', dev.name, 'device is being deleted');
    this.tree.openCount.set(id, (this.tree.openCount.get(id) ?? 0) + 1);
    return new ThinDevice(this, this.io, id);
  }

  /**
   * @internal ThinDevice.close. The last close completes a deferred deletion; if that
   * fails (fail mode, full metadata disk) the deletion stays deferred and is completed on
   * the next open of the pool.
   */
  releaseDevice(id: DevId): void {
    const n = (this.tree.openCount.get(id) ?? 1) - 1;
    if (n > 0) {
      this.tree.openCount.set(id, n);
      return;
    }
    this.tree.openCount.delete(id);
    const dev = this.tree.devices.get(id);
    if (dev?.state !== 'deferred' || this.tree.isBusy(dev) || this.mode() === 'read-only' || this.mode() === 'fail') return;
    try {
      this.atomically('delete', () => this.removeDevice(this.tree.requireDevice(id, 'delete')));
    } catch (err) {
      log.warn({ err, device: dev.name }, 'deferred deletion could not complete now; it will on the next open');
    }
  }

  /** A device by name, or undefined. */
  findDevice(name: string): DeviceInfo | undefined {
    for (const d of this.tree.devices.values()) if (d.name === name) return this.tree.info(d);
    return undefined;
  }

  /** A device by id, or undefined. */
  getDevice(id: DevId): DeviceInfo | undefined {
    const d = this.tree.devices.get(id);
    return d === undefined ? undefined : this.tree.info(d);
  }

  /** All devices, by id. */
  listDevices(): DeviceInfo[] {
    return [...this.tree.devices.values()].sort((a, b) => a.id - b.id).map((d) => this.tree.info(d));
  }

  /** The devices whose origin is `id` (direct snapshots). */
  childrenOf(id: DevId): DeviceInfo[] {
    const dev = this.tree.requireDevice(id, 'children');
    return this.listDevices().filter((d) => {
      const l = this.tree.layers.get(d.layerId)!;
      return d.id !== id && (l.parentId === dev.layerId || d.originId === id);
    });
  }

  /** The chain of a device: its layers top first (shared with fs/ for its own tables). */
  chainOf(id: DevId): Chain {
    return this.tree.chainOf(id);
  }

  // ---------------------------------------------------------------- space

  /** Pool status, as `thinfs info` shows it. */
  status(): PoolStatus {
    const bs = this.blockSizeBytes;
    const used = this.space.usedBlocks();
    const minFree = this.space.minFreeBlocks();
    let metaBytes = 0;
    for (const f of [this.metadataFile, `${this.metadataFile}-wal`]) {
      try {
        metaBytes += fs.statSync(f).size;
      } catch {
        /* no WAL yet */
      }
    }
    const devices = [...this.tree.devices.values()];
    return {
      root: this.root,
      dataFile: this.dataFile,
      metadataFile: this.metadataFile,
      mode: this.mode(),
      needsCheck: this.needsCheck,
      blockSizeBytes: bs,
      dataTotalBytes: this.space.dataBlocks * bs,
      dataUsedBytes: used * bs,
      dataAvailableBytes: this.hostFull ? 0 : Math.max(0, this.space.dataBlocks - used - minFree) * bs,
      inlineBytes: this.tree.inlineBytes(),
      inlineMaxBytes: this.inlineMaxBytes,
      metadataUsedBytes: metaBytes,
      baseSizeBytes: this.baseSizeBytes,
      minFreePercent: this.space.minFreePercent,
      autoextend: this.space.autoextend,
      devices: devices.filter((d) => d.state === 'active').length,
      deferredDeletions: devices.filter((d) => d.state === 'deferred').length,
      transactionId: this.transactionId,
      pendingDiscardBlocks: this.space.freePending,
      ...(this.failure !== undefined ? { failReason: this.failure.reason } : {}),
      ...(this.hostFull ? { hostFull: true } : {}),
    };
  }

  /** The pool mode, ordered by degradation: write, out-of-data-space, read-only, fail. */
  mode(): PoolMode {
    if (this.failure !== undefined) return 'fail';
    if (this.needsCheck || this.readOnlyOpen) return 'read-only';
    if (this.space.outOfSpace || this.hostFull) return 'out-of-data-space';
    return 'write';
  }

  /**
   * Grow the data file to `dataSizeBytes` (rounded down to whole blocks). Shrinking is
   * refused. Committed when it returns; on failure the pool keeps its old size (a grown
   * file without the metadata that counts it is harmless).
   */
  resize(dataSizeBytes: number): void {
    const blocks = Math.floor(dataSizeBytes / this.blockSizeBytes);
    if (!Number.isSafeInteger(dataSizeBytes) || blocks < this.space.dataBlocks) {
      throw fail(
        'EINVAL',
        'resize',
        this.dataFile,
        `shrinking the data file is not supported (now ${this.space.dataBlocks * this.blockSizeBytes} bytes); only growth`,
      );
    }
    this.checkWritablePool('resize');
    if (blocks === this.space.dataBlocks) return;
    this.atomically('resize', () => this.space.growTo(blocks));
    this.commit();
  }

  /** Punch every free block out of the data file; returns the bytes given back to the host. */
  trim(): number {
    this.checkWritablePool('trim');
    this.commit();
    const before = this.data.onDiskBytes();
    const free = this.db.prepare('SELECT pblock FROM free_blocks ORDER BY pblock').pluck().all() as PBlock[];
    this.data.punchBlocks(free);
    this.data.punchRange(this.space.hwm, this.space.dataBlocks - this.space.hwm);
    return Math.max(0, before - this.data.onDiskBytes());
  }

  // ---------------------------------------------------------------- check

  /**
   * Like thin_check (check.ts): recompute block references from the mappings and compare
   * them with the space map. `repair` fixes what is safe, in one committed transaction.
   * This never clears needs_check: the caller does, once every check is clean.
   */
  check(opts: { repair?: boolean } = {}): CheckReport {
    const repair = opts.repair ?? false;
    if (repair) this.checkWritablePool('check --repair', true);
    this.io.inline.flush(); // the rows must hold what reads see (inline-cache.ts)
    if (repair) this.io.inline.clear(); // and a repair changes rows behind the cache's back
    return checkSpaceMap(
      {
        db: this.db,
        tree: this.tree,
        hwm: () => this.space.hwm,
        dataBlocks: () => this.space.dataBlocks,
        dataFileBlocks: () => this.data.sizeBlocks(),
        blockSizeBytes: this.blockSizeBytes,
        inlineMaxBytes: this.inlineMaxBytes,
        allocate: (n) => this.allocateBlocks(n),
        writeBlocks: (writes) => this.data.pwriteRuns(writes.map((w) => ({ pos: this.data.pos(w.pb), buf: w.buf }))),
        transactionId: () => this.transactionId,
        growDataFile: (blocks) => this.data.truncateTo(blocks),
        punch: (blocks) => this.data.punchBlocks(blocks),
        repairTransaction: (fn) => {
          this.commit();
          this.beginWrite();
          try {
            fn();
          } catch (err) {
            this.abort();
            throw this.storageError(err, 'check --repair');
          }
          this.commit();
          this.reload();
        },
      },
      repair,
    );
  }

  /**
   * Mark the pool as needing a check (a fatal finding): read-only until `check --repair`
   * clears it. Written twice, so damaged metadata cannot hide it: the superblock flag
   * (committed at once, when the database still takes writes) and the marker file
   * pool/needs_check (fsynced), which open() honours even when the flag could not be
   * written. If this fails, the pool is read-only in this process anyway.
   */
  markNeedsCheck(reason: string): void {
    this.needsCheck = true;
    log.error({ reason }, 'pool needs check: read-only until `thinfs check --repair`');
    const marker = path.join(this.root, 'pool', NEEDS_CHECK_MARKER);
    try {
      const fd = fs.openSync(marker, 'w', 0o600);
      try {
        fs.writeSync(fd, `${reason}\n`);
        fs.fsyncSync(fd);
      } finally {
        fs.closeSync(fd);
      }
    } catch (err) {
      log.error({ err }, 'could not write the needs_check marker file');
    }
    if (this.readOnlyOpen || this.failure !== undefined || this.opDepth > 0) return;
    try {
      if (this.inTx) this.commit();
      this.db.prepare('UPDATE superblock SET needs_check = 1').run();
    } catch (err) {
      log.error({ err }, 'could not set needs_check in the superblock (the marker file keeps it)');
    }
  }

  /**
   * Clear needs_check after a repair whose re-check found nothing fatal anywhere (pool,
   * namespace, SQLite). The caller decides that; the pool's own check never clears it.
   */
  clearNeedsCheck(): void {
    this.checkWritablePool('check --repair', true);
    this.commit();
    this.db.prepare('UPDATE superblock SET needs_check = 0').run();
    fs.rmSync(path.join(this.root, 'pool', NEEDS_CHECK_MARKER), { force: true });
    this.needsCheck = false;
  }

  // ---------------------------------------------------------------- BlockPool (used by ThinDevice)

  /** @internal Throw EROFS/ENOENT/EIO unless `dev` can take writes. */
  requireWritableDevice(dev: DevId, op: string): DeviceRow {
    const d = this.tree.requireDevice(dev, op);
    if (d.readOnly) throw fail('EROFS', op, d.name, 'device is read-only');
    this.checkWritablePool(op);
    return d;
  }

  /** @internal Hand out `n` blocks, or ENOSPC (pool full, or the host file system full). */
  allocateBlocks(n: number): PBlock[] {
    return this.space.allocate(n, this.transactionId, this.root);
  }

  /**
   * @internal Room on the host for `bytes` more of metadata (inline data), or ENOSPC
   * (see the failure rules at the top). Each byte is counted twice: the log, then the
   * checkpoint into the database file; the database's free pages count as room.
   */
  reserveMetadataBytes(bytes: number): void {
    if (bytes <= this.metadataBudget) {
      this.metadataBudget -= bytes;
      return;
    }
    let hostFree: number;
    try {
      const st = fs.statfsSync(path.dirname(this.metadataFile));
      hostFree = st.bavail * st.bsize;
    } catch {
      return; // the host cannot say: the commit will
    }
    // What the host has free, and the pages SQLite freed and reuses before it grows its file.
    const avail = hostFree + this.st.freelistPages.get() * this.st.pageSize.get();
    this.metadataBudget = Math.max(0, Math.floor((avail - METADATA_HEADROOM_BYTES) / 2));
    if (bytes > this.metadataBudget) {
      this.metadataBudget = 0;
      const err = fail('ENOSPC', 'write', this.root, 'the host file system under the pool has no room left for more metadata (inline data)');
      this.noteHostFull(err);
      throw err;
    }
    this.metadataBudget -= bytes;
    this.noteDataWritten();
  }

  /** @internal A data write reached the data file: the host has room (again). */
  noteDataWritten(): void {
    if (!this.hostFull) return;
    this.hostFull = false;
    log.info('the host file system has room again');
  }

  /** @internal Return a block to the space map; reusable after the open transaction commits. */
  freeBlock(pb: PBlock): void {
    this.space.free(pb, this.transactionId);
  }

  /** @internal Run `undo` when the current operation is rolled back. */
  onRollback(undo: () => void): void {
    this.undo.push(undo);
  }

  /** @internal True when `pb` was handed out in the open transaction. */
  allocatedInTx(pb: PBlock): boolean {
    return this.space.allocatedInTx.has(pb);
  }

  // ---------------------------------------------------------------- private helpers

  /** (Re)load the in-memory view of the metadata: counters, layers, devices; drop caches. */
  private loadState(): void {
    const sb = this.db.prepare('SELECT transaction_id, needs_check FROM superblock WHERE id = 1').get() as Record<string, number>;
    this.transactionId = sb.transaction_id!;
    this.needsCheck = this.needsCheck || sb.needs_check === 1;
    this.space.load(this.transactionId);
    this.tree.load();
    this.io.clearAllocations();
    if (!this.inTx) this.io.inline.clear(); // the transaction is gone; a failed operation's undo already ran
  }

  /** loadState, then tell the caches built on the metadata (hooks.onAbort). */
  private reload(): void {
    this.loadState();
    for (const h of this.hooks) {
      try {
        h.onAbort?.();
      } catch (err) {
        log.error({ err }, 'a cache could not be dropped after a rollback');
      }
    }
  }

  /**
   * Undo the outermost operation after `err`: roll back its savepoint (or notice SQLite
   * rolled back the whole transaction), reload the in-memory state, and return the error
   * to throw (translated to an errno).
   */
  private rollbackOperation(op: string, err: unknown): unknown {
    const undo = this.undo.reverse();
    this.undo = [];
    try {
      for (const u of undo) u();
    } catch (undoErr) {
      // In-place bytes could not be put back: fail mode returns to the last commit, where
      // the blocks they sit in (allocated in this transaction) are not mapped.
      this.enterFailMode(undoErr);
    }
    try {
      if (this.db.inTransaction) {
        this.st.rollbackTo.run();
        this.st.release.run();
      } else if (this.inTx) {
        this.inTx = false;
        log.warn({ op }, 'SQLite rolled back the open transaction after an error: changes since the last commit are lost, as after a crash');
      }
      this.reload();
    } catch (rollbackErr) {
      // The metadata cannot even be rolled back: nothing more may be written.
      this.enterFailMode(rollbackErr);
    }
    if (err instanceof ReclaimNeeded) return err;
    return this.storageError(err, op);
  }

  /** The errno error for `err`; notes a full host (releases the reserve) and damaged metadata. */
  private storageError(err: unknown, op: string): unknown {
    const e = hostError(translateSqliteError(err, op, this.metadataFile), op, this.dataFile);
    if (isSqliteCorruption(err) && !this.needsCheck) this.markNeedsCheck(`${op}: ${(err as Error).message}`);
    if (isThinfsError(e) && (e.code === 'ENOSPC' || e.code === 'EDQUOT') && e.syscall !== 'alloc' && e.syscall !== 'write') this.noteHostFull(e);
    if (isThinfsError(e) && e.code === 'ENOSPC' && (err as { code?: string }).code === 'SQLITE_FULL') this.noteHostFull(e);
    return e;
  }

  private noteHostFull(err: Error): void {
    if (this.hostFull) return;
    this.hostFull = true;
    log.warn({ err: err.message }, 'the host file system under the pool is full: writes that need new space get ENOSPC; commits go on in the reserved metadata log');
  }

  /** A commit failed: fail mode (see the top of the file). Returns the error to throw. */
  private enterFailMode(err: unknown): ThinfsError {
    const e = this.storageError(err, 'commit');
    this.failure = { code: 'EIO', reason: (e as Error).message };
    log.error({ err: e }, 'commit failed: the pool is in fail mode (reads only, back to the last commit); reopen it to go on');
    try {
      if (this.db.inTransaction) this.db.exec('ROLLBACK');
    } catch (rollbackErr) {
      log.error({ err: rollbackErr }, 'rollback after the failed commit failed too');
    }
    this.inTx = false;
    this.space.allocatedInTx = new Set();
    try {
      this.reload();
    } catch (reloadErr) {
      log.error({ err: reloadErr }, 'could not reload the metadata after the failed commit');
    }
    // The commit itself answers with what failed it (ENOSPC for a full disk); later calls get EIO.
    return isThinfsError(e) ? e : this.failError('commit');
  }

  private failError(op: string): ThinfsError {
    const f = this.failure!;
    return fail(f.code, op, this.root, `pool is in fail mode since a commit failed (${f.reason}); nothing more is written until the pool is reopened (restart the daemon)`);
  }

  /** SQLite dropped the transaction behind our back (e.g. SQLITE_FULL): reload, as after a crash. */
  private lostTransaction(op: string): void {
    log.warn({ op }, 'SQLite rolled back the open transaction: changes since the last commit are lost, as after a crash');
    this.inTx = false;
    this.reload();
  }

  private checkOnOpen(): void {
    const problems: string[] = [];
    if (fs.existsSync(path.join(this.root, 'pool', NEEDS_CHECK_MARKER))) this.needsCheck = true;
    const sizeBlocks = this.data.sizeBlocks();
    if (sizeBlocks < this.space.hwm) problems.push(`data file holds ${sizeBlocks} blocks but ${this.space.hwm} are in use`);
    if (problems.length > 0 && !this.readOnlyOpen) {
      this.db.prepare('UPDATE superblock SET needs_check = 1').run();
      this.needsCheck = true;
    }
    for (const p of problems) log.error({ problem: p }, 'pool needs check; run `thinfs check --repair`');
    if (this.needsCheck) {
      log.warn('pool is marked needs_check: read-only until `thinfs check --repair` succeeds');
      return;
    }
    if (this.readOnlyOpen) return;
    reserveWalSpace(this.metadataFile, WAL_RESERVE_BYTES);
    if (sizeBlocks < this.space.dataBlocks) this.data.truncateTo(this.space.dataBlocks);
    // Crash rule 5: data written by an uncommitted transaction beyond the high-water mark.
    this.data.punchRange(this.space.hwm, this.space.dataBlocks - this.space.hwm);
    // Free blocks may hold old bytes (a crash between a commit and the punch of what it
    // freed, a punch that failed): punch them all, so that fresh blocks read as zeros and a
    // write into one need not write the whole block (datafile.ts freshBlocksReadZero). A
    // pool with very many free rows skips it and keeps writing whole blocks.
    const freeRows = (this.db.prepare('SELECT count(*) FROM free_blocks').pluck().get() as number) ?? 0;
    if (freeRows <= FREE_PUNCH_AT_OPEN_MAX) {
      this.data.punchBlocks(this.db.prepare('SELECT pblock FROM free_blocks ORDER BY pblock').pluck().all() as PBlock[]);
      this.data.markFreeBlocksPunched();
    }
    // Complete deferred deletions that became possible while we were down.
    for (const d of [...this.tree.devices.values()]) {
      if (d.state === 'deferred' && this.tree.devices.has(d.id) && !this.tree.isBusy(d)) {
        this.atomically('delete', () => this.removeDevice(d));
      }
    }
    this.commit();
  }

  private checkWritablePool(op: string, allowNeedsCheck = false): void {
    if (this.failure !== undefined) throw this.failError(op);
    if (this.readOnlyOpen) throw fail('EROFS', op, this.root, 'pool opened read-only');
    if (this.needsCheck && !allowNeedsCheck) {
      throw fail('EROFS', op, this.root, 'pool needs a check; run `thinfs check --repair`');
    }
  }

  private validateNewName(name: string): void {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/.test(name)) {
      throw fail('EINVAL', 'create', name, 'device names are 1-128 characters of letters, digits, _ . : - (not starting with a symbol)');
    }
    for (const d of this.tree.devices.values()) if (d.name === name) throw fail('EEXIST', 'create', name, 'a device with this name exists');
  }

  /** Drop a device that is not busy and the layers nobody needs any more. */
  private removeDevice(dev: DeviceRow): void {
    this.tree.removeDevice(dev, (pb) => this.freeBlock(pb));
    this.io.forgetRemoved();
  }
}

function validateAutoextend(ae: AutoextendOptions, dataSizeBytes: number): void {
  if (!(ae.thresholdPercent > 0 && ae.thresholdPercent <= 100)) {
    throw fail('EINVAL', 'init', undefined, `autoextend threshold must be a percentage from 1 to 100, got ${ae.thresholdPercent}`);
  }
  if (!(ae.percent > 0)) throw fail('EINVAL', 'init', undefined, `autoextend percent must be positive, got ${ae.percent}`);
  if (!(ae.maxBytes >= dataSizeBytes)) {
    throw fail('EINVAL', 'init', undefined, 'autoextend maximum must be at least the data size');
  }
}

export { ThinfsError };
