/**
 * The inode table: one row per (inode, layer) holding that layer's copy of the
 * attributes. A device sees, for each inode, the row of the nearest layer in its chain;
 * all rows of one inode come back from one primary-key range scan, so the cost depends on
 * how many layers changed that inode, never on the depth of the chain.
 *
 * Copy-up: the first change of an inode whose row lives below copies the ROW into the
 * top layer (never data; data blocks are copied per block by the pool on write). Hard
 * links share the one row, so every name sees the same nlink after copy-up.
 *
 * Resolved rows are cached by inode number; the cache is write-through and is dropped on
 * abort and when the chain changes.
 */
import type { Db, FileKey, LayerId } from '../pool/index.js';
import { byteString, bytesOf, type ByteString } from './bytes.js';
import type { Attr, Ino } from './types.js';
import { DIR_SIZE, isDir, isReg, isLnk } from './mode.js';
import { posOf, type View } from './view.js';

/** An inode as the device sees it. */
export interface Inode {
  ino: Ino;
  /** Layer of the row in effect (the top layer once copied up). */
  layer: LayerId;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  nlink: number;
  rdev: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  /** Symlink target (a byte string, stored as a BLOB of its bytes); null for everything else. */
  target: ByteString | null;
  /** FileKey of the file's blocks in the pool. */
  dataKey: FileKey;
  /** A lower layer's row has the same data key: lower layers may map blocks of it. */
  dataBelow: boolean;
  /** A lower layer holds a row of this inode (it existed before this layer). */
  hasLower: boolean;
}

/** The attributes a new or changed inode row carries. */
export type InodeFields = Omit<Inode, 'ino' | 'layer' | 'dataBelow' | 'hasLower'>;

type Row = {
  layer: bigint;
  mode: bigint;
  uid: bigint;
  gid: bigint;
  size: bigint;
  nlink: bigint;
  rdev: bigint;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  target: Buffer | null;
  data_key: bigint;
};

const CACHE_LIMIT = 262_144;

export class InodeTable {
  private readonly cache = new Map<Ino, Inode>();
  private readonly st;
  /** Inodes shown without a row (the root of a read-only device that was never opened writable). */
  private readonly synthetic = new Map<Ino, Inode>();

  constructor(
    db: Db,
    private readonly view: View,
  ) {
    this.st = {
      rows: db
        .prepare('SELECT layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key FROM fs_inodes WHERE ino = ?')
        .safeIntegers(true),
      insert: db.prepare(
        `INSERT INTO fs_inodes (ino, layer, mode, uid, gid, size, nlink, rdev, atime, mtime, ctime, target, data_key)
         VALUES (@ino, @layer, @mode, @uid, @gid, @size, @nlink, @rdev, @atimeNs, @mtimeNs, @ctimeNs, @target, @dataKey)`,
      ),
      update: db.prepare(
        `UPDATE fs_inodes SET mode = @mode, uid = @uid, gid = @gid, size = @size, nlink = @nlink, rdev = @rdev,
           atime = @atimeNs, mtime = @mtimeNs, ctime = @ctimeNs, target = @target, data_key = @dataKey
         WHERE ino = @ino AND layer = @layer`,
      ),
      remove: db.prepare('DELETE FROM fs_inodes WHERE ino = ? AND layer = ?'),
      orphans: db.prepare('SELECT ino, data_key AS dataKey FROM fs_inodes WHERE layer = ? AND nlink = 0'),
      topInos: db.prepare('SELECT ino FROM fs_inodes WHERE layer = ? AND nlink > 0').pluck(),
    };
  }

