/**
 * Every operation a command can ask for, by name: the one table the CLI (running an
 * operation itself) and the daemon (answering its control socket) both dispatch through.
 * Each module contributes a record; add a module by spreading its record here.
 */
import type { OpFn } from './context.js';
import { POOL_OPS } from './pool-ops.js';
import { MOUNT_OPS } from './mount-ops.js';
import { IMAGE_OPS } from './image-ops.js';
import { SNAPSHOT_OPS } from './snapshot-ops.js';
import { DIFF_OPS } from './diff-ops.js';
import { withExportProgress } from './export-progress.js';

export type { OpContext, OpFn } from './context.js';
export type { CheckResult, InfoResult, ResizeResult, TrimResult } from './pool-ops.js';
export type { MountCheckResult, MountResult, MountService, MountStats, StatsResult, StatusResult, UmountResult } from './mount-ops.js';
export type { DeviceSummary, ExportResult, ImportResult, InspectResult, RmResult } from './image-ops.js';
export type { DiffEntry, DiffResult } from './diff-ops.js';

export const OPS: Record<string, OpFn> = {
  ...POOL_OPS,
  ...MOUNT_OPS,
  ...IMAGE_OPS,
  // The exporter reports no progress of its own: the tar it writes is watched (export-progress.ts).
  export: withExportProgress(IMAGE_OPS.export!),
  ...DIFF_OPS,
  ...SNAPSHOT_OPS,
};

/** Operations that must run in the calling process, never in a daemon (init: there is no pool yet). */
export const LOCAL_OPS: ReadonlySet<string> = new Set(['init']);
