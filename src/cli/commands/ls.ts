/**
 * `thinfs ls [--all] [--json]`: images and containers, like `docker images` and `docker ps -a`
 * in one table, with where each is mounted; then the loaded images by name and tag. The
 * layer devices of loaded images show with --all only (as `docker images -a` shows
 * intermediate layers); --json lists every device, each with its image record (or null),
 * whether it is a layer device, and its mount (or null).
 *
 * Mounts come from the daemon's mount table when one runs (else from the record a killed
 * daemon left, as stale): a second query, so a mount made between the two shows next time.
 */
import type { Command } from 'commander';
import { runOp } from '../../daemon/client.js';
import type { DeviceSummary, StatusResult } from '../../daemon/ops/index.js';
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
incomplete (an image whose import has not finished). MOUNTED: its mountpoint, or -
(stale: the daemon that served it was killed; \`thinfs umount\` cleans it up).
IMAGES lists the images \`thinfs load\` made: REPOSITORY and TAG of their name, IMAGE ID
(the config digest), DEVICE (the name commands take; the full name works as well), the
number of layers and the config's creation time.`,
      ),
  ).action(async (o: { json?: boolean; all?: boolean }, cmd: Command) => {
    const { root } = globals(cmd);
    const r = withMounts(await runOp<DeviceSummary[]>(root, 'ls'), await runOp<StatusResult>(root, 'status'));
    out(o.json ? formatJson(r) : formatLs(r, o.all === true));
  });
}

/** Where a device is mounted, as `ls` and `inspect` show it. */
export interface DeviceMount {
  mountpoint: string;
  readOnly: boolean;
  mountedAt: string;
  /** stale: left by a killed daemon (`thinfs umount` detaches it). */
  state: 'mounted' | 'stale';
}

/** Each device with its mount (or null), from the mount table of `status`. */
export function withMounts<D extends { name: string }>(devices: D[], status: StatusResult): (D & { mount: DeviceMount | null })[] {
  const byName = new Map(status.mounts.map((m) => [m.name, { mountpoint: m.mountpoint, readOnly: m.readOnly, mountedAt: m.mountedAt, state: m.state }]));
  return devices.map((d) => ({ ...d, mount: byName.get(d.name) ?? null }));
}

/** A device's mount in one cell: the mountpoint, `-` when not mounted. */
export function mountCell(m: DeviceMount | null): string {
  if (m === null) return '-';
  return m.state === 'stale' ? `${m.mountpoint} (stale)` : m.mountpoint;
}

function formatLs(all: (DeviceSummary & { mount: DeviceMount | null })[], withLayers: boolean): string {
  const now = Date.now();
  const devices = withLayers ? all : all.filter((d) => d.layer !== true);
  const images = all.filter((d) => d.image !== null && d.image !== undefined);
  const table = formatTable(
    ['NAME', 'KIND', 'PARENT', 'MODE', 'USED', 'EXCLUSIVE', 'CREATED', 'STATE', 'MOUNTED'],
    devices.map((d) => [
      d.name,
      d.kind,
      d.parent ?? '-',
      d.readOnly ? 'ro' : 'rw',
      formatBytes(d.mappedBytes),
      formatBytes(d.exclusiveBytes),
      ago(now - Date.parse(d.created)),
      d.state,
      mountCell(d.mount),
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
