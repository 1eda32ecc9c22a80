/** `thinfs trim`: punch every free block out of the data file, like thin_trim. */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { TrimResult } from '../../daemon/ops/index.js';
import { formatBytes, formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs trim` to the program. */
export function register(program: Command): void {
  withJson(program.command('trim').description('return the space of free pool blocks to the host (punch holes in the data file)')).action(
    async (o: { json?: boolean }, cmd: Command) => {
      const r = await runOp<TrimResult>(globals(cmd).root, 'trim');
      out(o.json ? formatJson(r) : `trimmed ${r.trimmed} bytes (${formatBytes(r.trimmed)}); the data file now occupies ${formatBytes(r.dataOnDisk)} on disk\n`);
    },
  );
}
