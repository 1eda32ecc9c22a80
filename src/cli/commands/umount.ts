/**
 * `thinfs umount NAME|PATH [--force]`: unmount a view (the daemon commits what it
 * changed). A busy view (a process has its cwd, root or a file in it) is refused with
 * EBUSY naming the processes, as umount(8) does; `--force` detaches it lazily and warns
 * that their unsynced writes may be lost. With no daemon running, detaches the dead
 * mount a killed daemon left there and removes its stale socket and pid files.
 */
import * as path from 'node:path';
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { UmountResult } from '../../daemon/ops/index.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs umount` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('umount')
      .alias('unmount')
      .description('unmount a view by image/container name or by mountpoint')
      .argument('<target>', 'name or mountpoint')
      .option('--force', 'detach a busy view lazily (the processes in it lose access, and their unsynced writes may be lost)'),
  ).action(async (target: string, o: { json?: boolean; force?: boolean }, cmd: Command) => {
    const { root } = globals(cmd);
    // A bare word is a name first; anything is also tried as a path (relative to here).
    const name = target.includes('/') ? undefined : target;
    const r = await runOp<UmountResult>(root, 'umount', { name, mountpoint: path.resolve(target), force: o.force === true });
    for (const w of r.warnings ?? []) process.stderr.write(`thinfs: warning: ${w}\n`);
    if (o.json) out(formatJson(r));
    else if (r.stale) out(`detached the dead mount at ${r.mountpoint} (its daemon was gone)\n`);
    else out(`unmounted ${r.name} from ${r.mountpoint}\n`);
  });
}
