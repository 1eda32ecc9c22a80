/** `thinfs create NAME IMAGE`: a container, a writable snapshot of an image. */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { DeviceSummary } from '../../daemon/ops/index.js';
import { formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs create` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('create')
      .description('create a container: a writable snapshot of an image (O(1), no data copied)')
      .argument('<name>', 'name of the new container')
      .argument('<image>', 'the image it starts from (an image, not a container: commit a container first)'),
  ).action(async (name: string, image: string, o: { json?: boolean }, cmd: Command) => {
    const r = await runOp<DeviceSummary>(globals(cmd).root, 'create', { name, image });
    out(o.json === true ? formatJson(r) : `created container ${r.name} from image ${image}\n`);
  });
}
