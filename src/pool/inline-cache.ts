/**
 * The write-back cache of inline blocks: the newest bytes of inline rows that writes
 * changed, kept in memory; those the open transaction changed (dirty) are written into
 * inline_blocks at commit, and stay cached (clean) for the next transaction's writes.
 *
 * Why. Without it every write into an inline block rewrites its whole blob in SQLite: the
 * row's bytes are read out, copied with the write applied, and written back (the old record
 * and its overflow pages go, new ones come) — a 100-byte append to a 16 KiB file moved
 * 32 KiB through SQLite and the JS heap. Measured mounted (bench/small-writes.ts, 2,000
 * files grown to 16 KiB by 100-byte open/append/close): 1.78x the wall time and 1.76x the
 * daemon's CPU of a block-only pool, where the same write is one pwrite into its block.
 * With the cache a write into a cached block copies only the bytes it writes, and the blob
 * is written once per commit however often it changed. Entries outlive the commit (clean)
 * because writes to many files spread over commits (a daemon commits every second): were
 * they dropped, each transaction's first write to a file would read its blob back out and
 * make a new buffer, and that garbage cost as much as the rewrites saved (the numbers with
 * it: the top of bench/small-writes.ts).
 *
 * Rules (thin.ts keeps them):
 *  - Only rewrites of existing inline rows of the top layer are cached; a new inline row is
 *    inserted as before (its id is what the mappings row points at). A cached row's bytes
 *    in SQLite are stale: whoever reads inline rows asks the cache first (BlockIo.resolve).
 *  - Reads see the cache: a row's length and bytes come from its entry when it has one.
 *    Entries are views of buffers the cache mutates: copy before handing bytes out.
 *  - Rollback-aware: each change registers an undo with the pool (onRollback), so an
 *    operation that fails leaves every entry as before it; a whole-transaction rollback
 *    (abort, a failed commit, fail mode) drops them all (clear): dirty ones were never
 *    durable, and clean ones are only a saving.
 *  - Crash rule: nothing durable differs from what commit writes. The pool flushes the
 *    dirty entries inside the transaction right before COMMIT (and before check reads the
 *    rows); until then they are part of the open transaction, lost by a crash as it is.
 *  - No entry names a row it was not made for: BlockIo gives a new inline row an id above
 *    every row's and above highestId (every id entered since the cache was last emptied).
 *    So an entry whose row was deleted (a discard, a deleted layer) is never read again,
 *    and its write-back updates nothing.
 *  - Bounded: past maxBytes of buffers the least recently written entries go, dirty ones
 *    written back first (undone by a rollback too).
 */

/** What the cache needs of the pool: the statement that stores a row's bytes, and rollback registration. */
export interface InlineStore {
  /** UPDATE inline_blocks SET data = ? WHERE id = ? (no row: nothing happens). */
  storeInline(id: number, data: Uint8Array): void;
  /** Run `undo` if the current operation fails. */
  onRollback(undo: () => void): void;
}

interface Entry {
  /** Capacity buffer: its first `len` bytes are the row's bytes. */
  buf: Buffer;
  len: number;
  /** Changed since the row last got its bytes (flush writes it). */
  dirty: boolean;
}

/** Smallest capacity handed out, so that appends do not reallocate at every write. */
const MIN_CAPACITY = 4096;

export class InlineCache {
  private readonly entries = new Map<number, Entry>();
  private bytes = 0;
  /** The highest row id entered since the cache was last emptied (stale entries may name it): new rows get ids above it. */
  private highest = 0;

  constructor(
    private readonly store: InlineStore,
    /** Longest inline row (the pool's inline_max). */
    private readonly inlineMaxBytes: number,
    /** Buffers held before the least recently written entries are written back. */
    private readonly maxBytes: number,
  ) {}

  get highestId(): number {
    return this.highest;
  }

  /** Number of cached rows. */
  get size(): number {
    return this.entries.size;
  }

