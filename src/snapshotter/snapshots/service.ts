/**
 * containerd's Snapshots semantics on a thinfs pool (core/snapshots/snapshotter.go, and
 * the bolt metastore every built-in snapshotter shares). Runs where the pool is open — in
 * the pool's daemon, reached through the control socket (daemon/ops/snapshot-ops.ts).
 *
 * Model:
 *  - an active snapshot (Prepare) is a writable device: a snapshot of its committed
 *    parent's device (O(1)), or an empty thin device when the parent is '';
 *  - a view (View) is a read-only device over its parent (O(1), a frozen empty layer), so
 *    any number of views of one parent mount side by side;
 *  - Commit freezes the active device in place (Pool.setReadOnly: O(1), no copy) and the
 *    active key becomes the committed name; its device is renamed after the name;
 *  - Remove deletes the device (deferred by the pool while thinfs devices sit on it);
 *  - every active snapshot and view is mounted through the daemon at ROOT/mnt/<device>,
 *    and Mounts answers a bind mount of that view (as fuse-overlayfs-snapshotter answers a
 *    bind mount of its directories): unpacking a layer writes through FUSE into the
 *    device. A view that went away (a daemon restart) is mounted again by Mounts.
 *
 * Errors carry the errno containerd's codes are made of (snapshotter/server.ts maps them):
 * EEXIST AlreadyExists, ENOENT NotFound, EINVAL InvalidArgument, and FailedPrecondition
 * for ENOTEMPTY (a snapshot with children), EBUSY (its view is in use) and EROFS (the
 * snapshot is not active: a view can't be committed, a committed one has no mounts).
 *
 * Changes of one pool run one at a time (a promise chain): a change looks at the records,
 * may wait for a mount or unmount, then changes devices and records in one atomic pool
 * operation. Failure contract: when a change fails, its records and devices are as before
 * it (Prepare and View undo the device they made when the mount fails); only an unmount
 * that happened before the failure stays done (the view is mounted again by Mounts).
 */
import { fail, isThinfsError } from '../../errors.js';
import { Filesystem } from '../../fs/index.js';
import { logger } from '../../log.js';
import type { DevId, DeviceInfo, Pool } from '../../pool/index.js';
import { parseFilters, type Adaptor } from './filters.js';
import { isSnapshotDeviceName, snapshotDeviceName } from './names.js';
import {
  commitSnapshot,
  deleteSnapshot,
  findSnapshot,
  hasChildren,
  insertSnapshot,
  listSnapshots,
  prepareSnapshotTables,
  snapshotOfDevice,
  updateLabels,
  type SnapshotKind,
  type SnapshotRecord,
} from './store.js';

const log = logger('snapshotter');

/** The views the daemon serves, as the snapshot service needs them (daemon/ops/snapshot-ops.ts implements it). */
export interface ViewMounts {
  /** Where device `name` is mounted now, or undefined. */
  mountpoint(name: string): string | undefined;
  /** Mount device `name` at its default mountpoint; resolves with the mountpoint once the kernel serves it. */
  mount(name: string, opts: { readOnly: boolean; uidMap: string[]; gidMap: string[] }): Promise<string>;
  /** Unmount device `name` (what the view received is committed); EBUSY while processes use it. */
  unmount(name: string): Promise<void>;
}

/** A snapshot as containerd's Info has it; times in nanoseconds since the epoch, as decimal strings. */
export interface SnapshotInfo {
  name: string;
  parent: string;
  kind: SnapshotKind;
  createdNs: string;
  updatedNs: string;
  labels: Record<string, string>;
}

/** A mount containerd performs (containerd.types.Mount). */
export interface SnapshotMount {
  type: string;
  source: string;
  options: string[];
}

/** What a snapshot holds itself (containerd's Usage). */
export interface SnapshotUsage {
  /** Bytes only this snapshot holds (its device's exclusive blocks), not its parents'. */
  size: number;
  /** Entries this snapshot adds or changes over its parent (from its own rows). */
  inodes: number;
}

/** What Cleanup removed. */
export interface CleanupResult {
  /** Snapshot devices no record knows, removed. */
  removed: string[];
}

/** containerd's limit on one label (key and value together). */
const MAX_LABEL_BYTES = 4096;
/** Labels containerd sets that thinfs acts on. */
const LABEL_UID_MAPPING = 'containerd.io/snapshot/uidmapping';
const LABEL_GID_MAPPING = 'containerd.io/snapshot/gidmapping';
const LABEL_MAX_SIZE = 'containerd.io/snapshot/max-size';

// ---------------------------------------------------------------- changes

