/**
 * The union filesystem's public API: one Filesystem per mounted device, over the
 * device's snapshot chain. Path-based, because FUSE (fuse-native, high level) hands us
 * paths; a dentry/path cache keeps lookups O(1) once warm. Every method is synchronous
 * and throws ThinfsError (errno) on failure. Every path, name, symlink target and xattr
 * name is a BYTE STRING (one char per byte; bytes.ts says why and how to convert).
 *
 * Opening:   Filesystem.open(pool, devId, opts)   (makes the root directory on a fresh device)
 * Attributes: getattr, fgetattr, chmod, chown, utimens, access, statfs
 * Names:     lookup, readdir, mkdir, mknod, symlink, readlink, link, unlink, rmdir, rename,
 *            makeOpaque (a fresh empty directory hiding everything below, OCI opaque)
 * Data:      create, open, read, write, truncate, ftruncate, fsync, release
 * Xattrs:    setxattr, getxattr, listxattr, removexattr
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
