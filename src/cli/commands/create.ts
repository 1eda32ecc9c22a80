/** `thinfs create NAME IMAGE`: a container, a writable snapshot of an image. */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { DeviceSummary } from '../../daemon/ops/index.js';
import { out } from '../format.js';
import { globals } from '../globals.js';

/** Add `thinfs create` to the program. */
export function register(program: Command): void {
  program
    .command('create')
    .description('create a container: a writable snapshot of an image (O(1), no data copied)')
    .argument('<name>', 'name of the new container')
    .argument('<image>', 'the image it starts from (an image, not a container: commit a container first)')
    .action(async (name: string, image: string, _o: unknown, cmd: Command) => {
      const r = await runOp<DeviceSummary>(globals(cmd).root, 'create', { name, image });
      out(`created container ${r.name} from image ${image}\n`);
    });
}
