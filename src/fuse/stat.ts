/**
 * Attributes as fuse-native encodes them (index.js getStatArray): ids and inode numbers
 * as uint32, sizes as doubles, times as bigint nanoseconds (atimeNs, ...: the thinfs
 * patch of fuse-native carries the sub-millisecond part; the millisecond fields are
 * what an unpatched fuse-native would read).
 */
import type { Attr, StatFs } from '../fs/index.js';
import type { IdMap } from './idmap.js';

/** What fuse-native's getStatArray reads. */
export interface FuseStat {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  dev: number;
  nlink: number;
  ino: number;
  rdev: number;
  blksize: number;
  blocks: number;
  atime: number;
  mtime: number;
  ctime: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** What fuse-native's getStatfsArray reads (every field a uint32). */
export interface FuseStatfs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  fsid: number;
  flag: number;
  namemax: number;
}

const UINT32_MAX = 2 ** 32 - 1;

/** `attr` with ids shown through the mount's maps. */
export function toFuseStat(attr: Attr, uids: IdMap, gids: IdMap): FuseStat {
  return {
    mode: attr.mode,
    uid: uids.toHost(attr.uid),
    gid: gids.toHost(attr.gid),
    size: attr.size,
    dev: 0,
    nlink: attr.nlink,
    ino: attr.ino,
    rdev: attr.rdev,
    blksize: attr.blksize,
    blocks: attr.blocks,
    atime: nsToMs(attr.atimeNs),
    mtime: nsToMs(attr.mtimeNs),
    ctime: nsToMs(attr.ctimeNs),
    atimeNs: attr.atimeNs,
    mtimeNs: attr.mtimeNs,
    ctimeNs: attr.ctimeNs,
  };
}

/** A readdir entry's stat: libfuse2 only takes the inode number (use_ino) and the type. */
export function entryStat(ino: number, type: number): Partial<FuseStat> {
  return { ino, mode: type, nlink: 1, atime: 0, mtime: 0, ctime: 0 };
}

/** statfs(2) clamped to fuse-native's uint32 fields. */
export function toFuseStatfs(s: StatFs): FuseStatfs {
  const u32 = (n: number) => Math.max(0, Math.min(UINT32_MAX, Math.floor(n)));
  return {
    bsize: u32(s.bsize),
    frsize: u32(s.frsize),
    blocks: u32(s.blocks),
    bfree: u32(s.bfree),
    bavail: u32(s.bavail),
    files: u32(s.files),
    ffree: u32(s.ffree),
    favail: u32(s.favail),
    fsid: 0,
    flag: 0,
    namemax: u32(s.namemax),
  };
}

/** Nanoseconds to whole milliseconds, floored (times before 1970 show as 1970). */
function nsToMs(ns: bigint): number {
  if (ns <= 0n) return 0;
  return Number(ns / 1_000_000n);
}