/** Prepare (writable) or View (read-only): a new active snapshot `key` over committed `parent` ('' for none), mounted. */
export function createActive(
  pool: Pool,
  views: ViewMounts,
  req: { key: string; parent: string; labels: Record<string, string>; readOnly: boolean },
): Promise<SnapshotMount[]> {
  const op = req.readOnly ? 'view' : 'prepare';
  validateKey(op, req.key);
  validateLabels(op, req.labels);
  return serialized(pool, async () => {
    prepareSnapshotTables(pool);
    const { name, id } = pool.atomically(`snapshot: ${op}`, () => {
      if (findSnapshot(pool, req.key) !== undefined) throw fail('EEXIST', op, req.key, `snapshot '${req.key}' exists`);
      const parent = req.parent === '' ? undefined : committedParent(pool, op, req.parent);
      const name = freeDeviceName(pool, req.key);
      const sizeLimitBytes = sizeHint(req.labels);
      let id: DevId;
      if (parent === undefined) {
        id = pool.createThin(name, { kind: req.readOnly ? 'image' : 'container', sizeLimitBytes });
        // An empty view shows its root directory without one being made (Filesystem.open read-only).
        if (req.readOnly) pool.setReadOnly(id);
      } else {
        id = pool.createSnapshot(parent.deviceId, name, {
          kind: req.readOnly ? 'image' : 'container',
          readOnly: req.readOnly,
          ...(sizeLimitBytes !== undefined ? { sizeLimitBytes } : {}),
        });
      }
      const ns = nowNs();
      insertSnapshot(pool, { key: req.key, kind: req.readOnly ? 'view' : 'active', parent: req.parent, deviceId: id, createdNs: ns, updatedNs: ns, labels: req.labels });
      return { name, id };
    });
    try {
      const mp = await views.mount(name, { readOnly: req.readOnly, ...idMaps(req.labels) });
      return [bindMount(mp, req.readOnly)];
    } catch (err) {
      // Nothing of the snapshot remains when it can't be mounted.
      try {
        pool.atomically(`snapshot: undo ${op}`, () => {
          deleteSnapshot(pool, req.key);
          if (pool.getDevice(id) !== undefined) pool.deleteDevice(id);
        });
      } catch (undoErr) {
        log.error({ err: undoErr, key: req.key, device: name }, 'cannot undo a snapshot whose view did not mount; Cleanup removes its device');
      }
      throw err;
    }
  });
}

/** Commit: active snapshot `key` becomes committed snapshot `name` with `labels` (its own are replaced); `key` is gone. */
export function commit(pool: Pool, views: ViewMounts, req: { name: string; key: string; labels: Record<string, string>; parent: string }): Promise<void> {
  validateKey('commit', req.name);
  validateLabels('commit', req.labels);
  return serialized(pool, async () => {
    prepareSnapshotTables(pool);
    const check = (): SnapshotRecord => {
      if (findSnapshot(pool, req.name) !== undefined) throw fail('EEXIST', 'commit', req.name, `snapshot '${req.name}' exists`);
      const rec = findSnapshot(pool, req.key);
      if (rec === undefined) throw noSnapshot('commit', req.key);
      if (rec.kind !== 'active') throw fail('EROFS', 'commit', req.key, `snapshot '${req.key}' is ${rec.kind === 'view' ? 'a view' : 'committed'}, not active: only active snapshots can be committed`);
      if (req.parent !== '' && req.parent !== rec.parent) {
        throw fail('EINVAL', 'commit', req.key, `cannot change the parent of snapshot '${req.key}' on commit (thinfs does not rebase)`);
      }
      return rec;
    };
    const dev = deviceOf(pool, 'commit', check());
    // The view is unmounted first: everything written through it is in the device before it freezes.
    if (views.mountpoint(dev.name) !== undefined) await unmountView(views, 'commit', req.key, dev.name);
    pool.atomically('snapshot: commit', () => {
      const rec = check();
      const name = freeDeviceName(pool, req.name);
      pool.setReadOnly(rec.deviceId);
      pool.renameDevice(rec.deviceId, name);
      commitSnapshot(pool, req.key, req.name, req.labels, nowNs());
    });
  });
}

/** Remove snapshot `key` (active, view or committed) and its device; ENOTEMPTY while snapshots sit on it. */
export function remove(pool: Pool, views: ViewMounts, req: { key: string }): Promise<void> {
  return serialized(pool, async () => {
    const check = (): SnapshotRecord => {
      const rec = findSnapshot(pool, req.key);
      if (rec === undefined) throw noSnapshot('remove', req.key);
      if (hasChildren(pool, req.key)) throw fail('ENOTEMPTY', 'remove', req.key, `snapshot '${req.key}' has children: remove them first`);
      return rec;
    };
    const dev = pool.getDevice(check().deviceId);
    if (dev !== undefined && views.mountpoint(dev.name) !== undefined) await unmountView(views, 'remove', req.key, dev.name);
    pool.atomically('snapshot: remove', () => {
      const rec = check();
      deleteSnapshot(pool, req.key);
      if (pool.getDevice(rec.deviceId) !== undefined) pool.deleteDevice(rec.deviceId);
    });
  });
}

