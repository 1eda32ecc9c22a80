/**
 * The union filesystem of one device: a path-based API over the device's layer chain,
 * for the FUSE adapter (and the layer import/export code) to call.
 *
 * Shape. Public methods check the view (read-only → EROFS, pool mode) and run as one
 * atomic pool operation (mutate → pool.atomically: all of it or nothing, whatever fails —
 * ENOSPC, an I/O error, a SQLite error), calling private helpers that assume both;
 * helpers never call public methods. Every method is synchronous and throws ThinfsError.
 *
 * Storage, by concern (each module states its own rules at its top):
 *   schema.ts   tables in the pool's database, keyed by pool layer; the pool-wide inode counter
 *   inodes.ts   inode rows per layer, nearest layer wins, copy-up of rows (never data)
 *   dirents.ts  directory entries and whiteouts (the only module that knows whiteouts)
 *   xattrs.ts   extended attributes per layer
 *   data.ts     file bytes through the pool's thin device (copy-on-write rules)
 *   paths.ts    path → inode resolution with a dentry cache
 *   handles.ts  open file handles; unlinked-but-open inodes
 *   changes.ts  what the top layer changes, from its own rows
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
 *  - st_blocks of a regular file counts the pool blocks its data maps (cached in the pool);
 *  - statfs file counts: 2^32 inodes, minus the pool-wide inode numbers handed out.
 *  - Mutations validate everything before the first write; and since each is one atomic
 *    operation, an error after the first write (ENOSPC, EIO) still leaves nothing half-done.
 */
import { constants } from 'node:fs';
import { fail } from '../errors.js';
import { logger } from '../log.js';
import type { DevId, FileKey, Pool, ThinDevice } from '../pool/index.js';
import { isByteString } from './bytes.js';
import { computeChanges } from './changes.js';
import { FileData } from './data.js';
import { DirentTable } from './dirents.js';
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
  ROOT_INO,
  XATTR_CREATE,
  XATTR_REPLACE,
  type Attr,
  type Caller,
  type Change,
  type DirEntry,
  type Fh,
  type Ino,
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

