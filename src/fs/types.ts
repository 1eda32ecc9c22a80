/** Types of the union filesystem's public API. */

/** An inode number: unique in the pool, stable across copy-up and rename. Root is 1. */
export type Ino = number & { readonly __brand: 'Ino' };
/** An open file handle number, as FUSE hands it back (fh). */
export type Fh = number;

export const ROOT_INO = 1 as Ino;

/** Who is asking: new entries belong to the caller (uid/gid); umask is already applied by the kernel. */
export interface Caller {
  uid: number;
  gid: number;
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

export interface DirEntry {
  /** A byte string (bytes.ts). */
  name: string;
  ino: Ino;
  /** File type bits only (S_IFDIR, S_IFREG, ...). */
  type: number;
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

export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;
