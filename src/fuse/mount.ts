/**
 * One mounted view: a Filesystem served at a mountpoint through libfuse3's low-level,
 * inode-based API (lowlevel.ts; the operations table is ll-ops.ts, the options and why
 * each one are in options.ts).
 *
 * The binding runs each mount's libfuse loop on threads of its own and calls our handlers
 * on this process's main thread, so one process serves any number of mounts. The flip
 * side: this process must never make a synchronous call into a path it serves (the
 * main thread would wait for itself). Everything here that touches the mountpoint is
 * asynchronous.
 *
 * The FuseMount does not own the Filesystem: whoever opened it closes it after
 * `unmount` or `detach` (the daemon commits there).
 *
 * Unmounting is not lazy: `unmount` refuses (returns a BusyReport) while any process has
 * its cwd, root, an open or a mapped file in the view, as umount(8) does. A lazy detach
 * would let the holders go on with open files whose next request fails (ENOTCONN once
 * the daemon is gone) and whose unsynced writes are lost; `detach` does exactly that,
 * for `umount --force` and for a shutdown that cannot wait.
 *
 * An unmount from outside (umount(8), fusermount -u) ends the session at once: `onGone`
 * listeners hear of it then (the daemon forgets the mount, so the device can be mounted
 * again right away).
 *
 * A view mounts only on an empty directory (what libfuse does without `nonempty`): files
 * underneath would be hidden while it is mounted, and at a default mountpoint they are
 * writes that missed the container.
 */
import * as fsp from 'node:fs/promises';
import { fail, isThinfsError } from '../errors.js';
import type { Filesystem } from '../fs/index.js';
import { logger } from '../log.js';
import type { MountCounters } from './counters.js';
import { IdMap } from './idmap.js';
import { busyReport, isBusy, type BusyReport } from './holders.js';
import { lazyUnmount, probeMount, setReadahead, syncMount, thinfsMountAt, thinfsMountpoints, unmountNow } from './kernel.js';
import { KernelBlockMap } from './blockmap.js';
import { makeLowLevelOps } from './ll-ops.js';
import { LowLevelSession } from './lowlevel.js';
import { mountOptions, READAHEAD_KB } from './options.js';

const log = logger('fuse');

/** How long the kernel may take to send FUSE_INIT after mount(2). */
const INIT_TIMEOUT_MS = 15_000;

export interface MountSpec {
  /** The device name (shown as fsname thinfs:NAME). */
  name: string;
  /** Absolute path of an existing directory. */
  mountpoint: string;
  fs: Filesystem;
  readOnly: boolean;
  /** Ignore setuid/setgid bits (root mounts honour them otherwise; fuse/options.ts). */
  nosuid?: boolean;
  uids?: IdMap;
  gids?: IdMap;
  /** Where the adapter counts the mount's operations (`thinfs stats`). */
  counters?: MountCounters;
}

/** A view mounted through FUSE. */
export class FuseMount {
  private unmounted = false;
  /** A thinfs unmount is under way: the session ending now is ours, not from outside. */
  private unmounting = false;

  private constructor(
    readonly name: string,
    readonly mountpoint: string,
    readonly readOnly: boolean,
    readonly allowOther: boolean,
    /** The kernel honours setuid/setgid bits on this mount. */
    readonly setuid: boolean,
    /** What the user should be told (e.g. allow_other refused by fuse.conf). */
    readonly warnings: readonly string[],
    private readonly session: LowLevelSession,
    private readonly blockMap: KernelBlockMap,
  ) {
    session.onUnmounted(() => {
      blockMap.detach();
      if (this.unmounted || this.unmounting) return;
      this.unmounted = true;
      log.debug({ mount: this.name, mountpoint: this.mountpoint }, 'the low-level session ended');
      for (const cb of this.goneListeners.splice(0)) cb();
    });
  }

  private readonly goneListeners: Array<() => void> = [];

  /** Calls `cb` once, as soon as the mount is unmounted from outside thinfs. */
  onGone(cb: () => void): void {
    this.goneListeners.push(cb);
  }

  /** Mount `spec.fs` at `spec.mountpoint`; resolves once the kernel has initialised the mount. */
  static async mount(spec: MountSpec): Promise<FuseMount> {
    await checkMountpoint(spec.mountpoint);
    const o = mountOptions({ name: spec.name, readOnly: spec.readOnly, nosuid: spec.nosuid === true });
    for (const w of o.warnings) log.warn({ mount: spec.name }, w);
    const counters = spec.counters;
    // In-place writes in C need the writeback cache: the kernel then keeps size and mtime (blockmap.ts).
    const blockMap = new KernelBlockMap(spec.fs, !spec.readOnly && o.options.writebackCache === true, o.keepCache);
    const handlers = makeLowLevelOps(spec.fs, {
      uids: spec.uids ?? new IdMap(),
      gids: spec.gids ?? new IdMap(),
      counters,
      keepCache: o.keepCache,
      writebackCache: o.options.writebackCache,
      blockMap,
    });
    const onAnswer = counters === undefined ? undefined : (op: string, ms: number, errno: number) => counters.record(op, ms, errno);
    const session = await withTimeout(LowLevelSession.mount(spec.mountpoint, handlers, { ...o.options, onAnswer }), spec.mountpoint).catch(
      async (err: unknown) => {
        // A half-made mount (mount(2) done, libfuse setup failed) must not stay behind.
        if (thinfsMountAt(spec.mountpoint) !== undefined) await lazyUnmount(spec.mountpoint).catch(() => {});
        throw mountError(err as Error, spec.mountpoint);
      },
    );
    blockMap.attach(session);
    if (counters !== undefined) {
      counters.native = () => {
        const b = blockMap.stats();
        return b === undefined ? undefined : { ...b, getattrs: session.ended ? 0 : session.attrCacheStats().hits };
      };
    }
    const readahead = (await setReadahead(spec.mountpoint, READAHEAD_KB)) ? READAHEAD_KB : undefined;
    log.info({ mount: spec.name, mountpoint: spec.mountpoint, readOnly: spec.readOnly, options: o.options.mountOptions, readaheadKb: readahead }, 'mounted');
    return new FuseMount(spec.name, spec.mountpoint, spec.readOnly, o.allowOther, o.setuid, o.warnings, session, blockMap);
  }

