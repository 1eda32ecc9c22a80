/**
 * The thin pool: fixed-size blocks in one sparse data file, mapped by SQLite metadata.
 *
 * Addressing. A device stores only the blocks it wrote itself, keyed by
 * (file key, file block index, layer) -> pool block. The file key is the filesystem's
 * inode data number: thinfs's filesystem keys file data that way, so a block device
 * offset space (and a second index from file offsets to device offsets) is not needed.
 *
 * Layers and snapshots. Mappings belong to *layers*; a device points at its top layer
 * and reads through the chain of parents. Snapshotting is O(1): the snapshot gets a new
 * empty layer over the origin's. A layer that has children is frozen, so when the
 * origin is still writable (a container being committed) the origin moves onto a new
 * empty layer of its own: both see the same frozen past, and neither sees the other's
 * later writes. No mapping is copied, ever. Each layer belongs to at most one device,
 * so a device's exclusive blocks are exactly its top layer's.
 *
 * Depth. A lookup reads all rows of (file key, block range) in one index range scan
 * (primary key order: ino, fblock, layer) and picks, per block, the row whose layer is
 * nearest in the chain (an in-memory map layer -> position). Its cost depends on how
 * many layers wrote that block, not on how deep the chain is.
 *
 * Crash rules (dm-thin's, kept here):
 *  1. A newly allocated block's data is written to the data file before the mapping that
 *     points at it commits: commit() fdatasyncs the data file, then COMMITs SQLite.
 *  2. A block freed in a transaction is never handed out before that transaction commits
 *     (free_blocks.freed_txn), in case we need to roll back — the old mapping would
 *     point at someone else's data.
 *  3. A requested commit is durable when it returns: data fdatasync + SQLite COMMIT with
 *     synchronous=FULL.
 *  4. Freed blocks are punched out of the data file only after the commit that frees
 *     them; blocks allocated by an aborted transaction are punched on abort.
 *  5. After a crash the uncommitted transaction is simply gone: its allocations are free
 *     again (the high-water mark is in the superblock), their stray data is punched on
 *     the next open beyond the high-water mark, or by `trim`.
 *  6. A block the device already owns is overwritten in place (as dm-thin does; a
 *     copy per write after every commit would cost 16x on 4 KiB random writes). Such
 *     unsynced overwrites may or may not survive a crash — like a file system without
 *     data journaling; fsync (commit) makes them durable. Changes that only metadata
 *     decides (truncate's zeroed tail) never overwrite committed data: they move it.
 *  7. One writer: a read-write open holds flock on pool/lock (EBUSY for a second one).
 *  8. Inconsistency found on open (data file shorter than the mapped blocks, a newer
 *     schema, needs_check already set) leaves the pool read-only with needs_check set,
 *     until `check --repair`.
 *
 * All work is synchronous: one process (the daemon) owns the pool, on one thread.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fail, ThinfsError } from '../errors.js';
import { logger } from '../log.js';
import { createPoolSchema, MAGIC, openDb, POOL_SCHEMA_VERSION, verifyPoolSchema, type Db } from './metadata.js';
import { punchHole, tryLockExclusive } from './punch.js';
import type {
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

interface Layer {
  id: LayerId;
  parentId: LayerId | null;
  depth: number;
  frozen: boolean;
  mapped: number;
  owned: number;
  children: number;
}

interface DeviceRow {
  id: DevId;
  name: string;
  originId: DevId | null;
  kind: DeviceKind;
  readOnly: boolean;
  sizeLimitBytes: number;
  createdNs: bigint;
  state: 'active' | 'deferred';
  layerId: LayerId;
}

/** A device's chain: layers top first, and each layer's position in it. */
export interface Chain {
  top: LayerId;
  layers: LayerId[];
  pos: Map<LayerId, number>;
}

/** What one file block resolves to through a chain. */
interface Resolved {
  /** The top layer's own row: a pool block, null for a hiding row, undefined for none. */
  own: PBlock | null | undefined;
  /** The nearest lower layer's row, same encoding. */
  lower: PBlock | null | undefined;
  lowerPos: number;
}

/** Where a block was found by findBlock. */
export interface FoundBlock {
  pblock: PBlock;
  layerId: LayerId;
  /** True when the device's own top layer maps it (writes go in place). */
  own: boolean;
}

export interface TransactionHooks {
  /** Called after a rollback (abort): caches built on the metadata must be dropped. */
  onAbort?: () => void;
  /** Called before the metadata COMMIT, inside the transaction: flush cached state. */
  beforeCommit?: () => void;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

/** A thin pool opened by this process. Create with Pool.create, open with Pool.open. */
export class Pool {
  readonly root: string;
  readonly dataFile: string;
  readonly metadataFile: string;
  readonly blockSizeBytes: number;
  readonly readOnlyOpen: boolean;

  private readonly db: Db;
  private fd: number;
  private dataBlocks: number;
  private hwm: number;
  private transactionId: number;
  private needsCheck: boolean;
  private baseSizeBytes: number;
  private minFreePercent: number;
  private autoextend: AutoextendOptions | null;

  private layers = new Map<LayerId, Layer>();
  private devices = new Map<DevId, DeviceRow>();
  private chains = new Map<DevId, Chain>();
  private openCount = new Map<DevId, number>();
  private dirtyLayers = new Set<LayerId>();

  private freeReusable = 0;
  private freePending = 0;
  private pendingPunch: PBlock[] = [];
  private allocatedInTx = new Set<PBlock>();
  private inTx = false;
  private hwmAtTxStart = 0;
  private outOfSpace = false;
  private failed = false;
  private hooks: TransactionHooks[] = [];
  private punchSupported = true;
  private lockFd = -1;
  /** Visible mapped blocks per (device, key), for st_blocks; kept exact by every change. */
  private keyBlocks = new Map<string, number>();

  private readonly st: ReturnType<Pool['prepare']>;

  private constructor(root: string, db: Db, fd: number, readOnlyOpen: boolean) {
    this.root = root;
    this.dataFile = path.join(root, 'pool', 'data');
    this.metadataFile = path.join(root, 'pool', 'metadata.db');
    this.db = db;
    this.fd = fd;
    this.readOnlyOpen = readOnlyOpen;
    const sb = db.prepare('SELECT * FROM superblock WHERE id = 1').get() as Record<string, number | null>;
    this.blockSizeBytes = sb.block_size as number;
    this.dataBlocks = sb.data_blocks as number;
    this.hwm = sb.hwm as number;
    this.transactionId = sb.transaction_id as number;
    this.needsCheck = sb.needs_check === 1;
    this.baseSizeBytes = sb.base_size as number;
    this.minFreePercent = sb.min_free_pct as number;
    this.autoextend =
      sb.autoextend_threshold != null && sb.autoextend_percent != null && sb.autoextend_max != null
        ? { thresholdPercent: sb.autoextend_threshold, percent: sb.autoextend_percent, maxBytes: sb.autoextend_max }
        : null;
    this.st = this.prepare();
    this.loadState();
  }

  // ---------------------------------------------------------------- creation

