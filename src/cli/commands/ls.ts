/** `thinfs ls [--json]`: images and containers, like `docker images` and `docker ps -a` in one table. */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { DeviceSummary } from '../../daemon/ops/index.js';
import { formatBytes, formatJson, formatTable, out } from '../format.js';
import { globals } from '../globals.js';
import { withJson } from '../options.js';

/** Add `thinfs ls` to the program. */
export function register(program: Command): void {
  withJson(
    program
      .command('ls')
      .description('list images and containers: kind, parent, mode, space used, age, state')
      .addHelpText(
        'after',
        `
PARENT is the device the data sits on. USED counts the blocks visible through the
snapshot chain, EXCLUSIVE those only this device holds (freed when it is removed).
STATE: active; deferred (removed, waiting for its mount or the devices on it);
incomplete (an image whose import has not finished).`,
      ),
  ).action(async (o: { json?: boolean }, cmd: Command) => {
    const r = await runOp<DeviceSummary[]>(globals(cmd).root, 'ls');
    out(o.json ? formatJson(r) : formatLs(r));
  });
}

function formatLs(devices: DeviceSummary[]): string {
  const now = Date.now();
  return formatTable(
    ['NAME', 'KIND', 'PARENT', 'MODE', 'USED', 'EXCLUSIVE', 'CREATED', 'STATE'],
    devices.map((d) => [
      d.name,
      d.kind,
      d.parent ?? '-',
      d.readOnly ? 'ro' : 'rw',
      formatBytes(d.mappedBytes),
      formatBytes(d.exclusiveBytes),
      ago(now - Date.parse(d.created)),
      d.state,
    ]),
  );
}

/** `5 seconds ago`, `3 hours ago`, as docker prints ages. */
export function ago(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  const units: [number, string][] = [
    [86400 * 365, 'year'],
    [86400 * 30, 'month'],
    [86400 * 7, 'week'],
    [86400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
    [1, 'second'],
  ];
  for (const [n, unit] of units) {
    if (s >= n) {
      const k = Math.floor(s / n);
      return `${k} ${unit}${k === 1 ? '' : 's'} ago`;
    }
  }
  return 'just now';
}