  /** The newest bytes of row `id` when it is cached (a view: copy it before handing it out). */
  get(id: number): Buffer | undefined {
    const e = this.entries.get(id);
    return e === undefined ? undefined : e.buf.subarray(0, e.len);
  }

  /**
   * Write `slice` at `offset` into inline row `id`, whose current bytes are `current` (read
   * when it is not cached yet). Bytes between the row's end and `offset` become zeros; the
   * row grows to the end of the write, which must be within inline_max. Undone on rollback.
   */
  write(id: number, current: Uint8Array, offset: number, slice: Uint8Array): void {
    const end = offset + slice.byteLength;
    let e = this.entries.get(id);
    if (e === undefined) {
      const len = current.byteLength;
      const buf = Buffer.allocUnsafe(this.capacity(Math.max(len, end)));
      buf.set(current);
      e = { buf, len, dirty: true };
      this.add(id, e);
      this.store.onRollback(() => this.remove(id));
    } else {
      // Most recently written last: eviction takes the first.
      this.entries.delete(id);
      this.entries.set(id, e);
      const entry = e;
      const { buf: oldBuf, len: oldLen, dirty: oldDirty } = entry;
      const overwritten = offset < oldLen ? Buffer.from(oldBuf.subarray(offset, Math.min(end, oldLen))) : undefined;
      this.store.onRollback(() => {
        if (overwritten !== undefined) oldBuf.set(overwritten, offset);
        this.bytes += oldBuf.byteLength - entry.buf.byteLength;
        entry.buf = oldBuf;
        entry.len = oldLen;
        entry.dirty = oldDirty;
      });
      entry.dirty = true;
      if (end > oldBuf.byteLength) {
        // Grow into a new buffer: the old one stays as it was, for the undo.
        const buf = Buffer.allocUnsafe(this.capacity(end));
        oldBuf.copy(buf, 0, 0, oldLen);
        this.bytes += buf.byteLength - oldBuf.byteLength;
        entry.buf = buf;
      }
    }
    if (offset > e.len) e.buf.fill(0, e.len, offset);
    e.buf.set(slice, offset);
    e.len = Math.max(e.len, end);
    this.evict(id);
  }

  /** Forget row `id` (its row is gone or no longer inline). Undone on rollback. */
  forget(id: number): void {
    const e = this.entries.get(id);
    if (e === undefined) return;
    this.remove(id);
    this.store.onRollback(() => this.add(id, e));
  }

  /** Write every dirty entry into its row (inside the transaction: before COMMIT, before check); they stay, clean. */
  flush(): void {
    for (const [id, e] of this.entries) {
      if (!e.dirty) continue;
      this.store.storeInline(id, e.buf.subarray(0, e.len));
      e.dirty = false;
    }
  }

  /** Drop every entry: the transaction is gone (what was dirty never reached a commit). */
  clear(): void {
    this.entries.clear();
    this.bytes = 0;
    this.highest = 0;
  }

  private capacity(n: number): number {
    let c = MIN_CAPACITY;
    while (c < n) c *= 2;
    return Math.min(c, Math.max(n, this.inlineMaxBytes));
  }

  private add(id: number, e: Entry): void {
    this.entries.set(id, e);
    this.bytes += e.buf.byteLength;
    this.highest = Math.max(this.highest, id);
  }

  private remove(id: number): void {
    const e = this.entries.get(id);
    if (e === undefined) return;
    this.entries.delete(id);
    this.bytes -= e.buf.byteLength;
  }

  /** Past maxBytes: drop the least recently written entries (but `keep`), writing dirty ones back first. */
  private evict(keep: number): void {
    for (const [id, e] of this.entries) {
      if (this.bytes <= this.maxBytes) return;
      if (id === keep) continue;
      if (e.dirty) this.store.storeInline(id, e.buf.subarray(0, e.len));
      this.remove(id);
      this.store.onRollback(() => this.add(id, e));
    }
  }
}