/** A parent directory and the name a call works on in it. */
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
    this.paths = new PathCache((parent, name) => this.dirents.lookup(parent, name));
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

  /** Release every handle, commit (when writable) and close the device handle. */
  close(): void {
    if (this.closed) return;
    for (const fh of this.handles.list()) this.release(fh);
    const mode = this.pool.mode();
    if (!this.readOnly && (mode === 'write' || mode === 'out-of-data-space')) this.pool.commit();
    this.closeQuietly();
  }

  /** Make everything done so far durable (the pool's commit). */
  commit(): void {
    this.pool.commit();
  }

  /** Drop the inode, xattr and path caches (after an abort, or under memory pressure). */
  dropCaches(): void {
    this.inodes.drop();
    this.xattrs.drop();
    this.paths.clear();
  }

  // ---------------------------------------------------------------- attributes

  /** stat(2) of `path` (a symlink itself, not its target). */
  getattr(path: string): Attr {
    this.sync();
    return this.attr(this.inodeAt(path, 'getattr'));
  }

  /** stat(2) of an open handle (works after the file was unlinked). */
  fgetattr(fh: Fh): Attr {
    this.sync();
    return this.attr(this.handleInode(this.handles.get(fh, 'fgetattr'), 'fgetattr'));
  }

  /** The inode number at `path`. */
  lookup(path: string): Ino {
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
    const inode = this.inodeAt(path, 'access');
    if ((mode & constants.W_OK) !== 0 && this.isReadOnlyNow()) {
      const t = inode.mode & S_IFMT;
      if (t === S_IFREG || t === S_IFDIR || t === S_IFLNK) throw fail('EROFS', 'access', path);
    }
    if (caller === undefined || mode === constants.F_OK) return;
    if (!permits(inode, mode, caller)) throw fail('EACCES', 'access', path);
  }

  /** statfs(2): blocks from the pool and the device size limit, whichever is smaller. */
  statfs(): StatFs {
    this.sync();
    const st = this.pool.status();
    const info = this.pool.getDevice(this.devId);
    const bs = st.blockSizeBytes;
    const limitBlocks = info === undefined ? Infinity : Math.floor(info.sizeLimitBytes / bs);
    const blocks = Math.min(Math.floor(st.dataTotalBytes / bs), limitBlocks);
    const bfree = Math.max(
      0,
      Math.min(Math.floor(st.dataAvailableBytes / bs), limitBlocks - (info?.mappedBlocks ?? 0)),
    );
    const used = this.sup.peekNextIno() - 1;
    const ffree = Math.max(0, TOTAL_INODES - used);
    return { bsize: bs, frsize: bs, blocks, bfree, bavail: bfree, files: TOTAL_INODES, ffree, favail: ffree, namemax: NAME_MAX };
  }

  /** chmod(2): permission bits (setuid/setgid/sticky included); the file type stays. */
  chmod(path: string, mode: number): void {
    return this.mutate('chmod', path, () => {
      const inode = this.inodeAt(path, 'chmod');
      this.inodes.update(inode, { mode: (inode.mode & S_IFMT) | (mode & PERM_BITS), ctimeNs: nowNs() });
    });
  }

  /** chown(2) (lchown for symlinks); -1 leaves an id unchanged. */
  chown(path: string, uid: number, gid: number): void {
    return this.mutate('chown', path, () => {
      const inode = this.inodeAt(path, 'chown');
      this.doChown(inode, uid, gid);
    });
  }

  /** utimensat(2): each time in ns, 'now' or 'omit'. */
  utimens(path: string, atime: TimeSpec, mtime: TimeSpec): void {
    return this.mutate('utimens', path, () => {
      const inode = this.inodeAt(path, 'utimens');
      if (atime === 'omit' && mtime === 'omit') return;
      const now = nowNs();
      const pick = (t: TimeSpec, old: bigint): bigint => (t === 'now' ? now : t === 'omit' ? old : t);
      this.inodes.update(inode, { atimeNs: pick(atime, inode.atimeNs), mtimeNs: pick(mtime, inode.mtimeNs), ctimeNs: now });
    });
  }

  // ---------------------------------------------------------------- names

  /** The entries of directory `path`, '.' and '..' first. */
  readdir(path: string): DirEntry[] {
    this.sync();
    const d = this.resolve(path, 'readdir');
    if (!isDir(d.type)) throw fail('ENOTDIR', 'readdir', path);
    const out: DirEntry[] = [
      { name: '.', ino: d.ino, type: S_IFDIR },
      { name: '..', ino: d.parent?.ino ?? ROOT_INO, type: S_IFDIR },
    ];
    const warm = d.children;
    for (const [name, e] of this.dirents.list(d.ino)) {
      out.push({ name, ino: e.ino, type: e.type });
      if (warm?.has(name) !== true) this.paths.add(d, name, e);
    }
    return out;
  }

  /** mkdir(2). The mode keeps permission and sticky bits; setgid comes from the parent. */
  mkdir(path: string, mode: number, caller: Caller): Attr {
    return this.mutate('mkdir', path, () => {
      const s = this.slotFor(path, 'mkdir', 'EEXIST');
      if (this.paths.child(s.dir, s.name) !== undefined) throw fail('EEXIST', 'mkdir', path);
      const parent = this.inodeOf(s.dir, 'mkdir', path);
      if (parent.nlink >= LINK_MAX) throw fail('EMLINK', 'mkdir', path);
      return this.attr(this.makeNode(s, parent, S_IFDIR | (mode & (PERM_BITS & ~S_ISUID & ~S_ISGID)), 0, caller, null));
    });
  }

  /** mknod(2): regular files, fifos, sockets, character and block devices (metadata only). */
  mknod(path: string, mode: number, rdev: number, caller: Caller): Attr {
    return this.mutate('mknod', path, () => {
      let type = mode & S_IFMT;
      if (type === 0) type = S_IFREG;
      if (type === S_IFDIR) throw fail('EPERM', 'mknod', path, 'use mkdir for directories');
      if (![S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) throw fail('EINVAL', 'mknod', path, 'unknown file type');
      const s = this.slotFor(path, 'mknod', 'EEXIST');
      if (this.paths.child(s.dir, s.name) !== undefined) throw fail('EEXIST', 'mknod', path);
      const parent = this.inodeOf(s.dir, 'mknod', path);
      const dev = type === S_IFCHR || type === S_IFBLK ? rdev : 0;
      return this.attr(this.makeNode(s, parent, type | (mode & PERM_BITS), dev, caller, null));
    });
  }

  /** symlink(2): a link at `path` holding `target` (stored as given, never resolved). */
  symlink(target: string, path: string, caller: Caller): Attr {
    return this.mutate('symlink', path, () => {
      if (target.length === 0) throw fail('ENOENT', 'symlink', path, 'empty symlink target');
      if (target.length > SYMLINK_MAX) throw fail('ENAMETOOLONG', 'symlink', path);
      if (!isByteString(target)) throw fail('EINVAL', 'symlink', path, 'target is not a byte string (see fs/bytes.ts)');
      const s = this.slotFor(path, 'symlink', 'EEXIST');
      if (this.paths.child(s.dir, s.name) !== undefined) throw fail('EEXIST', 'symlink', path);
      const parent = this.inodeOf(s.dir, 'symlink', path);
      return this.attr(this.makeNode(s, parent, S_IFLNK | 0o777, 0, caller, target));
    });
  }

  /** readlink(2). */
  readlink(path: string): string {
    this.sync();
    const inode = this.inodeAt(path, 'readlink');
    if (!isLnk(inode.mode) || inode.target === null) throw fail('EINVAL', 'readlink', path, 'not a symbolic link');
    return inode.target;
  }

  /** link(2): a new name for an existing non-directory (one inode, nlink + 1). */
  link(existing: string, newPath: string): Attr {
    return this.mutate('link', newPath, () => {
      const src = this.resolve(existing, 'link');
      const s = this.slotFor(newPath, 'link', 'EEXIST');
      if (this.paths.child(s.dir, s.name) !== undefined) throw fail('EEXIST', 'link', newPath);
      const inode = this.inodeOf(src, 'link', existing);
      if (isDir(inode.mode)) throw fail('EPERM', 'link', existing, 'hard links to directories are not allowed');
      if (inode.nlink >= LINK_MAX) throw fail('EMLINK', 'link', existing);
      const parent = this.inodeOf(s.dir, 'link', newPath);
      const now = nowNs();
      const entry = { ino: inode.ino, type: inode.mode & S_IFMT };
      this.dirents.insert(s.dir.ino, s.name, entry);
      this.inodes.update(inode, { nlink: inode.nlink + 1, ctimeNs: now });
      this.inodes.update(parent, { mtimeNs: now, ctimeNs: now });
      this.paths.add(s.dir, s.name, entry);
      return this.attr(inode);
    });
  }

  /** unlink(2) of a non-directory; an open file stays usable until released. */
  unlink(path: string): void {
    return this.mutate('unlink', path, () => {
      const s = this.slotFor(path, 'unlink', 'EISDIR');
      const child = this.paths.child(s.dir, s.name);
      if (child === undefined) throw fail('ENOENT', 'unlink', path);
      if (isDir(child.type)) throw fail('EISDIR', 'unlink', path);
      const inode = this.inodeOf(child, 'unlink', path);
      const parent = this.inodeOf(s.dir, 'unlink', path);
      const now = nowNs();
      this.dirents.remove(s.dir.ino, s.name);
      this.inodes.update(parent, { mtimeNs: now, ctimeNs: now });
      this.dropName(inode, now);
      this.paths.invalidate(s.parsed.path);
    });
  }

  /** rmdir(2): ENOTEMPTY while any layer shows an entry in it. */
  rmdir(path: string): void {
    return this.mutate('rmdir', path, () => {
      const p = parsePath(path, 'rmdir');
      if (p.parts.length === 0) throw fail('EBUSY', 'rmdir', path);
      if (p.last === '.') throw fail('EINVAL', 'rmdir', path);
      if (p.last === '..') throw fail('ENOTEMPTY', 'rmdir', path);
      const s = this.slotOf(p, 'rmdir');
      const child = this.paths.child(s.dir, s.name);
      if (child === undefined) throw fail('ENOENT', 'rmdir', path);
      if (!isDir(child.type)) throw fail('ENOTDIR', 'rmdir', path);
      if (!this.dirents.isEmpty(child.ino)) throw fail('ENOTEMPTY', 'rmdir', path);
      const inode = this.inodeOf(child, 'rmdir', path);
      const parent = this.inodeOf(s.dir, 'rmdir', path);
      const now = nowNs();
      this.dirents.remove(s.dir.ino, s.name);
      this.inodes.update(parent, { nlink: parent.nlink - 1, mtimeNs: now, ctimeNs: now });
      this.dropName(inode, now);
      this.paths.invalidate(p.path);
    });
  }

  /**
   * rename(2), POSIX-style: replaces a file with a file or an empty directory with a
   * directory; same inode → nothing happens. A directory moves in O(1) with its subtree.
   */
  rename(from: string, to: string): void {
    return this.mutate('rename', from, () => {
      const pf = parsePath(from, 'rename');
      const pt = parsePath(to, 'rename');
      if (pf.parts.length === 0 || pt.parts.length === 0) throw fail('EBUSY', 'rename', pf.parts.length === 0 ? from : to);
      if (pf.last === '.' || pf.last === '..' || pt.last === '.' || pt.last === '..') throw fail('EINVAL', 'rename', from);
      const sf = this.slotOf(pf, 'rename');
      const st = this.slotOf(pt, 'rename');
      const src = this.paths.child(sf.dir, sf.name);
      if (src === undefined) throw fail('ENOENT', 'rename', from);
      const srcIsDir = isDir(src.type);
      if (srcIsDir && pt.path.startsWith(`${pf.path}/`)) throw fail('EINVAL', 'rename', from, 'cannot move a directory into itself');
      const dst = this.paths.child(st.dir, st.name);
      if (dst !== undefined && pf.path.startsWith(`${pt.path}/`)) throw fail('ENOTEMPTY', 'rename', to);
      if (dst !== undefined && dst.ino === src.ino) return;
      if (dst !== undefined) {
        if (srcIsDir && !isDir(dst.type)) throw fail('ENOTDIR', 'rename', to);
        if (!srcIsDir && isDir(dst.type)) throw fail('EISDIR', 'rename', to);
        if (isDir(dst.type) && !this.dirents.isEmpty(dst.ino)) throw fail('ENOTEMPTY', 'rename', to);
      }
      const inode = this.inodeOf(src, 'rename', from);
      const target = dst === undefined ? undefined : this.inodeOf(dst, 'rename', to);
      const fromParent = this.inodeOf(sf.dir, 'rename', from);
      const toParent = this.inodeOf(st.dir, 'rename', to);
      const movesDir = srcIsDir && sf.dir.ino !== st.dir.ino;
      if (movesDir && target === undefined && toParent.nlink >= LINK_MAX) throw fail('EMLINK', 'rename', to);

      const now = nowNs();
      this.dirents.remove(sf.dir.ino, sf.name);
      this.dirents.insert(st.dir.ino, st.name, { ino: src.ino, type: src.type });
      if (target !== undefined) {
        if (isDir(target.mode)) this.inodes.update(toParent, { nlink: toParent.nlink - 1 });
        this.dropName(target, now);
      }
      if (movesDir) {
        this.inodes.update(fromParent, { nlink: fromParent.nlink - 1 });
        this.inodes.update(toParent, { nlink: toParent.nlink + 1 });
      }
      this.inodes.update(fromParent, { mtimeNs: now, ctimeNs: now });
      if (toParent !== fromParent) this.inodes.update(toParent, { mtimeNs: now, ctimeNs: now });
      this.inodes.update(inode, { ctimeNs: now });
      this.paths.invalidate(pf.path);
      this.paths.invalidate(pt.path);
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
      const existing = this.paths.child(s.dir, s.name);
      if (existing !== undefined) {
        if ((flags & constants.O_EXCL) !== 0) throw fail('EEXIST', 'create', path);
        return this.openDentry(existing, flags & ~constants.O_CREAT, path);
      }
      const parent = this.inodeOf(s.dir, 'create', path);
      const inode = this.makeNode(s, parent, S_IFREG | (mode & PERM_BITS), 0, caller, null);
      return this.handles.open(inode.ino, flags);
    });
  }

  /** Open an existing file; O_TRUNC truncates; directories open read-only only (EISDIR). */
  open(path: string, flags: number): Fh {
    this.sync();
    const d = this.resolve(path, 'open');
    return this.openDentry(d, flags, path);
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
      this.doTruncate(inode, size, path);
    });
  }

  /** ftruncate(2) of a handle open for writing. */
  ftruncate(fh: Fh, size: number): void {
    return this.mutate('ftruncate', `fh ${fh}`, () => {
      const h = this.handles.get(fh, 'ftruncate');
      if (!h.writable) throw fail('EINVAL', 'ftruncate', `fh ${fh}`, 'not open for writing');
      this.doTruncate(this.handleInode(h, 'ftruncate'), size, `fh ${fh}`);
    });
  }

  /** fsync/fdatasync: everything written so far (this file's data and mappings included) is durable on return. */
  fsync(fh: Fh, datasync: boolean): void {
    void datasync;
    this.handles.get(fh, 'fsync');
    if (!this.readOnly) this.pool.commit();
  }

  /** Close a handle; the last handle of an unlinked file frees it. */
  release(fh: Fh): void {
    const { handle, last } = this.handles.close(fh);
    if (!last || this.readOnly || this.closed) return;
    this.sync();
    const inode = this.inodes.find(handle.ino);
    if (inode === undefined || inode.nlink > 0) return;
    const mode = this.pool.mode();
    if (mode !== 'write' && mode !== 'out-of-data-space') return; // cleaned as an orphan on next open
    this.mutate('release', `fh ${fh}`, () => {
      const gone = this.inodes.find(handle.ino);
      if (gone !== undefined && gone.nlink === 0) this.destroy(gone);
    });
  }

  // ---------------------------------------------------------------- xattrs

  /** setxattr(2); XATTR_CREATE → EEXIST when present, XATTR_REPLACE → ENODATA when absent. */
  setxattr(path: string, name: string, value: Uint8Array, flags: number): void {
    return this.mutate('setxattr', path, () => {
      const inode = this.inodeAt(path, 'setxattr');
      checkXattr(inode, name, path, 'setxattr', true);
      if (value.byteLength > XATTR_SIZE_MAX) throw fail('E2BIG', 'setxattr', path);
      if ((flags & XATTR_CREATE) !== 0 && (flags & XATTR_REPLACE) !== 0) throw fail('EINVAL', 'setxattr', path);
      const has = this.xattrs.all(inode.ino).has(name);
      if ((flags & XATTR_CREATE) !== 0 && has) throw fail('EEXIST', 'setxattr', path);
      if ((flags & XATTR_REPLACE) !== 0 && !has) throw fail('ENODATA', 'setxattr', path);
      this.xattrs.set(inode.ino, name, Buffer.from(value));
      this.inodes.update(inode, { ctimeNs: nowNs() });
    });
  }

  /** getxattr(2); ENODATA when absent. */
  getxattr(path: string, name: string): Buffer {
    this.sync();
    const inode = this.inodeAt(path, 'getxattr');
    checkXattr(inode, name, path, 'getxattr', false);
    const v = this.xattrs.all(inode.ino).get(name);
    if (v === undefined) throw fail('ENODATA', 'getxattr', path);
    return Buffer.from(v);
  }

  /** listxattr(2): the names, sorted. */
  listxattr(path: string): string[] {
    this.sync();
    const inode = this.inodeAt(path, 'listxattr');
    return [...this.xattrs.all(inode.ino).keys()].sort();
  }

  /** removexattr(2); ENODATA when absent. */
  removexattr(path: string, name: string): void {
    return this.mutate('removexattr', path, () => {
      const inode = this.inodeAt(path, 'removexattr');
      checkXattr(inode, name, path, 'removexattr', true);
      if (!this.xattrs.all(inode.ino).has(name)) throw fail('ENODATA', 'removexattr', path);
      this.xattrs.remove(inode.ino, name);
      this.inodes.update(inode, { ctimeNs: nowNs() });
    });
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
    if (!this.readOnly) this.slot.writer = false;
    this.dev.close();
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
    const inode = this.inodes.find(d.ino);
    if (inode === undefined) throw fail('EIO', syscall, path, `entry points at missing inode ${d.ino}`);
    return inode;
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

  // ---------------------------------------------------------------- private: changes

  private attr(inode: Inode): Attr {
    const mapped = isReg(inode.mode) ? this.dev.keyMappedBlocks(inode.dataKey) : undefined;
    return toAttr(inode, this.pool.blockSizeBytes, mapped);
  }

  /** A new inode named `s.name` in `s.dir`, owned by the caller (group from a setgid parent). */
  private makeNode(s: Slot, parent: Inode, mode: number, rdev: number, caller: Caller, target: string | null): Inode {
    let gid = caller.gid;
    if ((parent.mode & S_ISGID) !== 0) {
      gid = parent.gid;
      if (isDir(mode)) mode |= S_ISGID;
      else if (caller.uid !== 0 && caller.gid !== gid) mode &= ~S_ISGID;
    }
    const now = nowNs();
    const ino = this.sup.allocIno() as Ino;
    const dir = isDir(mode);
    const inode = this.inodes.insert(ino, {
      mode,
      uid: caller.uid,
      gid,
      size: target === null ? 0 : target.length,
      nlink: dir ? 2 : 1,
      rdev,
      atimeNs: now,
      mtimeNs: now,
      ctimeNs: now,
      target,
      dataKey: ino as number as FileKey,
    });
    const entry = { ino, type: mode & S_IFMT };
    this.dirents.insert(s.dir.ino, s.name, entry);
    this.inodes.update(parent, { nlink: parent.nlink + (dir ? 1 : 0), mtimeNs: now, ctimeNs: now });
    this.paths.add(s.dir, s.name, entry);
    return inode;
  }

  private openDentry(d: Dentry, flags: number, path: string): Fh {
    const inode = this.inodeOf(d, 'open', path);
    const acc = flags & O_ACCMODE;
    const trunc = (flags & constants.O_TRUNC) !== 0;
    if (isDir(inode.mode) && (acc !== constants.O_RDONLY || trunc)) throw fail('EISDIR', 'open', path);
    if (isLnk(inode.mode)) throw fail('ELOOP', 'open', path, 'symbolic links are not followed');
    if ((acc !== constants.O_RDONLY || trunc) && isReg(inode.mode)) {
      // Resolved again inside: a retried operation must not see an object a failed try changed.
      this.mutate('open', path, () => {
        if (trunc) this.truncateTo(this.inodeOf(d, 'open', path), 0);
      });
    }
    return this.handles.open(inode.ino, flags);
  }

  private doTruncate(inode: Inode, size: number, path: string): void {
    if (isDir(inode.mode)) throw fail('EISDIR', 'truncate', path);
    if (!isReg(inode.mode)) throw fail('EINVAL', 'truncate', path, 'not a regular file');
    if (!Number.isSafeInteger(size) || size < 0) throw fail('EINVAL', 'truncate', path);
    if (size > MAX_FILE_BYTES) throw fail('EFBIG', 'truncate', path);
    this.truncateTo(inode, size);
  }

  private truncateTo(inode: Inode, size: number): void {
    const key = this.data.truncate(inode, size, () => this.sup.allocIno() as FileKey);
    const now = nowNs();
    const patch: Partial<InodeFields> = { size, mtimeNs: now, ctimeNs: now };
    if (key !== inode.dataKey) patch.dataKey = key;
    this.inodes.update(inode, patch);
    if (patch.dataKey !== undefined) inode.dataBelow = false;
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

  /** One name of `inode` is gone: drop its link count; free it when none is left and no handle holds it. */
  private dropName(inode: Inode, now: bigint): void {
    const nlink = isDir(inode.mode) ? 0 : inode.nlink - 1;
    if (nlink <= 0 && !this.handles.isOpen(inode.ino)) this.destroy(inode);
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

/** Permission check of access(2) for `caller` (no supplementary groups). */
function permits(inode: Inode, mode: number, caller: Caller): boolean {
  const want = mode & 7;
  if (caller.uid === 0) {
    if ((want & constants.X_OK) === 0 || isDir(inode.mode)) return true;
    return (inode.mode & 0o111) !== 0;
  }
  const bits = caller.uid === inode.uid ? (inode.mode >> 6) & 7 : caller.gid === inode.gid ? (inode.mode >> 3) & 7 : inode.mode & 7;
  return (bits & want) === want;
}

/** Namespaces thinfs stores: user., trusted., security. (system.* ACLs are not supported). */
function checkXattr(inode: Inode, name: string, path: string, syscall: string, writing: boolean): void {
  if (name.length === 0 || name.length > XATTR_NAME_MAX || !isByteString(name)) throw fail('ERANGE', syscall, path, 'bad attribute name');
  if (!(name.startsWith('user.') || name.startsWith('trusted.') || name.startsWith('security.'))) {
    throw fail('ENOTSUP', syscall, path, `attribute namespace of '${name}' is not supported`);
  }
  if (name.startsWith('user.') && !isReg(inode.mode) && !isDir(inode.mode)) {
    // Linux: user.* only on regular files and directories.
    throw fail(writing ? 'EPERM' : 'ENODATA', syscall, path);
  }
}
