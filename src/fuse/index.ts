/**
 * The FUSE adapter's public API: serving a Filesystem at a mountpoint through libfuse3's
 * low-level, inode-based API (fuse-native's low-level mode; the only module that loads it
 * is lowlevel.ts).
 *
 * Mounting:    FuseMount.mount({ name, mountpoint, fs, readOnly, nosuid, uids, gids, counters })
 *              -> FuseMount; mount.unmount() (refuses while busy: returns a BusyReport),
 *              mount.detach() (lazy, busy or not), mount.stillMounted(), mount.onGone(cb)
 *              (unmounted from outside), mount.flush() (the kernel's written pages reach
 *              the Filesystem)
 *              notEmpty() — the error for a mountpoint with files in it
 * Busy views:  busyReport(mountpoint), findHolders(mountpoint) — the processes holding a
 *              mount, from /proc; describeBusy() — "held by pid 12 (bash): cwd; ..."
 * Options:     mountOptions() — the mount and session options and why each (options.ts)
 * Id maps:     parseIdRange('C:H:N'), IdMap (stored ids <-> ids shown on the mount)
 * Kernel side: mountTable(), thinfsMountAt(), probeMount(), syncMount(), unmountNow() (non-lazy: 'busy'
 *              when the kernel says so), lazyUnmount() — stale mounts of a killed daemon,
 *              usable from any process
 * Operations:  makeLowLevelOps(fs, cfg) — the handler table (ll-ops.ts over lowlevel.ts);
 *              toErrno() — the one error-to-errno translator
 * Counters:    MountCounters — a mount's operations by kind, latency histogram, bytes
 *              (MountSpec.counters; `thinfs stats`)
 */
export { FuseMount, notEmpty } from './mount.js';
export type { MountSpec } from './mount.js';
export { mountOptions, userAllowOther, MAX_IO_BYTES } from './options.js';
export { IdMap, parseIdRange, OVERFLOW_ID } from './idmap.js';
export type { IdRange } from './idmap.js';
export { FSTYPE, lazyUnmount, mountTable, probeMount, syncMount, thinfsMountAt, thinfsMountpoints, unmountNow } from './kernel.js';
export { busyReport, describeBusy, findHolders, isBusy } from './holders.js';
export type { BusyReport, Holder } from './holders.js';
export type { MountEntry } from './kernel.js';
export { makeLowLevelOps } from './ll-ops.js';
export { toErrno } from './errno.js';
export { LATENCY_BOUNDS_MS, MountCounters } from './counters.js';
export type { CountersSnapshot, OpStats } from './counters.js';
