/**
 * File data: the bytes of regular files, kept by the pool's thin device under each
 * inode's data key. The filesystem never computes where a block sits; it asks the device.
 *
 * Copy-on-write rules (the pool does the block work, these are the file-level ones):
 *  - A write goes to the device at the file offset; the pool allocates unmapped blocks
 *    and copies exactly the blocks a lower layer maps, once. The size grows to cover it.
 *    Small files, and the small tails of larger ones, take no pool block: the pool keeps
 *    a block whose bytes end within its inline threshold inline in the metadata (pool
 *    thin.ts), and copy-on-write of such a block copies only its bytes. Nothing here
 *    depends on which kind a block is, except the rule below.
 *  - Bytes past a file's size always read as zeros: every shrink discards the blocks past
 *    the new end and zeroes the tail of the last one (pool truncate), so growing again —
 *    by truncate or by a write past the end — shows zeros even where lower layers hold
 *    old data.
 *  - ... and growing never trusts the bytes past the old end: a write the pool did in
 *    place into an own block is not undone by a crash that rolls its size change back,
 *    so before a file grows (truncate up, or a write that starts past the end) the old
 *    last block's bytes past the old end are zeroed when that block is a pool block.
 *    An inline block needs none of that: its bytes change only inside the metadata
 *    transaction that also changes the size, and every shrink shortens them, so they
 *    never reach past the end.
 *  - Truncating to zero a file whose data key lower layers may map takes a FRESH data key
 *    in the top layer: the old key's lower blocks become unreachable without writing a
 *    hiding row per block (O(1) for a 1 GiB lower file); the top layer's own blocks of
 *    the old key are freed.
 *  - When the last name of a file goes and no handle holds it, its blocks in the top
 *    layer are freed (removeKey); the pool punches them out after the next commit. Lower
 *    layers are never changed.
 */
import type { FileKey, ThinDevice } from '../pool/index.js';
import type { Inode } from './inodes.js';
import type { Ino } from './types.js';

/**
 * A copy of block mappings kept outside JS (the FUSE C hot path serves reads and in-place
 * writes from it, fuse/blockmap.ts). The filesystem tells it before anything it may hold
 * goes stale: drop(ino) before an inode's size changes and before a change of its blocks
 * returns (a racing C read of the old mapping reads the bytes it would have read before the
 * write: old blocks are never reused before the next commit), dropAll() when mappings
 * change under every inode (a rollback, a snapshot), quiesce() before freed blocks can be
 * reused (it returns once the I/O it started on old mappings has finished).
 */
export interface BlockCache {
  drop(ino: Ino): void;
  dropAll(): void;
  quiesce(): void;
}

export class FileData {
  /** Told before blocks or sizes change (see BlockCache); none unless a FUSE mount attached one. */
  cache: BlockCache | undefined = undefined;

  constructor(private readonly dev: ThinDevice) {}

  /** Up to `length` bytes from `offsetBytes`, short at end of file. */
  read(inode: Inode, offsetBytes: number, length: number): Buffer {
    const n = Math.max(0, Math.min(length, inode.size - offsetBytes));
    return this.dev.readBytes(inode.dataKey, offsetBytes, n);
  }

  /** Write `data` at `offsetBytes`; returns the new file size. */
  write(inode: Inode, offsetBytes: number, data: Uint8Array): number {
    const size = Math.max(inode.size, offsetBytes + data.byteLength);
    if (size !== inode.size) this.cache?.drop(inode.ino);
    if (offsetBytes > inode.size) this.zeroPastEnd(inode, offsetBytes);
    // A write in place into own pool blocks changes no mapping: the cache still holds (and
    // dropping it here made every C write racing a JS one miss, and drop it again: measured,
    // 1 in 10 random 4 KiB writes went to JS). Any other write drops it before it returns.
    if (this.dev.write(inode.dataKey, offsetBytes, data)) this.cache?.drop(inode.ino);
    return size;
  }

  /**
   * Make the blocks agree with a new size. Returns the data key the inode must use from
   * now on (a fresh one when `freshKey` is given and the old key's data lives below).
   */
  truncate(inode: Inode, sizeBytes: number, freshKey: () => FileKey): FileKey {
    this.cache?.drop(inode.ino);
    if (sizeBytes === 0 && inode.dataBelow) {
      this.dev.removeKey(inode.dataKey);
      return freshKey();
    }
    if (sizeBytes < inode.size) this.dev.truncate(inode.dataKey, sizeBytes);
    else if (sizeBytes > inode.size) this.zeroPastEnd(inode, sizeBytes);
    return inode.dataKey;
  }

  /**
   * The block map of blocks [firstBlock, firstBlock + count) of a regular file, for a
   * BlockCache (see ThinDevice.blockMap); `writable`: own blocks may be written in place.
   */
  blockMap(inode: Inode, firstBlock: number, count: number, writable: boolean): Float64Array {
    return this.dev.blockMap(inode.dataKey, firstBlock, count, writable);
  }

  /** Zero the old last block from the current end up to `uptoBytes` (within that block), if it is a pool block. */
  private zeroPastEnd(inode: Inode, uptoBytes: number): void {
    const bs = this.dev.blockSizeBytes;
    if (inode.size % bs === 0) return;
    const fb = Math.floor(inode.size / bs);
    const found = this.dev.findBlock(inode.dataKey, fb);
    if (found === undefined || found.pblock === null) return;
    const end = Math.min(uptoBytes, (fb + 1) * bs);
    this.dev.write(inode.dataKey, inode.size, Buffer.alloc(end - inode.size));
  }

  /** Free the device's own blocks of a file that is gone. */
  remove(inode: Inode): void {
    this.cache?.drop(inode.ino);
    this.dev.removeKey(inode.dataKey);
  }

  /** Free the device's own blocks under `key` (of no live inode). */
  removeKey(key: FileKey): void {
    this.dev.removeKey(key);
  }
}