/**
 * Update the labels of snapshot `name`: `paths` empty or ['labels'] replaces them all;
 * 'labels.K' sets (or, with no value, removes) one. Any other field is EINVAL (immutable).
 */
export function update(pool: Pool, req: { name: string; labels: Record<string, string>; paths: string[] }): Promise<SnapshotInfo> {
  validateLabels('update', req.labels);
  return serialized(pool, async () => {
    prepareSnapshotTables(pool);
    return pool.atomically('snapshot: update', () => {
      const rec = findSnapshot(pool, req.name);
      if (rec === undefined) throw noSnapshot('update', req.name);
      let labels = { ...rec.labels };
      if (req.paths.length === 0) labels = { ...req.labels };
      for (const p of req.paths) {
        if (p === 'labels') labels = { ...req.labels };
        else if (p.startsWith('labels.')) {
          const k = p.slice('labels.'.length);
          labels[k] = req.labels[k] ?? '';
        } else throw fail('EINVAL', 'update', req.name, `cannot update field '${p}' of snapshot '${req.name}': only labels change`);
      }
      validateLabels('update', labels);
      updateLabels(pool, req.name, labels, nowNs());
      return infoOf(findSnapshot(pool, req.name)!);
    });
  });
}

/** Cleanup: remove the snapshot devices (snap-…) no record knows and nothing has mounted. */
export function cleanup(pool: Pool, views: ViewMounts): Promise<CleanupResult> {
  return serialized(pool, async () => {
    prepareSnapshotTables(pool);
    const removed: string[] = [];
    for (const d of pool.listDevices()) {
      if (!isSnapshotDeviceName(d.name) || d.state !== 'active' || snapshotOfDevice(pool, d.id) !== undefined) continue;
      if (views.mountpoint(d.name) !== undefined) {
        log.warn({ device: d.name }, 'cleanup: a snapshot device no record knows is mounted; it stays');
        continue;
      }
      pool.deleteDevice(d.id);
      removed.push(d.name);
    }
    if (removed.length > 0) log.info({ removed }, 'cleanup removed snapshot devices no snapshot knows');
    return { removed };
  });
}

// ---------------------------------------------------------------- queries

/** Mounts: the bind mount of active snapshot or view `key`, mounting its view again when it went away. */
export function mounts(pool: Pool, views: ViewMounts, req: { key: string }): Promise<SnapshotMount[]> {
  return serialized(pool, async () => {
    const rec = findSnapshot(pool, req.key);
    if (rec === undefined) throw noSnapshot('mounts', req.key);
    if (rec.kind === 'committed') throw fail('EROFS', 'mounts', req.key, `snapshot '${req.key}' is committed: only active snapshots and views have mounts`);
    const dev = deviceOf(pool, 'mounts', rec);
    const readOnly = rec.kind === 'view';
    const mp = views.mountpoint(dev.name) ?? (await views.mount(dev.name, { readOnly, ...idMaps(rec.labels) }));
    return [bindMount(mp, readOnly)];
  });
}

/** Stat: snapshot `key` (active, view or committed). */
export function stat(pool: Pool, req: { key: string }): SnapshotInfo {
  const rec = findSnapshot(pool, req.key);
  if (rec === undefined) throw noSnapshot('stat', req.key);
  return infoOf(rec);
}

/** List (Walk): the snapshots matching any of `filters` (all when none). */
export function list(pool: Pool, req: { filters: string[] }): SnapshotInfo[] {
  const filter = parseFilters(req.filters);
  return listSnapshots(pool)
    .filter((r) => filter.match(adaptor(r)))
    .map(infoOf);
}

/** Usage: what snapshot `key` holds itself, not its parents. */
export function usage(pool: Pool, req: { key: string }): SnapshotUsage {
  const rec = findSnapshot(pool, req.key);
  if (rec === undefined) throw noSnapshot('usage', req.key);
  const dev = deviceOf(pool, 'usage', rec);
  const view = Filesystem.open(pool, dev.id, { readOnly: true });
  try {
    // exclusiveBytes is exact: the device's own pool blocks plus the bytes of its small blocks held inline in the metadata.
    return { size: dev.exclusiveBytes, inodes: view.changes().filter((c) => c.kind !== 'deleted').length };
  } finally {
    view.close();
  }
}

// ---------------------------------------------------------------- helpers

const chains = new WeakMap<Pool, Promise<unknown>>();

