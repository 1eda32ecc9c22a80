/** `thinfs info`: the pool's status, like the devicemapper section of `docker info`. */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { InfoResult } from '../../daemon/ops/index.js';
import { formatBytes, formatJson, formatPercent, formatSection, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs info` to the program. */
export function register(program: Command): void {
  withJson(program.command('info').description('show the pool: block size, data and metadata space, devices, transaction id')).action(
    async (o: { json?: boolean }, cmd: Command) => {
      const result = await runOp<InfoResult>(globals(cmd).root, 'info');
      out(o.json ? formatJson(result) : formatInfo(result));
    },
  );
}

/** The docker-info style text of a pool's status. */
export function formatInfo(r: InfoResult): string {
  const ae = r.autoextend;
  return formatSection('Storage Driver: thinfs', [
    ['Pool Name', r.poolName],
    ['Pool Blocksize', formatBytes(r.blockSize)],
    ['Base Device Size', formatBytes(r.baseDeviceSize)],
    ['Data file', r.dataFile],
    ['Metadata file', r.metadataFile],
    ['Data Space Used', formatBytes(r.dataUsed)],
    ['Data Space Total', formatBytes(r.dataTotal)],
    ['Data Space Available', formatBytes(r.dataAvailable)],
    ['Data Space On Disk', formatBytes(r.dataOnDisk)],
    ['Metadata Space Used', formatBytes(r.metadataUsed)],
    ['Inline Data Space Used', `${formatBytes(r.inlineUsed)} (small blocks held in the metadata)`],
    ['Inline Block Maximum', r.inlineMax === 0 ? 'off (every block in the data file)' : formatBytes(r.inlineMax)],
    ['Thin Pool Minimum Free Space', `${formatBytes(r.minFreeSpace)} (${formatPercent(r.minFreeSpacePercent)})`],
    [
      'Autoextend',
      ae === null ? 'off' : `at ${formatPercent(ae.thresholdPercent)} used, by ${formatPercent(ae.percent)}, up to ${formatBytes(ae.maxBytes)}`,
    ],
    ['Thin Devices', r.devices],
    ['Deferred Deleted Device Count', r.deferredDeletions],
    ['Transaction Id', r.transactionId],
    ['Pool Mode', r.mode === 'fail' ? `fail (${r.failReason ?? 'a commit failed'}; reads only until the pool is reopened)` : r.hostFull ? `${r.mode} (the host file system under the pool is full)` : r.mode],
    ['Needs Check', r.needsCheck ? 'yes (run `thinfs check --repair`)' : 'no'],
  ]);
}
