/**
 * `thinfs umount NAME|PATH [--force]`, `thinfs umount --all [--force]`: unmount a view
 * (the daemon commits what it changed), or every view of the pool. A busy view (a process
 * has its cwd, root or a file in it) is refused with EBUSY naming the processes, as
 * umount(8) does; `--force` detaches it lazily and warns that their unsynced writes may
 * be lost. With no daemon running, detaches the dead mounts a killed daemon left there
 * and removes its stale socket and pid files.
 *
 * NAME is a device name or the reference of a loaded image (example.org/img:t); a target
 * that starts with `/` or `.` is a path. `--all` goes on past a view it cannot unmount
 * and ends with one error line naming those left (exit 1).
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { StatusResult, UmountResult } from '../../daemon/ops/index.js';
import { fail, isThinfsError, type ErrnoCode } from '../../errors.js';
import { UsageError } from '../errors.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

interface UmountOptions {
  json?: boolean;
  force?: boolean;
  all?: boolean;
}

/** What `umount --all` did: the views unmounted, and those left with their error. */
export interface UmountAllResult {
  unmounted: UmountResult[];
  failed: { name: string; mountpoint: string; code: ErrnoCode; message: string }[];
}

/** Add `thinfs umount` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('umount')
      .alias('unmount')
      .description('unmount a view by image/container name (or image reference) or by mountpoint; --all: every view of the pool')
      .argument('[target]', 'name, image reference or mountpoint')
      .option('--all', 'unmount every view of the pool (the daemon then exits)')
      .option('--force', 'detach a busy view lazily (the processes in it lose access, and their unsynced writes may be lost)'),
  ).action(async (target: string | undefined, o: UmountOptions, cmd: Command) => {
    const { root } = globals(cmd);
    if (o.all === true) {
      if (target !== undefined) throw new UsageError('give a target or --all, not both');
      await umountAll(root, o);
      return;
    }
    if (target === undefined) throw new UsageError("missing required argument 'target' (or --all)");
    const r = await umountOne(root, target, o.force === true);
    if (o.json) out(formatJson(r));
    else {
      warn(r);
      out(describe(r));
    }
  });
}

function umountOne(root: string, target: string, force: boolean): Promise<UmountResult> {
  // A target that starts like a path is one; anything else is a name first, then also tried as a path.
  const isPath = target.startsWith('/') || target.startsWith('.');
  return runOp<UmountResult>(root, 'umount', { name: isPath ? undefined : target, mountpoint: path.resolve(target), force });
}

async function umountAll(root: string, o: UmountOptions): Promise<void> {
  const { mounts } = await runOp<StatusResult>(root, 'status', {});
  const r: UmountAllResult = { unmounted: [], failed: [] };
  for (const m of mounts) {
    try {
      const u = await runOp<UmountResult>(root, 'umount', { name: m.name, mountpoint: m.mountpoint, force: o.force === true });
      r.unmounted.push(u);
      if (!o.json) {
        warn(u);
        out(describe(u));
      }
    } catch (err) {
      r.failed.push({ name: m.name, mountpoint: m.mountpoint, code: isThinfsError(err) ? err.code : 'EIO', message: (err as Error).message });
    }
  }
  if (o.json) out(formatJson(r));
  else if (mounts.length === 0) out('no mounts\n');
  if (r.failed.length > 0) {
    const first = r.failed[0]!;
    const left = r.failed.map((f) => `${f.name} (${f.message})`).join('; ');
    throw fail(first.code, 'umount --all', undefined, `${r.failed.length} of ${mounts.length} views still mounted: ${left}`);
  }
}

function warn(r: UmountResult): void {
  for (const w of r.warnings ?? []) process.stderr.write(`thinfs: warning: ${w}\n`);
}

function describe(r: UmountResult): string {
  return r.stale ? `detached the dead mount at ${r.mountpoint} (its daemon was gone)\n` : `unmounted ${r.name} from ${r.mountpoint}\n`;
}
