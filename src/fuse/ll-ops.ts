/**
 * The low-level FUSE operations table: the kernel's inode-based requests (lowlevel.ts)
 * onto the Filesystem's inode API. Each handler is mechanical: decode, one Filesystem
 * call, return the answer (or throw); lowlevel.ts sends the reply, turns every throw into
 * an errno through errno.ts's one translator, logs and times it, and reports each answer
 * to the mount's counters (`onAnswer`, wired by mount.ts). Read and write count their
 * bytes here.
 *
 * Rules the kernel sets, kept here:
 *  - Lookup counts: every entry returned (lookup, mknod, mkdir, symlink, link, create,
 *    each readdirplus entry but '.' and '..') is one reference: `fs.ref` counts it before
 *    it is returned; FORGET gives them back (`fs.forget`). lowlevel.ts forgets the ones
 *    the kernel never got.
 *  - Ids: attributes show stored ids through the mount's id maps (idmap.ts); the owner of
 *    a new entry and a chown's ids come from the host and are mapped back (a host id no
 *    range maps: EOVERFLOW on creation, EINVAL on chown, as an idmapped mount does).
 *  - The caller of a creation is the request's (uid, gid; the kernel has applied the umask).
 *  - Writeback cache: the kernel reads pages through handles opened O_WRONLY and writes
 *    back through any writable handle, so O_WRONLY opens O_RDWR here; it handles O_APPEND
 *    itself (it sends the offset at the end it knows), so O_APPEND is dropped; it owns
 *    size and mtime of open files and sends them with setattr (ctime too).
 *  - Every Filesystem call here is synchronous, so a write's data (libfuse's buffer, valid
 *    until the reply) is copied before the reply; read returns the bytes, copied by the
 *    binding as it replies.
 *  - Most READs and in-place WRITEs never get here: the C hot path answers them in the
 *    worker from the block map (blockmap.ts). What reaches read/write with `miss` is what
 *    the map did not know; after answering, the map is filled (writes: only inside the
 *    file). fsync first tells the filesystem of C writes, so its commit fdatasyncs them.
 *  - Names are bytes: byte strings in and out (fs/bytes.ts), untouched here.
 *  - No access handler: the kernel checks permissions (default_permissions), or, on a
 *    mount without allow_other, only the mounting user gets in and may do anything (as
 *    thinfs always did); a read-only view is refused writes by the VFS (mount -o ro).
 *    Without the handler the kernel stops asking (ENOSYS once). No flush handler either:
 *    close(2) has nothing to flush above the pool (the kernel writes dirty pages back
 *    before it would send FLUSH, and stops sending it after one ENOSYS).
 */
import { constants } from 'node:fs';
import { fail } from '../errors.js';
import type { Attr, Caller, EntryAttr, Filesystem, Ino, StatFs } from '../fs/index.js';
import type { KernelBlockMap } from './blockmap.js';
import type { MountCounters } from './counters.js';
import type { IdMap } from './idmap.js';
import type { LlAttr, LlEntry, LlOpen, LlSetAttr, LlStatfs, LowLevelHandlers, RequestCaller } from './lowlevel.js';

export interface LlOpsConfig {
  uids: IdMap;
  gids: IdMap;
  /** Where read and write count their bytes (`thinfs stats`); the operations are counted by lowlevel.ts's onAnswer. */
  counters?: MountCounters;
  /** The kernel caches pages across opens (FOPEN_KEEP_CACHE): the daemon is the only writer. */
  keepCache: boolean;
  /** The session runs with the writeback cache (see the top comment: open flags). */
  writebackCache: boolean;
  /** The C hot path's block map: filled after a read or write it could not answer (blockmap.ts). */
  blockMap?: KernelBlockMap;
}

const O_ACCMODE = 0o3;
/** Chunks of the block map (16 MiB each) filled past a read miss: sequential readers then stay in C (blockmap.ts). */
const READ_FILL_AHEAD_CHUNKS = 4;
/** FUSE sends readdir replies in buffers of `size` bytes: at least 24 + 8 bytes per entry. */
const DIRENT_MIN_BYTES = 32;
/** A readdirplus entry: fuse_entry_out (128) + dirent (24) + a short name, padded. */
const DIRENTPLUS_BYTES = 168;