  /**
   * Unmount unless the view is busy. Busy: resolves with what holds it, and the mount
   * stays served as before. The /proc scan runs first, because it also sees holders in
   * other mount namespaces (a container chrooted into the view), then the kernel's
   * non-lazy umount decides (it also counts what the scan cannot read).
   */
  async unmount(): Promise<BusyReport | undefined> {
    if (this.unmounted) return undefined;
    const before = await busyReport(this.mountpoint);
    if (isBusy(before)) return before;
    this.unmounting = true;
    try {
      if ((await unmountNow(this.mountpoint)) === 'busy') return busyReport(this.mountpoint);
    } finally {
      this.unmounting = false;
    }
    this.unmounted = true;
    await this.sessionEnd();
    this.blockMap.detach();
    log.info({ mount: this.name, mountpoint: this.mountpoint }, 'unmounted');
    return undefined;
  }

  /**
   * Detach the mount lazily, busy or not (umount --force, shutdown): it leaves the
   * directory tree at once; processes inside keep their cwd and open files, but once the
   * filesystem is closed behind it their requests fail and their unsynced writes are lost.
   */
  async detach(): Promise<void> {
    if (this.unmounted) return;
    this.unmounted = true;
    // Processes inside may go on using the detached view: from now on through JS only, which
    // answers from the filesystem or, once the owner has closed it, with an error.
    this.blockMap.detach();
    await this.session.unmount().catch((err: unknown) => log.debug({ mount: this.name, err }, 'the lazy detach reported an error'));
    if (thinfsMountAt(this.mountpoint) !== undefined) await lazyUnmount(this.mountpoint);
    log.info({ mount: this.name, mountpoint: this.mountpoint }, 'detached lazily');
  }

  /**
   * Resolves once everything written to the view has reached the Filesystem: with the
   * low-level transport's writeback cache, written pages may still sit in the kernel.
   * Call it before reading a mounted container behind the kernel (commit, export, diff).
   */
  async flush(): Promise<void> {
    if (this.unmounted) return;
    await syncMount(this.mountpoint);
  }

  /** False once the session has ended or the kernel no longer lists the mount; `mounted`: the thinfs mountpoints now. */
  stillMounted(mounted: ReadonlySet<string> = thinfsMountpoints()): boolean {
    return !this.unmounted && !this.session.ended && mounted.has(this.mountpoint);
  }

  /** After a non-lazy unmount: the session ends once its loop sees the connection close. */
  private async sessionEnd(): Promise<void> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, SESSION_END_MS)));
    await Promise.race([this.session.whenUnmounted(), late]);
    clearTimeout(timer);
  }
}

/** Rejects with ETIMEDOUT when the kernel has not initialised the mount in time. */
function withTimeout<T>(p: Promise<T>, mountpoint: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(fail('ETIMEDOUT', 'mount', mountpoint, `the kernel did not initialise the mount within ${INIT_TIMEOUT_MS / 1000} s`));
    }, INIT_TIMEOUT_MS);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}

/** How long an unmounted session may take to end (its loop sees the connection close). */
const SESSION_END_MS = 5_000;

/** The mountpoint must be an empty directory; a dead thinfs mount left there by a killed daemon is detached first. */
async function checkMountpoint(mountpoint: string): Promise<void> {
  if ((await probeMount(mountpoint)) === 'dead') {
    log.warn({ mountpoint }, 'detaching a stale thinfs mount (its daemon is gone)');
    await lazyUnmount(mountpoint);
  }
  let st;
  try {
    st = await fsp.stat(mountpoint);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw fail('ENOENT', 'mount', mountpoint, 'the mountpoint does not exist');
    throw fail('EIO', 'mount', mountpoint, `cannot use the mountpoint (${(err as Error).message})`);
  }
  if (!st.isDirectory()) throw fail('ENOTDIR', 'mount', mountpoint, 'the mountpoint is not a directory');
  if (thinfsMountAt(mountpoint) !== undefined) throw fail('EBUSY', 'mount', mountpoint, 'a thinfs view is already mounted there');
  const names = await fsp.readdir(mountpoint).catch((err: Error) => {
    throw fail('EIO', 'mount', mountpoint, `cannot read the mountpoint (${err.message})`);
  });
  if (names.length > 0) throw notEmpty(mountpoint, names);
}

/** ENOTEMPTY naming a few of the entries found in a mountpoint; `why` replaces the general reason. */
export function notEmpty(mountpoint: string, names: string[], why = 'a view mounts only on an empty directory, so nothing underneath is hidden'): Error {
  const shown = names.slice(0, 3).map((n) => `'${n}'`).join(', ');
  const more = names.length > 3 ? ` and ${names.length - 3} more` : '';
  return fail('ENOTEMPTY', 'mount', mountpoint, `the mountpoint is not empty (it holds ${shown}${more}); ${why}`);
}

function mountError(err: Error, mountpoint: string): Error {
  if (isThinfsError(err)) return err;
  // The binding rejects with libfuse's own reason (an unknown option, fusermount3's refusal).
  return fail('EIO', 'mount', mountpoint, `libfuse could not mount (${err.message})`);
}