  /** The inode as this device sees it, or undefined when no layer of the chain has it. */
  find(ino: Ino): Inode | undefined {
    const hit = this.cache.get(ino);
    if (hit !== undefined) return hit;
    let best: Row | undefined;
    let bestPos = Number.MAX_SAFE_INTEGER;
    const rows = this.st.rows.all(ino) as Row[];
    for (const r of rows) {
      const p = posOf(this.view, Number(r.layer) as LayerId);
      if (p !== undefined && p < bestPos) {
        best = r;
        bestPos = p;
      }
    }
    if (best === undefined) return this.synthetic.get(ino);
    let dataBelow = false;
    let hasLower = bestPos > 0;
    for (const r of rows) {
      const p = posOf(this.view, Number(r.layer) as LayerId);
      if (p === undefined || p === 0) continue;
      hasLower = true;
      if (r.data_key === best.data_key) dataBelow = true;
    }
    const inode: Inode = {
      ino,
      layer: Number(best.layer) as LayerId,
      mode: Number(best.mode),
      uid: Number(best.uid),
      gid: Number(best.gid),
      size: Number(best.size),
      nlink: Number(best.nlink),
      rdev: Number(best.rdev),
      atimeNs: best.atime,
      mtimeNs: best.mtime,
      ctimeNs: best.ctime,
      target: best.target === null ? null : byteString(best.target),
      dataKey: Number(best.data_key) as FileKey,
      dataBelow,
      hasLower,
    };
    if (this.cache.size >= CACHE_LIMIT) this.cache.clear();
    this.cache.set(ino, inode);
    return inode;
  }

  /** Show `inode` without storing it (read-only device with no root row). */
  addSynthetic(inode: Inode): void {
    this.synthetic.set(inode.ino, inode);
  }

  /** Insert a new inode in the top layer. */
  insert(ino: Ino, fields: InodeFields): Inode {
    const inode: Inode = { ...fields, ino, layer: this.view.chain.top, dataBelow: false, hasLower: false };
    this.st.insert.run(rowOf(inode));
    this.cache.set(ino, inode);
    return inode;
  }

  /** Change attributes of `inode` (copying its row up to the top layer first if it lives below). */
  update(inode: Inode, patch: Partial<InodeFields>): void {
    Object.assign(inode, patch);
    const top = this.view.chain.top;
    if (inode.layer === top) {
      this.st.update.run(rowOf(inode));
    } else {
      inode.layer = top;
      inode.hasLower = true;
      this.st.insert.run(rowOf(inode));
    }
  }

  /** Forget the top layer's row of `inode` (its last name is gone and no handle holds it). */
  remove(inode: Inode): void {
    if (inode.layer === this.view.chain.top) this.st.remove.run(inode.ino, inode.layer);
    this.cache.delete(inode.ino);
  }

  /** Unlinked inodes (nlink 0) whose rows are in the top layer: left over by a crash with open handles. */
  orphans(): { ino: Ino; dataKey: FileKey }[] {
    return this.st.orphans.all(this.view.chain.top) as { ino: Ino; dataKey: FileKey }[];
  }

  /** Inode numbers with a live row in the top layer (new or copied up). */
  topInodes(): Ino[] {
    return this.st.topInos.all(this.view.chain.top) as Ino[];
  }

  /** Drop every cached row (abort, chain change). */
  drop(): void {
    this.cache.clear();
  }
}

/** The statement parameters of `inode`: its target as a BLOB (only symlinks pay for a copy). */
function rowOf(inode: Inode): Inode | (Omit<Inode, 'target'> & { target: Buffer }) {
  return inode.target === null ? inode : { ...inode, target: bytesOf(inode.target) };
}

/** stat(2) of an inode. */
export function toAttr(inode: Inode, blockSizeBytes: number, mappedBlocks?: number): Attr {
  const size = isDir(inode.mode) ? DIR_SIZE : inode.size;
  // Regular files: the pool blocks their data key maps (sparse files show it); others
  // hold no data blocks, so report their size rounded up to 512-byte units.
  const blocks =
    isReg(inode.mode) && mappedBlocks !== undefined
      ? (mappedBlocks * blockSizeBytes) / 512
      : isLnk(inode.mode) || isDir(inode.mode)
        ? Math.ceil(size / 512)
        : 0;
  return {
    ino: inode.ino,
    mode: inode.mode,
    nlink: inode.nlink,
    uid: inode.uid,
    gid: inode.gid,
    rdev: inode.rdev,
    size,
    blocks,
    blksize: blockSizeBytes,
    atimeNs: inode.atimeNs,
    mtimeNs: inode.mtimeNs,
    ctimeNs: inode.ctimeNs,
  };
}
