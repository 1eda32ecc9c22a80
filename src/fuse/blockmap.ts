/**
 * The JS side of the C hot path: READ of mapped blocks and WRITE into blocks the
 * container's own layer maps are answered by libfuse's worker threads from a block map
 * (native-deps/fuse-native/fuse-lowlevel-blockmap.c says what it holds and why, and how
 * its epoch keeps a freed block from being reused under an in-flight read). This class
 * fills that map and keeps it true:
 *
 *  - fill: a READ or WRITE the map could not answer reaches JS with `miss`; after JS has
 *    answered it, the chunks (256 blocks, 16 MiB) it touched are filled from the pool's
 *    mappings (Filesystem.blockMap), with the file's size. Small files whose blocks are
 *    inline get entries that send them to JS, and are not filled again.
 *  - drop / dropAll / quiesce: the filesystem calls them (fs/data.ts BlockCache) before an
 *    inode's blocks or size change, when mappings change under everything (a rolled-back
 *    operation or transaction, a snapshot of this device), and before freed blocks are
 *    punched or reused. Forgotten inodes are dropped too (memory).
 *  - opens: a read-only OPEN of a file the map knows is answered in C with fh 0 (and its
 *    RELEASE): reading a file again, warm, reaches JS not at all. ll-ops reads fh 0 by inode.
 *  - writes: served in C only on a view that takes writes, with the writeback cache (the
 *    kernel then keeps size and mtime itself and sends them with SETATTR, ll-ops.ts), and
 *    only inside the file's size, into own pool blocks. Before an fsync is answered (and
 *    when the mount goes) the filesystem hears of C writes since the last time, so the
 *    commit fdatasyncs the data file even when no metadata changed.
 *
 * Failure: a failed fill leaves the map without those blocks (the next request goes to JS
 * again); nothing the pool stores depends on the map.
 */
import type { Filesystem, Ino } from '../fs/index.js';
import { BLOCK_MAP_CHUNK, type BlockMapStats, type LowLevelSession } from './lowlevel.js';

export class KernelBlockMap {
  private session: LowLevelSession | undefined;
  private readonly chunkBytes: number;
  private readonly blockShift: number;
  private writesSynced = 0;

  constructor(
    private readonly fs: Filesystem,
    /** In-place writes may be served in C (a writable view with the writeback cache). */
    private readonly writes: boolean,
    /** Read-only opens of files the map knows may be answered in C (the mount keeps pages across opens: keep_cache). */
    private readonly opens: boolean,
  ) {
    const { blockSizeBytes } = fs.dataFile();
    this.blockShift = Math.log2(blockSizeBytes);
    this.chunkBytes = blockSizeBytes * BLOCK_MAP_CHUNK;
  }

  /** Start serving from the session: configure the C side, then hear of every change. */
  attach(session: LowLevelSession): void {
    session.blockMapConfigure(this.fs.dataFile().fd, this.blockShift, this.writes, this.opens);
    this.session = session;
    this.fs.attachBlockCache(this);
  }

  /** Stop hearing of changes (the session ended); C writes are reported for the closing commit. */
  detach(): void {
    const s = this.session;
    if (s === undefined) return;
    s.blockMapDrop();
    s.blockMapQuiesce();
    this.noteWrites();
    this.fs.attachBlockCache(undefined);
    this.session = undefined;
  }

  /**
   * After JS answered a request the map lacked: fill the chunks of [offsetBytes, +lengthBytes)
   * of `ino`, and `ahead` chunks after them. Reading ahead matters: the kernel's readahead
   * has several READs of a chunk in flight, and all that arrive before the fill reach JS
   * (measured: a quarter of a cold 1 GiB sequential read went through JS with no chunk ahead).
   */
  fill(ino: Ino, offsetBytes: number, lengthBytes: number, ahead = 0): void {
    const s = this.session;
    if (s === undefined) return;
    const c0 = Math.floor(offsetBytes / this.chunkBytes);
    const c1 = Math.floor((offsetBytes + Math.max(lengthBytes, 1) - 1) / this.chunkBytes) + ahead;
    let size = Infinity;
    for (let c = c0; c <= c1; c++) {
      const first = c * BLOCK_MAP_CHUNK;
      if (c > c0 && first * (1 << this.blockShift) >= size) return; // past the end: nothing to fill
      const m = this.fs.blockMap(ino, first, BLOCK_MAP_CHUNK);
      if (m === undefined) return;
      size = m.sizeBytes;
      // Entries past the end of the file are left out (they read as zeros, and the C side stops at the size).
      const inFile = Math.max(0, Math.min(BLOCK_MAP_CHUNK, Math.ceil(m.sizeBytes / (1 << this.blockShift)) - first));
      s.blockMapFill(ino, m.sizeBytes, first, inFile === BLOCK_MAP_CHUNK ? m.entries : m.entries.subarray(0, inFile));
    }
  }

  /** Before an fsync is answered: C writes since the last one are made durable by the commit it runs. */
  noteWrites(): void {
    const s = this.session;
    if (s === undefined) return;
    const w = s.blockMapStats().writes;
    if (w === this.writesSynced) return;
    this.writesSynced = w;
    this.fs.noteExternalWrites();
  }

  stats(): BlockMapStats | undefined {
    return this.session?.blockMapStats();
  }

  // ---- fs/data.ts BlockCache

  drop(ino: Ino): void {
    this.session?.blockMapDrop(ino);
  }

  dropAll(): void {
    this.session?.blockMapDrop();
  }

  quiesce(): void {
    this.session?.blockMapQuiesce();
  }
}