/** The low-level handlers of one mounted Filesystem. */
export function makeLowLevelOps(fs: Filesystem, cfg: LlOpsConfig) {
  const { uids, gids, counters, blockMap } = cfg;

  const attr = (a: Attr): LlAttr => ({
    ino: a.ino,
    mode: a.mode,
    nlink: a.nlink,
    uid: uids.toHost(a.uid),
    gid: gids.toHost(a.gid),
    rdev: a.rdev,
    size: a.size,
    blksize: a.blksize,
    blocks: a.blocks,
    atimeNs: a.atimeNs,
    mtimeNs: a.mtimeNs,
    ctimeNs: a.ctimeNs,
  });

  /** An entry handed to the kernel: one more lookup of its inode. */
  const entry = (e: EntryAttr): LlEntry => {
    fs.ref(e.ino);
    return { ino: e.ino, generation: e.generation, attr: attr(e) };
  };

  /** The owner of a new entry, in stored ids. */
  const creator = (c: RequestCaller, op: string): Caller => {
    const uid = uids.toStored(c.uid);
    const gid = gids.toStored(c.gid);
    if (uid === undefined || gid === undefined) throw fail('EOVERFLOW', op, undefined, `caller ${c.uid}:${c.gid} is outside the mount's id maps`);
    return { uid, gid };
  };

  const storedId = (map: IdMap, id: number | undefined, ino: Ino): number | undefined => {
    if (id === undefined) return undefined;
    const stored = map.toStored(id);
    if (stored === undefined) throw fail('EINVAL', 'chown', `#${ino}`, `id ${id} is outside the mount's id map`);
    return stored;
  };

  /** The flags a handle is opened with here (see the top comment). */
  const openFlags = (flags: number): number => {
    if (!cfg.writebackCache) return flags;
    let f = flags & ~constants.O_APPEND;
    if ((f & O_ACCMODE) === constants.O_WRONLY) f = (f & ~O_ACCMODE) | constants.O_RDWR;
    return f;
  };

  const opened = (fh: number): LlOpen => ({ fh, keepCache: cfg.keepCache });

  const statfs = (s: StatFs): LlStatfs => ({ ...s });

  return {
    // ---------------------------------------------------------------- inodes the kernel holds
    lookup: (parent, name) => entry(fs.lookup(parent, name)),
    forget: (ino, n) => {
      blockMap?.drop(ino);
      fs.forget(ino, n);
    },

    // ---------------------------------------------------------------- attributes
    // By inode: works after the last name is gone, while the kernel holds it (fh or not).
    getattr: (ino) => attr(fs.getattrIno(ino)),
    setattr: (ino, set: LlSetAttr, fh) =>
      attr(
        fs.setattrIno(ino, {
          mode: set.mode,
          uid: storedId(uids, set.uid, ino),
          gid: storedId(gids, set.gid, ino),
          size: set.size,
          atime: set.atime,
          mtime: set.mtime,
          ctime: set.ctime,
          fh,
        }),
      ),
    statfs: () => statfs(fs.statfs()),

    // ---------------------------------------------------------------- names
    readlink: (ino) => fs.readlinkIno(ino),
    mknod: (parent, name, mode, rdev, caller) => entry(fs.mknodAt(parent, name, mode, rdev, creator(caller, 'mknod'))),
    mkdir: (parent, name, mode, caller) => entry(fs.mkdirAt(parent, name, mode, creator(caller, 'mkdir'))),
    symlink: (target, parent, name, caller) => entry(fs.symlinkAt(parent, name, target, creator(caller, 'symlink'))),
    link: (ino, newParent, newName) => entry(fs.linkAt(ino, newParent, newName)),
    unlink: (parent, name) => fs.unlinkAt(parent, name),
    rmdir: (parent, name) => fs.rmdirAt(parent, name),
    rename: (parent, name, newParent, newName, flags) => fs.renameAt(parent, name, newParent, newName, flags),

    // ---------------------------------------------------------------- directories
    // The kernel may keep a directory's listing across opens (cache_readdir + keep_cache):
    // only this daemon changes a view, and every change it makes goes through the kernel,
    // which drops the cached listing of a directory it changes. A warm `find` or `ls -R`
    // then reaches the daemon not at all.
    opendir: (ino) => ({ fh: fs.opendirIno(ino), keepCache: cfg.keepCache, cacheReaddir: cfg.keepCache }),
    readdir: (ino, offset, size, fh) => fs.readdirIno(ino, fh, offset, Math.max(1, Math.floor(size / DIRENT_MIN_BYTES))),
    readdirplus: (ino, offset, size, fh) =>
      fs.readdirplusIno(ino, fh, offset, Math.max(1, Math.floor(size / DIRENTPLUS_BYTES))).map((e) => ({
        name: e.name,
        entry: e.name === '.' || e.name === '..' ? { ino: e.ino, attr: attr(e.attr) } : entry(e.attr),
        offset: e.offset,
      })),
    releasedir: (_ino, fh) => fs.release(fh),
    fsyncdir: () => fs.commit(),

    // ---------------------------------------------------------------- data
    create: (parent, name, mode, flags, caller) => {
      const { entry: e, fh } = fs.createAt(parent, name, mode, creator(caller, 'create'), openFlags(flags));
      return { entry: entry(e), open: opened(fh) };
    },
    open: (ino, flags) => opened(fs.openIno(ino, openFlags(flags))),
    read: (ino, size, offset, fh, miss) => {
      // fh 0: an open the C hot path answered (read-only, no handle): read by inode.
      const data = fh === 0 ? fs.readIno(ino, offset, size) : fs.read(fh, offset, size);
      counters?.read(data.length);
      if (miss) blockMap?.fill(ino, offset, size, READ_FILL_AHEAD_CHUNKS);
      return data;
    },
    write: (ino, data, offset, fh, _writepage, miss) => {
      // A write that grows the file is followed by more of them (all JS's): filling the map
      // after each would cost a resolve per request for nothing (measured: ~10% of a 1 MiB
      // sequential write). Writes inside the file fill it: the next ones may go in place.
      const inside = miss && blockMap !== undefined && offset + data.byteLength <= fs.fileSize(ino);
      const n = fs.write(fh, offset, data);
      counters?.wrote(n);
      if (inside) blockMap.fill(ino, offset, data.byteLength);
      return n;
    },
    fsync: (_ino, datasync, fh) => {
      blockMap?.noteWrites();
      if (fh === 0) fs.syncAll(); // a read-only open the C hot path answered
      else fs.fsync(fh, datasync);
    },
    release: (_ino, fh) => fs.release(fh),

    // ---------------------------------------------------------------- xattrs
    setxattr: (ino, name, value, flags) => fs.setxattrIno(ino, name, value, flags),
    getxattr: (ino, name) => fs.getxattrIno(ino, name),
    listxattr: (ino) => fs.listxattrIno(ino),
    removexattr: (ino, name) => fs.removexattrIno(ino, name),
  } satisfies LowLevelHandlers;
}
