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
 * `unmount` (the daemon commits there).
 */
import * as fsp from 'node:fs/promises';
import { fail, isThinfsError } from '../errors.js';
import type { Filesystem } from '../fs/index.js';
import { logger } from '../log.js';
import { IdMap } from './idmap.js';
import { lazyUnmount, probeMount, thinfsMountAt, thinfsMountpoints } from './kernel.js';
import { loadFuse, type FuseHandle } from './native.js';
import { makeOps } from './ops.js';
import { mountOptions } from './options.js';

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
  uids?: IdMap;
  gids?: IdMap;
}

/** A view mounted through FUSE. */
export class FuseMount {
  private unmounted = false;

  private constructor(
    readonly name: string,
    readonly mountpoint: string,
    readonly readOnly: boolean,
    readonly allowOther: boolean,
    /** What the user should be told (e.g. allow_other refused by fuse.conf). */
    readonly warnings: readonly string[],
    private readonly handle: FuseHandle,
  ) {}

  /** Mount `spec.fs` at `spec.mountpoint`; resolves once the kernel has initialised the mount. */
  static async mount(spec: MountSpec): Promise<FuseMount> {
    if (/["$`\\\n]/.test(spec.mountpoint)) {
      // fuse-native unmounts through a shell command line: keep such characters out of it.
      throw fail('EINVAL', 'mount', spec.mountpoint, 'a mountpoint may not contain quotes, $, backquotes, backslashes or newlines');
    }
    await checkMountpoint(spec.mountpoint);
    const Fuse = loadFuse();
    const { options, allowOther, warnings } = mountOptions({ name: spec.name, readOnly: spec.readOnly });
    for (const w of warnings) log.warn({ mount: spec.name }, w);
    const ops = makeOps(spec.fs, { name: spec.name, uids: spec.uids ?? new IdMap(), gids: spec.gids ?? new IdMap() });
    const handle = new Fuse(spec.mountpoint, ops, options);
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        reject(fail('ETIMEDOUT', 'mount', spec.mountpoint, `the kernel did not initialise the mount within ${INIT_TIMEOUT_MS / 1000} s`));
      }, INIT_TIMEOUT_MS);
      handle.mount((err) => {
        clearTimeout(timer);
        if (err === null || err === undefined) resolve();
        else reject(mountError(err, spec.mountpoint));
      });
    }).catch(async (err) => {
      // A half-made mount (mount(2) done, libfuse setup failed) must not stay behind.
      if (thinfsMountAt(spec.mountpoint) !== undefined) await lazyUnmount(spec.mountpoint).catch(() => {});
      throw err;
    });
    log.info({ mount: spec.name, mountpoint: spec.mountpoint, readOnly: spec.readOnly, options }, 'mounted');
    return new FuseMount(spec.name, spec.mountpoint, spec.readOnly, allowOther, warnings, handle);
  }

  /** Detach the mount (lazily: processes inside keep what they hold open until they let go). */
  async unmount(): Promise<void> {
    if (this.unmounted) return;
    this.unmounted = true;
    await new Promise<void>((resolve) => {
      this.handle.unmount((err) => {
        if (err !== null && err !== undefined) log.debug({ mount: this.name, err }, 'fuse-native unmount reported an error');
        resolve();
      });
    });
    // fuse-native's fusermount may fail (already unmounted by hand, fusermount missing): make sure.
    if (thinfsMountAt(this.mountpoint) !== undefined) await lazyUnmount(this.mountpoint);
    log.info({ mount: this.name, mountpoint: this.mountpoint }, 'unmounted');
  }

  /** False once the kernel no longer lists the mount (someone ran umount(8) on it); `mounted`: the thinfs mountpoints now. */
  stillMounted(mounted: ReadonlySet<string> = thinfsMountpoints()): boolean {
    return !this.unmounted && mounted.has(this.mountpoint);
  }
}

/** The mountpoint must be a directory; a dead thinfs mount left there by a killed daemon is detached first. */
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
}

function mountError(err: Error, mountpoint: string): Error {
  if (isThinfsError(err)) return err;
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOTCONN' || code === 'ECONNABORTED') return fail('EIO', 'mount', mountpoint, 'a dead FUSE mount is in the way; run `fusermount -u -z` on it');
  if (err.message === 'Mountpoint in use') return fail('EBUSY', 'mount', mountpoint, 'something is already mounted there');
  // libfuse2 prints its reason to stderr, which the daemon sends to its log.
  return fail('EIO', 'mount', mountpoint, `libfuse could not mount (${err.message}); its reason is in the daemon log`);
}
