/** `thinfs commit CONTAINER NAME`: a read-only image of a container as it is now (it may stay mounted). */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { DeviceSummary } from '../../daemon/ops/index.js';
import { out } from '../format.js';
import { globals } from '../globals.js';

/** Add `thinfs commit` to the program. */
export function register(program: Command): void {
  program
    .command('commit')
    .description("make an image of a container's current contents (O(1); the container may stay mounted and keeps running)")
    .argument('<container>', 'the container')
    .argument('<name>', 'name of the new image')
    .action(async (container: string, name: string, _o: unknown, cmd: Command) => {
      const r = await runOp<DeviceSummary>(globals(cmd).root, 'commit', { container, name });
      out(`committed container ${container} as image ${r.name}\n`);
    });
}
