/** Types of the union filesystem's public API. */

/**
 * An inode number: unique in the pool, stable across copy-up and rename, never handed out
 * twice (schema.ts). Root is 1. It is the FUSE nodeid of the inode-based API.
 */
export type Ino = number & { readonly __brand: 'Ino' };
/** An open file handle number, as FUSE hands it back (fh). */
export type Fh = number;

export const ROOT_INO = 1 as Ino;

/** Who is asking: new entries belong to the caller (uid/gid); access checks use its groups too. */
export interface Caller {
  uid: number;
  gid: number;
  /** Supplementary groups (access checks, setgid inheritance); none when absent. */
  groups?: readonly number[];
  /** Applied to the mode of new entries when given; absent when the kernel has applied it already. */
  umask?: number;
}

/** What stat(2) shows. Times in nanoseconds since the epoch. */
export interface Attr {
  ino: Ino;
  /** File type and permission bits (S_IFREG | 0644, ...), setuid/setgid/sticky included. */
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  /** 512-byte units actually allocated (mapped blocks * blockSize / 512). */
  blocks: number;
  blksize: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/**
 * What every call that hands out a name answers (lookup, mkdirAt, createAt, ...), as a FUSE
 * entry reply carries it. The generation is always 0: inode numbers are never reused (see Ino).
 */
export interface EntryAttr extends Attr {
  generation: number;
}

/** setattrIno: the attributes to change (absent: unchanged), as one FUSE SETATTR. */
export interface SetAttr {
  /** Permission bits (setuid/setgid/sticky included); the file type stays. */
  mode?: number;
  /** New owner; -1 also leaves it unchanged. */
  uid?: number;
  gid?: number;
  /** Truncate or extend a regular file. */
  size?: number;
  atime?: TimeSpec;
  mtime?: TimeSpec;
  /** An explicit ctime (the kernel keeps it for open files with the writeback cache); otherwise each change sets it to now. */
  ctime?: bigint;
  /** The handle of an ftruncate/futimens (FATTR_FH): it must be open on this inode, and writable for a size change. */
  fh?: Fh;
}

export interface DirEntry {
  /** A byte string (bytes.ts). */
  name: string;
  ino: Ino;
  /** File type bits only (S_IFDIR, S_IFREG, ...). */
  type: number;
}

/**
 * One entry of readdirIno: `offset` is the cookie to resume after it (the next READDIR's
 * offset). '.' and '..' come first (offsets 1 and 2).
 */
export interface DirEntryAt extends DirEntry {
  offset: number;
}

/** One entry of readdirplusIno: a DirEntryAt with the inode's attributes. */
export interface DirEntryPlus extends DirEntryAt {
  attr: EntryAttr;
}

export interface StatFs {
  bsize: number;
  frsize: number;
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  favail: number;
  namemax: number;
}

/** utimens: a time in ns, or 'now', or 'omit' (leave unchanged). */
export type TimeSpec = bigint | 'now' | 'omit';

export type ChangeKind = 'added' | 'changed' | 'deleted';
export interface Change {
  /** A byte string (bytes.ts). */
  path: string;
  kind: ChangeKind;
  /**
   * Set on a directory that replaced a lower directory (rmdir + mkdir, makeOpaque): it
   * hides every lower entry, so an export must mark it opaque (OCI `.wh..wh..opq`).
   */
  opaque?: true;
}

/** renameAt flags, as renameat2(2) has them. */
export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;
