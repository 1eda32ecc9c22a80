/**
 * Paths inside a container's rootfs, seen from the host. An image's symlinks are the
 * image's: `/etc/passwd -> /host/secret` or `/etc -> ../../..` must resolve inside the
 * rootfs, as they would after the chroot, never to a host file. `inRoot` walks a path
 * component by component (what runc's securejoin does), treating the rootfs as `/`.
 *
 * The view is served by the pool's daemon, another process, so plain synchronous fs
 * calls on it are safe here.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { constants } from 'node:os';
import { fail, type ErrnoCode } from '../errors.js';

/** Symlinks followed in one path before giving up (the kernel's limit). */
const MAX_LINKS = 40;

/**
 * The host path of container path `p` (absolute) under `rootfs`, symlinks resolved as
 * inside the container; components that do not exist are appended as they are.
 */
export function inRoot(rootfs: string, p: string): string {
  const todo = p.split('/').filter((c) => c !== '' && c !== '.');
  const done: string[] = [];
  let links = 0;
  let absent = false; // below a name that does not exist, nothing exists (or is a symlink)
  while (todo.length > 0) {
    const c = todo.shift()!;
    if (c === '..') {
      done.pop();
      absent = false; // back where names may exist (and be symlinks)
      continue;
    }
    let st: fs.Stats | undefined;
    if (!absent) {
      try {
        st = fs.lstatSync(path.join(rootfs, ...done, c));
      } catch {
        absent = true;
      }
    }
    if (st === undefined || !st.isSymbolicLink()) {
      done.push(c);
      continue;
    }
    if (++links > MAX_LINKS) throw fail('ELOOP', 'run', p, `too many levels of symbolic links in ${p} of the container`);
    const target = fs.readlinkSync(path.join(rootfs, ...done, c));
    if (target.startsWith('/')) done.length = 0;
    todo.unshift(...target.split('/').filter((t) => t !== '' && t !== '.'));
  }
  return path.join(rootfs, ...done);
}

/** A path the runtime mounts something on, and what it must be. */
export interface Mountpoint {
  /** Absolute path in the container. */
  path: string;
  kind: 'dir' | 'file';
}

/** The mountpoints of `points` that do not exist under `rootfs`. */
export function missingMountpoints(rootfs: string, points: readonly Mountpoint[]): Mountpoint[] {
  return points.filter((m) => !fs.existsSync(inRoot(rootfs, m.path)));
}

/**
 * Create the missing mountpoints under `rootfs` (a writable view): directories 0755 and
 * empty files 0644, parents as needed, each step resolved inside the rootfs. These are
 * what podman and runc leave in a container too (an empty /etc/hosts to bind onto).
 * On failure some may exist; nothing else was changed.
 */
export function createMountpoints(rootfs: string, points: readonly Mountpoint[]): void {
  for (const m of points) {
    const host = inRoot(rootfs, m.path);
    if (fs.existsSync(host)) continue;
    try {
      // inRoot resolved every symlink up to the first name that does not exist: what is
      // created from there on are plain new directories, all inside the rootfs.
      fs.mkdirSync(path.dirname(host), { recursive: true, mode: 0o755 });
      if (m.kind === 'dir') fs.mkdirSync(host, { mode: 0o755 });
      else fs.closeSync(fs.openSync(host, 'wx', 0o644));
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const errno = code !== undefined && code in constants.errno ? (code as ErrnoCode) : 'EIO';
      throw fail(errno, 'run', m.path, `cannot create ${m.path} in the container to mount onto (${(err as Error).message})`);
    }
  }
}

/** The contents of file `p` of the container, or undefined when it does not exist. */
export function readInRoot(rootfs: string, p: string): string | undefined {
  const host = inRoot(rootfs, p);
  try {
    return fs.readFileSync(host, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw fail('EIO', 'run', p, `cannot read ${p} of the container (${(err as Error).message})`);
  }
}
