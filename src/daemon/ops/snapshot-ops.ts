/**
 * containerd's snapshots (`thinfs snapshotter`): one operation per method of the Snapshots
 * service — snapshotPrepare, snapshotView, snapshotMounts, snapshotCommit, snapshotRemove,
 * snapshotStat, snapshotUpdate, snapshotList, snapshotUsage, snapshotCleanup. Arguments are
 * plain JSON (validated here: they come off the control socket); the work is
 * snapshotter/snapshots (records, devices, views), run on the daemon's pool with its mount
 * table serving the views.
 *
 * The snapshotter process sends these to the daemon (it never opens the pool while the
 * daemon runs). Without a daemon they run in the caller like every operation; those that
 * must mount a view (Prepare, View, Mounts) then fail with ENOTCONN, and the snapshotter
 * starts the daemon and asks again.
 */
import { fail } from '../../errors.js';
import { IdMap, parseIdRange } from '../../fuse/index.js';
import {
  cleanup,
  commit,
  createActive,
  list,
  mounts,
  remove,
  stat,
  update,
  usage,
  type CleanupResult,
  type SnapshotInfo,
  type SnapshotMount,
  type SnapshotUsage,
  type ViewMounts,
} from '../../snapshotter/snapshots/index.js';
import { argsObject, optString, reqString, withPool, type OpContext, type OpFn } from './context.js';

export type { CleanupResult, SnapshotInfo, SnapshotMount, SnapshotUsage } from '../../snapshotter/snapshots/index.js';

/** Prepare: `key`, `parent` ('' or absent: none), `labels`; the mounts of the new active snapshot. */
export function snapshotPrepare(ctx: OpContext, raw: unknown): Promise<SnapshotMount[]> {
  return createOp(ctx, raw, 'snapshotPrepare', false);
}

/** View: as Prepare, read-only. */
export function snapshotView(ctx: OpContext, raw: unknown): Promise<SnapshotMount[]> {
  return createOp(ctx, raw, 'snapshotView', true);
}

function createOp(ctx: OpContext, raw: unknown, op: string, readOnly: boolean): Promise<SnapshotMount[]> {
  const a = argsObject(op, raw);
  const key = reqString(op, a, 'key');
  const parent = optString(op, a, 'parent') ?? '';
  const labels = labelsArg(op, a);
  return withPool(ctx, 'write', (pool) => createActive(pool, views(ctx), { key, parent, labels, readOnly }));
}

/** Mounts: `key`. */
export function snapshotMounts(ctx: OpContext, raw: unknown): Promise<SnapshotMount[]> {
  const key = reqString('snapshotMounts', argsObject('snapshotMounts', raw), 'key');
  // 'write': mounting a view again may write (a fresh writable view makes its root directory).
  return withPool(ctx, 'write', (pool) => mounts(pool, views(ctx), { key }));
}

/** Commit: active `key` becomes committed `name` with `labels`; `parent`, when given, must be its parent already. */
export function snapshotCommit(ctx: OpContext, raw: unknown): Promise<null> {
  const a = argsObject('snapshotCommit', raw);
  const name = reqString('snapshotCommit', a, 'name');
  const key = reqString('snapshotCommit', a, 'key');
  const parent = optString('snapshotCommit', a, 'parent') ?? '';
  const labels = labelsArg('snapshotCommit', a);
  return withPool(ctx, 'write', async (pool) => {
    await commit(pool, views(ctx), { name, key, labels, parent });
    return null;
  });
}

/** Remove: `key`. */
export function snapshotRemove(ctx: OpContext, raw: unknown): Promise<null> {
  const key = reqString('snapshotRemove', argsObject('snapshotRemove', raw), 'key');
  return withPool(ctx, 'write', async (pool) => {
    await remove(pool, views(ctx), { key });
    return null;
  });
}

/** Stat: `key`. */
export function snapshotStat(ctx: OpContext, raw: unknown): Promise<SnapshotInfo> {
  const key = reqString('snapshotStat', argsObject('snapshotStat', raw), 'key');
  return withPool(ctx, 'read', (pool) => stat(pool, { key }));
}

/** Update: `name`, `labels`, `paths` (the update mask: [] or ['labels'] replaces all, 'labels.K' one). */
export function snapshotUpdate(ctx: OpContext, raw: unknown): Promise<SnapshotInfo> {
  const a = argsObject('snapshotUpdate', raw);
  const name = reqString('snapshotUpdate', a, 'name');
  const labels = labelsArg('snapshotUpdate', a);
  const paths = stringsArg('snapshotUpdate', a, 'paths');
  return withPool(ctx, 'write', (pool) => update(pool, { name, labels, paths }));
}

/** List: `filters` (containerd's filter syntax; any may match). */
export function snapshotList(ctx: OpContext, raw: unknown): Promise<SnapshotInfo[]> {
  const filters = stringsArg('snapshotList', argsObject('snapshotList', raw), 'filters');
  return withPool(ctx, 'read', (pool) => list(pool, { filters }));
}

/** Usage: `key`. */
export function snapshotUsage(ctx: OpContext, raw: unknown): Promise<SnapshotUsage> {
  const key = reqString('snapshotUsage', argsObject('snapshotUsage', raw), 'key');
  return withPool(ctx, 'read', (pool) => usage(pool, { key }));
}

/** Cleanup: remove snapshot devices no snapshot record knows. */
export function snapshotCleanup(ctx: OpContext, raw: unknown): Promise<CleanupResult> {
  argsObject('snapshotCleanup', raw);
  return withPool(ctx, 'write', (pool) => cleanup(pool, views(ctx)));
}

export const SNAPSHOT_OPS: Record<string, OpFn> = {
  snapshotPrepare,
  snapshotView,
  snapshotMounts,
  snapshotCommit,
  snapshotRemove,
  snapshotStat,
  snapshotUpdate,
  snapshotList,
  snapshotUsage,
  snapshotCleanup,
};

/** The daemon's mount table as the snapshot service sees it; without a daemon nothing is mounted and nothing can be. */
function views(ctx: OpContext): ViewMounts {
  const table = ctx.mounts;
  return {
    mountpoint: (name) => table?.list().find((m) => m.name === name)?.mountpoint,
    mount: async (name, o) => {
      if (table === undefined) throw fail('ENOTCONN', 'mount', name, 'mounting needs the thinfs daemon, and none runs for this pool');
      const uids = new IdMap(o.uidMap.map((t) => parseIdRange(t, 'uid mapping label')), 'uid mapping label');
      const gids = new IdMap(o.gidMap.map((t) => parseIdRange(t, 'gid mapping label')), 'gid mapping label');
      const r = await table.mount({ name, readOnly: o.readOnly, nosuid: false, uids, gids });
      return r.mountpoint;
    },
    unmount: async (name) => {
      if (table !== undefined) await table.umount(name, undefined, false);
    },
  };
}

/** The `labels` argument: an object of strings (absent: none). */
function labelsArg(op: string, a: Record<string, unknown>): Record<string, string> {
  const v = a.labels;
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v) || Object.values(v).some((x) => typeof x !== 'string')) {
    throw fail('EINVAL', op, undefined, "argument 'labels' must be an object of strings");
  }
  return { ...(v as Record<string, string>) };
}

function stringsArg(op: string, a: Record<string, unknown>, key: string): string[] {
  const v = a[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw fail('EINVAL', op, undefined, `argument '${key}' must be a list of strings`);
  return v as string[];
}
