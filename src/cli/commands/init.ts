/** `thinfs init`: create a pool (never through a daemon: there is no pool yet). */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { InfoResult } from '../../daemon/ops/index.js';
import { DEFAULTS } from '../../pool/index.js';
import { UsageError } from '../errors.js';
import { formatBytes, formatJson, out } from '../format.js';
import { globals } from '../globals.js';
import { percentArg, sizeArg, withJson } from '../options.js';

interface InitOptions {
  dataSize?: number;
  blockSize?: number;
  baseSize?: number;
  minFreeSpace?: number;
  autoextendThreshold?: number;
  autoextendPercent?: number;
  autoextendMax?: number;
  inlineMax?: number;
  json?: boolean;
}

/** Add `thinfs init` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('init')
      .description('create a thin pool: a sparse data file and its SQLite metadata under the root')
      .option('--data-size <size>', `virtual size of the data file (default: ${formatBytes(DEFAULTS.dataSizeBytes)})`, sizeArg)
      .option('--block-size <size>', `pool block size, a power of two from 4K to 1M (default: ${formatBytes(DEFAULTS.blockSizeBytes)})`, sizeArg)
      .option('--base-size <size>', `size limit of each thin device, like dm.basesize (default: ${formatBytes(DEFAULTS.baseSizeBytes)})`, sizeArg)
      .option('--min-free-space <percent>', `refuse new allocations below this free data space, like dm.min_free_space (default: ${DEFAULTS.minFreePercent}%)`, percentArg)
      .option('--autoextend-threshold <percent>', 'grow the data file when used space reaches this percentage', percentArg)
      .option('--autoextend-percent <percent>', 'grow the data file by this percentage of its size', percentArg)
      .option('--autoextend-max <size>', 'never grow the data file beyond this size', sizeArg)
      .option(
        '--inline-max <size>',
        'keep blocks whose data ends at most this far in inside the metadata instead of a whole pool block; 0: every block in the data file; at most the block size (default: half a block)',
        sizeArg,
      ),
  ).action(async (o: InitOptions, cmd: Command) => {
    const { root } = globals(cmd);
    const autoextend = [o.autoextendThreshold, o.autoextendPercent, o.autoextendMax];
    if (autoextend.some((v) => v !== undefined) && !autoextend.every((v) => v !== undefined)) {
      throw new UsageError('--autoextend-threshold, --autoextend-percent and --autoextend-max go together: give all three or none');
    }
    const result = await runOp<InfoResult>(root, 'init', {
      dataSizeBytes: o.dataSize,
      blockSizeBytes: o.blockSize,
      baseSizeBytes: o.baseSize,
      minFreePercent: o.minFreeSpace,
      inlineMaxBytes: o.inlineMax,
      autoextend:
        o.autoextendThreshold === undefined
          ? undefined
          : { thresholdPercent: o.autoextendThreshold, percent: o.autoextendPercent!, maxBytes: o.autoextendMax! },
    });
    out(
      o.json
        ? formatJson(result)
        : `created thin pool ${result.poolName} in ${result.root}: ${formatBytes(result.dataTotal)} data file (sparse), ` +
            `${formatBytes(result.blockSize)} blocks, ${formatBytes(result.baseDeviceSize)} base device size, ` +
            `${result.inlineMax === 0 ? 'no inline blocks' : `blocks up to ${formatBytes(result.inlineMax)} inline`}\n`,
    );
  });
}
