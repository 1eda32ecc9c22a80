/**
 * A thin device's block I/O (dm_thin_find_block / insert_block / remove_block): file
 * blocks of a file key resolved through the device's layer chain.
 *
 * Copy-on-write at the block level:
 *  - a write into a block nobody maps allocates one block (the rest reads as zeros);
 *  - the first write into a block a lower layer maps copies exactly that block, once;
 *  - a block the device's own layer maps is overwritten in place (as dm-thin does).
 *
 * Inline blocks. A block whose bytes end early — its used extent, up to its last written
 * byte, is at most the pool's inline_max (half a block by default) — takes no pool block:
 * its mappings row points at the bytes, kept in the metadata. Without that, every small file and every
 * small tail of a larger file took a whole 64 KiB block: an image cost 2.7-2.8x the
 * space of its files on ext4 (issue 9). Measured (bench/space.ts --inline-max, 64 KiB
 * blocks; pool growth, data file + metadata, / `du -s` of the tree on ext4):
 *
 *     tree (files, du -s)                 block-only   8 KiB  16 KiB  32 KiB  48 KiB
 *     node_modules (3,731, 111 MiB)          2.83      1.12    1.00    0.93    0.91
 *     /usr/share/doc (4,272, 132 MiB)        2.66      1.27    1.08    0.96    0.93
 *     busybox rootfs (10 files, 2 MiB)       1.29      1.01    0.99    0.99    0.99
 *
 * Half a block (32 KiB) is the default: it takes most of the gain (the tails of larger
 * files too) while a block more than half full stays a pool block. 48 KiB saves 2-3%
 * more, but writes into such blocks would rewrite up to 48 KiB of blob each.
 *
 * Inline bytes live in SQLite, which packs them in its 4 KiB pages as ext4 packs files in
 * 4 KiB blocks, and reads blobs of this size about as fast as a file system or faster
 * (sqlite.org, "Internal Versus External BLOBs"; here: reading every file of an image
 * in-process warm measures about even, cold up to 1.9x faster, bench/space.ts). Sub-block packing (several small extents in shared
 * pool blocks) was not chosen: it needs a second space map of extents, reference counts
 * per extent and compaction, and its copy-on-write still copies through the data file.
 * Blocks that end past inline_max stay pool blocks: they are read and overwritten in
 * place (a 4 KiB random write into a mostly full block costs one pwrite, not a rewrite
 * of the whole blob), and reads of big files keep their coalesced preads. The price is
 * paid by small writes into an inline block, which rewrite its blob: in-process, 100-byte
 * appends to files growing to 32 KiB took ~2.5x the CPU of block-only appends, 4 KiB
 * overwrites inside small files ~2.5x (whole-file writes, the common case, are faster:
 * no pwrite); mounted, appends took 1.8x (bench/small-writes.ts). So rewrites of the top
 * layer's own inline rows go to a write-back cache (inline-cache.ts): in memory until the
 * commit writes each changed row once, read from there meanwhile, undone with a failed
 * operation; resolve() below overlays it on the rows SQLite returns.
 *
 * Where the inline bytes are: in a rowid table of their own, inline_blocks (id, data),
 * which the mappings row points at (inline_id). First they were a column of mappings
 * itself; but mappings is a WITHOUT ROWID b-tree, and SQLite loads a cell that spills
 * onto overflow pages whole at each comparison of a search: with inline rows of a few
 * KiB every lookup, even one that reads only pblock, went through their overflow pages.
 * Measured on 4,272 keys with 1-31 KiB inline rows: a point query ~55 us against 3-7 us
 * with the bytes in their own table (which also packs them tighter: a rowid table keeps
 * up to ~4 KiB of a row on its leaf and fills its overflow pages). Triggers drop an
 * inline_blocks row with the mappings row that points at it (metadata.ts).
 *
 * How a row reads (the shape a reader outside JS, e.g. the FUSE C threads, must follow):
 *     pblock NOT NULL, inline_id NULL  a pool block: bytes at pblock * block_size of pool/data
 *     pblock NULL, inline_id NOT NULL  an inline block: its first length(data) bytes are the
 *                                      data of inline_blocks row inline_id, the rest of the
 *                                      block reads as zeros; nothing of it is in pool/data
 *     pblock NULL, inline_id NULL      a hiding row: the block reads as zeros, lower rows hidden
 * (A row with both set is damage: `check` reports it as fatal.) Per file block, the row
 * of the nearest layer of the chain decides, whatever its kind. An inline block of a
 * committed layer never changes (a new layer's write makes a new inline_blocks row);
 * the top layer's own inline blocks are rewritten in the open transaction.
 *
 * Inline rules, kept by write/truncate/discard/removeKey below:
 *  - A write that does not go in place into an own pool block computes the block's new
 *    extent: the end of what it writes, or of the inline bytes it writes over, whichever
 *    is further (a lower pool block counts as a whole block: copy-on-write copies it into
 *    a pool block, as before). Up to inline_max the block is an inline row of exactly that
 *    many bytes (zeros written are kept, as a block device keeps them: a written block is
 *    mapped); past it, a fresh pool block. So a write that grows an inline block past
 *    inline_max moves it into a pool block: the bytes are written to the data file first,
 *    then the row is replaced (crash rule 1); when the pwrite fails, the row is as it was.
 *  - Copy-on-write of a lower inline block copies only its bytes into the top layer's
 *    row; the lower row is never touched.
 *  - An own pool block stays one under writes: moving it back inline would turn in-place
 *    overwrites into rewrites of a blob. Shrinking is where blocks move back: a truncate
 *    whose new last block ends within inline_max makes that block an inline row of its
 *    head (own or lower, pool block or inline: the head is read, the block discarded and
 *    the head written again), freeing an own pool block — as it moves committed blocks.
 *  - Discard and removeKey drop inline rows (no space map entry).
 *  - Inline rows change only inside the metadata transaction, never in place: after a
 *    crash or a failed operation they read exactly as at the last commit (crash rule 6
 *    concerns pool blocks only).
 * Counters: mapped/owned count pool blocks exactly as before; inlineMapped/inlineOwned
 * count inline bytes the same way (visible through the chain / in the layer's own rows).
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
import { InlineCache } from './inline-cache.js';
import type { Db } from './metadata.js';
import type { Chain, DeviceRow, Layer, SnapshotTree } from './snapshots.js';
import type { SpaceMap } from './spacemap.js';
import type { DevId, DeviceInfo, FBlock, FileKey, LayerId, PBlock } from './types.js';

/**
 * blockMap entries (what the FUSE C hot path serves from, native-deps/fuse-native/
 * fuse-lowlevel-blockmap.c): pool block * 2 + 1 when the device's own layer maps it and
 * it may be written in place, pool block * 2 for a block of a lower layer (or of a view
 * that takes no writes), BLOCK_MAP_ZERO for a block nothing maps (reads as zeros),
 * BLOCK_MAP_INLINE for an inline block (its bytes are in the metadata: JS serves it).
 */
