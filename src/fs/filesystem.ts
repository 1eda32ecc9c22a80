/**
 * The union filesystem of one device over the device's layer chain, for the FUSE adapter
 * (and the layer import/export code) to call. Two APIs over the same private helpers:
 *  - PATH-BASED (getattr, mkdir, rename, ...): what FUSE's high level and src/layers hand
 *    us. Each method resolves its path (paths.ts) and calls the helper.
 *  - INODE-BASED (lookup, getattrIno, mkdirAt, renameAt, readdirplusIno, ...): what FUSE's
 *    low level hands us — a directory inode and a name, or an inode — so that a FUSE
 *    nodeid is a thinfs inode number and every name of a file is one kernel inode. Each
 *    method checks its inode and name and calls the same helper.
 *
 * Shape. Public methods check the view (read-only → EROFS, pool mode) and run as one
 * atomic pool operation (mutate → pool.atomically: all of it or nothing, whatever fails —
 * ENOSPC, an I/O error, a SQLite error), calling private helpers that assume both;
 * helpers never call public methods. Every object a changing call works on is resolved
 * inside its operation (a retried operation must not see what a failed try changed).
 * Every method is synchronous and throws ThinfsError.
 *
 * The inode-based API's rules (the kernel's side of them is the adapter's job):
 *  - Lookup counts: the adapter calls ref(ino) for every entry it hands the kernel
 *    (lookup, mkdirAt, mknodAt, symlinkAt, linkAt, createAt, each readdirplus entry but
 *    '.' and '..') and forget(ino, n) when the kernel forgets. An inode whose last name
 *    goes stays readable and writable by inode and handle (nlink 0) until neither a
 *    handle nor a lookup holds it; then it is destroyed and its blocks freed (handles.ts).
 *  - Generation numbers are 0: inode numbers are never handed out twice (schema.ts), so
 *    a nodeid the kernel holds never names another inode.
 *  - Unknown inodes are ENOENT; a call that makes or looks up a name in a removed
 *    directory is ENOENT; names are single components (byte strings, no '/', no NUL).
 *  - readdir offsets are cookies naming the entry they follow, so they survive creates
 *    and unlinks between two READDIRs (dirstream.ts).
 *
 * Storage, by concern (each module states its own rules at its top):
 *   schema.ts    tables in the pool's database, keyed by pool layer; the pool-wide inode counter
 *   inodes.ts    inode rows per layer, nearest layer wins, copy-up of rows (never data)
 *   dirents.ts   directory entries and whiteouts (the only module that knows whiteouts)
 *   xattrs.ts    extended attributes per layer
 *   data.ts      file bytes through the pool's thin device (copy-on-write rules)
 *   paths.ts     the dentry cache: path → inode and (directory inode, name) → inode
 *   handles.ts   open handles and kernel lookups: what keeps an unlinked inode alive
 *   dirstream.ts readdir offsets of a directory handle
 *   changes.ts   what the top layer changes, from its own rows
 *
 * Decisions (beyond DESIGN.md §3):
 *  - Symlinks are never followed: FUSE hands us paths the kernel has resolved. A symlink
 *    as an inner component is ENOTDIR; open() of one is ELOOP (as O_NOFOLLOW).
 *  - No atime updates on read (noatime): a read must not copy an inode row up into a
 *    container, which would also make the file show up in changes(). atime is set on
 *    creation and by utimens.
 *  - Directory nlink is 2 + subdirectories, as on ext4; no hard links to directories (EPERM).
 *  - New entries in a setgid directory take its group (directories also the setgid bit);
 *    chown of a non-directory clears setuid (and setgid when group-executable) and drops
 *    security.capability, as Linux does.
 *  - One writable Filesystem per device at a time (EBUSY otherwise); read-only ones may
 *    be open beside it and drop their caches when it writes (a per-device generation).
 *  - st_blocks of a regular file counts the pool blocks its data maps and its inline bytes (pool);
 *  - statfs file counts: 2^32 inodes, minus the pool-wide inode numbers handed out; space in
 *    4 KiB units, inline bytes counted as used (statfs()).
 *  - Mutations validate everything before the first write; and since each is one atomic
 *    operation, an error after the first write (ENOSPC, EIO) still leaves nothing half-done.
 */
import { constants } from 'node:fs';
import { fail, type ErrnoCode } from '../errors.js';
import { logger } from '../log.js';
import type { DevId, FileKey, Pool, ThinDevice } from '../pool/index.js';
import { isByteString } from './bytes.js';
import { computeChanges } from './changes.js';
import { FileData, type BlockCache } from './data.js';
import { DirentTable, type Entry } from './dirents.js';
import { HandleTable, type Handle } from './handles.js';
import { InodeTable, toAttr, type Inode, type InodeFields } from './inodes.js';
import {
  LINK_MAX,
  MAX_FILE_BYTES,
  NAME_MAX,
  O_ACCMODE,
  PERM_BITS,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  S_ISGID,
  S_ISUID,
  S_IXGRP,
  SYMLINK_MAX,
  isDir,
  isLnk,
  isReg,
  nowNs,
  parsePath,
  type ParsedPath,
} from './mode.js';
import { PathCache, type Dentry } from './paths.js';
import { deviceSlot, fsSuper, type DeviceSlot, type FsSuper } from './schema.js';
import {
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  ROOT_INO,
  XATTR_CREATE,
  XATTR_REPLACE,
  type Attr,
  type Caller,
  type Change,
  type DirEntry,
  type DirEntryAt,
  type DirEntryPlus,
  type EntryAttr,
  type Fh,
  type Ino,
  type SetAttr,
  type StatFs,
  type TimeSpec,
} from './types.js';
import type { View } from './view.js';
import { XattrTable } from './xattrs.js';

const log = logger('fs');

export interface FilesystemOptions {
  /** Refuse every change with EROFS (also implied by a read-only device or pool). */
  readOnly?: boolean;
}

const XATTR_NAME_MAX = 255;
const XATTR_SIZE_MAX = 65536;
const TOTAL_INODES = 2 ** 32;
/**
 * statfs's block unit (f_bsize = f_frsize), smaller than a pool block so that df counts
 * small files near their size (inline blocks take bytes, not blocks); every pool block size
 * is a multiple of it. f_bsize equals f_frsize because statfs(2) callers (Node's
 * fs.statfs among them) multiply f_blocks by f_bsize.
 */
const STATFS_UNIT_BYTES = 4096;
/** Deeper than any tree: a longer walk up the dentries means a cycle. */
const MAX_DEPTH = 4096;

/** What a name-changing call does when its name is '.' or '..' (each errno as Linux gives it). */
type DotErrnos = readonly [dot: ErrnoCode, dotdot: ErrnoCode];
const DOTS_EEXIST: DotErrnos = ['EEXIST', 'EEXIST'];
const DOTS_EISDIR: DotErrnos = ['EISDIR', 'EISDIR'];
const DOTS_EINVAL: DotErrnos = ['EINVAL', 'EINVAL'];
const DOTS_RMDIR: DotErrnos = ['EINVAL', 'ENOTEMPTY'];

/** A parent directory and the name a path-based call works on in it. */
interface Slot {
  dir: Dentry;
  name: string;
  parsed: ParsedPath;
}

/** The union filesystem of one device. Open with Filesystem.open; close when done. */
export class Filesystem {
  private readonly view: View;
  private readonly inodes: InodeTable;
  private readonly dirents: DirentTable;
  private readonly xattrs: XattrTable;
  private readonly paths: PathCache;
  private readonly data: FileData;
  private readonly handles = new HandleTable();
  private readonly unhook: () => void;
  private unhookCache: (() => void) | undefined;
  private seenGen: number;
  private readOnly: boolean;
  private closed = false;

  private constructor(
    private readonly pool: Pool,
    readonly devId: DevId,
    private readonly dev: ThinDevice,
    readOnly: boolean,
    private readonly sup: FsSuper,
    private readonly slot: DeviceSlot,
  ) {
    this.readOnly = readOnly;
    this.view = { chain: pool.chainOf(devId) };
    this.inodes = new InodeTable(sup.db, this.view);
    this.dirents = new DirentTable(sup.db, this.view);
    this.xattrs = new XattrTable(sup.db, this.view);
    this.paths = new PathCache(
      (parent, name) => this.dirents.lookup(parent, name),
      (dir) => this.dirents.namesOf(dir)[0],
    );
    this.data = new FileData(dev);
    this.seenGen = slot.gen;
    this.unhook = pool.addHooks({ onAbort: () => this.dropCaches() });
  }

  // ---------------------------------------------------------------- lifecycle

