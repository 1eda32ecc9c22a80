/**
 * One mounted view: a Filesystem served at a mountpoint through fuse-native.
 *
 * fuse-native runs each mount's libfuse loop on its own thread and calls our handlers
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
 * A view mounts only on an empty directory (what libfuse does without `nonempty`): files
 * underneath would be hidden while it is mounted, and at a default mountpoint they are
 * writes that missed the container.
 *
 * Two transports, chosen by THINFS_FUSE (read when a view is mounted, so the daemon's
 * environment decides): `hl` (default), fuse-native's libfuse2 high-level, path-based
 * API (ops.ts); `ll`, libfuse3's low-level, inode-based API (lowlevel.ts + ll-ops.ts),
 * where a nodeid is a thinfs inode and the kernel caches (options.ts says why each
 * option). On `ll` an unmount from outside (umount(8), fusermount -u) ends the session
 * at once, and `onGone` listeners hear of it then.
 */
import * as fsp from 'node:fs/promises';
import { fail, isThinfsError } from '../errors.js';
import type { Filesystem } from '../fs/index.js';
import { logger } from '../log.js';
import type { MountCounters } from './counters.js';
import { IdMap } from './idmap.js';
import { busyReport, isBusy, type BusyReport } from './holders.js';
import { lazyUnmount, probeMount, syncMount, thinfsMountAt, thinfsMountpoints, unmountNow } from './kernel.js';
import { loadFuse, releaseUnmounted, type FuseHandle } from './native.js';
import { makeLowLevelOps } from './ll-ops.js';
import { LowLevelSession } from './lowlevel.js';
import { makeOps } from './ops.js';
import { lowLevelOptions, mountOptions } from './options.js';

const log = logger('fuse');

/** The FUSE transport of new mounts: THINFS_FUSE=ll|hl (default hl). */
export function fuseTransport(env: NodeJS.ProcessEnv = process.env): 'll' | 'hl' {
  const t = env.THINFS_FUSE ?? 'hl';
  if (t !== 'll' && t !== 'hl') throw fail('EINVAL', 'mount', undefined, `THINFS_FUSE=${t}: expected ll or hl`);
  return t;
}

