/**
 * The options of a thinfs mount, and why each one. Mounts are served through libfuse3's
 * low-level, inode-based API (lowlevel.ts, ll-ops.ts): a FUSE nodeid is a thinfs inode
 * number, so every name of a file is one kernel inode with one page cache. That is what
 * makes kernel caching safe here; libfuse2's high-level API (one nodeid per *name*) forced
 * attr_timeout=0 and no kernel_cache (a write through one name of a hard link left the
 * other reading the old bytes), and needed use_ino, hard_remove and big_writes, all gone.
 *
 * mount -o options (LowLevelOptions.mountOptions):
 *  fsname=thinfs:NAME, subtype=thinfs
 *                                 /proc/mounts shows `thinfs:NAME ... fuse.thinfs`.
 *  allow_other, default_permissions
 *                                 root mounts: container processes of any uid use the view,
 *                                 with the kernel checking permissions on the ids shown (as
 *                                 fuse-overlayfs does). A non-root mount gets allow_other
 *                                 only where /etc/fuse.conf says user_allow_other (fusermount
 *                                 refuses it otherwise), and then default_permissions too,
 *                                 since thinfs itself checks no permissions. Without
 *                                 allow_other only the mounting user (and its user
 *                                 namespaces) can enter the view, and it may do anything
 *                                 there, like fakeroot: that is what a rootless container on
 *                                 root-owned image files needs.
 *  ro                             read-only mounts (images, --read-only): the kernel answers
 *                                 EROFS before asking us (the filesystem would too).
 *  suid (root mounts)             libfuse mounts nosuid unless told `suid`, so su, sudo,
 *                                 ping or passwd in a container ran without their setuid
 *                                 bits (measured: a setuid-root copy of id(1), run as uid
 *                                 65534, printed euid 65534). A root mount honours setuid
 *                                 and setgid bits by default, as fuse-overlayfs and the
 *                                 kernel's overlayfs do for container runtimes; `thinfs
 *                                 mount --nosuid` turns it off. A non-root mount is always
 *                                 nosuid: fusermount forces nosuid,nodev for users (and
 *                                 ignores `suid`), so it is never asked for.
 *  nodev                          always (libfuse's default too, kept explicit): device
 *                                 nodes of an image are stored and listed, but not opened
 *                                 through the view; runtimes give a container its own /dev,
 *                                 and a device node in an image must not open the host's disk.
 *
 * The session (what libfuse3 and the kernel agree on at INIT, and each reply's flags):
 *  entry_timeout, attr_timeout, negative_timeout = LONG_TIMEOUT_S (a day)
 *                                 every name of a file is one kernel inode now, so the
 *                                 hard-link staleness that forced attr_timeout=0 is gone;
 *                                 images never change and the daemon is the only writer of
 *                                 a container, so what the kernel caches stays true until
 *                                 the kernel itself changes it. Measured in the issue: stat
 *                                 of 10k files warm 2.28 s with a LOOKUP+GETATTR round trip
 *                                 each (~230 µs) under attr_timeout=0.
 *  attribute cache (C)           GETATTR answered in the libfuse worker from the attributes
 *                                 last replied (fuse-lowlevel-attrcache.c): every READ the
 *                                 kernel sends makes it forget the inode's atime, so the next
 *                                 stat of a file it read is a GETATTR; reading a tree of 4,272
 *                                 files again, warm, sent 5,144 of them to JS. thinfs never
 *                                 changes atime on read, and everything else that changes
 *                                 attributes either is a request (its reply drops them) or
 *                                 drops the block map (which drops them too).
 *  keep_cache (FOPEN_KEEP_CACHE on every open)
 *                                 the page cache of a file survives close/open: nothing
 *                                 changes a file behind the kernel (reading every file of
 *                                 a tree again, warm, was 26 s with libfuse2's auto_cache
 *                                 dropping pages at each open).
 *  writeback cache                writes land in the page cache and go out in large
 *                                 WRITEs: rand write 4k was 4,189 IOPS with one 4 KiB
 *                                 request each (the issue's table). The kernel then owns
 *                                 size/mtime of open files (ll-ops.ts opens O_WRONLY as
 *                                 O_RDWR and drops O_APPEND, as passthrough_ll does).
 *  max_write = 1 MiB              libfuse2 capped requests at 128 KiB; libfuse3 allows
 *                                 1 MiB (its receive buffer): a 1 MiB sequential write is
 *                                 one request instead of eight.
 *  readdirplus (auto)             `ls -l`/`find` get each entry's attributes with the
 *                                 listing instead of one LOOKUP per name.
 *  explicit invalidation          none is needed today: a commit of a mounted container
 *                                 changes nothing visible in it; an image (read-only) is
 *                                 never imported into while mounted; a remount of the
 *                                 same device is a new session with a fresh kernel cache.
 *                                 xattrs never change behind the kernel either, so the
 *                                 binding's security.capability cache stays valid.
 *  read_ahead_kb = 1024 (sysfs, root mounts)
 *                                 the kernel reads ahead at most 128 KiB on a FUSE mount
 *                                 (INIT can only lower it), so sequential reads came as
 *                                 128 KiB READs; raised to 1 MiB after the mount (kernel.ts
 *                                 setReadahead). Measured: dd bs=1M of a cold 256 MiB file
 *                                 291 MB/s at 128 KiB (2048 READs), 748 MB/s at 1 MiB.
 *  maxIdleThreads = 2             lowlevel.ts's default, measured there: 50 mounts after
 *                                 4 MiB each, 196 MiB RSS keeping every idle worker, 135
 *                                 MiB with 2.
 */
