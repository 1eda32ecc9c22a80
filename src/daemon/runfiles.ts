/**
 * The daemon's files under the pool root: ROOT/run/{thinfs.sock, daemon.pid, mounts.json}
 * and ROOT/logs/daemon.log. mounts.json records what the daemon has mounted, so that
 * after a `kill -9` the next `thinfs mount` or `thinfs umount` knows which dead mounts
 * to detach. Writes are atomic (write + rename).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { socketPath } from './protocol.js';

/** A mount as the daemon records and reports it. */
export interface MountRecord {
  name: string;
  devId: number;
  /** Absolute path. */
  mountpoint: string;
  readOnly: boolean;
  allowOther: boolean;
  /** The kernel honours setuid/setgid bits (a root mount without --nosuid). */
  setuid: boolean;
  uidMap: string[];
  gidMap: string[];
  /** ISO time of the mount. */
  mountedAt: string;
}

export function runDir(root: string): string {
  return path.join(root, 'run');
}

export function pidFile(root: string): string {
  return path.join(root, 'run', 'daemon.pid');
}

export function mountsFile(root: string): string {
  return path.join(root, 'run', 'mounts.json');
}

export function logFile(root: string): string {
  return path.join(root, 'logs', 'daemon.log');
}

/** The pid in the pid file, if there is one. */
export function readPid(root: string): number | undefined {
  try {
    const pid = Number(fs.readFileSync(pidFile(root), 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/** True when a process with that pid runs (a zombie nobody reaped counts as dead). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return true;
  }
}

export function writePid(root: string): void {
  writeAtomic(pidFile(root), `${process.pid}\n`);
}

/** The mounts a daemon recorded (after a crash: the ones left dead). */
export function readMountRecords(root: string): MountRecord[] {
  try {
    const data = JSON.parse(fs.readFileSync(mountsFile(root), 'utf8')) as { mounts?: MountRecord[] };
    return Array.isArray(data.mounts) ? data.mounts : [];
  } catch {
    return [];
  }
}

export function writeMountRecords(root: string, mounts: MountRecord[]): void {
  if (mounts.length === 0) fs.rmSync(mountsFile(root), { force: true });
  else writeAtomic(mountsFile(root), `${JSON.stringify({ pid: process.pid, mounts }, null, 2)}\n`);
}

/** Remove the socket, pid and mounts files a dead daemon left (never while one answers). */
export function removeRunFiles(root: string): void {
  for (const f of [socketPath(root), pidFile(root), mountsFile(root)]) fs.rmSync(f, { force: true });
}

function writeAtomic(file: string, text: string): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}
