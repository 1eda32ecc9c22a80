/**
 * The union filesystem's public API: one Filesystem per mounted device, over the
 * device's snapshot chain, with two faces over the same code: PATH-BASED (FUSE's high
 * level and src/layers hand us paths; a dentry/path cache keeps lookups O(1) once warm)
 * and INODE-BASED (FUSE's low level: a directory inode and a name, or an inode; the
 * inode number is the nodeid, generation 0). Every method is synchronous and throws
 * ThinfsError (errno) on failure. Every path, name, symlink target and xattr name is a
 * BYTE STRING (one char per byte; bytes.ts says why and how to convert).
 *
 * Opening:   Filesystem.open(pool, devId, opts)   (makes the root directory on a fresh device)
 * Attributes: getattr, fgetattr, chmod, chown, utimens, access, statfs, inoAt
 *             by inode: getattrIno, setattrIno (one SETATTR, atomic), accessIno
 * Names:     readdir, mkdir, mknod, symlink, readlink, link, unlink, rmdir, rename,
 *            makeOpaque (a fresh empty directory hiding everything below, OCI opaque)
 *             by inode: lookup, mkdirAt, mknodAt, symlinkAt, readlinkIno, linkAt, unlinkAt,
 *            rmdirAt, renameAt (RENAME_NOREPLACE, RENAME_EXCHANGE), opendirIno,
 *            readdirIno, readdirplusIno (offsets that survive creates and unlinks)
 * Kernel lookups: ref, forget — an unlinked inode lives while a lookup or a handle holds it
 * Data:      create, open, read, write, truncate, ftruncate, fsync, release
 *             by inode: createAt (entry + handle, real open flags), openIno
 * Xattrs:    setxattr, getxattr, listxattr, removexattr (and each …Ino)
 * Layers:    changes() — what the top layer adds/changes/deletes, from metadata
 * Lifecycle: commit(), close(), dropCaches() (after memory pressure; benchmarks)
 */
export { Filesystem } from './filesystem.js';
export type { FilesystemOptions } from './filesystem.js';
export * from './types.js';
export { byteString, bytesOf, fromText, isByteString, toText, type ByteString } from './bytes.js';
// Check and repair of the namespace tables of every layer (check.ts), for `thinfs check`.
export { checkNamespace, currentSchema } from './check.js';
export type { NamespaceCheckOptions, NamespaceIssue, NamespaceReport } from './check.js';
