/**
 * The space map (dm-space-map's job): which pool blocks are free, the high-water mark,
 * the free-space floor and autoextend. Blocks [0, hwm) have been handed out at least
 * once; those of them that are free are rows of free_blocks; [hwm, dataBlocks) are free.
 *
 * Rules, written where they are kept:
 *  - Never allocate a block freed in the current transaction, in case we need to roll
 *    back: the old mapping would then point at someone else's data (free_blocks.freed_txn
 *    holds the transaction that freed it; only rows of committed transactions are taken).
 *  - Counters live in memory and in the database: `flush()` writes hwm and data_blocks to
 *    the superblock inside the open transaction, so a rolled-back operation can reload the
 *    exact state it started from (`load()`); free counts are recomputed from free_blocks.
 *
 * Failure contract: allocate() either hands out all `n` blocks or throws ENOSPC having
 * changed nothing in memory (its free_blocks deletions are inside the caller's savepoint,
 * which the caller rolls back). A failed autoextend (the host refuses to grow the file)
 * is ENOSPC too; the file's length is then whatever ftruncate left, which is harmless:
 * open() sets it back to data_blocks.
 */
import { fail } from '../errors.js';
import { logger } from '../log.js';
import type { DataFile } from './datafile.js';
import type { Db } from './metadata.js';
import type { AutoextendOptions, PBlock } from './types.js';

const log = logger('pool');

/** Thrown by allocate() when only blocks freed in this transaction would make room: commit and retry. */
export class ReclaimNeeded extends Error {
  constructor() {
    super('allocation needs the blocks freed in this transaction: commit and retry');
  }
}

export class SpaceMap {
  hwm = 0;
  dataBlocks = 0;
  /** Free rows of committed transactions (can be handed out now). */
  freeReusable = 0;
  /** Free rows of the open transaction (reusable once it commits). */
  freePending = 0;
  /** Set while allocations are refused for lack of space (pool mode out-of-data-space). */
  outOfSpace = false;
  /** Blocks handed out in the open transaction (superset after a rolled-back operation). */
  allocatedInTx = new Set<PBlock>();
  private dirty = false;

  private readonly st;

  constructor(
    private readonly db: Db,
    private readonly data: DataFile,
    readonly minFreePercent: number,
    readonly autoextend: AutoextendOptions | null,
  ) {
    this.st = {
      takeFree: db.prepare('SELECT pblock FROM free_blocks WHERE freed_txn <= ? ORDER BY pblock LIMIT ?').pluck(),
      deleteFree: db.prepare('DELETE FROM free_blocks WHERE pblock = ?'),
      insertFree: db.prepare('INSERT INTO free_blocks (pblock, freed_txn) VALUES (?, ?)'),
      countFree: db.prepare('SELECT count(*) FILTER (WHERE freed_txn <= ?) AS reusable, count(*) FILTER (WHERE freed_txn > ?) AS pending FROM free_blocks'),
      freedIn: db.prepare('SELECT pblock FROM free_blocks WHERE freed_txn > ?').pluck(),
      writeCounters: db.prepare('UPDATE superblock SET hwm = ?, data_blocks = ?'),
      readCounters: db.prepare('SELECT hwm, data_blocks FROM superblock WHERE id = 1'),
    };
  }

  /** (Re)load the counters from the database as of now (`txid`: the last committed transaction). */
  load(txid: number): void {
    const sb = this.st.readCounters.get() as { hwm: number; data_blocks: number };
    this.hwm = sb.hwm;
    this.dataBlocks = sb.data_blocks;
    const c = this.st.countFree.get(txid, txid) as { reusable: number; pending: number };
    this.freeReusable = c.reusable;
    this.freePending = c.pending;
    this.dirty = false;
  }

  /** Write hwm and data_blocks into the open transaction (see the rules at the top). */
  flush(): void {
    if (!this.dirty) return;
    this.st.writeCounters.run(this.hwm, this.dataBlocks);
    this.dirty = false;
  }

  usedBlocks(): number {
    return this.hwm - this.freeReusable - this.freePending;
  }

  minFreeBlocks(): number {
    return Math.ceil((this.dataBlocks * this.minFreePercent) / 100);
  }

  /**
   * Hand out `n` blocks: committed free blocks first (lowest first), then fresh ones past
   * the high-water mark. Autoextends the data file when configured. Throws ReclaimNeeded
   * when the blocks freed in this transaction would be enough, else ENOSPC.
   */
  allocate(n: number, txid: number, root: string): PBlock[] {
    const usedAfter = this.usedBlocks() + n;
    if (this.autoextend !== null) this.maybeAutoextend(usedAfter);
    const supply = this.dataBlocks - this.hwm + this.freeReusable;
    if (supply < n || this.dataBlocks - usedAfter < this.minFreeBlocks()) {
      if (this.freePending > 0) throw new ReclaimNeeded();
      if (!this.outOfSpace) {
        log.warn({ needBlocks: n, usedBlocks: this.usedBlocks(), dataBlocks: this.dataBlocks }, 'pool out of data space: allocation refused (minimum free space reached)');
      }
      this.outOfSpace = true;
      throw fail('ENOSPC', 'alloc', root, 'thin pool out of data space');
    }
    this.outOfSpace = false;
    const out: PBlock[] = [];
    if (this.freeReusable > 0) {
      for (const pb of this.st.takeFree.all(txid, n) as PBlock[]) {
        this.st.deleteFree.run(pb);
        out.push(pb);
      }
      this.freeReusable -= out.length;
    }
    if (out.length < n) this.dirty = true;
    while (out.length < n) out.push(this.hwm++ as PBlock);
    for (const pb of out) this.allocatedInTx.add(pb);
    return out;
  }

  /** Return a block to the space map; reusable only after the open transaction commits. */
  free(pb: PBlock, txid: number): void {
    this.st.insertFree.run(pb, txid + 1);
    this.freePending++;
  }

  /** Blocks freed in the open transaction (to punch once it has committed). */
  freedInTx(txid: number): PBlock[] {
    return this.st.freedIn.all(txid) as PBlock[];
  }

  /** After a commit: what this transaction freed is reusable now. */
  committed(): void {
    this.freeReusable += this.freePending;
    this.freePending = 0;
    this.allocatedInTx = new Set();
  }

  /** Grow the data file to `blocks` (never shrinks). ENOSPC when the host refuses. */
  growTo(blocks: number): void {
    this.data.truncateTo(blocks);
    this.dataBlocks = blocks;
    this.dirty = true;
    this.outOfSpace = false;
  }

  private maybeAutoextend(usedAfter: number): void {
    const ae = this.autoextend!;
    const bs = this.data.blockSizeBytes;
    const maxBlocks = Math.floor(ae.maxBytes / bs);
    while ((usedAfter + this.minFreeBlocks()) * 100 >= this.dataBlocks * ae.thresholdPercent && this.dataBlocks < maxBlocks) {
      const grown = Math.min(maxBlocks, Math.max(this.dataBlocks + 1, Math.floor(this.dataBlocks * (1 + ae.percent / 100))));
      log.info({ fromBytes: this.dataBlocks * bs, toBytes: grown * bs }, 'autoextending the data file');
      this.growTo(grown);
    }
  }
}