  /**
   * Open the filesystem of device `devId`. A writable view of a fresh device gets its
   * root directory (0755, 0:0) and loses the orphans a crash left behind.
   */
  static open(pool: Pool, devId: DevId, opts: FilesystemOptions = {}): Filesystem {
    const sup = fsSuper(pool);
    const info = pool.getDevice(devId);
    if (info === undefined) throw fail('ENOENT', 'open', `device ${devId}`, 'no such device');
    const mode = pool.mode();
    const readOnly = (opts.readOnly ?? false) || info.readOnly || mode === 'read-only' || mode === 'fail';
    const slot = deviceSlot(sup, devId);
    if (!readOnly && slot.writer) throw fail('EBUSY', 'open', info.name, 'a writable filesystem is already open on this device');
    const dev = pool.openDevice(devId);
    const fs = new Filesystem(pool, devId, dev, readOnly, sup, slot);
    try {
      if (readOnly) fs.showRootIfMissing();
      else {
        slot.writer = true;
        fs.mount();
      }
    } catch (err) {
      fs.closeQuietly();
      throw err;
    }
    return fs;
  }

  /**
   * Release every handle and kernel lookup (freeing what they kept of unlinked inodes),
   * commit (when writable) and close the device handle. What cannot be freed now stays an
   * orphan that the next writable open frees.
   */
  close(): void {
    if (this.closed) return;
    for (const fh of this.handles.list()) this.quietly('release', () => this.release(fh));
    for (const ino of this.handles.referenced()) this.quietly('forget', () => this.forget(ino, this.handles.refs(ino)));
    const mode = this.pool.mode();
    if (!this.readOnly && (mode === 'write' || mode === 'out-of-data-space')) this.pool.commit();
    this.closeQuietly();
  }

  /** Make everything done so far durable (the pool's commit). */
  commit(): void {
    this.pool.commit();
  }

  // ---------------------------------------------------------------- the FUSE C hot path

  /**
   * Tell `cache` (the FUSE C hot path's copy of block mappings) before mappings or sizes
   * change, and before freed blocks are reused (data.ts BlockCache); undefined detaches it.
   * One cache per filesystem.
   */
  attachBlockCache(cache: BlockCache | undefined): void {
    this.unhookCache?.();
    this.unhookCache = undefined;
    this.data.cache = cache;
    if (cache === undefined) return;
    const dropAll = (): void => {
      cache.dropAll();
      cache.quiesce();
    };
    this.unhookCache = this.pool.addHooks({ onAbort: dropAll, onLayout: dropAll, beforeReuse: () => cache.quiesce() });
  }

  /**
   * The block map of a regular file's blocks [firstBlock, firstBlock + count) and its size
   * now (data.ts), or undefined for anything else. Own blocks are marked writable only
   * while this view takes writes.
   */
  blockMap(ino: Ino, firstBlock: number, count: number): { sizeBytes: number; entries: Float64Array } | undefined {
    this.sync();
    const inode = this.inodes.find(ino);
    if (inode === undefined || !isReg(inode.mode)) return undefined;
    const writable = !this.isReadOnlyNow() && this.pool.mode() !== 'read-only';
    return { sizeBytes: inode.size, entries: this.data.blockMap(inode, firstBlock, count, writable) };
  }

  /** The size of inode `ino` now (0 for an unknown one): cheap, for the C hot path's fill policy. */
  fileSize(ino: Ino): number {
    this.sync();
    return this.inodes.find(ino)?.size ?? 0;
  }

  /** The pool's data file descriptor and block size, for the C hot path (never close it). */
  dataFile(): { fd: number; blockSizeBytes: number } {
    return { fd: this.pool.dataFileDescriptor(), blockSizeBytes: this.dev.blockSizeBytes };
  }

  /** Bytes were written in place from outside JS: the next commit (fsync, close) makes them durable (pool.noteExternalWrites). */
  noteExternalWrites(): void {
    this.pool.noteExternalWrites();
  }

  /** Drop the inode, xattr and path caches (after an abort, or under memory pressure). */
  dropCaches(): void {
    this.inodes.drop();
    this.xattrs.drop();
    this.paths.clear();
  }

  // ---------------------------------------------------------------- inodes the kernel holds

  /** The entry `name` of directory `parent` ('.' and '..' too), for FUSE LOOKUP; ENOENT when absent. */
  lookup(parent: Ino, name: string): EntryAttr {
    this.sync();
    const where = at(parent, name);
    checkName(name, 'lookup', where, undefined);
    const dir = this.dirInode(parent, 'lookup', where);
    let ino: Ino;
    if (name === '.') ino = dir.ino;
    else if (name === '..') ino = this.parentIno(dir, 'lookup', where);
    else {
      const e = this.childOf(dir.ino, name);
      if (e === undefined) throw fail('ENOENT', 'lookup', where);
      ino = e.ino;
    }
    return this.entryAttr(this.entryInode(ino, 'lookup', where));
  }

  /** The kernel took `n` lookups of `ino` (one per entry reply): the inode stays while it holds any. */
  ref(ino: Ino, n = 1): void {
    this.sync();
    if (!Number.isSafeInteger(n) || n < 1) throw fail('EINVAL', 'ref', whereIno(ino), 'a lookup count is a positive integer');
    this.liveInode(ino, 'ref');
    this.handles.ref(ino, n);
  }

  /**
   * The kernel forgot `n` lookups of `ino` (FUSE FORGET): when nothing holds an inode
   * whose last name is gone, it is destroyed and its blocks freed. If that fails, it stays
   * an orphan that the next writable open frees.
   */
  forget(ino: Ino, n: number): void {
    if (this.closed) return;
    if (this.handles.unref(ino, n)) this.freeIfUnlinked(ino, 'forget', whereIno(ino));
  }

  // ---------------------------------------------------------------- attributes

  /** stat(2) of `path` (a symlink itself, not its target). */
  getattr(path: string): Attr {
    this.sync();
    return this.attr(this.inodeAt(path, 'getattr'));
  }

  /** stat(2) of inode `ino` (works after its last name is gone, while it is held). */
  getattrIno(ino: Ino): Attr {
    this.sync();
    return this.attr(this.liveInode(ino, 'getattr'));
  }

  /** stat(2) of an open handle (works after the file was unlinked). */
  fgetattr(fh: Fh): Attr {
    this.sync();
    return this.attr(this.handleInode(this.handles.get(fh, 'fgetattr'), 'fgetattr'));
  }

  /** The inode number at `path`. */
  inoAt(path: string): Ino {
    this.sync();
    return this.resolve(path, 'lookup').ino;
  }

  /**
   * access(2): ENOENT when missing; EROFS for W_OK on a read-only view; with a caller,
   * EACCES unless the permission bits allow `mode` (root may read and write anything,
   * and execute what has any execute bit).
   */
  access(path: string, mode: number, caller?: Caller): void {
    this.sync();
    this.checkAccess(this.inodeAt(path, 'access'), mode, caller, path);
  }

  /** access(2) of inode `ino`, as access(). */
  accessIno(ino: Ino, mode: number, caller?: Caller): void {
    this.sync();
    this.checkAccess(this.liveInode(ino, 'access'), mode, caller, whereIno(ino));
  }

  /**
   * statfs(2), in STATFS_UNIT_BYTES units: the smaller of the pool's data file and the
   * device size limit. Used space is what is stored, inline bytes included: the device's
   * mapped bytes against its limit (the limit counts inline bytes too, thin.ts), and against
   * the pool every layer's inline bytes beside the data file's used blocks.
   */
  statfs(): StatFs {
    this.sync();
    const st = this.pool.status();
    const info = this.pool.getDevice(this.devId);
    const unit = STATFS_UNIT_BYTES;
    const limitUnits = info === undefined ? Infinity : Math.floor(info.sizeLimitBytes / unit);
    const blocks = Math.min(Math.floor(st.dataTotalBytes / unit), limitUnits);
    const poolFree = Math.floor(Math.max(0, st.dataAvailableBytes - st.inlineBytes) / unit);
    const bfree = Math.max(0, Math.min(poolFree, limitUnits - Math.ceil((info?.mappedBytes ?? 0) / unit)));
    const used = this.sup.peekNextIno() - 1;
    const ffree = Math.max(0, TOTAL_INODES - used);
    return { bsize: unit, frsize: unit, blocks, bfree, bavail: bfree, files: TOTAL_INODES, ffree, favail: ffree, namemax: NAME_MAX };
  }

  /** chmod(2): permission bits (setuid/setgid/sticky included); the file type stays. */
  chmod(path: string, mode: number): void {
    return this.mutate('chmod', path, () => this.doChmod(this.inodeAt(path, 'chmod'), mode));
  }

