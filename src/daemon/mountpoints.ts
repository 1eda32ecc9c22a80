/**
 * Default mountpoints, ROOT/mnt/NAME, exist only while NAME is mounted: created at mount,
 * removed (when empty) after unmount, on daemon exit, and when a dead mount a killed
 * daemon left is detached. A bare ROOT/mnt/NAME would otherwise catch the writes of
 * whoever still uses the path after the view went away (a shell, a container whose
 * daemon stopped), silently outside the container; now such a write gets ENOENT, and a
 * directory that holds anything when the next mount comes is refused (fuse/mount.ts).
 *
 * A mountpoint the user gave is the user's: it is never created or removed here.
 */
import * as fsp from 'node:fs/promises';
import * as path from 'node:path';
import { logger } from '../log.js';

const log = logger('daemon');

/** ROOT/mnt/NAME. */
export function defaultMountpoint(root: string, name: string): string {
  return path.join(root, 'mnt', name);
}

/** Create ROOT/mnt/NAME (and ROOT/mnt); an existing one stays, for the mount to check. */
export async function createDefaultMountpoint(root: string, name: string): Promise<string> {
  const mp = defaultMountpoint(root, name);
  await fsp.mkdir(path.dirname(mp), { recursive: true });
  await fsp.mkdir(mp).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err;
  });
  return mp;
}

/**
 * After NAME's view left `mountpoint`: remove it if it is the default one and empty.
 * Never throws; a directory that is not empty (or still a mountpoint) stays, logged.
 */
export async function removeDefaultMountpoint(root: string, name: string, mountpoint: string): Promise<void> {
  if (mountpoint !== defaultMountpoint(root, name)) return;
  try {
    await fsp.rmdir(mountpoint);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    log.warn({ err, mountpoint }, 'cannot remove the default mountpoint after unmount; it stays');
  }
}
