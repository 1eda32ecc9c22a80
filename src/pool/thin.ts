/**
 * A thin device's block I/O (dm_thin_find_block / insert_block / remove_block): file
 * blocks of a file key resolved through the device's layer chain.
 *
 * Copy-on-write at the block level:
 *  - a write into a block nobody maps allocates one block (the rest reads as zeros);
 *  - the first write into a block a lower layer maps copies exactly that block, once;
 *  - a block the device's own layer maps is overwritten in place (as dm-thin does).
 *
 * Order of a write (the rule the first product broke): allocate, write the data into the
 * data file, and only then insert the mappings and change the counters. When the data
 * write fails (host disk full, I/O error) nothing points at the fresh blocks: the
 * operation's savepoint rolls the allocation back, the blocks are punched, and the caller
 * gets the errno. An own block overwritten in place by a failed write holds what a crash
 * during that write would leave (crash rule 6 in pool.ts).
 *
 * Every public method of ThinDevice runs as one atomic pool operation (pool.atomically):
 * it either completes or changes nothing; the helpers in BlockIo assume that.
 */
import { fail } from '../errors.js';
import type { DataFile } from './datafile.js';
import type { Db } from './metadata.js';
import type { Chain, DeviceRow, SnapshotTree } from './snapshots.js';
import type { SpaceMap } from './spacemap.js';
import type { DevId, DeviceInfo, FBlock, FileKey, LayerId, PBlock } from './types.js';

/** Where a block was found by findBlock. */
export interface FoundBlock {
  pblock: PBlock;
  layerId: LayerId;
  /** True when the device's own top layer maps it (writes go in place). */
  own: boolean;
}

/** What one file block resolves to through a chain. */
interface Resolved {
  /** The top layer's own row: a pool block, null for a hiding row, undefined for none. */
  own: PBlock | null | undefined;
  /** The nearest lower layer's row, same encoding. */
  lower: PBlock | null | undefined;
  lowerPos: number;
}

/** What the block I/O needs of its pool (declared here, where it is used). */
export interface BlockPool {
  readonly blockSizeBytes: number;
  readonly root: string;
  /** Run `fn` as one atomic operation: all of it, or nothing (see pool.ts). */
  atomically<T>(op: string, fn: () => T): T;
  /** The device, or EROFS/ENOENT/EIO unless it can take writes now. */
  requireWritableDevice(dev: DevId, op: string): DeviceRow;
  /** Hand out `n` blocks (space map + autoextend), or throw ENOSPC. */
  allocateBlocks(n: number): PBlock[];
  /** A write into fresh blocks reached the data file (the host had room). */
  noteDataWritten(): void;
  /** Return a block to the space map (reusable after the commit). */
  freeBlock(pb: PBlock): void;
  /** True when `pb` was handed out in the open transaction (its data is not committed). */
  allocatedInTx(pb: PBlock): boolean;
  /** Run `undo` if the current operation fails (puts back bytes overwritten in place). */
  onRollback(undo: () => void): void;
  getDevice(id: DevId): DeviceInfo | undefined;
  releaseDevice(id: DevId): void;
}

/** The mapping statements and the per-(device, key) block counts, shared by every device of a pool. */
export class BlockIo {
  /** Visible mapped blocks per (device, key), for st_blocks; exact or absent. */
  readonly keyBlocks = new Map<string, number>();
  private readonly st;

  constructor(
    db: Db,
    private readonly pool: BlockPool,
    private readonly tree: SnapshotTree,
    private readonly data: DataFile,
  ) {
    this.st = {
      rangeAll: db.prepare('SELECT fblock, layer, pblock FROM mappings WHERE ino = ? AND fblock >= ? AND fblock < ?'),
      upsertMapping: db.prepare(
        'INSERT INTO mappings (ino, fblock, layer, pblock) VALUES (?, ?, ?, ?) ON CONFLICT (ino, fblock, layer) DO UPDATE SET pblock = excluded.pblock',
      ),
      deleteMapping: db.prepare('DELETE FROM mappings WHERE ino = ? AND fblock = ? AND layer = ?'),
      deleteKeyInLayer: db.prepare('DELETE FROM mappings WHERE layer = ? AND ino = ?'),
    };
  }

  find(dev: DevId, key: FileKey, fblock: FBlock): FoundBlock | undefined {
    const chain = this.tree.chainOf(dev);
    const r = this.resolve(chain, key, fblock, fblock + 1).get(fblock);
    if (r === undefined) return undefined;
    if (r.own !== undefined) return r.own === null ? undefined : { pblock: r.own, layerId: chain.top, own: true };
    if (r.lower === undefined || r.lower === null) return undefined;
    return { pblock: r.lower, layerId: chain.layers[r.lowerPos]!, own: false };
  }