  /** chown(2) (lchown for symlinks); -1 leaves an id unchanged. */
  chown(path: string, uid: number, gid: number): void {
    return this.mutate('chown', path, () => this.doChown(this.inodeAt(path, 'chown'), uid, gid));
  }

  /** utimensat(2): each time in ns, 'now' or 'omit'. */
  utimens(path: string, atime: TimeSpec, mtime: TimeSpec): void {
    return this.mutate('utimens', path, () => this.doUtimens(this.inodeAt(path, 'utimens'), atime, mtime));
  }

  /**
   * FUSE SETATTR of inode `ino`: owner, then mode, then size, then times, as one atomic
   * operation — when any part fails (a bad size, ENOSPC while truncating) nothing changes.
   * Returns the attributes after.
   */
  setattrIno(ino: Ino, set: SetAttr): Attr {
    const where = whereIno(ino);
    return this.mutate('setattr', where, () => {
      const h = set.fh === undefined ? undefined : this.handles.get(set.fh, 'setattr');
      if (h !== undefined && h.ino !== ino) throw fail('EBADF', 'setattr', where, `fh ${set.fh} is open on inode ${h.ino}`);
      const inode = this.liveInode(ino, 'setattr');
      if (set.size !== undefined) {
        if (h !== undefined && !h.writable) throw fail('EINVAL', 'setattr', where, 'not open for writing');
        checkTruncate(inode, set.size, where);
      }
      if (set.uid !== undefined || set.gid !== undefined) this.doChown(inode, set.uid ?? -1, set.gid ?? -1);
      if (set.mode !== undefined) this.doChmod(inode, set.mode);
      if (set.size !== undefined) this.truncateTo(inode, set.size);
      if (set.atime !== undefined || set.mtime !== undefined) this.doUtimens(inode, set.atime ?? 'omit', set.mtime ?? 'omit');
      if (set.ctime !== undefined) this.inodes.update(inode, { ctimeNs: set.ctime });
      return this.attr(inode);
    });
  }

  // ---------------------------------------------------------------- names

  /** The entries of directory `path`, '.' and '..' first, then by name (byte order). */
  readdir(path: string): DirEntry[] {
    this.sync();
    const d = this.resolve(path, 'readdir');
    if (!isDir(d.type)) throw fail('ENOTDIR', 'readdir', path);
    const out: DirEntry[] = [
      { name: '.', ino: d.ino, type: S_IFDIR },
      { name: '..', ino: d.parent?.ino ?? ROOT_INO, type: S_IFDIR },
    ];
    for (const [name, e] of this.listDir(d.ino, undefined, Infinity)) out.push({ name, ino: e.ino, type: e.type });
    return out;
  }

  /** Open directory `ino` for readdirIno / readdirplusIno (release the handle with release). */
  opendirIno(ino: Ino): Fh {
    this.sync();
    const inode = this.liveInode(ino, 'opendir');
    if (!isDir(inode.mode)) throw fail('ENOTDIR', 'opendir', whereIno(ino));
    return this.handles.open(ino, constants.O_RDONLY, true);
  }

  /**
   * Up to `limit` entries of directory `ino` from `offset` (0, or an offset an earlier
   * entry of handle `fh` carried), '.' and '..' first, then by name; [] at the end.
   */
  readdirIno(ino: Ino, fh: Fh, offset: number, limit = Infinity): DirEntryAt[] {
    this.sync();
    return this.readStream(ino, fh, offset, limit, 'readdir', (e) => e);
  }

  /** readdirIno with each entry's attributes (FUSE READDIRPLUS; the kernel takes a lookup of each but '.' and '..'). */
  readdirplusIno(ino: Ino, fh: Fh, offset: number, limit = Infinity): DirEntryPlus[] {
    this.sync();
    const where = whereIno(ino);
    return this.readStream(ino, fh, offset, limit, 'readdirplus', (e) => {
      const plus = e as DirEntryPlus;
      plus.attr = this.entryAttr(this.entryInode(e.ino, 'readdirplus', where));
      return plus;
    });
  }

  /** mkdir(2). The mode keeps permission and sticky bits; setgid comes from the parent. */
  mkdir(path: string, mode: number, caller: Caller): EntryAttr {
    return this.mutate('mkdir', path, () => {
      const s = this.slotFor(path, 'mkdir', 'EEXIST');
      return this.mkdirIn(this.dirOf(s, 'mkdir'), s.name, mode, caller, path);
    });
  }

  /** mkdir(2) of `name` in directory `parent`. */
  mkdirAt(parent: Ino, name: string, mode: number, caller: Caller): EntryAttr {
    const where = at(parent, name);
    return this.mutate('mkdir', where, () => this.mkdirIn(this.dirAt(parent, name, 'mkdir', DOTS_EEXIST, where), name, mode, caller, where));
  }

  /** mknod(2): regular files, fifos, sockets, character and block devices (metadata only). */
  mknod(path: string, mode: number, rdev: number, caller: Caller): EntryAttr {
    return this.mutate('mknod', path, () => {
      const type = nodeType(mode, path);
      const s = this.slotFor(path, 'mknod', 'EEXIST');
      return this.mknodIn(this.dirOf(s, 'mknod'), s.name, type | (mode & PERM_BITS), rdev, caller, path);
    });
  }

  /** mknod(2) of `name` in directory `parent`. */
  mknodAt(parent: Ino, name: string, mode: number, rdev: number, caller: Caller): EntryAttr {
    const where = at(parent, name);
    return this.mutate('mknod', where, () => {
      const type = nodeType(mode, where);
      return this.mknodIn(this.dirAt(parent, name, 'mknod', DOTS_EEXIST, where), name, type | (mode & PERM_BITS), rdev, caller, where);
    });
  }

  /** symlink(2): a link at `path` holding `target` (stored as given, never resolved). */
  symlink(target: string, path: string, caller: Caller): EntryAttr {
    return this.mutate('symlink', path, () => {
      checkTarget(target, path);
      const s = this.slotFor(path, 'symlink', 'EEXIST');
      return this.symlinkIn(this.dirOf(s, 'symlink'), s.name, target, caller, path);
    });
  }

  /** symlink(2): a link `name` in directory `parent` holding `target`. */
  symlinkAt(parent: Ino, name: string, target: string, caller: Caller): EntryAttr {
    const where = at(parent, name);
    return this.mutate('symlink', where, () => {
      checkTarget(target, where);
      return this.symlinkIn(this.dirAt(parent, name, 'symlink', DOTS_EEXIST, where), name, target, caller, where);
    });
  }

  /** readlink(2). */
  readlink(path: string): string {
    this.sync();
    return readlinkOf(this.inodeAt(path, 'readlink'), path);
  }

  /** readlink(2) of inode `ino`. */
  readlinkIno(ino: Ino): string {
    this.sync();
    return readlinkOf(this.liveInode(ino, 'readlink'), whereIno(ino));
  }

  /** link(2): a new name for an existing non-directory (one inode, nlink + 1). */
  link(existing: string, newPath: string): EntryAttr {
    return this.mutate('link', newPath, () => {
      const src = this.resolve(existing, 'link');
      const s = this.slotFor(newPath, 'link', 'EEXIST');
      return this.linkIn(this.inodeOf(src, 'link', existing), this.dirOf(s, 'link'), s.name, existing, newPath);
    });
  }

  /** link(2): name `newName` in directory `newParent` for inode `ino` (ENOENT once its last name is gone). */
  linkAt(ino: Ino, newParent: Ino, newName: string): EntryAttr {
    const where = at(newParent, newName);
    return this.mutate('link', where, () => {
      const inode = this.liveInode(ino, 'link');
      return this.linkIn(inode, this.dirAt(newParent, newName, 'link', DOTS_EEXIST, where), newName, whereIno(ino), where);
    });
  }

  /** unlink(2) of a non-directory; an open (or looked-up) file stays usable until released (forgotten). */
  unlink(path: string): void {
    return this.mutate('unlink', path, () => {
      const s = this.slotFor(path, 'unlink', 'EISDIR');
      this.unlinkIn(this.dirOf(s, 'unlink'), s.name, path);
    });
  }

  /** unlink(2) of `name` in directory `parent`. */
  unlinkAt(parent: Ino, name: string): void {
    const where = at(parent, name);
    return this.mutate('unlink', where, () => this.unlinkIn(this.dirAt(parent, name, 'unlink', DOTS_EISDIR, where), name, where));
  }