export const BLOCK_MAP_ZERO = -1;
export const BLOCK_MAP_INLINE = -2;

/** Where a block was found by findBlock: exactly one of pblock and data is set (see the top of the file). */
export interface FoundBlock {
  /** The pool block holding the bytes, or null for an inline block. */
  pblock: PBlock | null;
  /** An inline block's bytes (the rest of the block reads as zeros), or null for a pool block. */
  data: Buffer | null;
  layerId: LayerId;
  /** True when the device's own top layer maps it (writes go in place into a pool block). */
  own: boolean;
}

/** An inline row as the block I/O sees it: its inline_blocks id, its length, and its bytes when they were read. */
interface Inline {
  id: number;
  len: number;
  data: Buffer | null;
  /** Length and bytes come from the write-back cache (inline-cache.ts): `data` is a view to copy before handing out. */
  cached?: boolean;
}

/** A mappings row: a pool block, an inline block, or null for a hiding row. */
type Row = PBlock | Inline | null;

function isInline(r: Row | undefined): r is Inline {
  return typeof r === 'object' && r !== null;
}

/** What one file block resolves to through a chain. */
interface Resolved {
  /** The top layer's own row, undefined for none. */
  own: Row | undefined;
  /** The nearest lower layer's row, undefined for none. */
  lower: Row | undefined;
  lowerPos: number;
}

/** What a row adds to the counters: pool blocks and inline bytes. */
function poolOf(r: Row | undefined): number {
  return typeof r === 'number' ? 1 : 0;
}
function inlineOf(r: Row | undefined): number {
  return isInline(r) ? r.len : 0;
}

/** Allocated space of one key through a chain: pool blocks and inline bytes. */
interface KeyAlloc {
  blocks: number;
  inlineBytes: number;
}

/** What the write stores for one block. */
type Step =
  /** Overwrite in place, inside an own pool block. */
  | { fb: FBlock; kind: 'inplace'; pos: number; buf: Uint8Array }
  /** A fresh pool block with `buf` at `off` (a whole block at 0, or only the written bytes when the rest reads as zeros). */
  | { fb: FBlock; kind: 'pool'; buf: Uint8Array; off?: number; pb?: PBlock }
  /** An inline row with these bytes (1..inline_max long). */
  | { fb: FBlock; kind: 'inline'; data: Uint8Array }
  /** `slice` written at `offset` into the own inline row `own`, staying inline: the write-back cache takes it. */
  | { fb: FBlock; kind: 'cached'; own: Inline; offset: number; slice: Uint8Array };