import * as fs from 'node:fs';
import type { LowLevelOptions } from './lowlevel.js';

export interface MountOptionsInput {
  /** The device name (fsname=thinfs:NAME). */
  name: string;
  readOnly: boolean;
  /** Ignore setuid/setgid bits even on a root mount (`thinfs mount --nosuid`). */
  nosuid?: boolean;
  /** Mounting as root (default: the effective uid of this process is 0). */
  asRoot?: boolean;
  /** Contents of /etc/fuse.conf (default: read it). */
  fuseConf?: string;
}

/** Who may enter the view (allow_other) and what to tell the user about it. */
function access(input: MountOptionsInput): { asRoot: boolean; allowOther: boolean; warnings: string[] } {
  const asRoot = input.asRoot ?? process.geteuid?.() === 0;
  const warnings: string[] = [];
  let allowOther = asRoot;
  if (!asRoot) {
    allowOther = userAllowOther(input.fuseConf ?? readFuseConf());
    if (!allowOther) {
      warnings.push(
        'mounted without allow_other: only this user can enter the view (add user_allow_other to /etc/fuse.conf to let container processes of other uids in)',
      );
    }
  }
  return { asRoot, allowOther, warnings };
}

/** libfuse3's largest request (its receive buffer): 1 MiB. */
export const MAX_IO_BYTES = 1024 * 1024;
/** The kernel's readahead on a root mount, KiB (see the top comment): one largest READ. */
export const READAHEAD_KB = MAX_IO_BYTES / 1024;
/** Seconds the kernel trusts names, attributes and absent names (see the top comment). */
export const LONG_TIMEOUT_S = 86_400;

export interface MountOptionsResult {
  options: Omit<LowLevelOptions, 'onAnswer'>;
  allowOther: boolean;
  setuid: boolean;
  warnings: string[];
  /** FOPEN_KEEP_CACHE on every open. */
  keepCache: boolean;
}

/** The libfuse3 low-level session options of a mount of device `name`. */
export function mountOptions(input: MountOptionsInput): MountOptionsResult {
  const { asRoot, allowOther, warnings } = access(input);
  const setuid = asRoot && input.nosuid !== true;
  const mountOptions = [`fsname=thinfs:${sanitize(input.name)}`, 'subtype=thinfs'];
  if (allowOther) mountOptions.push('allow_other', 'default_permissions');
  if (input.readOnly) mountOptions.push('ro');
  mountOptions.push(setuid ? 'suid' : 'nosuid', 'nodev');
  return {
    options: {
      name: input.name,
      mountOptions,
      entryTimeout: LONG_TIMEOUT_S,
      attrTimeout: LONG_TIMEOUT_S,
      negativeTimeout: LONG_TIMEOUT_S,
      writebackCache: !input.readOnly,
      attrCache: true,
      readdirplus: 'auto',
      maxWriteBytes: MAX_IO_BYTES,
    },
    allowOther,
    setuid,
    warnings,
    keepCache: true,
  };
}

/** True when fuse.conf has a `user_allow_other` line (comments and blanks ignored). */
export function userAllowOther(conf: string): boolean {
  return conf.split('\n').some((l) => l.replace(/#.*/, '').trim() === 'user_allow_other');
}

function readFuseConf(): string {
  try {
    return fs.readFileSync('/etc/fuse.conf', 'utf8');
  } catch {
    return '';
  }
}

/** libfuse splits options on commas; a device name must not smuggle options in. */
function sanitize(name: string): string {
  return name.replace(/[,\\\s]/g, '_');
}