  read(dev: DevId, key: FileKey, offsetBytes: number, buf: Uint8Array): void {
    const len = buf.byteLength;
    if (len === 0) return;
    const bs = this.pool.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + len - 1) / bs) + 1;
    const res = this.resolve(this.tree.chainOf(dev), key, fb0, fb1);
    // Coalesce runs of consecutive pool blocks into one pread.
    let runBufStart = 0;
    let runPos = -1;
    let runLen = 0;
    const flush = () => {
      if (runLen > 0) this.data.preadFully(buf.subarray(runBufStart, runBufStart + runLen), runPos);
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
      const pos = this.data.pos(pb, from - blockStart);
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

  /** See ThinDevice.write; the caller runs it atomically. Data lands before mappings (top of file). */
  write(dev: DevId, key: FileKey, offsetBytes: number, data: Uint8Array): void {
    const len = data.byteLength;
    if (len === 0) return;
    const d = this.pool.requireWritableDevice(dev, 'write');
    const bs = this.pool.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + len - 1) / bs) + 1;
    const chain = this.tree.chainOf(dev);
    const top = this.tree.layers.get(chain.top)!;
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
    const fresh = needAlloc > 0 ? this.pool.allocateBlocks(needAlloc) : [];
    let next = 0;
    const writes: { pos: number; buf: Uint8Array }[] = [];
    const newMappings: { fb: FBlock; pb: PBlock }[] = [];
    for (let fb = fb0; fb < fb1; fb++) {
      const blockStart = fb * bs;
      const from = Math.max(offsetBytes, blockStart);
      const to = Math.min(offsetBytes + len, blockStart + bs);
      const slice = data.subarray(from - offsetBytes, to - offsetBytes);
      const r = res.get(fb);
      const own = r?.own;
      if (own !== undefined && own !== null) {
        writes.push({ pos: this.data.pos(own, from - blockStart), buf: slice });
        continue;
      }
      const pb = fresh[next++]!;
      if (to - from === bs) {
        writes.push({ pos: this.data.pos(pb), buf: slice });
      } else {
        // Partial block: start from the lower block (copy-on-write) or from zeros.
        const block = Buffer.alloc(bs);
        const lower = own === null ? undefined : r?.lower;
        if (lower !== undefined && lower !== null) this.data.readBlock(lower, 0, block);
        block.set(slice, from - blockStart);
        writes.push({ pos: this.data.pos(pb), buf: block });
      }
      newMappings.push({ fb, pb });
    }
    try {
      this.data.pwriteRuns(writes);
      if (fresh.length > 0) this.pool.noteDataWritten();
    } catch (err) {
      // Nothing maps the fresh blocks; give their (partial) bytes back to the host now.
      this.data.punchBlocks(fresh);
      throw err;
    }
    for (const m of newMappings) this.st.upsertMapping.run(key, m.fb, chain.top, m.pb);
    if (fresh.length === 0 && newlyMapped === 0) return; // an overwrite in place changes no counter
    top.owned += fresh.length;
    top.mapped += newlyMapped;
    this.tree.touch(top);
    const kb = this.keyBlocks.get(`${dev}:${key}`);
    if (kb !== undefined) this.keyBlocks.set(`${dev}:${key}`, kb + newlyMapped);
  }

  /** See ThinDevice.discard; the caller runs it atomically. */
  discard(dev: DevId, key: FileKey, fromBlock: FBlock, toBlock: FBlock): void {
    if (toBlock <= fromBlock) return;
    this.pool.requireWritableDevice(dev, 'discard');
    const chain = this.tree.chainOf(dev);
    const top = this.tree.layers.get(chain.top)!;
    const res = this.resolve(chain, key, fromBlock, toBlock);
    if (res.size === 0) return;
    this.keyBlocks.delete(`${dev}:${key}`);
    for (const [fb, r] of res) {
      const lowerVisible = r.lower !== undefined && r.lower !== null;
      if (r.own !== undefined) {
        if (r.own !== null) {
          this.pool.freeBlock(r.own);
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
    this.tree.touch(top);
  }

  /**
   * See ThinDevice.truncate; the caller runs it atomically, so a failure of the tail
   * write (ENOSPC on a full pool) also undoes the discard before it.
   */
  truncate(dev: DevId, key: FileKey, sizeBytes: number): void {
    const bs = this.pool.blockSizeBytes;
    const keepBlocks = Math.ceil(sizeBytes / bs);
    const tail = sizeBytes % bs;
    const last = tail === 0 ? undefined : this.find(dev, key, keepBlocks - 1);
    this.discard(dev, key, keepBlocks, Number.MAX_SAFE_INTEGER);
    if (last === undefined) return;
    if (last.own && !this.pool.allocatedInTx(last.pblock)) {
      // The block holds committed data the file still had before this (uncommitted)
      // shrink: zeroing it in place would lose that data if we crash before the commit.
      // Move the block's head to a fresh block instead and free the old one on commit.
      const block = Buffer.alloc(bs);
      this.data.readBlock(last.pblock, 0, block.subarray(0, tail));
      this.discard(dev, key, keepBlocks - 1, keepBlocks);
      this.write(dev, key, (keepBlocks - 1) * bs, block);
      return;
    }
    // The block is this transaction's own: zero its tail in place, but keep the old bytes
    // so that a failure later in the operation puts them back (the operation changes nothing).
    // (A lower block is not written here at all: the write below copies it first.)
    if (last.own) {
      const old = Buffer.alloc(bs - tail);
      this.data.readBlock(last.pblock, tail, old);
      const pos = this.data.pos(last.pblock, tail);
      this.pool.onRollback(() => this.data.pwriteRuns([{ pos, buf: old }]));
    }
    this.write(dev, key, sizeBytes, Buffer.alloc(bs - tail));
  }

  /** See ThinDevice.removeKey; the caller runs it atomically. */
  removeKey(dev: DevId, key: FileKey): void {
    this.pool.requireWritableDevice(dev, 'remove');
    const chain = this.tree.chainOf(dev);
    const top = this.tree.layers.get(chain.top)!;
    const res = this.resolve(chain, key, 0, Number.MAX_SAFE_INTEGER);
    let any = false;
    for (const [, r] of res) {
      if (r.own === undefined) continue;
      any = true;
      const lowerVisible = r.lower !== undefined && r.lower !== null;
      if (r.own !== null) {
        this.pool.freeBlock(r.own);
        top.owned--;
        if (!lowerVisible) top.mapped--;
      } else if (lowerVisible) {
        top.mapped++;
      }
    }
    if (!any) return;
    this.keyBlocks.delete(`${dev}:${key}`);
    this.st.deleteKeyInLayer.run(chain.top, key);
    this.tree.touch(top);
  }

  keyMappedBlocks(dev: DevId, key: FileKey): number {
    const k = `${dev}:${key}`;
    let n = this.keyBlocks.get(k);
    if (n === undefined) {
      n = 0;
      for (const r of this.resolve(this.tree.chainOf(dev), key, 0, Number.MAX_SAFE_INTEGER).values()) {
        const v = r.own !== undefined ? r.own : r.lower;
        if (v !== undefined && v !== null) n++;
      }
      if (this.keyBlocks.size >= KEY_BLOCKS_LIMIT) {
        // Evict the oldest entry (Map keeps insertion order), not the whole cache.
        const oldest = this.keyBlocks.keys().next().value;
        if (oldest !== undefined) this.keyBlocks.delete(oldest);
      }
      this.keyBlocks.set(k, n);
    }
    return n;
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
}

const KEY_BLOCKS_LIMIT = 100_000;

/**
 * A handle on one thin device (dm_thin_device): find/read/write/discard of file blocks.
 * Close it when done; a device with open handles is only deleted once they close.
 *
 * Each changing call is one atomic pool operation; when it throws, the device reads as
 * before the call (an own block overwritten in place aside, see the top of this file) and
 * the pool is consistent; the caller may go on using the handle.
 */
export class ThinDevice {
  private closed = false;

  /** @internal Use Pool.openDevice. */
  constructor(
    private readonly pool: BlockPool,
    private readonly io: BlockIo,
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

  /** Where file block `fblock` of `key` lives, or undefined when nothing maps it. */
  findBlock(key: FileKey, fblock: FBlock): FoundBlock | undefined {
    return this.io.find(this.id, key, fblock);
  }

  /** Fill `buf` from `offsetBytes` of `key`; holes read as zeros. Throws EIO when the data file can't be read. */
  read(key: FileKey, offsetBytes: number, buf: Uint8Array): void {
    this.io.read(this.id, key, offsetBytes, buf);
  }

  /**
   * Write `data` at `offsetBytes` of `key` (allocate-on-demand, one-block copy-on-write).
   * On failure (ENOSPC: pool, device limit or host full; EIO) no mapping or count changed.
   */
  write(key: FileKey, offsetBytes: number, data: Uint8Array): void {
    this.pool.atomically('write', () => this.io.write(this.id, key, offsetBytes, data));
  }

  /** Free own blocks and hide lower ones in file blocks [fromBlock, toBlock). All or nothing. */
  discard(key: FileKey, fromBlock: FBlock, toBlock: FBlock): void {
    this.pool.atomically('discard', () => this.io.discard(this.id, key, fromBlock, toBlock));
  }

  /** Make `key` `sizeBytes` long as far as blocks go: discard past it, zero the partial tail. All or nothing. */
  truncate(key: FileKey, sizeBytes: number): void {
    this.pool.atomically('truncate', () => this.io.truncate(this.id, key, sizeBytes));
  }

  /** Drop this device's own blocks and rows for `key` (the file is gone here). All or nothing. */
  removeKey(key: FileKey): void {
    this.pool.atomically('remove', () => this.io.removeKey(this.id, key));
  }

  /** Blocks of `key` visible through the chain (a file's allocated blocks). */
  keyMappedBlocks(key: FileKey): number {
    return this.io.keyMappedBlocks(this.id, key);
  }

  /** Blocks visible through the chain, and blocks only this device maps. */
  counts(): { mappedBlocks: number; exclusiveBlocks: number } {
    const i = this.info();
    return { mappedBlocks: i.mappedBlocks, exclusiveBlocks: i.exclusiveBlocks };
  }

  /** Release the handle. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.pool.releaseDevice(this.id);
  }
}