/** What the block I/O needs of its pool (declared here, where it is used). */
export interface BlockPool {
  readonly blockSizeBytes: number;
  /** Blocks whose bytes end at most this far in are stored inline; 0: never. */
  readonly inlineMaxBytes: number;
  /** Every block allocateBlocks hands out reads as zeros (never used, or punched): a write may fill only its part. */
  readonly freshBlocksReadZero: boolean;
  readonly root: string;
  /** Run `fn` as one atomic operation: all of it, or nothing (see pool.ts). */
  atomically<T>(op: string, fn: () => T): T;
  /** The device, or EROFS/ENOENT/EIO unless it can take writes now. */
  requireWritableDevice(dev: DevId, op: string): DeviceRow;
  /** Hand out `n` blocks (space map + autoextend), or throw ENOSPC. */
  allocateBlocks(n: number): PBlock[];
  /** A write into fresh blocks reached the data file (the host had room). */
  noteDataWritten(): void;
  /** Room on the host for `bytes` more of metadata (inline data), or throw ENOSPC. */
  reserveMetadataBytes(bytes: number): void;
  /** Return a block to the space map (reusable after the commit). */
  freeBlock(pb: PBlock): void;
  /** True when `pb` was handed out in the open transaction (its data is not committed). */
  allocatedInTx(pb: PBlock): boolean;
  /** Run `undo` if the current operation fails (puts back bytes overwritten in place). */
  onRollback(undo: () => void): void;
  getDevice(id: DevId): DeviceInfo | undefined;
  releaseDevice(id: DevId): void;
}

/** The mapping statements and the per-(device, key) allocation, shared by every device of a pool. */
export class BlockIo {
  /** Visible pool blocks and inline bytes per (device, key), for st_blocks; exact or absent. */
  readonly keyBlocks = new Map<string, KeyAlloc>();
  /**
   * The same per (frozen layer, key): what a chain ending in that layer shows, shared by
   * every device above it whose own layer has no rows of the key. Frozen layers never
   * change, so an entry stays exact until its layer goes (clearAllocations).
   */
  private readonly layerKeyBlocks = new Map<string, KeyAlloc>();
  /** Inline rows rewritten by writes (inline-cache.ts): the pool flushes it before COMMIT and check, clears it on abort. */
  readonly inline: InlineCache;
  private readonly st;

  constructor(
    db: Db,
    private readonly pool: BlockPool,
    private readonly tree: SnapshotTree,
    private readonly data: DataFile,
  ) {
    this.st = {
      // The rows of a block range, with each inline block's length (length() of a blob is
      // read from its record header: its bytes are not loaded). Raw rows: [fblock, layer,
      // pblock, inline_id, length]. Parameters: key, fb0, fb1.
      rangeLengths: db
        .prepare(
          'SELECT m.fblock, m.layer, m.pblock, m.inline_id, length(i.data) FROM mappings m LEFT JOIN inline_blocks i ON i.id = m.inline_id WHERE m.ino = ? AND m.fblock >= ? AND m.fblock < ?',
        )
        .raw(),
      // The same, and the bytes of the inline rows that are the top layer's or alone at
      // their block: a small file read is one statement, while rows of other devices'
      // layers never load theirs (resolve loads a lower row's bytes by id when it decides
      // the block). Parameters: top layer, key, fb0, fb1; a sixth column, the bytes.
      rangeData: db
        .prepare(
          `SELECT m.fblock, m.layer, m.pblock, m.inline_id, length(i.data),
             CASE WHEN m.inline_id IS NOT NULL AND (m.layer = ?
               OR NOT EXISTS (SELECT 1 FROM mappings o WHERE o.ino = m.ino AND o.fblock = m.fblock AND o.layer <> m.layer))
             THEN i.data END
           FROM mappings m LEFT JOIN inline_blocks i ON i.id = m.inline_id WHERE m.ino = ? AND m.fblock >= ? AND m.fblock < ?`,
        )
        .raw(),
      inlineData: db.prepare('SELECT data FROM inline_blocks WHERE id = ?').pluck(),
      upsertMapping: db.prepare(
        'INSERT INTO mappings (ino, fblock, layer, pblock, inline_id) VALUES (?, ?, ?, ?, ?) ON CONFLICT (ino, fblock, layer) DO UPDATE SET pblock = excluded.pblock, inline_id = excluded.inline_id',
      ),
      insertInline: db.prepare('INSERT INTO inline_blocks (id, data) VALUES (?, ?)'),
      maxInlineId: db.prepare('SELECT max(id) FROM inline_blocks').pluck(),
      updateInline: db.prepare('UPDATE inline_blocks SET data = ? WHERE id = ?'),
      deleteMapping: db.prepare('DELETE FROM mappings WHERE ino = ? AND fblock = ? AND layer = ?'),
      deleteKeyInLayer: db.prepare('DELETE FROM mappings WHERE layer = ? AND ino = ?'),
      keyInLayer: db.prepare('SELECT 1 FROM mappings WHERE layer = ? AND ino = ? LIMIT 1').pluck(),
    };
    this.inline = new InlineCache(
      { storeInline: (id, data) => this.st.updateInline.run(data, id), onRollback: (undo) => pool.onRollback(undo) },
      pool.inlineMaxBytes,
      INLINE_CACHE_BYTES,
    );
  }

  find(dev: DevId, key: FileKey, fblock: FBlock): FoundBlock | undefined {
    const chain = this.tree.chainOf(dev);
    const r = this.resolve(chain, key, fblock, fblock + 1, true).get(fblock);
    if (r === undefined) return undefined;
    const own = r.own !== undefined;
    const row = own ? r.own : r.lower;
    if (row === undefined || row === null) return undefined;
    const layerId = own ? chain.top : chain.layers[r.lowerPos]!;
    if (isInline(row)) return { pblock: null, data: row.cached ? Buffer.from(row.data!) : row.data!, layerId, own };
    return { pblock: row, data: null, layerId, own };
  }