/** Run `fn` after every change of this pool's snapshots that came before it. */
function serialized<R>(pool: Pool, fn: () => Promise<R>): Promise<R> {
  const next = (chains.get(pool) ?? Promise.resolve()).then(fn, fn);
  chains.set(
    pool,
    next.catch(() => undefined),
  );
  return next;
}

function infoOf(r: SnapshotRecord): SnapshotInfo {
  return { name: r.key, parent: r.parent, kind: r.kind, createdNs: r.createdNs.toString(), updatedNs: r.updatedNs.toString(), labels: r.labels };
}

/** The fields containerd's filters see (its storage adaptor). */
function adaptor(r: SnapshotRecord): Adaptor {
  return (fieldpath) => {
    switch (fieldpath[0]) {
      case 'kind':
        return r.kind;
      case 'name':
        return r.key;
      case 'parent':
        return r.parent;
      case 'labels':
        return Object.hasOwn(r.labels, fieldpath.slice(1).join('.')) ? r.labels[fieldpath.slice(1).join('.')] : undefined;
      default:
        return undefined;
    }
  };
}

function bindMount(source: string, readOnly: boolean): SnapshotMount {
  return { type: 'bind', source, options: ['rbind', readOnly ? 'ro' : 'rw'] };
}

function committedParent(pool: Pool, op: string, key: string): SnapshotRecord {
  const p = findSnapshot(pool, key);
  if (p === undefined) throw fail('ENOENT', op, key, `parent snapshot '${key}' does not exist`);
  if (p.kind !== 'committed') throw fail('EINVAL', op, key, `parent snapshot '${key}' is ${p.kind}, not committed`);
  deviceOf(pool, op, p);
  return p;
}

/** The active device of a record (a deferred one — removed by hand — reads as gone). */
function deviceOf(pool: Pool, op: string, rec: SnapshotRecord): DeviceInfo {
  const d = pool.getDevice(rec.deviceId);
  if (d === undefined || d.state !== 'active') throw fail('ENOENT', op, rec.key, `the device of snapshot '${rec.key}' is gone`);
  return d;
}

/**
 * The device name for `key`, free: a device of that name that no record knows is a
 * leftover (what Cleanup removes) and goes now. Precondition: inside pool.atomically.
 */
function freeDeviceName(pool: Pool, key: string): string {
  const name = snapshotDeviceName(key);
  const taken = pool.findDevice(name);
  if (taken !== undefined) {
    if (snapshotOfDevice(pool, taken.id) !== undefined) throw fail('EEXIST', 'create', name, `device '${name}' holds another snapshot`);
    log.warn({ device: name }, 'replacing a snapshot device no snapshot knows');
    pool.renameDevice(taken.id, `${name}-stale-${taken.id}`);
    pool.deleteDevice(taken.id);
  }
  return name;
}

async function unmountView(views: ViewMounts, op: string, key: string, device: string): Promise<void> {
  try {
    await views.unmount(device);
  } catch (err) {
    if (isThinfsError(err, 'EBUSY')) throw fail('EBUSY', op, key, `the view of snapshot '${key}' is in use (${err.message}); unmount it first`);
    throw err;
  }
}

function noSnapshot(op: string, key: string): Error {
  return fail('ENOENT', op, key, `snapshot '${key}' does not exist`);
}

function validateKey(op: string, key: string): void {
  if (key === '') throw fail('EINVAL', op, undefined, 'a snapshot key must not be empty');
}

function validateLabels(op: string, labels: Record<string, string>): void {
  for (const [k, v] of Object.entries(labels)) {
    if (k === '') throw fail('EINVAL', op, undefined, 'a label key must not be empty');
    if (Buffer.byteLength(k) + Buffer.byteLength(v) > MAX_LABEL_BYTES) {
      throw fail('EINVAL', op, k, `label '${k.slice(0, 64)}' is longer than ${MAX_LABEL_BYTES} bytes with its value`);
    }
  }
}

/** containerd's id-mapping labels ('C:H:N[,C:H:N...]') as thinfs's --uid-map/--gid-map ranges. */
function idMaps(labels: Record<string, string>): { uidMap: string[]; gidMap: string[] } {
  const ranges = (v: string | undefined) => (v === undefined || v === '' ? [] : v.split(',').map((s) => s.trim()));
  return { uidMap: ranges(labels[LABEL_UID_MAPPING]), gidMap: ranges(labels[LABEL_GID_MAPPING]) };
}

/** containerd's max-size hint, when it is a positive whole number of bytes. */
function sizeHint(labels: Record<string, string>): number | undefined {
  const v = labels[LABEL_MAX_SIZE];
  if (v === undefined || !/^[0-9]+$/.test(v)) return undefined;
  const n = Number(v);
  return n > 0 && Number.isSafeInteger(n) ? n : undefined;
}

function nowNs(): bigint {
  return BigInt(Date.now()) * 1_000_000n;
}
