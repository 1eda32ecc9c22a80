/**
 * Operations on the pool as a whole: init, info, resize, check (check-ops.ts), trim. Each takes the
 * context and plain JSON arguments (validated here: they may come off the control
 * socket) and returns a plain JSON result that the command formats.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import bytes from 'bytes';
import { fail } from '../../errors.js';
import { Pool, type PoolMode, type PoolStatus } from '../../pool/index.js';
import { check } from './check-ops.js';
import { argsObject, optNumber, reqNumber, withPool, type OpContext, type OpFn } from './context.js';

/** The pool as `thinfs info` shows it; sizes in bytes. */
export interface InfoResult {
  /** docker's naming: thinfs-MAJOR:MINOR-INODE-pool of the root directory. */
  poolName: string;
  root: string;
  dataFile: string;
  metadataFile: string;
  blockSize: number;
  baseDeviceSize: number;
  dataTotal: number;
  dataUsed: number;
  dataAvailable: number;
  /** Bytes the sparse data file really occupies on the host. */
  dataOnDisk: number;
  metadataUsed: number;
  /** Bytes of file data held inline in the metadata (small blocks: part of metadataUsed, none of dataUsed). */
  inlineUsed: number;
  /** Blocks whose data ends at most this many bytes in are held inline; 0: none are. */
  inlineMax: number;
  devices: number;
  deferredDeletions: number;
  transactionId: number;
  minFreeSpacePercent: number;
  minFreeSpace: number;
  autoextend: { thresholdPercent: number; percent: number; maxBytes: number } | null;
  mode: PoolMode;
  needsCheck: boolean;
  /** Freed bytes not yet punched out of the data file (they go at the next commit). */
  pendingDiscard: number;
  /** In fail mode: the commit error that put the pool there. */
  failReason?: string;
  /** True while the host file system under the pool is full (new allocations get ENOSPC). */
  hostFull?: boolean;
}

export interface ResizeResult {
  oldDataTotal: number;
  newDataTotal: number;
}

export type { CheckFinding, CheckResult, FullReport } from './check-ops.js';

export interface TrimResult {
  /** Bytes the data file gave back to the host. */
  trimmed: number;
  dataOnDisk: number;
}

/** Create a pool: `dataSizeBytes`, `blockSizeBytes`, `baseSizeBytes`, `minFreePercent`, `inlineMaxBytes`, `autoextend`. Never runs in a daemon. */
export function init(ctx: OpContext, raw: unknown): InfoResult {
  const a = argsObject('init', raw);
  const ae = a.autoextend === undefined || a.autoextend === null ? undefined : argsObject('init', a.autoextend);
  const pool = Pool.create(ctx.root, {
    dataSizeBytes: optNumber('init', a, 'dataSizeBytes'),
    blockSizeBytes: optNumber('init', a, 'blockSizeBytes'),
    baseSizeBytes: optNumber('init', a, 'baseSizeBytes'),
    minFreePercent: optNumber('init', a, 'minFreePercent'),
    inlineMaxBytes: optNumber('init', a, 'inlineMaxBytes'),
    autoextend:
      ae === undefined
        ? undefined
        : {
            thresholdPercent: reqNumber('init', ae, 'thresholdPercent'),
            percent: reqNumber('init', ae, 'percent'),
            maxBytes: reqNumber('init', ae, 'maxBytes'),
          },
  });
  try {
    return infoOf(pool.status());
  } finally {
    pool.close();
  }
}

/** The pool's status. */
export function info(ctx: OpContext, raw: unknown): Promise<InfoResult> {
  argsObject('info', raw);
  return withPool(ctx, 'read', (pool) => {
    const result = infoOf(pool.status());
    // Pool.mode() says read-only for a read-only handle; the pool itself is writable
    // unless it needs a check (out-of-data-space and fail are states of a running writer).
    if (pool.readOnlyOpen && result.mode === 'read-only' && !result.needsCheck) result.mode = 'write';
    return result;
  });
}

/** Grow the data file to `dataSizeBytes`; a smaller size is refused (EINVAL). */
export function resize(ctx: OpContext, raw: unknown): Promise<ResizeResult> {
  const dataSizeBytes = reqNumber('resize', argsObject('resize', raw), 'dataSizeBytes');
  return withPool(ctx, 'write', (pool) => {
    const old = pool.status().dataTotalBytes;
    if (dataSizeBytes < old) {
      throw fail('EINVAL', 'resize', pool.dataFile, `cannot shrink the data file from ${human(old)} to ${human(dataSizeBytes)}; a pool can only grow`);
    }
    pool.resize(dataSizeBytes);
    return { oldDataTotal: old, newDataTotal: pool.status().dataTotalBytes };
  });
}

/** Punch every free block out of the data file. */
export function trim(ctx: OpContext, raw: unknown): Promise<TrimResult> {
  argsObject('trim', raw);
  return withPool(ctx, 'write', (pool) => {
    const trimmed = pool.trim();
    return { trimmed, dataOnDisk: onDisk(pool.dataFile) };
  });
}

export const POOL_OPS: Record<string, OpFn> = { init, info, resize, check, trim };

function infoOf(s: PoolStatus): InfoResult {
  return {
    poolName: poolName(s.root),
    root: s.root,
    dataFile: s.dataFile,
    metadataFile: s.metadataFile,
    blockSize: s.blockSizeBytes,
    baseDeviceSize: s.baseSizeBytes,
    dataTotal: s.dataTotalBytes,
    dataUsed: s.dataUsedBytes,
    dataAvailable: s.dataAvailableBytes,
    dataOnDisk: onDisk(s.dataFile),
    metadataUsed: s.metadataUsedBytes,
    inlineUsed: s.inlineBytes,
    inlineMax: s.inlineMaxBytes,
    devices: s.devices,
    deferredDeletions: s.deferredDeletions,
    transactionId: s.transactionId,
    minFreeSpacePercent: s.minFreePercent,
    minFreeSpace: Math.ceil(((s.dataTotalBytes / s.blockSizeBytes) * s.minFreePercent) / 100) * s.blockSizeBytes,
    autoextend: s.autoextend === null ? null : { ...s.autoextend },
    mode: s.mode,
    needsCheck: s.needsCheck,
    pendingDiscard: s.pendingDiscardBlocks * s.blockSizeBytes,
    ...(s.failReason !== undefined ? { failReason: s.failReason } : {}),
    ...(s.hostFull ? { hostFull: true } : {}),
  };
}

function human(n: number): string {
  return `${bytes.format(n, { unitSeparator: ' ' })} (${n} bytes)`;
}

function onDisk(file: string): number {
  return fs.statSync(file).blocks * 512;
}

/** As docker names loop-lvm pools (docker-MAJ:MIN-INO-pool), after the root directory. */
function poolName(root: string): string {
  const st = fs.statSync(path.resolve(root), { bigint: true });
  const major = Number(((st.dev >> 8n) & 0xfffn) | ((st.dev >> 32n) & ~0xfffn));
  const minor = Number((st.dev & 0xffn) | ((st.dev >> 12n) & ~0xffn));
  return `thinfs-${major}:${minor}-${st.ino}-pool`;
}