  /** Create a new pool under `root` (root/pool/data + root/pool/metadata.db). Refuses an existing pool. */
  static create(root: string, opts: PoolCreateOptions = {}): Pool {
    const blockSizeBytes = opts.blockSizeBytes ?? DEFAULTS.blockSizeBytes;
    const dataSizeBytes = opts.dataSizeBytes ?? DEFAULTS.dataSizeBytes;
    const baseSizeBytes = opts.baseSizeBytes ?? DEFAULTS.baseSizeBytes;
    const minFreePercent = opts.minFreePercent ?? DEFAULTS.minFreePercent;
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
             needs_check, base_size, min_free_pct, autoextend_threshold, autoextend_percent, autoextend_max, created_ns)
           VALUES (1, ?, ?, ?, ?, 0, 0, 0, ?, ?, ?, ?, ?, ?)`,
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
      throw err;
    }
    fs.closeSync(fd);
    return Pool.open(root);
  }

  /** Open the pool under `root`. Refuses what is not a thinfs pool or a newer schema. */
  static open(root: string, opts: PoolOpenOptions = {}): Pool {
    const metadataFile = path.join(root, 'pool', 'metadata.db');
    if (!fs.existsSync(metadataFile)) {
      throw fail('ENOENT', 'open', root, 'no thinfs pool here; run `thinfs init` first');
    }
    const readOnly = opts.readOnly ?? false;
    // One writer per pool: a read-write open holds flock on pool/lock for its lifetime
    // (the kernel drops it if the process dies, so a killed daemon leaves no stale lock).
    let lockFd = -1;
    if (!readOnly) {
      lockFd = fs.openSync(path.join(root, 'pool', 'lock'), fs.constants.O_RDWR | fs.constants.O_CREAT, 0o600);
      if (!tryLockExclusive(lockFd)) {
        fs.closeSync(lockFd);
        throw fail('EBUSY', 'open', root, 'the pool is open for writing by another process (a running thinfs daemon?)');
      }
    }
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
      const pool = new Pool(root, db, fd, readOnly);
      pool.lockFd = lockFd;
      pool.checkOnOpen();
      return pool;
    } catch (err) {
      if (fd >= 0) fs.closeSync(fd);
      if (lockFd >= 0) fs.closeSync(lockFd);
      db.close();
      if (err instanceof ThinfsError) throw err;
      throw fail('EINVAL', 'open', metadataFile, `metadata is corrupt (${(err as Error).message}); restore it from a backup`);
    }
  }

  /**
   * Close the pool. By default commits first. `commit: false` drops the open transaction
   * as a crash would (used by crash tests).
   */
  close(opts: { commit?: boolean } = {}): void {
    if (opts.commit ?? true) {
      if (!this.failed && !this.readOnlyOpen) this.commit();
    } else if (this.inTx) {
      this.db.exec('ROLLBACK');
      this.inTx = false;
    }
    this.db.close();
    fs.closeSync(this.fd);
    this.fd = -1;
    if (this.lockFd >= 0) fs.closeSync(this.lockFd);
    this.lockFd = -1;
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
   * Call `beginWrite()` before writing so the change joins the pool's transaction.
   */
  metadataDb(): Db {
    return this.db;
  }

  // ---------------------------------------------------------------- devices

  /** Create a new, empty thin device. */
  createThin(name: string, opts: { kind?: DeviceKind; sizeLimitBytes?: number } = {}): DevId {
    this.checkWritablePool('create');
    this.validateNewName(name);
    this.beginWrite();
    const layer = this.insertLayer(null, 0);
    return this.insertDevice(name, null, opts.kind ?? 'thin', false, opts.sizeLimitBytes ?? this.baseSizeBytes, layer.id);
  }

  /**
   * Create a snapshot of `originId` in O(1). A read-only snapshot of a writable origin
   * (committing a container to an image) takes the origin's layer as it is and moves
   * the origin onto a new layer; otherwise the snapshot gets a new layer over the
   * origin's (which is frozen, forking a writable origin too).
   */
  createSnapshot(
    originId: DevId,
    name: string,
    opts: { kind?: DeviceKind; readOnly?: boolean; sizeLimitBytes?: number } = {},
  ): DevId {
    this.checkWritablePool('snapshot');
    const origin = this.requireDevice(originId, 'snapshot');
    if (origin.state !== 'active') throw fail('ENOENT', 'snapshot', origin.name, 'device is being deleted');
    this.validateNewName(name);
    this.beginWrite();
    const originLayer = this.layers.get(origin.layerId)!;
    const readOnly = opts.readOnly ?? false;
    const kind = opts.kind ?? (readOnly ? 'image' : 'container');
    const sizeLimit = opts.sizeLimitBytes ?? origin.sizeLimitBytes;
    if (!originLayer.frozen) {
      this.freezeLayer(originLayer);
      const moved = this.insertLayer(originLayer.id, originLayer.mapped);
      origin.layerId = moved.id;
      this.st.setDeviceLayer.run(moved.id, origin.id);
      this.chains.delete(origin.id);
      if (readOnly) {
        // The snapshot keeps the frozen layer: its blocks become the image's own.
        return this.insertDevice(name, origin.id, kind, true, sizeLimit, originLayer.id);
      }
    }
    const layer = this.insertLayer(originLayer.id, originLayer.mapped);
    if (readOnly) this.freezeLayer(layer);
    return this.insertDevice(name, origin.id, kind, readOnly, sizeLimit, layer.id);
  }

  /** Make a device read-only for good (an image); its layer is frozen. */
  setReadOnly(id: DevId): void {
    this.checkWritablePool('set read-only');
    const dev = this.requireDevice(id, 'set read-only');
    if (dev.readOnly) return;
    this.beginWrite();
    dev.readOnly = true;
    if (dev.kind === 'container') dev.kind = 'image';
    this.db.prepare('UPDATE devices SET read_only = 1, kind = ? WHERE id = ?').run(dev.kind, dev.id);
    this.freezeLayer(this.layers.get(dev.layerId)!);
  }

  /** Rename a device. */
  renameDevice(id: DevId, newName: string): void {
    this.checkWritablePool('rename');
    const dev = this.requireDevice(id, 'rename');
    this.validateNewName(newName);
    this.beginWrite();
    this.db.prepare('UPDATE devices SET name = ? WHERE id = ?').run(newName, id);
    dev.name = newName;
  }

  /**
   * Delete a device. While it is open or has snapshots the deletion is deferred (as
   * devicemapper's deferred deletion): recorded, counted in status, completed when the
   * last handle closes or the last child goes. Returns which happened.
   */
  deleteDevice(id: DevId): 'deleted' | 'deferred' {
    this.checkWritablePool('delete');
    const dev = this.requireDevice(id, 'delete');
    this.beginWrite();
    if (this.isBusy(dev)) {
      if (dev.state !== 'deferred') {
        dev.state = 'deferred';
        this.db.prepare("UPDATE devices SET state = 'deferred' WHERE id = ?").run(id);
        log.info({ device: dev.name }, 'deletion deferred: device is open or has snapshots');
      }
      return 'deferred';
    }
    this.removeDevice(dev);
    return 'deleted';
  }

  /** Open a handle on a device for block I/O. Counts as "in use" for deferred deletion. */
  openDevice(id: DevId): ThinDevice {
    const dev = this.requireDevice(id, 'open');
    if (dev.state === 'deferred') throw fail('ENOENT', 'open', dev.name, 'device is being deleted');
    this.openCount.set(id, (this.openCount.get(id) ?? 0) + 1);
    return new ThinDevice(this, id);
  }

  /** @internal ThinDevice.close. */
  releaseDevice(id: DevId): void {
    const n = (this.openCount.get(id) ?? 1) - 1;
    if (n > 0) {
      this.openCount.set(id, n);
      return;
    }
    this.openCount.delete(id);
    const dev = this.devices.get(id);
    if (dev?.state === 'deferred' && !this.isBusy(dev) && !this.readOnlyOpen && this.mode() !== 'read-only') {
      this.beginWrite();
      this.removeDevice(dev);
    }
  }

  /** A device by name, or undefined. */
  findDevice(name: string): DeviceInfo | undefined {
    for (const d of this.devices.values()) if (d.name === name) return this.info(d);
    return undefined;
  }

  /** A device by id, or undefined. */
  getDevice(id: DevId): DeviceInfo | undefined {
    const d = this.devices.get(id);
    return d === undefined ? undefined : this.info(d);
  }

  /** All devices, by id. */
  listDevices(): DeviceInfo[] {
    return [...this.devices.values()].sort((a, b) => a.id - b.id).map((d) => this.info(d));
  }

  /** The devices whose origin is `id` (direct snapshots). */
  childrenOf(id: DevId): DeviceInfo[] {
    const dev = this.requireDevice(id, 'children');
    return this.listDevices().filter((d) => {
      const l = this.layers.get(d.layerId)!;
      return d.id !== id && (l.parentId === dev.layerId || d.originId === id);
    });
  }

  /** The chain of a device: its layers top first (shared with fs/ for its own tables). */
  chainOf(id: DevId): Chain {
    let c = this.chains.get(id);
    if (c === undefined) {
      const dev = this.requireDevice(id, 'chain');
      const layers: LayerId[] = [];
      for (let l: LayerId | null = dev.layerId; l !== null; l = this.layers.get(l)!.parentId) layers.push(l);
      c = { top: dev.layerId, layers, pos: new Map(layers.map((l, i) => [l, i])) };
      this.chains.set(id, c);
    }
    return c;
  }

  // ---------------------------------------------------------------- space

  /** Pool status, as `thinfs info` shows it. */
  status(): PoolStatus {
    const bs = this.blockSizeBytes;
    const used = this.usedBlocks();
    const minFree = this.minFreeBlocks();
    let metaBytes = 0;
    for (const f of [this.metadataFile, `${this.metadataFile}-wal`]) {
      try {
        metaBytes += fs.statSync(f).size;
      } catch {
        /* no WAL yet */
      }
    }
    return {
      root: this.root,
      dataFile: this.dataFile,
      metadataFile: this.metadataFile,
      mode: this.mode(),
      needsCheck: this.needsCheck,
      blockSizeBytes: bs,
      dataTotalBytes: this.dataBlocks * bs,
      dataUsedBytes: used * bs,
      dataAvailableBytes: Math.max(0, this.dataBlocks - used - minFree) * bs,
      metadataUsedBytes: metaBytes,
      baseSizeBytes: this.baseSizeBytes,
      minFreePercent: this.minFreePercent,
      autoextend: this.autoextend,
      devices: [...this.devices.values()].filter((d) => d.state === 'active').length,
      deferredDeletions: [...this.devices.values()].filter((d) => d.state === 'deferred').length,
      transactionId: this.transactionId,
      pendingDiscardBlocks: this.pendingPunch.length,
    };
  }

  /** The pool mode, ordered by degradation: write, out-of-data-space, read-only, fail. */
  mode(): PoolMode {
    if (this.failed) return 'fail';
    if (this.needsCheck || this.readOnlyOpen) return 'read-only';
    if (this.outOfSpace) return 'out-of-data-space';
    return 'write';
  }

  /** Grow the data file to `dataSizeBytes` (rounded down to whole blocks). Shrinking is refused. */
  resize(dataSizeBytes: number): void {
    this.checkWritablePool('resize');
    const blocks = Math.floor(dataSizeBytes / this.blockSizeBytes);
    if (!Number.isSafeInteger(dataSizeBytes) || blocks < this.dataBlocks) {
      throw fail(
        'EINVAL',
        'resize',
        this.dataFile,
        `shrinking the data file is not supported (now ${this.dataBlocks * this.blockSizeBytes} bytes); only growth`,
      );
    }
    if (blocks === this.dataBlocks) return;
    this.beginWrite();
    this.growTo(blocks);
    this.commit();
  }

  /** Punch every free block out of the data file; returns the bytes given back to the host. */
  trim(): number {
    this.checkWritablePool('trim');
    this.commit();
    const before = fs.fstatSync(this.fd).blocks * 512;
    const free = this.db.prepare('SELECT pblock FROM free_blocks ORDER BY pblock').pluck().all() as PBlock[];
    this.punchBlocks(free);
    this.punchRange(this.hwm, this.dataBlocks - this.hwm);
    const after = fs.fstatSync(this.fd).blocks * 512;
    return Math.max(0, before - after);
  }

  // ---------------------------------------------------------------- transactions

  /** Join (or open) the current metadata transaction. Every metadata write goes through here. */
  beginWrite(): void {
    if (this.inTx) return;
    if (this.readOnlyOpen) throw fail('EROFS', 'write', this.root, 'pool opened read-only');
    this.db.exec('BEGIN IMMEDIATE');
    this.inTx = true;
    this.hwmAtTxStart = this.hwm;
  }

  /** True when there are uncommitted changes. */
  dirty(): boolean {
    return this.inTx;
  }

  /**
   * Commit the current transaction durably: flush counters, fdatasync the data file,
   * COMMIT the metadata, then punch the blocks this transaction freed.
   */
  commit(): void {
    if (!this.inTx) return;
    try {
      for (const h of this.hooks) h.beforeCommit?.();
      for (const id of this.dirtyLayers) {
        const l = this.layers.get(id);
        if (l !== undefined) this.st.updateLayerCounts.run(l.mapped, l.owned, id);
      }
      this.st.updateSuperblock.run(this.hwm, this.dataBlocks, this.transactionId + 1);
      fs.fdatasyncSync(this.fd);
      this.db.exec('COMMIT');
    } catch (err) {
      this.failed = true;
      log.error({ err }, 'commit failed: pool is now in fail mode');
      throw fail('EIO', 'commit', this.metadataFile, `commit failed: ${(err as Error).message}`);
    }
    this.inTx = false;
    this.transactionId += 1;
    this.dirtyLayers.clear();
    this.freeReusable += this.freePending;
    this.freePending = 0;
    this.allocatedInTx = new Set();
    const punch = this.pendingPunch;
    this.pendingPunch = [];
    this.punchBlocks(punch);
  }

  /** Roll back everything since the last commit; in-memory state is reloaded from metadata. */
  abort(): void {
    if (!this.inTx) return;
    this.db.exec('ROLLBACK');
    this.inTx = false;
    const stray = [...this.allocatedInTx];
    this.allocatedInTx = new Set();
    this.pendingPunch = [];
    this.keyBlocks.clear();
    this.loadState();
    // Blocks this transaction allocated hold data nobody maps now: give them back.
    this.punchBlocks(stray);
    for (const h of this.hooks) h.onAbort?.();
  }

  // ---------------------------------------------------------------- check

  /**
   * Like thin_check: recompute block references from the mappings and compare them with
   * the space map. A leak (a block neither mapped nor free) is non-fatal and `repair`
   * returns it to the free list; a block mapped twice, or mapped and free, is fatal.
   */
  check(opts: { repair?: boolean } = {}): CheckReport {
    const repair = opts.repair ?? false;
    if (repair) this.checkWritablePool('check --repair', true);
    const issues: CheckIssue[] = [];
    const refs = new Uint8Array(this.hwm);
    const fatal = (message: string, fix: string) => issues.push({ severity: 'fatal', message, fix });
    let beyond = 0;
    let twice = 0;
    let orphanRows = 0;
    const layerIds = new Set(this.db.prepare('SELECT id FROM layers').pluck().all() as number[]);
    for (const row of this.db.prepare('SELECT layer, pblock FROM mappings WHERE pblock IS NOT NULL').iterate() as Iterable<{
      layer: number;
      pblock: number;
    }>) {
      if (!layerIds.has(row.layer)) orphanRows++;
      if (row.pblock < 0 || row.pblock >= this.hwm) {
        beyond++;
        continue;
      }
      if (refs[row.pblock]! >= 1) twice++;
      if (refs[row.pblock]! < 255) refs[row.pblock]! += 1;
    }
    if (beyond > 0) fatal(`${beyond} mapping(s) point beyond the allocated data blocks`, 'restore the pool from a backup; thinfs cannot recover this data');
    if (twice > 0) fatal(`${twice} data block(s) are mapped more than once`, 'copy the affected files out, then delete and re-create the devices that share them');
    if (orphanRows > 0) {
      fatal(`${orphanRows} mapping(s) belong to layers that do not exist`, 'run `thinfs check --repair` to drop them');
    }
    let freeMapped = 0;
    let freeBeyond = 0;
    const free = new Uint8Array(this.hwm);
    for (const pb of this.db.prepare('SELECT pblock FROM free_blocks').pluck().iterate() as Iterable<number>) {
      if (pb < 0 || pb >= this.hwm) {
        freeBeyond++;
        continue;
      }
      free[pb] = 1;
      if (refs[pb]! > 0) freeMapped++;
    }
    if (freeMapped > 0) fatal(`${freeMapped} block(s) are both mapped and on the free list`, 'copy the affected files out and delete their devices, then run `thinfs check --repair`');
    if (freeBeyond > 0) issues.push({ severity: 'leak', message: `${freeBeyond} free-list entr(ies) lie beyond the high-water mark`, fix: 'run `thinfs check --repair` to drop them' });
    const leaked: number[] = [];
    for (let b = 0; b < this.hwm; b++) if (refs[b] === 0 && free[b] === 0) leaked.push(b);
    if (leaked.length > 0) {
      issues.push({ severity: 'leak', message: `${leaked.length} data block(s) leaked (neither mapped nor free)`, fix: 'run `thinfs check --repair` to return them to the free list' });
    }
    // Devices and layers.
    const badDevices = this.db.prepare('SELECT count(*) FROM devices WHERE layer_id NOT IN (SELECT id FROM layers)').pluck().get() as number;
    if (badDevices > 0) fatal(`${badDevices} device(s) point at missing layers`, 'delete those devices with `thinfs rm --force`');
    const badParents = this.db.prepare('SELECT count(*) FROM layers WHERE parent_id IS NOT NULL AND parent_id NOT IN (SELECT id FROM layers)').pluck().get() as number;
    if (badParents > 0) fatal(`${badParents} layer(s) have a missing parent`, 'restore the pool from a backup');
    const counts = this.db.prepare('SELECT layer, count(*) AS n FROM mappings WHERE pblock IS NOT NULL GROUP BY layer').all() as { layer: number; n: number }[];
    const ownedByLayer = new Map(counts.map((c) => [c.layer as LayerId, c.n]));
    let badCounts = 0;
    for (const l of this.layers.values()) if ((ownedByLayer.get(l.id) ?? 0) !== l.owned) badCounts++;
    if (badCounts > 0) {
      issues.push({ severity: 'leak', message: `${badCounts} layer(s) have a wrong block count`, fix: 'run `thinfs check --repair` to recount' });
    }
    if (this.fdSizeBlocks() < this.hwm) {
      fatal(`the data file is shorter than the ${this.hwm} blocks handed out`, 'restore the data file, or grow it back with `thinfs resize`');
    }

    let repaired = false;
    let clearedNeedsCheck = false;
    if (repair) {
      this.beginWrite();
      const nFatalBeforeRepair = issues.filter((i) => i.severity === 'fatal').length - (orphanRows > 0 ? 1 : 0);
      if (orphanRows > 0) {
        this.db.prepare('DELETE FROM mappings WHERE layer NOT IN (SELECT id FROM layers)').run();
      }
      const ins = this.db.prepare('INSERT OR IGNORE INTO free_blocks (pblock, freed_txn) VALUES (?, ?)');
      for (const b of leaked) ins.run(b, this.transactionId);
      this.db.prepare('DELETE FROM free_blocks WHERE pblock >= ? OR pblock < 0').run(this.hwm);
      for (const l of this.layers.values()) {
        l.owned = ownedByLayer.get(l.id) ?? 0;
        this.dirtyLayers.add(l.id);
      }
      if (nFatalBeforeRepair === 0 && this.fdSizeBlocks() >= this.hwm && this.needsCheck) {
        this.db.prepare('UPDATE superblock SET needs_check = 0').run();
        this.needsCheck = false;
        clearedNeedsCheck = true;
      }
      this.commit();
      this.loadState();
      this.punchBlocks(leaked as PBlock[]);
      repaired = clearedNeedsCheck || orphanRows > 0 || leaked.length > 0 || freeBeyond > 0 || badCounts > 0;
    }
    const nFatal = issues.filter((i) => i.severity === 'fatal').length;
    const nLeak = issues.length - nFatal;
    return { clean: issues.length === 0, fatal: nFatal, leaks: nLeak, issues, repaired, blocksChecked: this.hwm };
  }

  // ---------------------------------------------------------------- block I/O (used by ThinDevice)

  /** @internal Resolve one block through the chain of `dev`. */
  findBlock(dev: DevId, key: FileKey, fblock: FBlock): FoundBlock | undefined {
    const chain = this.chainOf(dev);
    const r = this.resolve(chain, key, fblock, fblock + 1).get(fblock);
    if (r === undefined) return undefined;
    if (r.own !== undefined) return r.own === null ? undefined : { pblock: r.own, layerId: chain.top, own: true };
    if (r.lower === undefined || r.lower === null) return undefined;
    return { pblock: r.lower, layerId: chain.layers[r.lowerPos]!, own: false };
  }

  /** @internal Fill `buf` with the device's bytes of `key` from `offsetBytes`; unmapped reads as zeros. */
  readKey(dev: DevId, key: FileKey, offsetBytes: number, buf: Uint8Array): void {
    const len = buf.byteLength;
    if (len === 0) return;
    const bs = this.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + len - 1) / bs) + 1;
    const res = this.resolve(this.chainOf(dev), key, fb0, fb1);
    // Coalesce runs of consecutive pool blocks into one pread.
    let runBufStart = 0;
    let runPos = -1;
    let runLen = 0;
    const flush = () => {
      if (runLen > 0) this.preadFully(buf.subarray(runBufStart, runBufStart + runLen), runPos);
      runLen = 0;
    };
    for (let fb = fb0; fb < fb1; fb++) {
      const blockStart = fb * bs;
      const from = Math.max(offsetBytes, blockStart);
      const to = Math.min(offsetBytes + len, blockStart + bs);
      const bufStart = from - offsetBytes;
      const r = res.get(fb);
      const pb = r === undefined ? undefined : r.own !== undefined ? r.own : r.lower;
      if (pb === undefined || pb === null) {
        flush();
        buf.fill(0, bufStart, bufStart + (to - from));
        continue;
      }
      const pos = pb * bs + (from - blockStart);
      if (runLen > 0 && runPos + runLen === pos && runBufStart + runLen === bufStart) {
        runLen += to - from;
      } else {
        flush();
        runBufStart = bufStart;
        runPos = pos;
        runLen = to - from;
      }
    }
    flush();
  }

  /**
   * @internal Write `data` at `offsetBytes` of `key` on device `dev`. Unmapped blocks are
   * allocated (the rest of a partial block reads as zeros); a block a lower layer maps is
   * copied once into a new block (copy-on-write, that block only); an own block is
   * written in place. Fails with ENOSPC before changing anything when the pool or the
   * device's size limit cannot take the new blocks.
   */
  writeKey(dev: DevId, key: FileKey, offsetBytes: number, data: Uint8Array): void {
    const len = data.byteLength;
    if (len === 0) return;
    const d = this.requireWritableDevice(dev, 'write');
    const bs = this.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + len - 1) / bs) + 1;
    const chain = this.chainOf(dev);
    const top = this.layers.get(chain.top)!;
    const res = this.resolve(chain, key, fb0, fb1);
    let needAlloc = 0;
    let newlyMapped = 0;
    for (let fb = fb0; fb < fb1; fb++) {
      const r = res.get(fb);
      const own = r?.own;
      if (own === undefined || own === null) needAlloc++;
      const visible = r === undefined ? undefined : own !== undefined ? own : r.lower;
      if (visible === undefined || visible === null) newlyMapped++;
    }
    const limitBlocks = Math.floor(d.sizeLimitBytes / bs);
    if (top.mapped + newlyMapped > limitBlocks) {
      throw fail('ENOSPC', 'write', d.name, `device size limit of ${d.sizeLimitBytes} bytes reached`);
    }
    this.beginWrite();
    const fresh = needAlloc > 0 ? this.allocate(needAlloc) : [];
    let next = 0;
    const writes: { pos: number; buf: Uint8Array }[] = [];
    for (let fb = fb0; fb < fb1; fb++) {
      const blockStart = fb * bs;
      const from = Math.max(offsetBytes, blockStart);
      const to = Math.min(offsetBytes + len, blockStart + bs);
      const slice = data.subarray(from - offsetBytes, to - offsetBytes);
      const r = res.get(fb);
      const own = r?.own;
      if (own !== undefined && own !== null) {
        writes.push({ pos: own * bs + (from - blockStart), buf: slice });
        continue;
      }
      const pb = fresh[next++]!;
      if (to - from === bs) {
        writes.push({ pos: pb * bs, buf: slice });
      } else {
        // Partial block: start from the lower block (copy-on-write) or from zeros.
        const block = Buffer.alloc(bs);
        const lower = own === null ? undefined : r?.lower;
        if (lower !== undefined && lower !== null) this.preadFully(block, lower * bs);
        block.set(slice, from - blockStart);
        writes.push({ pos: pb * bs, buf: block });
      }
      this.st.upsertMapping.run(key, fb, chain.top, pb);
    }
    top.owned += fresh.length;
    top.mapped += newlyMapped;
    const kb = this.keyBlocks.get(`${dev}:${key}`);
    if (kb !== undefined) this.keyBlocks.set(`${dev}:${key}`, kb + newlyMapped);
    this.dirtyLayers.add(top.id);
    this.pwriteRuns(writes);
  }

  /**
   * @internal Discard file blocks [fromBlock, toBlock) of `key`: free the blocks the
   * device owns there and hide lower layers' blocks, so the range reads as zeros.
   */
  discardKey(dev: DevId, key: FileKey, fromBlock: FBlock, toBlock: FBlock): void {
    if (toBlock <= fromBlock) return;
    this.requireWritableDevice(dev, 'discard');
    const chain = this.chainOf(dev);
    const top = this.layers.get(chain.top)!;
    const res = this.resolve(chain, key, fromBlock, toBlock);
    if (res.size === 0) return;
    this.beginWrite();
    this.keyBlocks.delete(`${dev}:${key}`);
    for (const [fb, r] of res) {
      const lowerVisible = r.lower !== undefined && r.lower !== null;
      if (r.own !== undefined) {
        if (r.own !== null) {
          this.freeBlock(r.own);
          top.owned--;
          top.mapped--;
          if (lowerVisible) this.st.upsertMapping.run(key, fb, chain.top, null);
          else this.st.deleteMapping.run(key, fb, chain.top);
        }
      } else if (lowerVisible) {
        this.st.upsertMapping.run(key, fb, chain.top, null);
        top.mapped--;
      }
    }
    this.dirtyLayers.add(top.id);
  }

  /**
   * @internal Set the length of `key` to `sizeBytes`: whole blocks past it are discarded
   * and the tail of a partial last block is zeroed (so growing again reads zeros).
   */
  truncateKey(dev: DevId, key: FileKey, sizeBytes: number): void {
    const bs = this.blockSizeBytes;
    const keepBlocks = Math.ceil(sizeBytes / bs);
    this.discardKey(dev, key, keepBlocks, Number.MAX_SAFE_INTEGER);
    const tail = sizeBytes % bs;
    const last = tail === 0 ? undefined : this.findBlock(dev, key, keepBlocks - 1);
    if (last === undefined) return;
    if (last.own && !this.allocatedInTx.has(last.pblock)) {
      // The block holds committed data the file still had before this (uncommitted)
      // shrink: zeroing it in place would lose that data if we crash before the commit.
      // Move the block's head to a fresh block instead and free the old one on commit.
      const block = Buffer.alloc(bs);
      this.preadFully(block.subarray(0, tail), last.pblock * bs);
      this.discardKey(dev, key, keepBlocks - 1, keepBlocks);
      this.writeKey(dev, key, (keepBlocks - 1) * bs, block);
      return;
    }
    this.writeKey(dev, key, sizeBytes, Buffer.alloc(bs - tail));
  }

  /**
   * @internal Forget everything the device's own layer holds for `key` (the file is
   * gone in this device): own blocks are freed, own rows dropped. Lower layers are
   * untouched.
   */
  removeKey(dev: DevId, key: FileKey): void {
    this.requireWritableDevice(dev, 'remove');
    const chain = this.chainOf(dev);
    const top = this.layers.get(chain.top)!;
    const res = this.resolve(chain, key, 0, Number.MAX_SAFE_INTEGER);
    let any = false;
    for (const [, r] of res) {
      if (r.own === undefined) continue;
      if (!any) this.beginWrite();
      any = true;
      const lowerVisible = r.lower !== undefined && r.lower !== null;
      if (r.own !== null) {
        this.freeBlock(r.own);
        top.owned--;
        if (!lowerVisible) top.mapped--;
      } else if (lowerVisible) {
        top.mapped++;
      }
    }
    if (!any) return;
    this.keyBlocks.delete(`${dev}:${key}`);
    this.st.deleteKeyInLayer.run(chain.top, key);
    this.dirtyLayers.add(top.id);
  }

  /** @internal Blocks of `key` visible through the chain of `dev` (a file's st_blocks). */
  keyMappedBlocks(dev: DevId, key: FileKey): number {
    const k = `${dev}:${key}`;
    let n = this.keyBlocks.get(k);
    if (n === undefined) {
      n = 0;
      for (const r of this.resolve(this.chainOf(dev), key, 0, Number.MAX_SAFE_INTEGER).values()) {
        const v = r.own !== undefined ? r.own : r.lower;
        if (v !== undefined && v !== null) n++;
      }
      if (this.keyBlocks.size > 100_000) this.keyBlocks.clear();
      this.keyBlocks.set(k, n);
    }
    return n;
  }

  /** @internal Mapped and exclusive block counts of a device. */
  counts(dev: DevId): { mappedBlocks: number; exclusiveBlocks: number } {
    const d = this.requireDevice(dev, 'stat');
    const l = this.layers.get(d.layerId)!;
    return { mappedBlocks: l.mapped, exclusiveBlocks: l.owned };
  }

  /** @internal Throw EROFS/ENOENT unless `dev` can take writes. */
  requireWritableDevice(dev: DevId, op: string): DeviceRow {
    const d = this.requireDevice(dev, op);
    if (d.readOnly) throw fail('EROFS', op, d.name, 'device is read-only');
    this.checkWritablePool(op);
    return d;
  }

  // ---------------------------------------------------------------- private helpers

  private prepare() {
    const db = this.db;
    return {
      rangeAll: db.prepare('SELECT fblock, layer, pblock FROM mappings WHERE ino = ? AND fblock >= ? AND fblock < ?'),
      upsertMapping: db.prepare(
        'INSERT INTO mappings (ino, fblock, layer, pblock) VALUES (?, ?, ?, ?) ON CONFLICT (ino, fblock, layer) DO UPDATE SET pblock = excluded.pblock',
      ),
      deleteMapping: db.prepare('DELETE FROM mappings WHERE ino = ? AND fblock = ? AND layer = ?'),
      deleteKeyInLayer: db.prepare('DELETE FROM mappings WHERE layer = ? AND ino = ?'),
      layerBlocks: db.prepare('SELECT pblock FROM mappings WHERE layer = ? AND pblock IS NOT NULL').pluck(),
      deleteLayerMappings: db.prepare('DELETE FROM mappings WHERE layer = ?'),
      takeFree: db.prepare('SELECT pblock FROM free_blocks WHERE freed_txn <= ? ORDER BY pblock LIMIT ?').pluck(),
      deleteFree: db.prepare('DELETE FROM free_blocks WHERE pblock = ?'),
      insertFree: db.prepare('INSERT INTO free_blocks (pblock, freed_txn) VALUES (?, ?)'),
      insertLayer: db.prepare('INSERT INTO layers (parent_id, depth, frozen, mapped, owned) VALUES (?, ?, 0, ?, 0)'),
      updateLayerCounts: db.prepare('UPDATE layers SET mapped = ?, owned = ? WHERE id = ?'),
      freezeLayer: db.prepare('UPDATE layers SET frozen = 1 WHERE id = ?'),
      deleteLayer: db.prepare('DELETE FROM layers WHERE id = ?'),
      insertDevice: db.prepare(
        'INSERT INTO devices (name, origin_id, kind, read_only, size_limit, created_ns, state, layer_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
      ),
      setDeviceLayer: db.prepare('UPDATE devices SET layer_id = ? WHERE id = ?'),
      deleteDevice: db.prepare('DELETE FROM devices WHERE id = ?'),
      updateSuperblock: db.prepare('UPDATE superblock SET hwm = ?, data_blocks = ?, transaction_id = ?'),
    };
  }

  /** (Re)load the in-memory view of the metadata: counters, layers, devices. */
  private loadState(): void {
    const sb = this.db.prepare('SELECT hwm, data_blocks, transaction_id, needs_check FROM superblock WHERE id = 1').get() as Record<string, number>;
    this.hwm = sb.hwm!;
    this.dataBlocks = sb.data_blocks!;
    this.transactionId = sb.transaction_id!;
    this.needsCheck = sb.needs_check === 1;
    this.freeReusable = this.db.prepare('SELECT count(*) FROM free_blocks').pluck().get() as number;
    this.freePending = 0;
    this.dirtyLayers.clear();
    this.layers.clear();
    for (const r of this.db.prepare('SELECT id, parent_id, depth, frozen, mapped, owned FROM layers').all() as Record<string, number | null>[]) {
      this.layers.set(r.id as LayerId, {
        id: r.id as LayerId,
        parentId: r.parent_id as LayerId | null,
        depth: r.depth as number,
        frozen: r.frozen === 1,
        mapped: r.mapped as number,
        owned: r.owned as number,
        children: 0,
      });
    }
    for (const l of this.layers.values()) if (l.parentId !== null) this.layers.get(l.parentId)!.children++;
    this.devices.clear();
    this.db.defaultSafeIntegers(true);
    const rows = this.db.prepare('SELECT * FROM devices').all() as Record<string, bigint | string | null>[];
    this.db.defaultSafeIntegers(false);
    for (const r of rows) {
      this.devices.set(Number(r.id) as DevId, {
        id: Number(r.id) as DevId,
        name: r.name as string,
        originId: r.origin_id === null ? null : (Number(r.origin_id) as DevId),
        kind: r.kind as DeviceKind,
        readOnly: Number(r.read_only) === 1,
        sizeLimitBytes: Number(r.size_limit),
        createdNs: r.created_ns as bigint,
        state: r.state as 'active' | 'deferred',
        layerId: Number(r.layer_id) as LayerId,
      });
    }
    this.chains.clear();
  }

  private checkOnOpen(): void {
    const problems: string[] = [];
    const sizeBlocks = this.fdSizeBlocks();
    if (sizeBlocks < this.hwm) problems.push(`data file holds ${sizeBlocks} blocks but ${this.hwm} are in use`);
    if (problems.length > 0 && !this.readOnlyOpen) {
      this.db.prepare('UPDATE superblock SET needs_check = 1').run();
      this.needsCheck = true;
    }
    for (const p of problems) log.error({ problem: p }, 'pool needs check; run `thinfs check --repair`');
    if (this.needsCheck) {
      log.warn('pool is marked needs_check: read-only until `thinfs check --repair` succeeds');
      return;
    }
    if (!this.readOnlyOpen) {
      if (sizeBlocks < this.dataBlocks) fs.ftruncateSync(this.fd, this.dataBlocks * this.blockSizeBytes);
      // Crash rule 5: data written by an uncommitted transaction beyond the high-water mark.
      this.punchRange(this.hwm, this.dataBlocks - this.hwm);
      // Complete deferred deletions that became possible while we were down.
      for (const d of [...this.devices.values()]) {
        if (d.state === 'deferred' && this.devices.has(d.id) && !this.isBusy(d)) {
          this.beginWrite();
          this.removeDevice(d);
        }
      }
      this.commit();
    }
  }

  private fdSizeBlocks(): number {
    return Math.floor(fs.fstatSync(this.fd).size / this.blockSizeBytes);
  }

  private checkWritablePool(op: string, allowNeedsCheck = false): void {
    if (this.failed) throw fail('EIO', op, this.root, 'pool is in fail mode after an I/O error; restart it');
    if (this.readOnlyOpen) throw fail('EROFS', op, this.root, 'pool opened read-only');
    if (this.needsCheck && !allowNeedsCheck) {
      throw fail('EROFS', op, this.root, 'pool needs a check; run `thinfs check --repair`');
    }
  }

  private requireDevice(id: DevId, op: string): DeviceRow {
    const d = this.devices.get(id);
    if (d === undefined) throw fail('ENOENT', op, `device ${id}`, 'no such device');
    return d;
  }

  private validateNewName(name: string): void {
    if (!/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/.test(name)) {
      throw fail('EINVAL', 'create', name, 'device names are 1-128 characters of letters, digits, _ . : - (not starting with a symbol)');
    }
    for (const d of this.devices.values()) if (d.name === name) throw fail('EEXIST', 'create', name, 'a device with this name exists');
  }

  private info(d: DeviceRow): DeviceInfo {
    const l = this.layers.get(d.layerId)!;
    return {
      id: d.id,
      name: d.name,
      originId: d.originId,
      kind: d.kind,
      readOnly: d.readOnly,
      sizeLimitBytes: d.sizeLimitBytes,
      createdNs: d.createdNs,
      state: d.state,
      layerId: d.layerId,
      mappedBlocks: l.mapped,
      exclusiveBlocks: l.owned,
      depth: l.depth,
    };
  }

  private isBusy(d: DeviceRow): boolean {
    return (this.openCount.get(d.id) ?? 0) > 0 || this.layers.get(d.layerId)!.children > 0;
  }

  private insertLayer(parentId: LayerId | null, mapped: number): Layer {
    const parent = parentId === null ? undefined : this.layers.get(parentId)!;
    const depth = parent === undefined ? 1 : parent.depth + 1;
    const id = Number(this.st.insertLayer.run(parentId, depth, mapped).lastInsertRowid) as LayerId;
    const layer: Layer = { id, parentId, depth, frozen: false, mapped, owned: 0, children: 0 };
    this.layers.set(id, layer);
    if (parent !== undefined) parent.children++;
    return layer;
  }

  private freezeLayer(l: Layer): void {
    if (l.frozen) return;
    l.frozen = true;
    this.st.freezeLayer.run(l.id);
  }

  private insertDevice(name: string, originId: DevId | null, kind: DeviceKind, readOnly: boolean, sizeLimitBytes: number, layerId: LayerId): DevId {
    const createdNs = nowNs();
    const id = Number(
      this.st.insertDevice.run(name, originId, kind, readOnly ? 1 : 0, sizeLimitBytes, createdNs, 'active', layerId).lastInsertRowid,
    ) as DevId;
    this.devices.set(id, { id, name, originId, kind, readOnly, sizeLimitBytes, createdNs, state: 'active', layerId });
    return id;
  }

  /** Drop a device that is not busy, then every layer nobody needs any more. */
  private removeDevice(dev: DeviceRow): void {
    this.keyBlocks.clear();
    this.st.deleteDevice.run(dev.id);
    this.devices.delete(dev.id);
    this.chains.delete(dev.id);
    this.collectLayer(dev.layerId);
  }

  /** Delete layer `id` (freeing its blocks) when no device and no child layer uses it; walk up. */
  private collectLayer(id: LayerId | null): void {
    while (id !== null) {
      const l = this.layers.get(id);
      if (l === undefined || l.children > 0) return;
      const owner = [...this.devices.values()].find((d) => d.layerId === id);
      if (owner !== undefined) {
        // A deferred deletion waiting for its last child: complete it now.
        if (owner.state === 'deferred' && !this.isBusy(owner)) {
          this.st.deleteDevice.run(owner.id);
          this.devices.delete(owner.id);
          this.chains.delete(owner.id);
          log.info({ device: owner.name }, 'deferred deletion completed');
        } else {
          return;
        }
      }
      for (const pb of this.st.layerBlocks.all(id) as PBlock[]) this.freeBlock(pb);
      this.st.deleteLayerMappings.run(id);
      this.st.deleteLayer.run(id);
      this.layers.delete(id);
      this.dirtyLayers.delete(id);
      if (l.parentId !== null) this.layers.get(l.parentId)!.children--;
      id = l.parentId;
    }
  }

  /** Rows of (key, [fb0, fb1)) through the chain: per file block, own and nearest lower row. */
  private resolve(chain: Chain, key: FileKey, fb0: FBlock, fb1: FBlock): Map<FBlock, Resolved> {
    const out = new Map<FBlock, Resolved>();
    for (const row of this.st.rangeAll.iterate(key, fb0, fb1) as Iterable<{ fblock: number; layer: LayerId; pblock: PBlock | null }>) {
      const p = chain.pos.get(row.layer);
      if (p === undefined) continue;
      let r = out.get(row.fblock);
      if (r === undefined) {
        r = { own: undefined, lower: undefined, lowerPos: Number.MAX_SAFE_INTEGER };
        out.set(row.fblock, r);
      }
      if (p === 0) r.own = row.pblock;
      else if (p < r.lowerPos) {
        r.lower = row.pblock;
        r.lowerPos = p;
      }
    }
    return out;
  }

  private usedBlocks(): number {
    return this.hwm - this.freeReusable - this.freePending;
  }

  private minFreeBlocks(): number {
    return Math.ceil((this.dataBlocks * this.minFreePercent) / 100);
  }

  /**
   * Hand out `n` blocks: committed free blocks first (lowest first), then fresh ones past
   * the high-water mark. Autoextends the data file when configured. Throws ENOSPC without
   * changing anything when the pool can't give `n` blocks above the free-space floor.
   */
  private allocate(n: number): PBlock[] {
    const usedAfter = this.usedBlocks() + n;
    if (this.autoextend !== null) this.maybeAutoextend(usedAfter);
    const supply = this.dataBlocks - this.hwm + this.freeReusable;
    if (supply < n || this.dataBlocks - usedAfter < this.minFreeBlocks()) {
      if (!this.outOfSpace) log.warn({ needBlocks: n, usedBlocks: this.usedBlocks(), dataBlocks: this.dataBlocks }, 'pool out of data space: allocation refused (minimum free space reached)');
      this.outOfSpace = true;
      throw fail('ENOSPC', 'alloc', this.root, 'thin pool out of data space');
    }
    this.outOfSpace = false;
    const out: PBlock[] = [];
    if (this.freeReusable > 0) {
      for (const pb of this.st.takeFree.all(this.transactionId, n) as PBlock[]) {
        this.st.deleteFree.run(pb);
        out.push(pb);
      }
      this.freeReusable -= out.length;
    }
    while (out.length < n) out.push(this.hwm++ as PBlock);
    for (const pb of out) this.allocatedInTx.add(pb);
    return out;
  }

  private maybeAutoextend(usedAfter: number): void {
    const ae = this.autoextend!;
    const maxBlocks = Math.floor(ae.maxBytes / this.blockSizeBytes);
    while ((usedAfter + this.minFreeBlocks()) * 100 >= this.dataBlocks * ae.thresholdPercent && this.dataBlocks < maxBlocks) {
      const grown = Math.min(maxBlocks, Math.max(this.dataBlocks + 1, Math.floor(this.dataBlocks * (1 + ae.percent / 100))));
      log.info({ fromBytes: this.dataBlocks * this.blockSizeBytes, toBytes: grown * this.blockSizeBytes }, 'autoextending the data file');
      this.growTo(grown);
    }
  }

  private growTo(blocks: number): void {
    fs.ftruncateSync(this.fd, blocks * this.blockSizeBytes);
    this.dataBlocks = blocks;
    this.st.updateSuperblock.run(this.hwm, this.dataBlocks, this.transactionId);
    this.outOfSpace = false;
  }

  /** Return a block to the space map; reusable only after this transaction commits. */
  private freeBlock(pb: PBlock): void {
    this.st.insertFree.run(pb, this.transactionId + 1);
    this.freePending++;
    this.pendingPunch.push(pb);
  }

  private punchBlocks(blocks: PBlock[]): void {
    if (blocks.length === 0) return;
    const sorted = [...blocks].sort((a, b) => a - b);
    let start = sorted[0]!;
    let len = 1;
    for (let i = 1; i <= sorted.length; i++) {
      const b = sorted[i];
      if (b !== undefined && b === start + len) {
        len++;
        continue;
      }
      this.punchRange(start, len);
      if (b !== undefined) {
        start = b;
        len = 1;
      }
    }
  }

  private punchRange(startBlock: number, lenBlocks: number): void {
    if (lenBlocks <= 0 || !this.punchSupported) return;
    try {
      punchHole(this.fd, startBlock * this.blockSizeBytes, lenBlocks * this.blockSizeBytes);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'ENOSYS') {
        this.punchSupported = false;
        log.warn({ err }, 'the data file system cannot punch holes: freed space is not returned to the host');
        return;
      }
      throw err;
    }
  }

  private preadFully(buf: Uint8Array, pos: number): void {
    let done = 0;
    while (done < buf.byteLength) {
      const n = fs.readSync(this.fd, buf, done, buf.byteLength - done, pos + done);
      if (n === 0) {
        buf.fill(0, done);
        return;
      }
      done += n;
    }
  }

  /** Write segments, merging ones that are contiguous in the data file into one writev. */
  private pwriteRuns(writes: { pos: number; buf: Uint8Array }[]): void {
    let i = 0;
    while (i < writes.length) {
      const first = writes[i]!;
      const bufs: Uint8Array[] = [first.buf];
      let end = first.pos + first.buf.byteLength;
      let j = i + 1;
      while (j < writes.length && writes[j]!.pos === end && bufs.length < 512) {
        bufs.push(writes[j]!.buf);
        end += writes[j]!.buf.byteLength;
        j++;
      }
      let pos = first.pos;
      let pending = bufs;
      while (pending.length > 0) {
        let n = bufs.length === 1 ? fs.writeSync(this.fd, pending[0]!, 0, pending[0]!.byteLength, pos) : fs.writevSync(this.fd, pending, pos);
        pos += n;
        // Short write: drop what went out and retry the rest.
        const rest: Uint8Array[] = [];
        for (const b of pending) {
          if (n >= b.byteLength) {
            n -= b.byteLength;
          } else {
            rest.push(b.subarray(n));
            n = 0;
          }
        }
        pending = rest;
      }
      i = j;
    }
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

/**
 * A handle on one thin device (dm_thin_device): find/read/write/discard of file blocks.
 * Close it when done; a device with open handles is only deleted once they close.
 */
export class ThinDevice {
  private closed = false;

  /** @internal Use Pool.openDevice. */
  constructor(
    readonly pool: Pool,
    readonly id: DevId,
  ) {}

  /** Block size of the pool, in bytes. */
  get blockSizeBytes(): number {
    return this.pool.blockSizeBytes;
  }

  /** The device's current description (name, kind, counts). */
  info(): DeviceInfo {
    const i = this.pool.getDevice(this.id);
    if (i === undefined) throw fail('ENOENT', 'info', `device ${this.id}`, 'device was deleted');
    return i;
  }

  /** The device's layer chain, top first (changes when the device is snapshotted). */
  chain(): Chain {
    return this.pool.chainOf(this.id);
  }

  /** Where file block `fblock` of `key` lives, or undefined when nothing maps it. */
  findBlock(key: FileKey, fblock: FBlock): FoundBlock | undefined {
    return this.pool.findBlock(this.id, key, fblock);
  }

  /** Fill `buf` from `offsetBytes` of `key`; holes read as zeros. */
  read(key: FileKey, offsetBytes: number, buf: Uint8Array): void {
    this.pool.readKey(this.id, key, offsetBytes, buf);
  }

  /** Write `data` at `offsetBytes` of `key` (allocate-on-demand, one-block copy-on-write). */
  write(key: FileKey, offsetBytes: number, data: Uint8Array): void {
    this.pool.writeKey(this.id, key, offsetBytes, data);
  }

  /** Free own blocks and hide lower ones in file blocks [fromBlock, toBlock). */
  discard(key: FileKey, fromBlock: FBlock, toBlock: FBlock): void {
    this.pool.discardKey(this.id, key, fromBlock, toBlock);
  }

  /** Make `key` `sizeBytes` long as far as blocks go: discard past it, zero the partial tail. */
  truncate(key: FileKey, sizeBytes: number): void {
    this.pool.truncateKey(this.id, key, sizeBytes);
  }

  /** Drop this device's own blocks and rows for `key` (the file is gone here). */
  removeKey(key: FileKey): void {
    this.pool.removeKey(this.id, key);
  }

  /** Blocks of `key` visible through the chain (a file's allocated blocks). */
  keyMappedBlocks(key: FileKey): number {
    return this.pool.keyMappedBlocks(this.id, key);
  }

  /** Blocks visible through the chain, and blocks only this device maps. */
  counts(): { mappedBlocks: number; exclusiveBlocks: number } {
    return this.pool.counts(this.id);
  }

  /** Release the handle. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.releaseDevice(this.id);
  }
}

export { ThinfsError };