  read(dev: DevId, key: FileKey, offsetBytes: number, buf: Uint8Array): void {
    const len = buf.byteLength;
    if (len === 0) return;
    const bs = this.pool.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + len - 1) / bs) + 1;
    this.readResolved(this.resolve(this.tree.chainOf(dev), key, fb0, fb1, true), offsetBytes, buf);
  }

  /** See ThinDevice.readBytes. */
  readBytes(dev: DevId, key: FileKey, offsetBytes: number, length: number): Buffer {
    if (length === 0) return Buffer.alloc(0);
    const bs = this.pool.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + length - 1) / bs) + 1;
    const res = this.resolve(this.tree.chainOf(dev), key, fb0, fb1, true);
    if (fb1 === fb0 + 1) {
      // Within one inline block's bytes: those bytes themselves (a buffer of this read's own).
      const r = res.get(fb0);
      const row = r === undefined ? undefined : r.own !== undefined ? r.own : r.lower;
      const from = offsetBytes - fb0 * bs;
      if (isInline(row) && from + length <= row.len) {
        const bytes = row.data!.subarray(from, from + length);
        return row.cached ? Buffer.from(bytes) : bytes;
      }
    }
    const buf = Buffer.allocUnsafe(length);
    this.readResolved(res, offsetBytes, buf);
    return buf;
  }

  /** Fill `buf` from `offsetBytes` with the blocks `res` resolved. */
  private readResolved(res: Map<FBlock, Resolved>, offsetBytes: number, buf: Uint8Array): void {
    const len = buf.byteLength;
    const bs = this.pool.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + len - 1) / bs) + 1;
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
      const row = r === undefined ? undefined : r.own !== undefined ? r.own : r.lower;
      if (typeof row !== 'number') {
        flush();
        let zeroFrom = bufStart;
        if (isInline(row)) {
          // An inline block: its bytes, then zeros to the end of the block.
          const part = row.data!.subarray(Math.min(row.len, from - blockStart), Math.min(row.len, to - blockStart));
          buf.set(part, bufStart);
          zeroFrom += part.byteLength;
        }
        buf.fill(0, zeroFrom, bufStart + (to - from));
        continue;
      }
      const pos = this.data.pos(row, from - blockStart);
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
  write(dev: DevId, key: FileKey, offsetBytes: number, data: Uint8Array): boolean {
    const len = data.byteLength;
    if (len === 0) return false;
    const d = this.pool.requireWritableDevice(dev, 'write');
    const bs = this.pool.blockSizeBytes;
    const fb0 = Math.floor(offsetBytes / bs);
    const fb1 = Math.floor((offsetBytes + len - 1) / bs) + 1;
    const chain = this.tree.chainOf(dev);
    const top = this.tree.layers.get(chain.top)!;
    // Lengths first, bytes by id for the rows that decide (a cached row's bytes are not read).
    const res = this.resolve(chain, key, fb0, fb1, true, false);
    const steps: Step[] = [];
    let needAlloc = 0;
    let inlineBytes = 0;
    // Changes of the top layer's counters (see the top of the file).
    let dMapped = 0;
    let dOwned = 0;
    let dInlineMapped = 0;
    let dInlineOwned = 0;
    for (let fb = fb0; fb < fb1; fb++) {
      const blockStart = fb * bs;
      const from = Math.max(offsetBytes, blockStart);
      const to = Math.min(offsetBytes + len, blockStart + bs);
      const slice = data.subarray(from - offsetBytes, to - offsetBytes);
      const r = res.get(fb);
      const own = r?.own;
      if (typeof own === 'number') {
        steps.push({ fb, kind: 'inplace', pos: this.data.pos(own, from - blockStart), buf: slice });
        continue;
      }
      const whole = isInline(own) && from === blockStart && to - blockStart >= own.len;
      if (isInline(own) && !whole && Math.max(to - blockStart, own.len) <= this.pool.inlineMaxBytes) {
        // A partial rewrite of an own inline row (an append, a page inside it): into the
        // write-back cache at the rows step below. (A whole one is written as it comes.)
        const len = Math.max(to - blockStart, own.len);
        steps.push({ fb, kind: 'cached', own, offset: from - blockStart, slice });
        inlineBytes += len;
        dInlineMapped += len - own.len;
        dInlineOwned += len - own.len;
        continue;
      }
      const visible = own !== undefined ? own : r?.lower;
      const step = this.newBlock(fb, visible, from - blockStart, slice);
      steps.push(step);
      const afterPool = step.kind === 'pool' ? 1 : 0;
      const afterInline = step.kind === 'inline' ? step.data.byteLength : 0;
      if (step.kind === 'pool') needAlloc++;
      inlineBytes += afterInline;
      dMapped += afterPool - poolOf(visible);
      dInlineMapped += afterInline - inlineOf(visible);
      dOwned += afterPool - poolOf(own);
      dInlineOwned += afterInline - inlineOf(own);
    }
    const growth = dMapped * bs + dInlineMapped;
    if (growth > 0 && top.mapped * bs + top.inlineMapped + growth > d.sizeLimitBytes) {
      throw fail('ENOSPC', 'write', d.name, `device size limit of ${d.sizeLimitBytes} bytes reached`);
    }
    if (inlineBytes > 0) this.pool.reserveMetadataBytes(inlineBytes);
    const fresh = needAlloc > 0 ? this.pool.allocateBlocks(needAlloc) : [];
    let next = 0;
    const writes: { pos: number; buf: Uint8Array }[] = [];
    for (const s of steps) {
      if (s.kind === 'inplace') writes.push({ pos: s.pos, buf: s.buf });
      else if (s.kind === 'pool') {
        s.pb = fresh[next++]!;
        writes.push({ pos: this.data.pos(s.pb, s.off ?? 0), buf: s.buf });
      }
    }
    try {
      this.data.pwriteRuns(writes);
      if (fresh.length > 0) this.pool.noteDataWritten();
    } catch (err) {
      // Nothing maps the fresh blocks; give their (partial) bytes back to the host now.
      this.data.punchBlocks(fresh);
      throw err;
    }
    // Should the operation fail later, the fresh blocks go back to the free list holding
    // these bytes: punch them, so that they read as zeros when handed out again.
    if (fresh.length > 0) this.pool.onRollback(() => this.data.punchBlocks(fresh));
    // Only now the rows: a failed pwrite above left every row (an inline one too) as it was.
    // (A pool block replacing an own inline block drops its bytes: the trigger, metadata.ts.)
    for (const s of steps) {
      if (s.kind === 'cached') this.inline.write(s.own.id, s.own.data!, s.offset, s.slice);
      else if (s.kind === 'pool') {
        const own = res.get(s.fb)?.own;
        if (isInline(own)) this.inline.forget(own.id);
        this.st.upsertMapping.run(key, s.fb, chain.top, s.pb!, null);
      } else if (s.kind === 'inline') {
        const own = res.get(s.fb)?.own;
        if (isInline(own)) {
          this.inline.forget(own.id);
          this.st.updateInline.run(s.data, own.id);
        } else this.st.upsertMapping.run(key, s.fb, chain.top, null, this.insertInline(s.data));
      }
    }
    this.account(dev, key, top, dMapped, dOwned, dInlineMapped, dInlineOwned);
    return steps.some((s) => s.kind !== 'inplace');
  }

  /**
   * How to store block `fb` after writing `slice` at `offsetInBlock`, when no own pool
   * block takes it in place: its new bytes start from `visible` (zeros, inline bytes, or a
   * lower pool block: copy-on-write) and go by their extent (the rules at the top).
   */
  private newBlock(fb: FBlock, visible: Row | undefined, offsetInBlock: number, slice: Uint8Array): Step {
    const bs = this.pool.blockSizeBytes;
    const end = offsetInBlock + slice.byteLength;
    if (typeof visible !== 'number') {
      const extent = Math.max(end, isInline(visible) ? visible.len : 0);
      if (extent <= this.pool.inlineMaxBytes) {
        if (offsetInBlock === 0 && !(isInline(visible) && visible.len > end)) return { fb, kind: 'inline', data: slice };
        const c = Buffer.alloc(extent);
        if (isInline(visible)) visible.data!.copy(c);
        c.set(slice, offsetInBlock);
        return { fb, kind: 'inline', data: c };
      }
    }
    if (slice.byteLength === bs) return { fb, kind: 'pool', buf: slice }; // a whole block: no copy
    // Nothing below: a fresh block that reads as zeros takes only the written bytes (no 64 KiB
    // write, and the host keeps the rest of the block unallocated).
    if ((visible === undefined || visible === null) && this.pool.freshBlocksReadZero) return { fb, kind: 'pool', buf: slice, off: offsetInBlock };
    // A partial block starts from the lower pool block (copy-on-write), the inline bytes, or
    // zeros. (A fresh block may hold stale bytes when a punch failed: write all of it.)
    const block = Buffer.alloc(bs);
    if (typeof visible === 'number') this.data.readBlock(visible, 0, block);
    else if (isInline(visible)) visible.data!.copy(block, 0, 0, Math.min(bs, visible.len));
    block.set(slice, offsetInBlock);
    return { fb, kind: 'pool', buf: block };
  }

  /** Apply counter changes to the top layer and the cached allocation of (dev, key). */
  private account(dev: DevId, key: FileKey, top: Layer, dMapped: number, dOwned: number, dInlineMapped: number, dInlineOwned: number): void {
    if (dMapped === 0 && dOwned === 0 && dInlineMapped === 0 && dInlineOwned === 0) return; // e.g. an overwrite in place
    top.mapped += dMapped;
    top.owned += dOwned;
    top.inlineMapped += dInlineMapped;
    top.inlineOwned += dInlineOwned;
    this.tree.touch(top);
    const kb = this.keyBlocks.get(`${dev}:${key}`);
    if (kb !== undefined) {
      kb.blocks += dMapped;
      kb.inlineBytes += dInlineMapped;
    }
  }

  /** See ThinDevice.discard; the caller runs it atomically. */
  discard(dev: DevId, key: FileKey, fromBlock: FBlock, toBlock: FBlock): void {
    if (toBlock <= fromBlock) return;
    this.pool.requireWritableDevice(dev, 'discard');
    const chain = this.tree.chainOf(dev);
    const top = this.tree.layers.get(chain.top)!;
    const res = this.resolve(chain, key, fromBlock, toBlock, false);
    if (res.size === 0) return;
    let dMapped = 0;
    let dOwned = 0;
    let dInlineMapped = 0;
    let dInlineOwned = 0;
    for (const [fb, r] of res) {
      const lowerVisible = r.lower !== undefined && r.lower !== null;
      const visible = r.own !== undefined ? r.own : r.lower;
      if (visible === undefined || visible === null) continue; // a hole already
      if (typeof r.own === 'number') this.pool.freeBlock(r.own);
      else if (isInline(r.own)) this.inline.forget(r.own.id);
      dMapped -= poolOf(visible);
      dInlineMapped -= inlineOf(visible);
      dOwned -= poolOf(r.own);
      dInlineOwned -= inlineOf(r.own);
      if (lowerVisible) this.st.upsertMapping.run(key, fb, chain.top, null, null);
      else this.st.deleteMapping.run(key, fb, chain.top);
    }
    this.account(dev, key, top, dMapped, dOwned, dInlineMapped, dInlineOwned);
  }

  /**
   * See ThinDevice.truncate; the caller runs it atomically, so a failure of the tail
   * write (ENOSPC on a full pool) also undoes the discard before it.
   */
  truncate(dev: DevId, key: FileKey, sizeBytes: number): void {
    const bs = this.pool.blockSizeBytes;
    const keepBlocks = Math.ceil(sizeBytes / bs);
    const tail = sizeBytes % bs;
    const chain = this.tree.chainOf(dev);
    const last = tail === 0 ? undefined : this.resolve(chain, key, keepBlocks - 1, keepBlocks, true).get(keepBlocks - 1);
    this.discard(dev, key, keepBlocks, Number.MAX_SAFE_INTEGER);
    if (last === undefined) return;
    const visible = last.own !== undefined ? last.own : last.lower;
    if (visible === undefined || visible === null) return;
    if (isInline(visible) && visible.len <= tail) return; // its bytes end before the new end
    const own = typeof last.own === 'number' ? last.own : undefined;
    const toInline = isInline(visible) || tail <= this.pool.inlineMaxBytes;
    if (toInline || (own !== undefined && !this.pool.allocatedInTx(own))) {
      // Keep only the block's head, written again after the block is discarded: inline when
      // the head is within inline_max (an own pool block is freed, a lower one hidden, a
      // lower inline one's head copied up). And a committed own block holds data the file
      // still had before this (uncommitted) shrink: zeroing it in place would lose that
      // data if we crash before the commit, so its head moves to a fresh block.
      const head = Buffer.alloc(tail);
      if (isInline(visible)) visible.data!.copy(head, 0, 0, tail);
      else this.data.readBlock(visible, 0, head);
      this.discard(dev, key, keepBlocks - 1, keepBlocks);
      this.write(dev, key, (keepBlocks - 1) * bs, head);
      return;
    }
    if (own !== undefined) {
      // The block is this transaction's own: zero its tail in place, but keep the old bytes
      // so that a failure later in the operation puts them back (the operation changes nothing).
      const old = Buffer.alloc(bs - tail);
      this.data.readBlock(own, tail, old);
      const pos = this.data.pos(own, tail);
      this.pool.onRollback(() => this.data.pwriteRuns([{ pos, buf: old }]));
    }
    // (A lower pool block is not written here at all: the write copies it first.)
    this.write(dev, key, sizeBytes, Buffer.alloc(bs - tail));
  }

  /** See ThinDevice.removeKey; the caller runs it atomically. */
  removeKey(dev: DevId, key: FileKey): void {
    this.pool.requireWritableDevice(dev, 'remove');
    const chain = this.tree.chainOf(dev);
    const top = this.tree.layers.get(chain.top)!;
    const res = this.resolve(chain, key, 0, Number.MAX_SAFE_INTEGER, false);
    let any = false;
    let dMapped = 0;
    let dOwned = 0;
    let dInlineMapped = 0;
    let dInlineOwned = 0;
    for (const [, r] of res) {
      if (r.own === undefined) continue;
      any = true;
      if (typeof r.own === 'number') this.pool.freeBlock(r.own);
      else if (isInline(r.own)) this.inline.forget(r.own.id);
      // What is visible goes from the own row to the lower one.
      dMapped += poolOf(r.lower) - poolOf(r.own);
      dInlineMapped += inlineOf(r.lower) - inlineOf(r.own);
      dOwned -= poolOf(r.own);
      dInlineOwned -= inlineOf(r.own);
    }
    if (!any) return;
    this.keyBlocks.delete(`${dev}:${key}`);
    this.st.deleteKeyInLayer.run(chain.top, key);
    this.account(dev, key, top, dMapped, dOwned, dInlineMapped, dInlineOwned);
  }

  /** Pool blocks and inline bytes of `key` visible through the chain (cached, exact). */
  keyAllocation(dev: DevId, key: FileKey): KeyAlloc {
    const k = `${dev}:${key}`;
    let a = this.keyBlocks.get(k);
    if (a === undefined) {
      const chain = this.tree.chainOf(dev);
      // Nothing of the key in the device's own layer: it shows what the layer below shows.
      // Counted once per frozen layer, not once per device: st_blocks of a file resolves
      // all its blocks, and the first stat of a 1 GiB image file in each new container took
      // 17-21 ms (16,384 blocks through the chain), most of the benchmark's CoW row.
      const below = chain.layers.length > 1 && this.st.keyInLayer.get(chain.top, key) === undefined ? chain.layers[1] : undefined;
      a = { ...(below === undefined ? this.countAllocation(chain, key) : this.layerAllocation(chain, below, key)) };
      remember(this.keyBlocks, k, a);
    }
    return a;
  }

  /** Drop every cached allocation: the metadata was reloaded. */
  clearAllocations(): void {
    this.keyBlocks.clear();
    this.layerKeyBlocks.clear();
  }

  /**
   * Drop the cached allocations of devices and layers that are gone (a device was removed,
   * and with it the layers nobody needs). The others stay exact: removing a device changes
   * no layer that is left. (Clearing everything here made each new container of an image
   * count its big files again after any `rm`: the benchmark's CoW row removes one per run.)
   */
  forgetRemoved(): void {
    for (const k of this.keyBlocks.keys()) if (!this.tree.devices.has(Number(k.slice(0, k.indexOf(':'))) as DevId)) this.keyBlocks.delete(k);
    for (const k of this.layerKeyBlocks.keys()) if (!this.tree.layers.has(Number(k.slice(0, k.indexOf(':'))) as LayerId)) this.layerKeyBlocks.delete(k);
  }

  /** What `key` shows through the part of `chain` from frozen layer `layer` down (cached per layer). */
  private layerAllocation(chain: Chain, layer: LayerId, key: FileKey): KeyAlloc {
    const k = `${layer}:${key}`;
    let a = this.layerKeyBlocks.get(k);
    if (a === undefined) {
      const layers = chain.layers.slice(chain.pos.get(layer)!);
      a = this.countAllocation({ top: layer, layers, pos: new Map(layers.map((l, i) => [l, i])) }, key);
      remember(this.layerKeyBlocks, k, a);
    }
    return a;
  }

  private countAllocation(chain: Chain, key: FileKey): KeyAlloc {
    const a = { blocks: 0, inlineBytes: 0 };
    for (const r of this.resolve(chain, key, 0, Number.MAX_SAFE_INTEGER, false).values()) {
      const v = r.own !== undefined ? r.own : r.lower;
      a.blocks += poolOf(v);
      a.inlineBytes += inlineOf(v);
    }
    return a;
  }

  /** See ThinDevice.blockMap. */
  blockMap(dev: DevId, key: FileKey, fb0: FBlock, count: number, writable: boolean): Float64Array {
    const out = new Float64Array(count).fill(BLOCK_MAP_ZERO);
    if (count === 0) return out;
    for (const [fb, r] of this.resolve(this.tree.chainOf(dev), key, fb0, fb0 + count, false)) {
      const own = r.own !== undefined;
      const row = own ? r.own : r.lower;
      if (isInline(row)) out[fb - fb0] = BLOCK_MAP_INLINE;
      else if (typeof row === 'number') out[fb - fb0] = row * 2 + (own && writable ? 1 : 0);
    }
    return out;
  }

  /** Insert an inline row; its id is above every row's and every cache entry's, so no entry names a newer row (inline-cache.ts). */
  private insertInline(data: Uint8Array): number {
    const id = Math.max((this.st.maxInlineId.get() as number | null) ?? 0, this.inline.highestId) + 1;
    this.st.insertInline.run(id, data);
    return id;
  }

  /**
   * Rows of (key, [fb0, fb1)) through the chain: per file block, own and nearest lower
   * row. With `withData` the inline rows that decide a block (the own one, else the
   * nearest lower one) carry their bytes; the others may carry only their length.
   */
  private resolve(chain: Chain, key: FileKey, fb0: FBlock, fb1: FBlock, withData: boolean, dataWithRows = withData): Map<FBlock, Resolved> {
    const out = new Map<FBlock, Resolved>();
    const rows = (dataWithRows ? this.st.rangeData.all(chain.top, key, fb0, fb1) : this.st.rangeLengths.all(key, fb0, fb1)) as [
      number,
      LayerId,
      PBlock | null,
      number | null,
      number | null,
      (Buffer | null)?,
    ][];
    for (const row of rows) {
      const p = chain.pos.get(row[1]);
      if (p === undefined) continue;
      let r = out.get(row[0]);
      if (r === undefined) {
        r = { own: undefined, lower: undefined, lowerPos: Number.MAX_SAFE_INTEGER };
        out.set(row[0], r);
      }
      const v: Row = row[2] !== null ? row[2] : row[3] === null ? null : { id: row[3], len: row[4] ?? 0, data: row[5] ?? null };
      if (p === 0) r.own = v;
      else if (p < r.lowerPos) {
        r.lower = v;
        r.lowerPos = p;
      }
    }
    if (this.inline.size > 0) {
      // Rows rewritten in the open transaction: their length and bytes are the cache's.
      for (const r of out.values()) {
        for (const v of [r.own, r.lower]) {
          const bytes = isInline(v) ? this.inline.get(v.id) : undefined;
          if (bytes !== undefined) Object.assign(v!, { len: bytes.byteLength, data: bytes, cached: true });
        }
      }
    }
    if (withData) {
      // The bytes of the rows that decide a block and did not come with the rows.
      for (const r of out.values()) {
        const v = r.own !== undefined ? r.own : r.lower;
        if (isInline(v) && v.data === null) v.data = (this.st.inlineData.get(v.id) as Buffer | undefined) ?? Buffer.alloc(0);
      }
    }
    return out;
  }
}

