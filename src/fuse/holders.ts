/**
 * Who keeps a mount busy, found the way fuser(1) does: every process's cwd, root, open
 * files (/proc/PID/fd/*) and mapped files (/proc/PID/maps) whose path lies under the
 * mountpoint. Only for the message and as an early refusal: whether a mount is busy is
 * the kernel's answer to a non-lazy umount (kernel.ts `unmountNow`).
 *
 * Safe inside the daemon that serves the mount: readlink of /proc/PID/{cwd,root,fd/N}
 * and reading /proc/PID/maps ask procfs, never the FUSE mount (a stat() of those links
 * would follow them into the mount). All calls are asynchronous anyway.
 *
 * A process in another mount namespace (a `thinfs run` container chrooted into the view)
 * shows its cwd and root by the same path, so it is found too. Processes this one may not
 * read (other users' when not root) are skipped, as is this process itself.
 */
import * as fsp from 'node:fs/promises';
import { mountTable } from './kernel.js';

/** One process holding something under a mountpoint. */
export interface Holder {
  pid: number;
  /** /proc/PID/comm, e.g. 'bash'. */
  command: string;
  /** What it holds: 'cwd', 'root', 'open file PATH', 'mapped file PATH'. */
  uses: string[];
}

/** Why a mount is busy: the processes found in /proc and the mounts on top of paths inside it. */
export interface BusyReport {
  holders: Holder[];
  /** Mountpoints of other mounts inside this one (they keep it busy as well). */
  submounts: string[];
}

/** How many holders, and uses per holder, a message names before it says "and N more". */
const SHOWN_HOLDERS = 8;
const SHOWN_USES = 3;

/** The processes (but this one) holding anything under `mountpoint`, by pid. */
export async function findHolders(mountpoint: string): Promise<Holder[]> {
  let entries: string[];
  try {
    entries = await fsp.readdir('/proc');
  } catch {
    return [];
  }
  const pids = entries.filter((e) => /^[0-9]+$/.test(e)).map(Number).filter((pid) => pid !== process.pid);
  const found = await Promise.all(pids.map((pid) => holderOf(pid, mountpoint)));
  return found.filter((h): h is Holder => h !== undefined).sort((a, b) => a.pid - b.pid);
}

/** What holds `mountpoint` now: its holders in /proc and the mounts inside it. */
export async function busyReport(mountpoint: string): Promise<BusyReport> {
  const submounts = mountTable()
    .map((m) => m.mountpoint)
    .filter((mp) => under(mp, mountpoint) && mp !== mountpoint);
  return { holders: await findHolders(mountpoint), submounts };
}

/** True when the report names anything. */
export function isBusy(r: BusyReport): boolean {
  return r.holders.length > 0 || r.submounts.length > 0;
}

/** "held by pid 1234 (bash): cwd; pid 99 (python3): open file /mnt/c1/x", for one error line. */
export function describeBusy(r: BusyReport): string {
  const parts: string[] = [];
  if (r.holders.length > 0) {
    const shown = r.holders.slice(0, SHOWN_HOLDERS).map((h) => {
      const uses = h.uses.slice(0, SHOWN_USES);
      if (h.uses.length > SHOWN_USES) uses.push(`${h.uses.length - SHOWN_USES} more`);
      return `pid ${h.pid} (${h.command}): ${uses.join(', ')}`;
    });
    if (r.holders.length > SHOWN_HOLDERS) shown.push(`${r.holders.length - SHOWN_HOLDERS} more processes`);
    parts.push(`held by ${shown.join('; ')}`);
  }
  if (r.submounts.length > 0) parts.push(`mounts inside it: ${r.submounts.join(', ')}`);
  if (parts.length === 0) return 'no process visible here holds it (perhaps one in another mount namespace that this process may not read)';
  return parts.join('; ');
}

async function holderOf(pid: number, mountpoint: string): Promise<Holder | undefined> {
  const dir = `/proc/${pid}`;
  const uses: string[] = [];
  for (const link of ['cwd', 'root'] as const) {
    const target = await readlinkOrUndefined(`${dir}/${link}`);
    if (target !== undefined && under(target, mountpoint)) uses.push(link);
  }
  const fds = await fsp.readdir(`${dir}/fd`).catch(() => [] as string[]);
  const open = new Set<string>();
  for (const fd of fds) {
    const target = await readlinkOrUndefined(`${dir}/fd/${fd}`);
    if (target !== undefined && under(target, mountpoint)) open.add(target);
  }
  for (const file of open) uses.push(`open file ${file}`);
  const maps = await fsp.readFile(`${dir}/maps`, 'utf8').catch(() => '');
  const mapped = new Set<string>();
  for (const line of maps.split('\n')) {
    // address perms offset dev inode pathname: the path starts after the fifth field.
    const m = /^\S+ \S+ \S+ \S+ \S+\s+(\/.*)$/.exec(line);
    if (m !== null && under(m[1]!, mountpoint) && !open.has(m[1]!)) mapped.add(m[1]!);
  }
  for (const file of mapped) uses.push(`mapped file ${file}`);
  if (uses.length === 0) return undefined;
  const command = (await fsp.readFile(`${dir}/comm`, 'utf8').catch(() => '?')).trim();
  return { pid, command, uses };
}

/** `p` is `mountpoint` or below it (a deleted file reads "PATH (deleted)", still below). */
function under(p: string, mountpoint: string): boolean {
  return p === mountpoint || p.startsWith(mountpoint.endsWith('/') ? mountpoint : `${mountpoint}/`);
}

async function readlinkOrUndefined(link: string): Promise<string | undefined> {
  try {
    return await fsp.readlink(link);
  } catch {
    return undefined;
  }
}