  /** rmdir(2): ENOTEMPTY while any layer shows an entry in it. */
  rmdir(path: string): void {
    return this.mutate('rmdir', path, () => {
      const p = parsePath(path, 'rmdir');
      if (p.parts.length === 0) throw fail('EBUSY', 'rmdir', path);
      if (p.last === '.' || p.last === '..') throw fail(p.last === '.' ? DOTS_RMDIR[0] : DOTS_RMDIR[1], 'rmdir', path);
      const s = this.slotOf(p, 'rmdir');
      this.rmdirIn(this.dirOf(s, 'rmdir'), s.name, path);
    });
  }

  /** rmdir(2) of `name` in directory `parent`. */
  rmdirAt(parent: Ino, name: string): void {
    const where = at(parent, name);
    return this.mutate('rmdir', where, () => this.rmdirIn(this.dirAt(parent, name, 'rmdir', DOTS_RMDIR, where), name, where));
  }

  /**
   * rename(2), POSIX-style: replaces a file with a file or an empty directory with a
   * directory; same inode → nothing happens. A directory moves in O(1) with its subtree.
   * `flags` as renameAt.
   */
  rename(from: string, to: string, flags = 0): void {
    return this.mutate('rename', from, () => {
      const pf = parsePath(from, 'rename');
      const pt = parsePath(to, 'rename');
      if (pf.parts.length === 0 || pt.parts.length === 0) throw fail('EBUSY', 'rename', pf.parts.length === 0 ? from : to);
      if (pf.last === '.' || pf.last === '..' || pt.last === '.' || pt.last === '..') throw fail('EINVAL', 'rename', from);
      const sf = this.slotOf(pf, 'rename');
      const st = this.slotOf(pt, 'rename');
      this.renameIn(this.dirOf(sf, 'rename'), sf.name, this.dirOf(st, 'rename'), st.name, flags, from, to);
    });
  }

  /**
   * renameat2(2) of `name` in `parent` to `newName` in `newParent`, as rename(); with
   * RENAME_NOREPLACE an existing target is EEXIST, with RENAME_EXCHANGE the two entries
   * (files or directories, both must exist) swap. Other flags (RENAME_WHITEOUT): EINVAL.
   */
  renameAt(parent: Ino, name: string, newParent: Ino, newName: string, flags = 0): void {
    const from = at(parent, name);
    const to = at(newParent, newName);
    return this.mutate('rename', from, () => {
      const fromDir = this.dirAt(parent, name, 'rename', DOTS_EINVAL, from);
      const toDir = this.dirAt(newParent, newName, 'rename', DOTS_EINVAL, to);
      this.renameIn(fromDir, name, toDir, newName, flags, from, to);
    });
  }

  /**
   * Replace directory `path` with a fresh, empty directory (new inode, same mode and
   * owner) that hides everything lower layers hold there: an OCI opaque directory.
   */
  makeOpaque(path: string): void {
    return this.mutate('makeOpaque', path, () => {
      const p = parsePath(path, 'makeOpaque');
      const d = this.paths.resolve(p.parts, path, 'makeOpaque');
      if (!isDir(d.type)) throw fail('ENOTDIR', 'makeOpaque', path);
      const old = this.inodeOf(d, 'makeOpaque', path);
      const now = nowNs();
      if (d.ino === ROOT_INO) {
        // The root keeps inode 1: hide each remaining lower entry by name instead.
        this.dropTopSubtree(old, now);
        for (const name of this.dirents.list(ROOT_INO).keys()) this.dirents.remove(ROOT_INO, name);
        this.inodes.update(old, { nlink: 2, mtimeNs: now, ctimeNs: now });
        this.paths.clear();
        return;
      }
      const s = this.slotOf(p, 'makeOpaque');
      const parent = this.inodeOf(s.dir, 'makeOpaque', path);
      this.dropTopSubtree(old, now);
      const ino = this.sup.allocIno() as Ino;
      this.inodes.insert(ino, {
        mode: old.mode,
        uid: old.uid,
        gid: old.gid,
        size: 0,
        nlink: 2,
        rdev: 0,
        atimeNs: now,
        mtimeNs: now,
        ctimeNs: now,
        target: null,
        dataKey: ino as number as FileKey,
      });
      this.dirents.insert(s.dir.ino, s.name, { ino, type: S_IFDIR });
      this.destroy(old);
      this.inodes.update(parent, { mtimeNs: now, ctimeNs: now });
      this.paths.invalidate(p.path);
    });
  }

  // ---------------------------------------------------------------- data

  /** Create and open a regular file; an existing one is opened (EEXIST only with O_EXCL). */
  create(path: string, mode: number, caller: Caller, flags: number = constants.O_RDWR): Fh {
    return this.mutate('create', path, () => {
      const s = this.slotFor(path, 'create', 'EISDIR');
      return this.createIn(this.dirOf(s, 'create'), s.name, mode, caller, flags, path).fh;
    });
  }

  /** create(): `name` in directory `parent` with the real open `flags`; returns its entry and the open handle. */
  createAt(parent: Ino, name: string, mode: number, caller: Caller, flags: number): { entry: EntryAttr; fh: Fh } {
    const where = at(parent, name);
    return this.mutate('create', where, () => {
      const { inode, fh } = this.createIn(this.dirAt(parent, name, 'create', DOTS_EISDIR, where), name, mode, caller, flags, where);
      return { entry: this.entryAttr(inode), fh };
    });
  }

  /** Open an existing file; O_TRUNC truncates; directories open read-only only (EISDIR). */
  open(path: string, flags: number): Fh {
    this.sync();
    const d = this.resolve(path, 'open');
    return this.openInode(this.inodeOf(d, 'open', path), flags, path);
  }

  /** open() of inode `ino` (also one whose last name is gone, while it is held). */
  openIno(ino: Ino, flags: number): Fh {
    this.sync();
    return this.openInode(this.liveInode(ino, 'open'), flags, whereIno(ino));
  }

  /** Up to `length` bytes from `offsetBytes`; short at end of file. */
  read(fh: Fh, offsetBytes: number, length: number): Buffer {
    this.sync();
    const h = this.handles.get(fh, 'read');
    if (!h.readable) throw fail('EBADF', 'read', `fh ${fh}`, 'not open for reading');
    const inode = this.handleInode(h, 'read');
    if (isDir(inode.mode)) throw fail('EISDIR', 'read', `fh ${fh}`);
    if (!isReg(inode.mode)) throw fail('EINVAL', 'read', `fh ${fh}`, 'not a regular file');
    if (!(offsetBytes >= 0) || !(length >= 0)) throw fail('EINVAL', 'read', `fh ${fh}`);
    return this.data.read(inode, offsetBytes, length);
  }

  /** read() by inode, without a handle (a read-only open answered outside JS: the FUSE C hot path). */
  readIno(ino: Ino, offsetBytes: number, length: number): Buffer {
    this.sync();
    const inode = this.liveInode(ino, 'read');
    if (isDir(inode.mode)) throw fail('EISDIR', 'read', whereIno(ino));
    if (!isReg(inode.mode)) throw fail('EINVAL', 'read', whereIno(ino), 'not a regular file');
    if (!(offsetBytes >= 0) || !(length >= 0)) throw fail('EINVAL', 'read', whereIno(ino));
    return this.data.read(inode, offsetBytes, length);
  }

  /** Write `data` at `offsetBytes` (at the end for O_APPEND handles); returns bytes written. */
  write(fh: Fh, offsetBytes: number, data: Uint8Array): number {
    return this.mutate('write', `fh ${fh}`, () => {
      const h = this.handles.get(fh, 'write');
      if (!h.writable) throw fail('EBADF', 'write', `fh ${fh}`, 'not open for writing');
      const inode = this.handleInode(h, 'write');
      if (!isReg(inode.mode)) throw fail('EINVAL', 'write', `fh ${fh}`, 'not a regular file');
      const off = h.append ? inode.size : offsetBytes;
      if (!(off >= 0) || !Number.isSafeInteger(off)) throw fail('EINVAL', 'write', `fh ${fh}`);
      if (data.byteLength === 0) return 0;
      if (off + data.byteLength > MAX_FILE_BYTES) throw fail('EFBIG', 'write', `fh ${fh}`);
      const size = this.data.write(inode, off, data);
      const now = nowNs();
      this.inodes.update(inode, { size, mtimeNs: now, ctimeNs: now });
      return data.byteLength;
    });
  }

  /** truncate(2): shrink or extend; the extension reads as zeros. */
  truncate(path: string, size: number): void {
    return this.mutate('truncate', path, () => {
      const inode = this.inodeAt(path, 'truncate');
      checkTruncate(inode, size, path);
      this.truncateTo(inode, size);
    });
  }

