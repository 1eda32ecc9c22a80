/** Branded number types of the pool, so units and kinds can't be mixed up. */

/** A thin device (a named view: base, image or container). */
export type DevId = number & { readonly __brand: 'DevId' };
/** A layer: one delta of mappings in a snapshot tree (devices point at their top layer). */
export type LayerId = number & { readonly __brand: 'LayerId' };
/** A file key: the filesystem's inode (data) number under which a device keys file blocks. */
export type FileKey = number & { readonly __brand: 'FileKey' };
/** A block index inside one file (offsetBytes / blockSize). */
export type FBlock = number;
/** A block index inside the pool's data file. */
export type PBlock = number & { readonly __brand: 'PBlock' };

export type DeviceKind = 'base' | 'image' | 'container' | 'thin';

/** Ordered by degradation, as dm-thin's pool modes. */
export type PoolMode = 'write' | 'out-of-data-space' | 'read-only' | 'fail';

export interface AutoextendOptions {
  /** Grow when used data reaches this percentage of the data file. */
  thresholdPercent: number;
  /** Grow by this percentage of the current data size. */
  percent: number;
  /** Never grow beyond this many bytes. */
  maxBytes: number;
}

export interface PoolCreateOptions {
  blockSizeBytes?: number;
  dataSizeBytes?: number;
  /** Default size limit of new thin devices (dm.basesize). */
  baseSizeBytes?: number;
  /** Allocations fail with ENOSPC when free space would drop below this (dm.min_free_space). */
  minFreePercent?: number;
  autoextend?: AutoextendOptions;
  /**
   * Blocks whose bytes end at most this far in are kept inline in the metadata instead of
   * taking a pool block (thin.ts); 0 turns inline blocks off. Default: half a block.
   */
  inlineMaxBytes?: number;
}

export interface PoolOpenOptions {
  /** Open without writing anything (inspection of a pool a daemon serves). */
  readOnly?: boolean;
  /**
   * How long a read-write open waits for another writer to let go of the pool (its flock),
   * in milliseconds; 0 (the default) fails at once with EBUSY.
   */
  waitMs?: number;
  /** Called once when the open starts waiting for the pool's lock (to tell the user). */
  onWait?: () => void;
  /** Fault injection for tests: called before every host I/O call and SQLite statement. */
  faults?: import('./datafile.js').IoFaults;
}

export interface DeviceInfo {
  id: DevId;
  name: string;
  /** The device this one was snapshotted from, if any (may since have been deleted). */
  originId: DevId | null;
  kind: DeviceKind;
  readOnly: boolean;
  sizeLimitBytes: number;
  createdNs: bigint;
  state: 'active' | 'deferred';
  /** Top layer: where this device's own writes go. */
  layerId: LayerId;
  /** Pool blocks visible through the chain (own + inherited). */
  mappedBlocks: number;
  /** Pool blocks only this device maps (freed when it is deleted). */
  exclusiveBlocks: number;
  /** Bytes of inline blocks visible through the chain (thin.ts). */
  inlineMappedBytes: number;
  /** Bytes of inline blocks only this device holds (dropped when it is deleted). */
  inlineExclusiveBytes: number;
  /** Data visible through the chain, exact: mapped pool blocks plus inline bytes. */
  mappedBytes: number;
  /** Data only this device holds, exact: its pool blocks plus its inline bytes (what deleting it gives back). */
  exclusiveBytes: number;
  /** Number of layers in the chain, top included. */
  depth: number;
}

export interface PoolStatus {
  root: string;
  dataFile: string;
  metadataFile: string;
  mode: PoolMode;
  needsCheck: boolean;
  blockSizeBytes: number;
  dataTotalBytes: number;
  dataUsedBytes: number;
  dataAvailableBytes: number;
  /** Bytes of inline blocks held in the metadata, all layers (they take no pool block). */
  inlineBytes: number;
  /** Blocks whose bytes end at most this far in are kept inline; 0: off. */
  inlineMaxBytes: number;
  /** Size of the metadata file and its log (inline blocks live here). */
  metadataUsedBytes: number;
  baseSizeBytes: number;
  minFreePercent: number;
  autoextend: AutoextendOptions | null;
  devices: number;
  deferredDeletions: number;
  transactionId: number;
  /** Blocks freed but not yet returned to the host (punched after commit). */
  pendingDiscardBlocks: number;
  /** Why the pool is in fail mode (a commit failed), when it is. */
  failReason?: string;
  /** True while the host file system under the pool is full (allocations refused). */
  hostFull?: boolean;
}

export interface CheckIssue {
  severity: 'fatal' | 'leak';
  message: string;
  /** How to fix it, one sentence. */
  fix: string;
}

export interface CheckReport {
  clean: boolean;
  fatal: number;
  leaks: number;
  issues: CheckIssue[];
  /** True when --repair changed anything. */
  repaired: boolean;
  blocksChecked: number;
  /** Inline blocks (mapping rows carrying their bytes) examined. */
  inlineBlocksChecked: number;
}
