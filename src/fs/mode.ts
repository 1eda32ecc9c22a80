/** File type and permission bits, path names, and the filesystem clock. */
import { constants } from 'node:fs';
import { fail } from '../errors.js';
import { isByteString } from './bytes.js';

export const S_IFMT = constants.S_IFMT;
export const S_IFREG = constants.S_IFREG;
export const S_IFDIR = constants.S_IFDIR;
export const S_IFLNK = constants.S_IFLNK;
export const S_IFIFO = constants.S_IFIFO;
export const S_IFSOCK = constants.S_IFSOCK;
export const S_IFCHR = constants.S_IFCHR;
export const S_IFBLK = constants.S_IFBLK;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_ISVTX = 0o1000;
export const S_IXGRP = 0o010;
export const PERM_BITS = 0o7777;
/** open(2) access-mode bits (O_RDONLY, O_WRONLY, O_RDWR); Node does not export it. */
export const O_ACCMODE = 3;

/** Longest name of one directory entry, in bytes (NAME_MAX). */
export const NAME_MAX = 255;
/** Longest symlink target, in bytes (PATH_MAX - 1). */
export const SYMLINK_MAX = 4095;
/** Most names one inode may have (EMLINK beyond), and most subdirectories of a directory. */
export const LINK_MAX = 65000;
/** Largest file size (EFBIG beyond): keeps every byte offset a safe integer. */
export const MAX_FILE_BYTES = 2 ** 52;
/** st_size of a directory, as ext4 shows an empty one. */
export const DIR_SIZE = 4096;

export const isDir = (mode: number): boolean => (mode & S_IFMT) === S_IFDIR;
export const isReg = (mode: number): boolean => (mode & S_IFMT) === S_IFREG;
export const isLnk = (mode: number): boolean => (mode & S_IFMT) === S_IFLNK;

const wallAtStartNs = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

/** Wall-clock time in nanoseconds (ms-accurate epoch, ns-resolution and monotonic within a process). */
export function nowNs(): bigint {
  return wallAtStartNs + process.hrtime.bigint();
}

/** A parsed absolute path: its normalised form and components ('/' has none). */
export interface ParsedPath {
  path: string;
  parts: string[];
}

/**
 * Split an absolute path (a byte string, bytes.ts) into components. Empty components
 * and '.' are dropped; '..' steps up lexically (FUSE hands us resolved paths; symlinks
 * are never followed here). The last component keeps '.'/'..' visible through `last`
 * so mutating calls can refuse it.
 */
export function parsePath(p: string, syscall: string): ParsedPath & { last: string | undefined } {
  if (typeof p !== 'string' || p.length === 0 || p.charCodeAt(0) !== 47) throw fail('EINVAL', syscall, p, 'paths must be absolute');
  if (p.includes('\0')) throw fail('EINVAL', syscall, p, 'path contains a NUL byte');
  if (!isByteString(p)) throw fail('EINVAL', syscall, p, 'path is not a byte string (see fs/bytes.ts)');
  const raw = p.split('/');
  let last: string | undefined;
  for (let i = raw.length - 1; i >= 0; i--) {
    if (raw[i] !== '') {
      last = raw[i];
      break;
    }
  }
  const parts: string[] = [];
  for (const c of raw) {
    if (c === '' || c === '.') continue;
    if (c === '..') {
      parts.pop();
      continue;
    }
    if (c.length > NAME_MAX) throw fail('ENAMETOOLONG', syscall, p);
    parts.push(c);
  }
  return { path: parts.length === 0 ? '/' : `/${parts.join('/')}`, parts, last };
}

/** Join a directory path and a name. */
export function joinPath(dir: string, name: string): string {
  return dir === '/' ? `/${name}` : `${dir}/${name}`;
}
