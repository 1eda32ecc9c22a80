/**
 * What the kernel says about mounts, without fuse-native: the mount table
 * (/proc/self/mountinfo), unmounting that the kernel refuses while the mount is busy
 * (`unmountNow`, the authority on "busy"), and lazy unmounting (`lazyUnmount`: of a FUSE
 * mount whose daemon is gone, "Transport endpoint is not connected", or on --force).
 * Safe to use from any process; the daemon must only use the async helpers on paths it
 * may be serving itself (the unmount commands run as child processes, so the daemon's
 * thread stays free to answer the mount meanwhile).
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { fail } from '../errors.js';

/** The filesystem type thinfs mounts show in /proc/mounts (fuse + subtype=thinfs). */
export const FSTYPE = 'fuse.thinfs';

export interface MountEntry {
  mountpoint: string;
  fstype: string;
  /** The fsname: thinfs:NAME. */
  source: string;
  /** The device number, MAJOR:MINOR (its backing device info is /sys/class/bdi/MAJOR:MINOR). */
  dev: string;
}

/** The mounts this process sees (mountinfo escapes decoded). */
export function mountTable(): MountEntry[] {
  let text: string;
  try {
    text = fs.readFileSync('/proc/self/mountinfo', 'utf8');
  } catch {
    return [];
  }
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    const [left, right] = line.split(' - ');
    if (left === undefined || right === undefined) continue;
    const fields = left.split(' ');
    const mountpoint = fields[4];
    const [fstype, source] = right.split(' ');
    if (mountpoint === undefined || fstype === undefined) continue;
    out.push({ mountpoint: unescape(mountpoint), fstype, source: unescape(source ?? ''), dev: fields[2] ?? '' });
  }
  return out;
}

/** The thinfs mount at `mountpoint`, if the kernel has one there. */
export function thinfsMountAt(mountpoint: string): MountEntry | undefined {
  return mountTable().find((m) => m.mountpoint === mountpoint && m.fstype === FSTYPE);
}

/** The mountpoints of every thinfs mount this process sees. */
export function thinfsMountpoints(): Set<string> {
  return new Set(mountTable().filter((m) => m.fstype === FSTYPE).map((m) => m.mountpoint));
}

/** 'served' (answers), 'dead' (ENOTCONN: its daemon is gone), or 'none' (not a thinfs mount). */
export async function probeMount(mountpoint: string): Promise<'served' | 'dead' | 'none'> {
  if (thinfsMountAt(mountpoint) === undefined) return 'none';
  try {
    // statfs, not stat: the kernel answers stat from its attribute cache (long attr
    // timeouts on the low-level transport) even when the daemon is gone; STATFS always
    // goes to the daemon.
    await fsp.statfs(mountpoint);
    return 'served';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return code === 'ENOTCONN' || code === 'ECONNABORTED' ? 'dead' : 'served';
  }
}

/**
 * Unmount `mountpoint` unless it is busy, as umount(8) does (fusermount -u without -z;
 * as root umount(8) when fusermount is missing or refuses): 'busy' when the kernel
 * answers EBUSY (a process has its cwd, root, an open or mapped file in it, or a mount
 * sits inside it), and the mount then stays as it was. Throws when it cannot unmount
 * for any other reason.
 */
export async function unmountNow(mountpoint: string): Promise<'unmounted' | 'busy'> {
  const tries: [string, string[]][] = [['fusermount', ['-u', mountpoint]]];
  if (process.geteuid?.() === 0) tries.push(['umount', [mountpoint]]);
  const errors: string[] = [];
  for (const [cmd, args] of tries) {
    const r = await run(cmd, args);
    if (thinfsMountAt(mountpoint) === undefined) return 'unmounted';
    // fusermount: "Device or resource busy"; umount(8): "target is busy".
    if (r !== null && /\bbusy\b/i.test(r)) return 'busy';
    errors.push(`${cmd}: ${r ?? 'still mounted'}`);
  }
  throw fail('EIO', 'umount', mountpoint, `cannot unmount (${errors.join('; ')})`);
}

/**
 * Detach the mount at `mountpoint` now (fusermount -u -z; as root umount -l when
 * fusermount is missing or refuses). Resolves once the kernel no longer lists it.
 */
export async function lazyUnmount(mountpoint: string): Promise<void> {
  const tries: [string, string[]][] = [['fusermount', ['-u', '-z', mountpoint]]];
  if (process.geteuid?.() === 0) tries.push(['umount', ['-l', mountpoint]]);
  const errors: string[] = [];
  for (const [cmd, args] of tries) {
    const r = await run(cmd, args);
    if (r === null || thinfsMountAt(mountpoint) === undefined) return;
    errors.push(`${cmd}: ${r}`);
  }
  if (thinfsMountAt(mountpoint) === undefined) return;
  throw fail('EBUSY', 'umount', mountpoint, `cannot unmount (${errors.join('; ')})`);
}

/**
 * syncfs(2) of a mount, from a child process (`sync -f`), so the calling daemon stays free
 * to answer the WRITEs the kernel sends meanwhile: every dirty page of the view (the
 * low-level transport's writeback cache) has reached the daemon when it resolves. EIO
 * with the reason when sync fails.
 */
export async function syncMount(mountpoint: string): Promise<void> {
  const r = await run('sync', ['-f', mountpoint]);
  if (r !== null) throw fail('EIO', 'sync', mountpoint, `cannot write the view's cached pages back (${r})`);
}

/**
 * Raise the kernel's readahead of the thinfs mount at `mountpoint` to `kb` KiB (its
 * backing device info in sysfs; root only). The FUSE INIT reply can only lower it from
 * the kernel's 128 KiB default, so without this a sequential read reaches the daemon in
 * 128 KiB requests whatever max_pages allows. False when it could not be set (not root,
 * no sysfs): the mount works the same, reads come in 128 KiB requests.
 */
export async function setReadahead(mountpoint: string, kb: number): Promise<boolean> {
  const m = thinfsMountAt(mountpoint);
  if (m === undefined || !/^\d+:\d+$/.test(m.dev)) return false;
  try {
    await fsp.writeFile(`/sys/class/bdi/${m.dev}/read_ahead_kb`, `${kb}\n`);
    return true;
  } catch {
    return false;
  }
}

/** Run a command; null on success, else its error text. */
function run(cmd: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: 30_000, encoding: 'utf8' }, (err, _stdout, stderr) => {
      resolve(err === null ? null : (stderr.trim() || err.message).split('\n')[0]!);
    });
  });
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8)));
}
