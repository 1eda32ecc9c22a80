/**
 * `thinfs ls [--all] [--json]`: images and containers, like `docker images` and `docker ps -a`
 * in one table; then the loaded images by name and tag. The layer devices of loaded images
 * show with --all only (as `docker images -a` shows intermediate layers); --json lists
 * every device, each with its image record (or null) and whether it is a layer device.
 */
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
      .description('list images and containers: kind, parent, mode, space used, age, state; loaded images by name and tag')
      .option('-a, --all', 'also list the layer devices of loaded images')
      .addHelpText(
        'after',
        `
PARENT is the device the data sits on. USED counts the blocks visible through the
snapshot chain, EXCLUSIVE those only this device holds (freed when it is removed).
STATE: active; deferred (removed, waiting for its mount or the devices on it);
incomplete (an image whose import has not finished).
IMAGES lists the images \`thinfs load\` made: REPOSITORY and TAG of their name, IMAGE ID
(the config digest), DEVICE (the name commands take; the full name works as well), the
number of layers and the config's creation time.`,
      ),
  ).action(async (o: { json?: boolean; all?: boolean }, cmd: Command) => {
    const r = await runOp<DeviceSummary[]>(globals(cmd).root, 'ls');
    out(o.json ? formatJson(r) : formatLs(r, o.all === true));
  });
}

function formatLs(all: DeviceSummary[], withLayers: boolean): string {
  const now = Date.now();
  const devices = withLayers ? all : all.filter((d) => d.layer !== true);
  const images = all.filter((d) => d.image !== null && d.image !== undefined);
  const table = formatTable(
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
  if (images.length === 0) return table;
  const list = formatTable(
    ['REPOSITORY', 'TAG', 'IMAGE ID', 'DEVICE', 'LAYERS', 'SIZE', 'CREATED'],
    images.map((d) => {
      const i = d.image!;
      return [i.repository, i.tag, i.id.slice('sha256:'.length, 'sha256:'.length + 12), d.name, i.layers, formatBytes(d.mappedBytes), i.created === null ? '-' : ago(now - Date.parse(i.created))];
    }),
  );
  return `${table}
IMAGES
${list}`;
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
