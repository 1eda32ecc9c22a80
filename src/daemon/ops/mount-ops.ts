/**
 * Mount operations: mount, umount, mounts, status, stats (the counters of each mount),
 * and mountCheck (is there such a device? asked before a daemon is started for it).
 *
 * Mounting needs the daemon (it serves the mounts): inside it `ctx.mounts` is its mount
 * table. Without a daemon, `umount` and `mounts` still answer from ROOT/run/mounts.json,
 * the record a killed daemon left behind: `umount` detaches such a dead mount
 * ("Transport endpoint is not connected"), removes its default mountpoint and, with the
 * last one, the stale socket and pid files, so the pool and its mountpoints are clean again.
 */
import * as path from 'node:path';
import { fail } from '../../errors.js';
import { IdMap, lazyUnmount, parseIdRange, probeMount, thinfsMountAt, type CountersSnapshot } from '../../fuse/index.js';
import { resolveImageName } from '../../layers/index.js';
import type { PoolMode } from '../../pool/index.js';
import { removeDefaultMountpoint } from '../mountpoints.js';
import { isAlive, readMountRecords, readPid, removeRunFiles, writeMountRecords, type MountRecord } from '../runfiles.js';
import { argsObject, optBool, optString, reqString, withPool, type OpContext, type OpFn } from './context.js';

export type { MountRecord } from '../runfiles.js';

/** What `mount` asks of the daemon (ids maps already parsed and checked). */
export interface MountRequest {
  /** A device name or the reference of a loaded image. */
  name: string;
  /** Absolute; default ROOT/mnt/NAME (created, and removed after unmount). */
  mountpoint?: string;
  readOnly: boolean;
  /** Ignore setuid/setgid bits (root mounts honour them otherwise). */
  nosuid: boolean;
  uids: IdMap;
  gids: IdMap;
}

export interface MountResult extends MountRecord {
  warnings: string[];
}

export interface UmountResult {
  name: string;
  mountpoint: string;
  /** True when the mount was a dead one left by a killed daemon. */
  stale: boolean;
  /** What the user should be told (a busy view detached by `force`). */
  warnings: string[];
}

export interface DaemonStatus {
  pid: number;
  startedAt: string;
  uptimeMs: number;
  stay: boolean;
  /** Resident set size of the daemon process. */
  rssBytes: number;
  heapUsedBytes: number;
  externalBytes: number;
  /** Commits the daemon's timer made (batched metadata commits). */
  timedCommits: number;
  /** The pool's mode (write, out-of-data-space, read-only, fail). */
  poolMode: PoolMode;
  /** In fail mode: why (the commit that failed). */
  failReason?: string;
}

export interface StatusResult {
  /** null when no daemon runs. */
  daemon: DaemonStatus | null;
  mounts: (MountRecord & { state: 'mounted' | 'stale' })[];
}

export interface MountCheckResult {
  name: string;
  devId: number;
  kind: string;
  /** The device itself is read-only (an image): it mounts read-only. */
  readOnly: boolean;
}

/** A mount's activity as `thinfs stats` shows it (the daemon's counters since the mount). */
export interface MountStats {
  name: string;
  mountpoint: string;
  readOnly: boolean;
  mountedAt: string;
  /** The FUSE adapter's counters: operations by kind with errors and latency, bytes read and written. */
  counters: CountersSnapshot;
  device: {
    /** Data bytes visible through the chain, and those only this device holds, now (exact: pool blocks plus inline bytes). */
    mappedBytes: number;
    exclusiveBytes: number;
    /** Of mappedBytes, the bytes held inline in the metadata. */
    inlineBytes: number;
    /** How the device's own blocks changed since the mount: allocated minus freed (net). */
    ownBlocksSinceMount: number;
    blockSize: number;
  };
  /** Pool commits since the mount (pool-wide: every view's changes commit together). */
  commits: number;
  /** Blocks allocated and blocks copied on write for this device: null until the pool counts them. */
  blocksAllocated: number | null;
  cowCopies: number | null;
}

export interface StatsResult {
  /** False when no daemon runs: then nothing is mounted and there is nothing to count. */
  daemon: boolean;
  mounts: MountStats[];
}

/** The daemon's side of the mount operations. */
export interface MountService {
  mount(req: MountRequest): Promise<MountResult>;
  /** By device name, else by mountpoint path; a busy view is EBUSY, or detached lazily with `force`. */
  umount(name: string, mountpoint: string | undefined, force: boolean): Promise<UmountResult>;
  list(): MountRecord[];
  status(): DaemonStatus;
  /** Counters of every mount, or of the mount of device `name` (a name or an image reference). */
  stats(name?: string): MountStats[];
  /** Resolves once what was written to the mount of `name` (if mounted) has reached its Filesystem (the kernel's writeback cache). */
  flush(name: string): Promise<void>;
}

/** Mount device `name` at `mountpoint` (default ROOT/mnt/NAME); `readOnly`; `nosuid`; `uidMap`/`gidMap`: ['C:H:N', ...]. */
export async function mount(ctx: OpContext, raw: unknown): Promise<MountResult> {
  const a = argsObject('mount', raw);
  const name = reqString('mount', a, 'name');
  const mountpoint = optPath('mount', a, 'mountpoint');
  const readOnly = optBool('mount', a, 'readOnly');
  const nosuid = optBool('mount', a, 'nosuid');
  const uids = new IdMap(strings('mount', a, 'uidMap').map((t) => parseIdRange(t, '--uid-map')), '--uid-map');
  const gids = new IdMap(strings('mount', a, 'gidMap').map((t) => parseIdRange(t, '--gid-map')), '--gid-map');
  if (ctx.mounts === undefined) throw fail('ENOTCONN', 'mount', name, 'mounting needs the thinfs daemon, and none runs for this pool');
  return ctx.mounts.mount({ name, mountpoint, readOnly, nosuid, uids, gids });
}