const KEY_BLOCKS_LIMIT = 100_000;

/** Caches an allocation, evicting the oldest entry (Map keeps insertion order) past KEY_BLOCKS_LIMIT, not the whole cache. */
function remember(cache: Map<string, KeyAlloc>, k: string, a: KeyAlloc): void {
  if (cache.size >= KEY_BLOCKS_LIMIT) {
    const oldest = cache.keys().next().value;
    if (oldest !== undefined) cache.delete(oldest);
  }
  cache.set(k, a);
}
/** Buffers the inline write-back cache may hold before it writes rows back early (SQLite's own page cache is 64 MiB). */
const INLINE_CACHE_BYTES = 32 * 1024 * 1024;

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

  /**
   * Where blocks [fb0, fb0 + count) of `key` are, one entry per block (BLOCK_MAP_* above):
   * a snapshot of the mappings as they are now, for a reader outside JS that must be told
   * when they change (the filesystem drops its copy before any change, fs/data.ts).
   * `writable`: the caller may write in place into own pool blocks (its view takes writes);
   * false marks every block as not own. Own blocks are marked only while the pool takes writes.
   */
  blockMap(key: FileKey, fb0: FBlock, count: number, writable: boolean): Float64Array {
    let canWrite = writable;
    if (canWrite) {
      try {
        this.pool.requireWritableDevice(this.id, 'block map');
      } catch {
        canWrite = false;
      }
    }
    return this.io.blockMap(this.id, key, fb0, count, canWrite);
  }

  /** Fill `buf` from `offsetBytes` of `key`; holes read as zeros. Throws EIO when the data file can't be read. */
  read(key: FileKey, offsetBytes: number, buf: Uint8Array): void {
    this.io.read(this.id, key, offsetBytes, buf);
  }

  /**
   * `length` bytes from `offsetBytes` of `key`, as read() gives them, in a buffer the
   * caller owns: within one inline block's bytes, those bytes as SQLite handed them over
   * (no second copy), else a new buffer.
   */
  readBytes(key: FileKey, offsetBytes: number, length: number): Buffer {
    return this.io.readBytes(this.id, key, offsetBytes, length);
  }

  /**
   * Write `data` at `offsetBytes` of `key` (allocate-on-demand, one-block copy-on-write,
   * small blocks inline). On failure (ENOSPC: pool, device limit, host or metadata disk
   * full; EIO) no mapping or count changed. Returns true when a mapping changed (false:
   * every byte went in place into own pool blocks, so a blockMap taken before still holds).
   */
  write(key: FileKey, offsetBytes: number, data: Uint8Array): boolean {
    return this.pool.atomically('write', () => this.io.write(this.id, key, offsetBytes, data));
  }

  /** Free own blocks, drop own inline rows and hide lower ones in file blocks [fromBlock, toBlock). All or nothing. */
  discard(key: FileKey, fromBlock: FBlock, toBlock: FBlock): void {
    this.pool.atomically('discard', () => this.io.discard(this.id, key, fromBlock, toBlock));
  }

  /**
   * Make `key` `sizeBytes` long as far as blocks go: discard past it, zero the partial
   * tail (a new last block that ends within inline_max becomes inline). All or nothing.
   */
  truncate(key: FileKey, sizeBytes: number): void {
    this.pool.atomically('truncate', () => this.io.truncate(this.id, key, sizeBytes));
  }

  /** Drop this device's own blocks and rows (inline ones too) for `key` (the file is gone here). All or nothing. */
  removeKey(key: FileKey): void {
    this.pool.atomically('remove', () => this.io.removeKey(this.id, key));
  }

  /**
   * Bytes `key` takes through the chain, as st_blocks counts them: its pool blocks plus
   * its inline bytes rounded up to 512-byte sectors.
   */
  keyAllocatedBytes(key: FileKey): number {
    const a = this.io.keyAllocation(this.id, key);
    return a.blocks * this.pool.blockSizeBytes + Math.ceil(a.inlineBytes / 512) * 512;
  }

  /**
   * keyAllocatedBytes in block units (pool blocks, plus inline bytes as a fraction of a
   * block: exact, since 512 / block size is a power of two), so that blocks x block size
   * / 512 is st_blocks. Prefer keyAllocatedBytes.
   */
  keyMappedBlocks(key: FileKey): number {
    return this.keyAllocatedBytes(key) / this.pool.blockSizeBytes;
  }

  /** Pool blocks visible through the chain, and pool blocks only this device maps. */
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