  /** ftruncate(2) of a handle open for writing. */
  ftruncate(fh: Fh, size: number): void {
    return this.mutate('ftruncate', `fh ${fh}`, () => {
      const h = this.handles.get(fh, 'ftruncate');
      if (!h.writable) throw fail('EINVAL', 'ftruncate', `fh ${fh}`, 'not open for writing');
      const inode = this.handleInode(h, 'ftruncate');
      checkTruncate(inode, size, `fh ${fh}`);
      this.truncateTo(inode, size);
    });
  }

  /** fsync without a handle: everything written so far is durable on return (a view that takes no writes has nothing to make durable). */
  syncAll(): void {
    if (!this.readOnly) this.pool.commit();
  }

  /** fsync/fdatasync: everything written so far (this file's data and mappings included) is durable on return. */
  fsync(fh: Fh, datasync: boolean): void {
    void datasync;
    this.handles.get(fh, 'fsync');
    if (!this.readOnly) this.pool.commit();
  }

  /** Close a file or directory handle; when nothing holds an unlinked inode any more, it is freed. */
  release(fh: Fh): void {
    const { handle, last } = this.handles.close(fh);
    if (last) this.freeIfUnlinked(handle.ino, 'release', `fh ${fh}`);
  }

  // ---------------------------------------------------------------- xattrs

  /** setxattr(2); XATTR_CREATE → EEXIST when present, XATTR_REPLACE → ENODATA when absent. */
  setxattr(path: string, name: string, value: Uint8Array, flags: number): void {
    return this.mutate('setxattr', path, () => this.setxattrOf(this.inodeAt(path, 'setxattr'), name, value, flags, path));
  }

  /** setxattr(2) of inode `ino`. */
  setxattrIno(ino: Ino, name: string, value: Uint8Array, flags: number): void {
    const where = whereIno(ino);
    return this.mutate('setxattr', where, () => this.setxattrOf(this.liveInode(ino, 'setxattr'), name, value, flags, where));
  }

  /** getxattr(2); ENODATA when absent. */
  getxattr(path: string, name: string): Buffer {
    this.sync();
    return this.getxattrOf(this.inodeAt(path, 'getxattr'), name, path);
  }

  /** getxattr(2) of inode `ino`. */
  getxattrIno(ino: Ino, name: string): Buffer {
    this.sync();
    return this.getxattrOf(this.liveInode(ino, 'getxattr'), name, whereIno(ino));
  }

  /** listxattr(2): the names, sorted. */
  listxattr(path: string): string[] {
    this.sync();
    return this.listxattrOf(this.inodeAt(path, 'listxattr'));
  }

  /** listxattr(2) of inode `ino`. */
  listxattrIno(ino: Ino): string[] {
    this.sync();
    return this.listxattrOf(this.liveInode(ino, 'listxattr'));
  }

  /** removexattr(2); ENODATA when absent. */
  removexattr(path: string, name: string): void {
    return this.mutate('removexattr', path, () => this.removexattrOf(this.inodeAt(path, 'removexattr'), name, path));
  }

  /** removexattr(2) of inode `ino`. */
  removexattrIno(ino: Ino, name: string): void {
    const where = whereIno(ino);
    return this.mutate('removexattr', where, () => this.removexattrOf(this.liveInode(ino, 'removexattr'), name, where));
  }

  // ---------------------------------------------------------------- layers

  /** What the top layer adds, changes and deletes relative to the layers below (sorted by path). */
  changes(): Change[] {
    this.sync();
    return computeChanges(this.dirents, this.inodes);
  }

  // ---------------------------------------------------------------- private: view and transactions

  /** Pick up a new chain (snapshot of this device) or writes by another Filesystem of it: drop caches. */
  private sync(): void {
    if (this.closed) throw fail('EBADF', 'fs', undefined, 'filesystem is closed');
    const c = this.pool.chainOf(this.devId);
    if (c !== this.view.chain || this.slot.gen !== this.seenGen) {
      this.view.chain = c;
      this.seenGen = this.slot.gen;
      this.dropCaches();
    }
  }

  private isReadOnlyNow(): boolean {
    if (this.readOnly) return true;
    const info = this.pool.getDevice(this.devId);
    if (info === undefined || info.readOnly) {
      this.becomeReadOnly();
      return true;
    }
    return false;
  }

  /**
   * Run one changing call as one atomic pool operation: EROFS unless this view can change;
   * when `fn` throws, every row it wrote is rolled back and the caches are dropped (the
   * pool's onAbort hook), so a failing call changes nothing (pool.atomically).
   */
  private mutate<T>(syscall: string, path: string, fn: () => T): T {
    this.sync();
    if (this.isReadOnlyNow()) throw fail('EROFS', syscall, path);
    if (this.pool.mode() === 'read-only') throw fail('EROFS', syscall, path, 'pool is read-only');
    this.seenGen = ++this.slot.gen;
    return this.pool.atomically(syscall, fn);
  }

  private becomeReadOnly(): void {
    if (this.readOnly) return;
    this.readOnly = true;
    this.slot.writer = false;
  }

  /** Writable open: create the root of a fresh device, free what a crash left unlinked. */
  private mount(): void {
    if (this.inodes.find(ROOT_INO) === undefined) {
      this.pool.atomically('mount', () => this.inodes.insert(ROOT_INO, rootFields(nowNs())));
    }
    const orphans = this.inodes.orphans();
    if (orphans.length > 0) {
      this.pool.atomically('mount', () => {
        for (const o of orphans) {
          const inode = this.inodes.find(o.ino);
          if (inode !== undefined) this.destroy(inode);
          else this.data.removeKey(o.dataKey);
        }
      });
      log.info({ device: this.devId, orphans: orphans.length }, 'freed inodes left unlinked by a crash');
    }
  }

  /** Read-only open of a device that has never been opened writable: show an empty root. */
  private showRootIfMissing(): void {
    if (this.inodes.find(ROOT_INO) !== undefined) return;
    const now = nowNs();
    this.inodes.addSynthetic({ ...rootFields(now), ino: ROOT_INO, layer: this.view.chain.top, dataBelow: false, hasLower: false });
  }

  private closeQuietly(): void {
    this.closed = true;
    this.unhook();
    this.attachBlockCache(undefined);
    if (!this.readOnly) this.slot.writer = false;
    this.dev.close();
  }