/** Unmount by `name` (a device name) or `mountpoint` (an absolute path); `force`: detach a busy view lazily. */
export async function umount(ctx: OpContext, raw: unknown): Promise<UmountResult> {
  const a = argsObject('umount', raw);
  const name = optString('umount', a, 'name');
  const mountpoint = optPath('umount', a, 'mountpoint');
  const force = optBool('umount', a, 'force');
  if (name === undefined && mountpoint === undefined) throw fail('EINVAL', 'umount', undefined, 'give a name or a mountpoint');
  if (ctx.mounts !== undefined) return ctx.mounts.umount(name ?? '', mountpoint, force);
  return umountStale(ctx.root, name, mountpoint);
}

/** The mounts of the pool (the daemon's; without one, those a killed daemon left, as stale). */
export function mounts(ctx: OpContext, raw: unknown): StatusResult['mounts'] {
  argsObject('mounts', raw);
  if (ctx.mounts !== undefined) return ctx.mounts.list().map((m) => ({ ...m, state: 'mounted' as const }));
  return readMountRecords(ctx.root)
    .filter((m) => thinfsMountAt(m.mountpoint) !== undefined)
    .map((m) => ({ ...m, state: 'stale' as const }));
}

/** The daemon (pid, memory) and its mounts. */
export function status(ctx: OpContext, raw: unknown): StatusResult {
  argsObject('status', raw);
  return { daemon: ctx.mounts?.status() ?? null, mounts: mounts(ctx, {}) };
}

/** The counters of every mount, or of `name`'s mount (EINVAL when it is not mounted, ENOENT when there is no such device). */
export async function stats(ctx: OpContext, raw: unknown): Promise<StatsResult> {
  const name = optString('stats', argsObject('stats', raw), 'name');
  if (ctx.mounts !== undefined) return { daemon: true, mounts: ctx.mounts.stats(name) };
  if (name !== undefined) {
    await withPool(ctx, 'read', (pool) => {
      if (resolveImageName(pool, name) === undefined) throw noSuchDevice(name, 'stats');
    });
    throw fail('EINVAL', 'stats', name, 'not mounted (no thinfs daemon runs for this pool)');
  }
  return { daemon: false, mounts: [] };
}

/** Whether device `name` (a device name or an image reference) exists, and which device it is, without starting anything. */
export function mountCheck(ctx: OpContext, raw: unknown): Promise<MountCheckResult> {
  const name = reqString('mountCheck', argsObject('mountCheck', raw), 'name');
  return withPool(ctx, 'read', (pool) => {
    const d = resolveImageName(pool, name);
    if (d === undefined || d.state !== 'active') throw noSuchDevice(name);
    return { name: d.name, devId: d.id, kind: d.kind, readOnly: d.readOnly };
  });
}

export const MOUNT_OPS: Record<string, OpFn> = { mount, umount, mounts, status, stats, mountCheck };

/** ENOENT for an unknown image or container name. */
export function noSuchDevice(name: string, syscall = 'mount'): Error {
  return fail('ENOENT', syscall, name, `no image or container named '${name}' (see \`thinfs ls\`)`);
}

/** Without a daemon: detach a dead mount a killed daemon recorded (or any dead thinfs mount at that path). */
async function umountStale(root: string, name: string | undefined, mountpoint: string | undefined): Promise<UmountResult> {
  const pid = readPid(root);
  const records = readMountRecords(root);
  const rec = records.find((r) => r.name === name) ?? records.find((r) => r.mountpoint === mountpoint);
  const target = rec?.mountpoint ?? mountpoint;
  if (target === undefined || (rec === undefined && (await probeMount(target)) !== 'dead')) {
    throw fail('EINVAL', 'umount', name ?? mountpoint, 'not mounted');
  }
  if (thinfsMountAt(target) !== undefined) await lazyUnmount(target);
  await removeDefaultMountpoint(root, rec?.name ?? path.basename(target), target);
  const left = records.filter((r) => r !== rec && thinfsMountAt(r.mountpoint) !== undefined);
  if (left.length === 0 && (pid === undefined || !isAlive(pid))) removeRunFiles(root);
  else writeMountRecords(root, left);
  return { name: rec?.name ?? name ?? '', mountpoint: target, stale: true, warnings: [] };
}


function optPath(op: string, a: Record<string, unknown>, key: string): string | undefined {
  const v = optString(op, a, key);
  if (v !== undefined && !path.isAbsolute(v)) throw fail('EINVAL', op, v, `argument '${key}' must be an absolute path`);
  return v === undefined ? undefined : path.resolve(v);
}

function strings(op: string, a: Record<string, unknown>, key: string): string[] {
  const v = a[key];
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v) || v.some((s) => typeof s !== 'string')) throw fail('EINVAL', op, undefined, `argument '${key}' must be a list of strings`);
  return v as string[];
}
