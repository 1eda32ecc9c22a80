/** `thinfs resize --data-size SIZE`: grow the data file (shrinking is refused). */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { ResizeResult } from '../../daemon/ops/index.js';
import { formatBytes, formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { sizeArg, withJson } from '../options.js';

/** Add `thinfs resize` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('resize')
      .description('grow the pool data file, like growing a loop-lvm pool (shrinking is refused)')
      .requiredOption('--data-size <size>', 'new virtual size of the data file', sizeArg),
  ).action(async (o: { dataSize: number; json?: boolean }, cmd: Command) => {
    const r = await runOp<ResizeResult>(globals(cmd).root, 'resize', { dataSizeBytes: o.dataSize });
    if (o.json) out(formatJson(r));
    else if (r.newDataTotal === r.oldDataTotal) out(`data file unchanged at ${formatBytes(r.newDataTotal)}\n`);
    else out(`data file grown from ${formatBytes(r.oldDataTotal)} to ${formatBytes(r.newDataTotal)}\n`);
  });
}