  /** Run `fn` during close; a failure is logged (what it would have freed stays an orphan). */
  private quietly(op: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      log.warn({ device: this.devId, op, err }, 'could not free an unlinked inode on close; the next writable open frees it');
    }
  }

  /**
   * Nothing holds `ino` any more: destroy it when its last name is gone. Only a writable
   * view in write mode frees; otherwise (and when the freeing fails) it stays an orphan
   * that the next writable open frees.
   */
  private freeIfUnlinked(ino: Ino, syscall: string, where: string): void {
    if (this.closed || this.isReadOnlyNow()) return;
    this.sync();
    const inode = this.inodes.find(ino);
    if (inode === undefined || inode.nlink > 0) return;
    const mode = this.pool.mode();
    if (mode !== 'write' && mode !== 'out-of-data-space') return;
    this.mutate(syscall, where, () => {
      const gone = this.inodes.find(ino);
      if (gone !== undefined && gone.nlink === 0 && !this.handles.isHeld(ino)) this.destroy(gone);
    });
  }

  // ---------------------------------------------------------------- private: resolution

  private resolve(path: string, syscall: string): Dentry {
    const hit = this.paths.cached(path);
    if (hit !== undefined) return hit;
    const p = parsePath(path, syscall);
    return this.paths.resolve(p.parts, path, syscall);
  }

  private inodeAt(path: string, syscall: string): Inode {
    return this.inodeOf(this.resolve(path, syscall), syscall, path);
  }

  private inodeOf(d: Dentry, syscall: string, path: string): Inode {
    return this.entryInode(d.ino, syscall, path);
  }

  /** The inode a directory entry points at; EIO when it is missing (damaged metadata). */
  private entryInode(ino: Ino, syscall: string, where: string): Inode {
    const inode = this.inodes.find(ino);
    if (inode === undefined) throw fail('EIO', syscall, where, `entry points at missing inode ${ino}`);
    return inode;
  }

  /** Inode `ino` of the inode-based API; ENOENT when this view has none. */
  private liveInode(ino: Ino, syscall: string): Inode {
    const inode = this.inodes.find(ino);
    if (inode === undefined) throw fail('ENOENT', syscall, whereIno(ino));
    return inode;
  }

  /** Directory `ino` that a call looks up or makes names in: ENOTDIR unless a directory, ENOENT once removed. */
  private dirInode(ino: Ino, syscall: string, where: string): Inode {
    const inode = this.liveInode(ino, syscall);
    if (!isDir(inode.mode)) throw fail('ENOTDIR', syscall, where);
    if (inode.nlink === 0) throw fail('ENOENT', syscall, where, 'the directory was removed');
    return inode;
  }

  /** The directory and checked name of an inode-based call on `name` in `parent`. */
  private dirAt(parent: Ino, name: string, syscall: string, dots: DotErrnos, where: string): Inode {
    checkName(name, syscall, where, dots);
    return this.dirInode(parent, syscall, where);
  }

  /** The parent directory inode of a path-based call's slot. */
  private dirOf(s: Slot, syscall: string): Inode {
    return this.inodeOf(s.dir, syscall, s.parsed.path);
  }

  /** The directory holding directory `dir` (the root's is itself). */
  private parentIno(dir: Inode, syscall: string, where: string): Ino {
    if (dir.ino === ROOT_INO) return ROOT_INO;
    const up = this.paths.dir(dir.ino)?.parent;
    if (up === undefined) throw fail('ENOENT', syscall, where, 'the directory has no name');
    return up.ino;
  }

  /** The entry `name` of directory `dir` (through the dentry cache when the directory is in it). */
  private childOf(dir: Ino, name: string): Entry | undefined {
    const d = this.paths.dir(dir);
    return d !== undefined ? this.paths.child(d, name) : this.dirents.lookup(dir, name);
  }

  /** True when directory `dir` is directory `ancestor` or lies below it. */
  private isWithin(dir: Ino, ancestor: Ino): boolean {
    let d = this.paths.dir(dir);
    for (let depth = 0; d !== undefined && depth <= MAX_DEPTH; depth++, d = d.parent) if (d.ino === ancestor) return true;
    return false;
  }

  private handleInode(h: Handle, syscall: string): Inode {
    const inode = this.inodes.find(h.ino);
    if (inode === undefined) throw fail('ESTALE', syscall, `inode ${h.ino}`);
    return inode;
  }

  /** Parse `path` for a call that names an entry; root or a final '.'/'..' fails with `onDot`. */
  private slotFor(path: string, syscall: string, onDot: 'EEXIST' | 'EISDIR'): Slot {
    const p = parsePath(path, syscall);
    if (p.parts.length === 0 || p.last === '.' || p.last === '..') throw fail(onDot, syscall, path);
    return this.slotOf(p, syscall);
  }

  /** The parent directory of a parsed, non-root path. */
  private slotOf(p: ParsedPath, syscall: string): Slot {
    const dir = this.paths.resolve(p.parts.slice(0, -1), p.path, syscall);
    if (!isDir(dir.type)) throw fail('ENOTDIR', syscall, p.path);
    return { dir, name: p.parts[p.parts.length - 1]!, parsed: p };
  }

  // ---------------------------------------------------------------- private: reads

  private attr(inode: Inode): Attr {
    const mapped = isReg(inode.mode) ? this.dev.keyMappedBlocks(inode.dataKey) : undefined;
    return toAttr(inode, this.pool.blockSizeBytes, mapped);
  }

  private entryAttr(inode: Inode): EntryAttr {
    const a = this.attr(inode) as EntryAttr;
    a.generation = 0;
    return a;
  }

  private checkAccess(inode: Inode, mode: number, caller: Caller | undefined, where: string): void {
    if ((mode & constants.W_OK) !== 0 && this.isReadOnlyNow()) {
      const t = inode.mode & S_IFMT;
      if (t === S_IFREG || t === S_IFDIR || t === S_IFLNK) throw fail('EROFS', 'access', where);
    }
    if (caller === undefined || mode === constants.F_OK) return;
    if (!permits(inode, mode, caller)) throw fail('EACCES', 'access', where);
  }

  /** Up to `limit` entries of directory `dir` after name `after`, by name; cached as dentries when the directory is. */
  private listDir(dir: Ino, after: string | undefined, limit: number): [string, Entry][] {
    const entries = this.dirents.listAfter(dir, after, limit);
    const d = this.paths.dir(dir);
    if (d !== undefined) for (const [name, e] of entries) if (d.children?.has(name) !== true) this.paths.add(d, name, e);
    return entries;
  }

  /** The entries of directory handle `fh` on `ino` from `offset`, each made into `T` by `make`. */
  private readStream<T>(ino: Ino, fh: Fh, offset: number, limit: number, syscall: string, make: (e: DirEntryAt) => T): T[] {
    const where = whereIno(ino);
    const h = this.handles.get(fh, syscall);
    if (h.stream === undefined || h.ino !== ino) throw fail('EBADF', syscall, where, `fh ${fh} is no directory handle of this inode`);
    const dir = this.dirInode(ino, syscall, where);
    const out: T[] = [];
    const from = h.stream.resume(offset);
    if (from === undefined || !(limit > 0)) return out;
    if (from.dots === 2) out.push(make({ name: '.', ino, type: S_IFDIR, offset: 1 }));
    if (from.dots >= 1 && out.length < limit) out.push(make({ name: '..', ino: this.parentIno(dir, syscall, where), type: S_IFDIR, offset: 2 }));
    if (out.length >= limit) return out;
    for (const [name, e] of this.listDir(ino, from.after, limit - out.length)) {
      out.push(make({ name, ino: e.ino, type: e.type, offset: h.stream.offsetAfter(name) }));
    }
    return out;
  }

  private getxattrOf(inode: Inode, name: string, where: string): Buffer {
    checkXattr(inode, name, where, 'getxattr', false);
    const v = this.xattrs.all(inode.ino).get(name);
    if (v === undefined) throw fail('ENODATA', 'getxattr', where);
    return Buffer.from(v);
  }

  private listxattrOf(inode: Inode): string[] {
    return [...this.xattrs.all(inode.ino).keys()].sort();
  }

  // ---------------------------------------------------------------- private: changes

  private mkdirIn(dir: Inode, name: string, mode: number, caller: Caller, where: string): EntryAttr {
    if (this.childOf(dir.ino, name) !== undefined) throw fail('EEXIST', 'mkdir', where);
    if (dir.nlink >= LINK_MAX) throw fail('EMLINK', 'mkdir', where);
    return this.entryAttr(this.makeNode(dir, name, S_IFDIR | (mode & (PERM_BITS & ~S_ISUID & ~S_ISGID)), 0, caller, null));
  }

  /** `mode` carries a type nodeType() accepted. */
  private mknodIn(dir: Inode, name: string, mode: number, rdev: number, caller: Caller, where: string): EntryAttr {
    if (this.childOf(dir.ino, name) !== undefined) throw fail('EEXIST', 'mknod', where);
    const type = mode & S_IFMT;
    const dev = type === S_IFCHR || type === S_IFBLK ? rdev : 0;
    return this.entryAttr(this.makeNode(dir, name, mode, dev, caller, null));
  }

  private symlinkIn(dir: Inode, name: string, target: string, caller: Caller, where: string): EntryAttr {
    if (this.childOf(dir.ino, name) !== undefined) throw fail('EEXIST', 'symlink', where);
    return this.entryAttr(this.makeNode(dir, name, S_IFLNK | 0o777, 0, caller, target));
  }

  private linkIn(inode: Inode, dir: Inode, name: string, existing: string, where: string): EntryAttr {
    if (this.childOf(dir.ino, name) !== undefined) throw fail('EEXIST', 'link', where);
    if (isDir(inode.mode)) throw fail('EPERM', 'link', existing, 'hard links to directories are not allowed');
    if (inode.nlink === 0) throw fail('ENOENT', 'link', existing, 'the inode has no name left');
    if (inode.nlink >= LINK_MAX) throw fail('EMLINK', 'link', existing);
    const now = nowNs();
    const entry = { ino: inode.ino, type: inode.mode & S_IFMT };
    this.dirents.insert(dir.ino, name, entry);
    this.inodes.update(inode, { nlink: inode.nlink + 1, ctimeNs: now });
    this.inodes.update(dir, { mtimeNs: now, ctimeNs: now });
    this.paths.addChild(dir.ino, name, entry);
    return this.entryAttr(inode);
  }

  private unlinkIn(dir: Inode, name: string, where: string): void {
    const child = this.childOf(dir.ino, name);
    if (child === undefined) throw fail('ENOENT', 'unlink', where);
    if (isDir(child.type)) throw fail('EISDIR', 'unlink', where);
    const inode = this.entryInode(child.ino, 'unlink', where);
    const now = nowNs();
    this.dirents.remove(dir.ino, name);
    this.inodes.update(dir, { mtimeNs: now, ctimeNs: now });
    this.dropName(inode, now);
    this.paths.dropChild(dir.ino, name);
  }

  private rmdirIn(dir: Inode, name: string, where: string): void {
    const child = this.childOf(dir.ino, name);
    if (child === undefined) throw fail('ENOENT', 'rmdir', where);
    if (!isDir(child.type)) throw fail('ENOTDIR', 'rmdir', where);
    if (!this.dirents.isEmpty(child.ino)) throw fail('ENOTEMPTY', 'rmdir', where);
    const inode = this.entryInode(child.ino, 'rmdir', where);
    const now = nowNs();
    this.dirents.remove(dir.ino, name);
    this.inodes.update(dir, { nlink: dir.nlink - 1, mtimeNs: now, ctimeNs: now });
    this.dropName(inode, now);
    this.paths.dropChild(dir.ino, name);
  }

  /** rename/renameat2 of `fromName` in `fromDir` to `toName` in `toDir` (errnos in Linux's order). */
  private renameIn(fromDir: Inode, fromName: string, toDir: Inode, toName: string, flags: number, from: string, to: string): void {
    const exchange = (flags & RENAME_EXCHANGE) !== 0;
    if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) !== 0 || (exchange && (flags & RENAME_NOREPLACE) !== 0)) {
      throw fail('EINVAL', 'rename', from, `unsupported rename flags ${flags}`);
    }
    if (toDir.ino === fromDir.ino) toDir = fromDir;
    const src = this.childOf(fromDir.ino, fromName);
    if (src === undefined) throw fail('ENOENT', 'rename', from);
    const dst = this.childOf(toDir.ino, toName);
    if (dst !== undefined && (flags & RENAME_NOREPLACE) !== 0) throw fail('EEXIST', 'rename', to);
    if (dst === undefined && exchange) throw fail('ENOENT', 'rename', to);
    if (isDir(src.type) && this.isWithin(toDir.ino, src.ino)) throw fail('EINVAL', 'rename', from, 'cannot move a directory into itself');
    if (dst !== undefined && isDir(dst.type) && this.isWithin(fromDir.ino, dst.ino)) throw fail(exchange ? 'EINVAL' : 'ENOTEMPTY', 'rename', to);
    if (dst !== undefined && dst.ino === src.ino) return;
    const srcEntry = { ino: src.ino, type: src.type };
    if (exchange) return this.exchangeIn(fromDir, fromName, srcEntry, toDir, toName, { ino: dst!.ino, type: dst!.type }, from, to);
    const srcIsDir = isDir(src.type);
    if (dst !== undefined) {
      if (srcIsDir && !isDir(dst.type)) throw fail('ENOTDIR', 'rename', to);
      if (!srcIsDir && isDir(dst.type)) throw fail('EISDIR', 'rename', to);
      if (isDir(dst.type) && !this.dirents.isEmpty(dst.ino)) throw fail('ENOTEMPTY', 'rename', to);
    }
    const inode = this.entryInode(src.ino, 'rename', from);
    const target = dst === undefined ? undefined : this.entryInode(dst.ino, 'rename', to);
    const movesDir = srcIsDir && fromDir !== toDir;
    if (movesDir && target === undefined && toDir.nlink >= LINK_MAX) throw fail('EMLINK', 'rename', to);

    const now = nowNs();
    this.dirents.remove(fromDir.ino, fromName);
    this.dirents.insert(toDir.ino, toName, srcEntry);
    if (target !== undefined) {
      if (isDir(target.mode)) this.inodes.update(toDir, { nlink: toDir.nlink - 1 });
      this.dropName(target, now);
    }
    if (movesDir) {
      this.inodes.update(fromDir, { nlink: fromDir.nlink - 1 });
      this.inodes.update(toDir, { nlink: toDir.nlink + 1 });
    }
    this.inodes.update(fromDir, { mtimeNs: now, ctimeNs: now });
    if (toDir !== fromDir) this.inodes.update(toDir, { mtimeNs: now, ctimeNs: now });
    this.inodes.update(inode, { ctimeNs: now });
    this.paths.dropChild(fromDir.ino, fromName);
    this.paths.dropChild(toDir.ino, toName);
  }

  /** RENAME_EXCHANGE: the two entries swap (two different inodes, of any types). */
  private exchangeIn(fromDir: Inode, fromName: string, src: Entry, toDir: Inode, toName: string, dst: Entry, from: string, to: string): void {
    const a = this.entryInode(src.ino, 'rename', from);
    const b = this.entryInode(dst.ino, 'rename', to);
    // Subdirectories moving between the two parents move their '..' links with them.
    const gain = fromDir === toDir ? 0 : (isDir(a.mode) ? 1 : 0) - (isDir(b.mode) ? 1 : 0);
    if ((gain > 0 && toDir.nlink >= LINK_MAX) || (gain < 0 && fromDir.nlink >= LINK_MAX)) throw fail('EMLINK', 'rename', gain > 0 ? to : from);
    const now = nowNs();
    this.dirents.insert(fromDir.ino, fromName, dst);
    this.dirents.insert(toDir.ino, toName, src);
    this.inodes.update(fromDir, { nlink: fromDir.nlink - gain, mtimeNs: now, ctimeNs: now });
    if (toDir !== fromDir) this.inodes.update(toDir, { nlink: toDir.nlink + gain, mtimeNs: now, ctimeNs: now });
    this.inodes.update(a, { ctimeNs: now });
    this.inodes.update(b, { ctimeNs: now });
    this.paths.dropChild(fromDir.ino, fromName);
    this.paths.dropChild(toDir.ino, toName);
  }

  private createIn(dir: Inode, name: string, mode: number, caller: Caller, flags: number, where: string): { inode: Inode; fh: Fh } {
    const existing = this.childOf(dir.ino, name);
    if (existing !== undefined) {
      if ((flags & constants.O_EXCL) !== 0) throw fail('EEXIST', 'create', where);
      const inode = this.entryInode(existing.ino, 'create', where);
      return { inode, fh: this.openInode(inode, flags & ~constants.O_CREAT, where) };
    }
    const inode = this.makeNode(dir, name, S_IFREG | (mode & PERM_BITS), 0, caller, null);
    return { inode, fh: this.handles.open(inode.ino, flags) };
  }

  /** A new inode named `name` in `dir`, owned by the caller (group from a setgid parent; the caller's umask when given). */
  private makeNode(dir: Inode, name: string, mode: number, rdev: number, caller: Caller, target: string | null): Inode {
    if (caller.umask !== undefined && target === null) mode &= ~(caller.umask & 0o777);
    let gid = caller.gid;
    if ((dir.mode & S_ISGID) !== 0) {
      gid = dir.gid;
      if (isDir(mode)) mode |= S_ISGID;
      else if (caller.uid !== 0 && !inGroup(caller, gid)) mode &= ~S_ISGID;
    }
    const now = nowNs();
    const ino = this.sup.allocIno() as Ino;
    const isNewDir = isDir(mode);
    const inode = this.inodes.insert(ino, {
      mode,
      uid: caller.uid,
      gid,
      size: target === null ? 0 : target.length,
      nlink: isNewDir ? 2 : 1,
      rdev,
      atimeNs: now,
      mtimeNs: now,
      ctimeNs: now,
      target,
      dataKey: ino as number as FileKey,
    });
    const entry = { ino, type: mode & S_IFMT };
    this.dirents.insert(dir.ino, name, entry);
    this.inodes.update(dir, { nlink: dir.nlink + (isNewDir ? 1 : 0), mtimeNs: now, ctimeNs: now });
    this.paths.addChild(dir.ino, name, entry);
    return inode;
  }

  private openInode(inode: Inode, flags: number, where: string): Fh {
    const acc = flags & O_ACCMODE;
    const trunc = (flags & constants.O_TRUNC) !== 0;
    if (isDir(inode.mode) && (acc !== constants.O_RDONLY || trunc)) throw fail('EISDIR', 'open', where);
    if (isLnk(inode.mode)) throw fail('ELOOP', 'open', where, 'symbolic links are not followed');
    if ((acc !== constants.O_RDONLY || trunc) && isReg(inode.mode)) {
      const ino = inode.ino;
      // Resolved again inside: a retried operation must not see an object a failed try changed.
      this.mutate('open', where, () => {
        if (trunc) this.truncateTo(this.liveInode(ino, 'open'), 0);
      });
    }
    return this.handles.open(inode.ino, flags);
  }

  private truncateTo(inode: Inode, size: number): void {
    const key = this.data.truncate(inode, size, () => this.sup.allocIno() as FileKey);
    const now = nowNs();
    const patch: Partial<InodeFields> = { size, mtimeNs: now, ctimeNs: now };
    if (key !== inode.dataKey) patch.dataKey = key;
    this.inodes.update(inode, patch);
    if (patch.dataKey !== undefined) inode.dataBelow = false;
  }

  private doChmod(inode: Inode, mode: number): void {
    this.inodes.update(inode, { mode: (inode.mode & S_IFMT) | (mode & PERM_BITS), ctimeNs: nowNs() });
  }

  private doChown(inode: Inode, uid: number, gid: number): void {
    const patch: Partial<InodeFields> = { ctimeNs: nowNs() };
    if (uid !== -1) patch.uid = uid;
    if (gid !== -1) patch.gid = gid;
    if (!isDir(inode.mode) && !isLnk(inode.mode)) {
      let mode = inode.mode & ~S_ISUID;
      if ((mode & S_IXGRP) !== 0) mode &= ~S_ISGID;
      patch.mode = mode;
      if (this.xattrs.all(inode.ino).has('security.capability')) this.xattrs.remove(inode.ino, 'security.capability');
    }
    this.inodes.update(inode, patch);
  }

  private doUtimens(inode: Inode, atime: TimeSpec, mtime: TimeSpec): void {
    if (atime === 'omit' && mtime === 'omit') return;
    const now = nowNs();
    const pick = (t: TimeSpec, old: bigint): bigint => (t === 'now' ? now : t === 'omit' ? old : t);
    this.inodes.update(inode, { atimeNs: pick(atime, inode.atimeNs), mtimeNs: pick(mtime, inode.mtimeNs), ctimeNs: now });
  }

  private setxattrOf(inode: Inode, name: string, value: Uint8Array, flags: number, where: string): void {
    checkXattr(inode, name, where, 'setxattr', true);
    if (value.byteLength > XATTR_SIZE_MAX) throw fail('E2BIG', 'setxattr', where);
    if ((flags & XATTR_CREATE) !== 0 && (flags & XATTR_REPLACE) !== 0) throw fail('EINVAL', 'setxattr', where);
    const has = this.xattrs.all(inode.ino).has(name);
    if ((flags & XATTR_CREATE) !== 0 && has) throw fail('EEXIST', 'setxattr', where);
    if ((flags & XATTR_REPLACE) !== 0 && !has) throw fail('ENODATA', 'setxattr', where);
    this.xattrs.set(inode.ino, name, Buffer.from(value));
    this.inodes.update(inode, { ctimeNs: nowNs() });
  }

  private removexattrOf(inode: Inode, name: string, where: string): void {
    checkXattr(inode, name, where, 'removexattr', true);
    if (!this.xattrs.all(inode.ino).has(name)) throw fail('ENODATA', 'removexattr', where);
    this.xattrs.remove(inode.ino, name);
    this.inodes.update(inode, { ctimeNs: nowNs() });
  }

  /** One name of `inode` is gone: drop its link count; free it when none is left and nothing holds it. */
  private dropName(inode: Inode, now: bigint): void {
    const nlink = isDir(inode.mode) ? 0 : inode.nlink - 1;
    if (nlink <= 0 && !this.handles.isHeld(inode.ino)) this.destroy(inode);
    else this.inodes.update(inode, { nlink: Math.max(0, nlink), ctimeNs: now });
  }

  /** Forget an inode that has no names left: its top-layer rows, entries and own blocks. */
  private destroy(inode: Inode): void {
    const own = inode.layer === this.view.chain.top;
    if (isDir(inode.mode)) this.dirents.removeAll(inode.ino);
    this.xattrs.removeAll(inode.ino);
    if (own && isReg(inode.mode)) this.data.remove(inode);
    this.inodes.remove(inode);
  }

  /**
   * Free what the top layer itself added below directory `dir` (before it is made opaque):
   * each top-layer entry loses its name; directories recursively. (Names only lower
   * layers show are hidden with the directory; their inodes' link counts are not lowered.)
   */
  private dropTopSubtree(dir: Inode, now: bigint): void {
    for (const e of this.dirents.topEntries(dir.ino)) {
      const child = this.inodes.find(e.ino);
      if (child === undefined) continue;
      if (isDir(child.mode)) this.dropTopSubtree(child, now);
      this.dropName(child, now);
    }
    this.dirents.removeAll(dir.ino);
  }
}

