/** `thinfs commit CONTAINER NAME`: a read-only image of a container as it is now (it may stay mounted). */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { DeviceSummary } from '../../daemon/ops/index.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs commit` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('commit')
      .description("make an image of a container's current contents (O(1); the container may stay mounted and keeps running)")
      .argument('<container>', 'the container')
      .argument('<name>', 'name of the new image'),
  ).action(async (container: string, name: string, o: { json?: boolean }, cmd: Command) => {
    const r = await runOp<DeviceSummary>(globals(cmd).root, 'commit', { container, name });
    out(o.json === true ? formatJson(r) : `committed container ${container} as image ${r.name}\n`);
  });
}