/** What a transport does once the kernel has let go of (or is told to detach) a mount. */
interface Transport {
  /** After a non-lazy unmount succeeded: let go of the session. */
  release(): Promise<void>;
  /** Lazy detach, busy or not. */
  detach(): Promise<void>;
  /** True once the session has ended (ll only: hl asks the kernel's mount table). */
  ended(): boolean | undefined;
  /** Calls `cb` when the session ends by itself (ll only). */
  onEnded(cb: () => void): void;
}

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
    private readonly transport: Transport,
  ) {
    transport.onEnded(() => {
      if (this.unmounted || this.unmounting) return;
      this.unmounted = true;
      log.debug({ mount: this.name, mountpoint: this.mountpoint }, 'the low-level session ended');
      for (const cb of this.goneListeners.splice(0)) cb();
    });
  }

  private readonly goneListeners: Array<() => void> = [];

  /** Calls `cb` once if the mount is unmounted from outside thinfs (ll: at once; hl: never, see stillMounted). */
  onGone(cb: () => void): void {
    this.goneListeners.push(cb);
  }

  /** Mount `spec.fs` at `spec.mountpoint`; resolves once the kernel has initialised the mount. */
  static async mount(spec: MountSpec): Promise<FuseMount> {
    if (/["$`\\\n]/.test(spec.mountpoint)) {
      // fuse-native unmounts through a shell command line: keep such characters out of it.
      throw fail('EINVAL', 'mount', spec.mountpoint, 'a mountpoint may not contain quotes, $, backquotes, backslashes or newlines');
    }
    await checkMountpoint(spec.mountpoint);
    const transport = fuseTransport();
    const cleanup = async (err: unknown): Promise<never> => {
      // A half-made mount (mount(2) done, libfuse setup failed) must not stay behind.
      if (thinfsMountAt(spec.mountpoint) !== undefined) await lazyUnmount(spec.mountpoint).catch(() => {});
      throw err;
    };
    if (transport === 'll') {
      const o = lowLevelOptions({ name: spec.name, readOnly: spec.readOnly, nosuid: spec.nosuid === true });
      for (const w of o.warnings) log.warn({ mount: spec.name }, w);
      const counters = spec.counters;
      const handlers = makeLowLevelOps(spec.fs, {
        uids: spec.uids ?? new IdMap(),
        gids: spec.gids ?? new IdMap(),
        counters,
        keepCache: o.keepCache,
        writebackCache: o.options.writebackCache,
      });
      const options = { ...o.options, onAnswer: counters === undefined ? undefined : (op: string, ms: number, errno: number) => counters.record(op, ms, errno) };
      const session = await withTimeout(LowLevelSession.mount(spec.mountpoint, handlers, options), spec.mountpoint)
        .catch((err: unknown) => cleanup(llMountError(err as Error, spec.mountpoint)));
      log.info({ mount: spec.name, mountpoint: spec.mountpoint, readOnly: spec.readOnly, options: o.options.mountOptions, transport }, 'mounted');
      return new FuseMount(spec.name, spec.mountpoint, spec.readOnly, o.allowOther, o.setuid, o.warnings, llTransport(session, spec.mountpoint));
    }
    const Fuse = loadFuse();
    const { options, allowOther, setuid, warnings } = mountOptions({ name: spec.name, readOnly: spec.readOnly, nosuid: spec.nosuid === true });
    for (const w of warnings) log.warn({ mount: spec.name }, w);
    const ops = makeOps(spec.fs, { name: spec.name, uids: spec.uids ?? new IdMap(), gids: spec.gids ?? new IdMap(), counters: spec.counters });
    const handle = new Fuse(spec.mountpoint, ops, options);
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        handle.mount((err) => {
          if (err === null || err === undefined) resolve();
          else reject(mountError(err, spec.mountpoint));
        });
      }),
      spec.mountpoint,
    ).catch(cleanup);
    log.info({ mount: spec.name, mountpoint: spec.mountpoint, readOnly: spec.readOnly, options, transport }, 'mounted');
    return new FuseMount(spec.name, spec.mountpoint, spec.readOnly, allowOther, setuid, warnings, hlTransport(handle, spec.mountpoint, spec.name));
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
    await this.transport.release();
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
    await this.transport.detach();
    log.info({ mount: this.name, mountpoint: this.mountpoint }, 'detached lazily');
  }

  /**
   * Resolves once everything written to the view has reached the Filesystem: with the
   * low-level transport's writeback cache, written pages may still sit in the kernel.
   * Call it before reading a mounted container behind the kernel (commit, export, diff).
   * At once on libfuse2, where every write(2) reaches the daemon before it returns.
   */
  async flush(): Promise<void> {
    if (this.unmounted || this.transport.ended() === undefined) return;
    await syncMount(this.mountpoint);
  }

  /** False once the kernel no longer lists the mount (someone ran umount(8) on it); `mounted`: the thinfs mountpoints now. */
  stillMounted(mounted: ReadonlySet<string> = thinfsMountpoints()): boolean {
    if (this.unmounted) return false;
    return this.transport.ended() === undefined ? mounted.has(this.mountpoint) : !this.transport.ended();
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

/** libfuse2 through fuse-native: the session ends when told (fusermount -uz, or a release after unmountNow). */
function hlTransport(handle: FuseHandle, mountpoint: string, name: string): Transport {
  return {
    release: async () => releaseUnmounted(handle),
    detach: async () => {
      await new Promise<void>((resolve) => {
        handle.unmount((err) => {
          if (err !== null && err !== undefined) log.debug({ mount: name, err }, 'fuse-native unmount reported an error');
          resolve();
        });
      });
      // fuse-native's fusermount may fail (already unmounted by hand, fusermount missing): make sure.
      if (thinfsMountAt(mountpoint) !== undefined) await lazyUnmount(mountpoint);
    },
    ended: () => undefined,
    onEnded: () => {},
  };
}

/** How long an unmounted low-level session may take to end (its loop sees the connection close). */
const SESSION_END_MS = 5_000;

/** libfuse3 low-level: the session ends by itself once the kernel lets go (any unmount). */
function llTransport(session: LowLevelSession, mountpoint: string): Transport {
  return {
    release: async () => {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([session.whenUnmounted(), new Promise<void>((resolve) => (timer = setTimeout(resolve, SESSION_END_MS)))]);
      clearTimeout(timer);
    },
    detach: async () => {
      await session.unmount().catch((err: unknown) => log.debug({ mountpoint, err }, 'low-level detach reported an error'));
      if (thinfsMountAt(mountpoint) !== undefined) await lazyUnmount(mountpoint);
    },
    ended: () => session.ended,
    onEnded: (cb) => session.onUnmounted(() => cb()),
  };
}

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

function llMountError(err: Error, mountpoint: string): Error {
  if (isThinfsError(err)) return err;
  return fail('EIO', 'mount', mountpoint, `libfuse could not mount (${err.message})`);
}

function mountError(err: Error, mountpoint: string): Error {
  if (isThinfsError(err)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOTCONN' || code === 'ECONNABORTED') return fail('EIO', 'mount', mountpoint, 'a dead FUSE mount is in the way; run `fusermount -u -z` on it');
  if (err.message === 'Mountpoint in use') return fail('EBUSY', 'mount', mountpoint, 'something is already mounted there');
  // libfuse2 prints its reason to stderr, which the daemon sends to its log.
  return fail('EIO', 'mount', mountpoint, `libfuse could not mount (${err.message}); its reason is in the daemon log`);
}