function rootFields(now: bigint): InodeFields {
  return {
    mode: S_IFDIR | 0o755,
    uid: 0,
    gid: 0,
    size: 0,
    nlink: 2,
    rdev: 0,
    atimeNs: now,
    mtimeNs: now,
    ctimeNs: now,
    target: null,
    dataKey: ROOT_INO as number as FileKey,
  };
}

/** How an inode-based call names its object in errors: `inode 12`. */
function whereIno(ino: Ino): string {
  return `inode ${ino}`;
}

/** How an inode-based call names (directory, name) in errors: `inode 12/name` (a byte string, as paths are). */
function at(parent: Ino, name: string): string {
  return `inode ${parent}/${name}`;
}

/**
 * A single name component for an inode-based call: ENOENT when empty, EINVAL with '/' or
 * NUL or when it is no byte string, ENAMETOOLONG beyond NAME_MAX; '.' and '..' fail with
 * `dots` (a lookup, given none, accepts them).
 */
function checkName(name: string, syscall: string, where: string, dots: DotErrnos | undefined): void {
  if (typeof name !== 'string' || name.length === 0) throw fail('ENOENT', syscall, where, 'empty name');
  if (dots !== undefined && (name === '.' || name === '..')) throw fail(name === '.' ? dots[0] : dots[1], syscall, where);
  if (name.length > NAME_MAX) throw fail('ENAMETOOLONG', syscall, where);
  if (name.includes('/') || name.includes('\0') || !isByteString(name)) throw fail('EINVAL', syscall, where, 'a name is one component of bytes (see fs/bytes.ts)');
}

