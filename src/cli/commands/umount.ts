/**
 * `thinfs umount NAME|PATH`: unmount a view (the daemon commits what it changed). With
 * no daemon running, detaches the dead mount a killed daemon left there and removes its
 * stale socket and pid files.
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
      .argument('<target>', 'name or mountpoint'),
  ).action(async (target: string, o: { json?: boolean }, cmd: Command) => {
    const { root } = globals(cmd);
    // A bare word is a name first; anything is also tried as a path (relative to here).
    const name = target.includes('/') ? undefined : target;
    const r = await runOp<UmountResult>(root, 'umount', { name, mountpoint: path.resolve(target) });
    if (o.json) out(formatJson(r));
    else if (r.stale) out(`detached the dead mount at ${r.mountpoint} (its daemon was gone)\n`);
    else out(`unmounted ${r.name} from ${r.mountpoint}\n`);
  });
}
