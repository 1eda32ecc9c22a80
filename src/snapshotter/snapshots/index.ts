/**
 * containerd's snapshots on a thinfs pool: the semantics of containerd's Snapshots service
 * over pool devices, and the records that map containerd's keys to them. Runs where the
 * pool is open (the pool's daemon: daemon/ops/snapshot-ops.ts); talks to fs/ and pool/
 * through their index APIs. The gRPC side is ../index.ts.
 *
 * Changes (one at a time per pool; each atomic with its records):
 *   createActive(pool, views, {key, parent, labels, readOnly})   Prepare / View, mounted
 *   commit(pool, views, {name, key, labels, parent})             active -> committed, O(1)
 *   remove(pool, views, {key})                                   ENOTEMPTY with children
 *   update(pool, {name, labels, paths})                          labels only
 *   cleanup(pool, views)                                         snapshot devices no record knows
 * Queries:
 *   mounts(pool, views, {key})   the bind mount of the view (mounted again if it went away)
 *   stat, list (containerd filters), usage (exclusive bytes, entries of its own layer)
 * Records and names:
 *   findSnapshot, listSnapshots, snapshotDeviceName, isSnapshotDeviceName
 */
export { cleanup, commit, createActive, list, mounts, remove, stat, update, usage } from './service.js';
export type { CleanupResult, SnapshotInfo, SnapshotMount, SnapshotUsage, ViewMounts } from './service.js';
export { findSnapshot, listSnapshots } from './store.js';
export type { SnapshotKind, SnapshotRecord } from './store.js';
export { isSnapshotDeviceName, snapshotDeviceName } from './names.js';
export { parseFilters } from './filters.js';
export type { Adaptor, Filter } from './filters.js';