/** The file type mknod(2) makes of `mode`: EPERM for directories, EINVAL for unknown types. */
function nodeType(mode: number, where: string): number {
  const type = (mode & S_IFMT) === 0 ? S_IFREG : mode & S_IFMT;
  if (type === S_IFDIR) throw fail('EPERM', 'mknod', where, 'use mkdir for directories');
  if (![S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) throw fail('EINVAL', 'mknod', where, 'unknown file type');
  return type;
}

/** A symlink target symlink(2) accepts. */
function checkTarget(target: string, where: string): void {
  if (target.length === 0) throw fail('ENOENT', 'symlink', where, 'empty symlink target');
  if (target.length > SYMLINK_MAX) throw fail('ENAMETOOLONG', 'symlink', where);
  if (!isByteString(target)) throw fail('EINVAL', 'symlink', where, 'target is not a byte string (see fs/bytes.ts)');
}

function readlinkOf(inode: Inode, where: string): string {
  if (!isLnk(inode.mode) || inode.target === null) throw fail('EINVAL', 'readlink', where, 'not a symbolic link');
  return inode.target;
}

/** A size truncate(2) accepts for `inode`. */
function checkTruncate(inode: Inode, size: number, where: string): void {
  if (isDir(inode.mode)) throw fail('EISDIR', 'truncate', where);
  if (!isReg(inode.mode)) throw fail('EINVAL', 'truncate', where, 'not a regular file');
  if (!Number.isSafeInteger(size) || size < 0) throw fail('EINVAL', 'truncate', where);
  if (size > MAX_FILE_BYTES) throw fail('EFBIG', 'truncate', where);
}

/** True when `gid` is the caller's group or one of its supplementary groups. */
function inGroup(caller: Caller, gid: number): boolean {
  return caller.gid === gid || (caller.groups?.includes(gid) ?? false);
}

/** Permission check of access(2) for `caller` (its supplementary groups included). */
function permits(inode: Inode, mode: number, caller: Caller): boolean {
  const want = mode & 7;
  if (caller.uid === 0) {
    if ((want & constants.X_OK) === 0 || isDir(inode.mode)) return true;
    return (inode.mode & 0o111) !== 0;
  }
  const bits = caller.uid === inode.uid ? (inode.mode >> 6) & 7 : inGroup(caller, inode.gid) ? (inode.mode >> 3) & 7 : inode.mode & 7;
  return (bits & want) === want;
}

/** Namespaces thinfs stores: user., trusted., security. (system.* ACLs are not supported). */
function checkXattr(inode: Inode, name: string, where: string, syscall: string, writing: boolean): void {
  if (name.length === 0 || name.length > XATTR_NAME_MAX || !isByteString(name)) throw fail('ERANGE', syscall, where, 'bad attribute name');
  if (!(name.startsWith('user.') || name.startsWith('trusted.') || name.startsWith('security.'))) {
    throw fail('ENOTSUP', syscall, where, `attribute namespace of '${name}' is not supported`);
  }
  if (name.startsWith('user.') && !isReg(inode.mode) && !isDir(inode.mode)) {
    // Linux: user.* only on regular files and directories.
    throw fail(writing ? 'EPERM' : 'ENODATA', syscall, where);
  }
}
