/**
 * The one door to fuse-native (2.2.6, patched and rebuilt against Debian's libfuse2
 * by native-deps/build.cjs; the reasons are at the top of native-deps/fuse-native.patch).
 *
 * fuse-native calls each handler on the main thread, synchronously, from the FUSE
 * thread's request. The patch remembers the calling process of the request being
 * dispatched, so `callerContext()` is valid only in the synchronous part of a handler:
 * read it at the handler's first line, before any await or callback.
 *
 * fuse-native must live on the process's main thread (its C side uses the default
 * libuv loop), so never mount from a worker_thread (vitest must use the forks pool).
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { isMainThread } from 'node:worker_threads';

/** Mount options fuse-native 2.2.6 turns into `-o` flags (index.js `_fuseOptions`), plus `extraOptions` from the patch. */
export interface FuseMountOptions {
  debug?: boolean;
  allowOther?: boolean;
  allowRoot?: boolean;
  autoUnmount?: boolean;
  defaultPermissions?: boolean;
  blkdev?: boolean;
  blksize?: number;
  maxRead?: number;
  fd?: number;
  fsname?: string;
  subtype?: string;
  kernelCache?: boolean;
  autoCache?: boolean;
  umask?: number;
  uid?: number;
  gid?: number;
  entryTimeout?: number;
  attrTimeout?: number;
  acAttrTimeout?: number;
  noforget?: boolean;
  remember?: number;
  modules?: string;
  /** Any other libfuse2 `-o` option, verbatim: 'big_writes', 'max_write=131072', 'use_ino', 'hard_remove', ... */
  extraOptions?: string[];
  /** Per-operation timeout in ms (default 15000) after which fuse-native answers ETIMEDOUT; false disables it. */
  timeout?: number | false | Record<string, number | false>;
  force?: boolean;
  mkdir?: boolean;
}

/** A mounted (or mountable) fuse-native filesystem. */
export interface FuseHandle {
  readonly mnt: string;
  mount(cb: (err: Error | null) => void): void;
  /** fuse-native's unmount: `fusermount -uz` (lazy, even when busy), then it lets go of its libuv handle. */
  unmount(cb: (err: Error | null) => void): void;
}

/** The fuse-native module (the Fuse class), typed loosely; handlers follow fuse-native's README. */
export interface FuseModule {
  new (mnt: string, ops: Record<string, (...args: any[]) => void>, opts?: FuseMountOptions): FuseHandle;
  /** Runs `fusermount -uz mnt` (fuse-native's lazy unmount). */
  unmount(mnt: string, cb: (err: Error | null) => void): void;
  getContext(): [number, number, number, number] | null;
  getUtimens(): [number, number, number, number] | null;
  readonly UTIME_NOW: number;
  readonly UTIME_OMIT: number;
  /** Negative errno constants: Fuse.ENOENT === -2, ... */
  readonly [errno: string]: unknown;
}

/** Who issued the FUSE request being handled. */
export interface CallerContext {
  uid: number;
  gid: number;
  pid: number;
  /** The caller's umask; the kernel sends it with create/mkdir/mknod only (0 otherwise). */
  umask: number;
}

/** One utimens time: seconds + nanoseconds, or "set to now", or "leave unchanged". */
export type UtimeSpec = { sec: number; nsec: number } | 'now' | 'omit';

let fuse: FuseModule | undefined;

/** Loads fuse-native and checks it is the patched build. */
export function loadFuse(): FuseModule {
  if (fuse === undefined) {
    if (!isMainThread) throw new Error('fuse-native must run on the main thread, not in a worker_thread');
    const mod = createRequire(import.meta.url)('fuse-native') as FuseModule;
    if (typeof mod.getContext !== 'function' || typeof mod.getUtimens !== 'function') {
      throw new Error('fuse-native is not the thinfs-patched build: run npm install (or node native-deps/build.cjs)');
    }
    fuse = mod;
  }
  return fuse;
}

/**
 * Let fuse-native let go of a mount the kernel has already unmounted (kernel.ts
 * `unmountNow`). Its own `unmount` always starts with `fusermount -uz`, which would
 * detach whatever is mounted at that path by then and fails when nothing is, skipping
 * the release; so this calls the release half (the binding's fuse_native_unmount:
 * unref its libuv handle) directly. The libfuse thread ends by itself once the kernel
 * closes the connection.
 */
export function releaseUnmounted(handle: FuseHandle): void {
  const thread = (handle as unknown as { _thread?: unknown })._thread;
  const binding = fuseBinding();
  if (!Buffer.isBuffer(thread) || binding === undefined) {
    handle.unmount(() => {}); // an unexpected fuse-native: its own unmount (fails harmlessly, nothing is mounted)
    return;
  }
  binding.fuse_native_unmount(handle.mnt, thread);
}

/** fuse-native's native binding (the module it loads with node-gyp-build; the same instance). */
function fuseBinding(): { fuse_native_unmount(mnt: string, thread: Buffer): void } | undefined {
  try {
    const req = createRequire(import.meta.url);
    const dir = path.dirname(req.resolve('fuse-native/package.json'));
    const gypBuild = createRequire(path.join(dir, 'index.js'))('node-gyp-build') as (dir: string) => Record<string, unknown>;
    const binding = gypBuild(dir);
    return typeof binding.fuse_native_unmount === 'function' ? (binding as ReturnType<typeof fuseBinding>) : undefined;
  } catch {
    return undefined;
  }
}

/** The uid/gid/pid/umask of the process whose request is being handled; call it at a handler's first line. */
export function callerContext(): CallerContext {
  const ctx = loadFuse().getContext();
  if (ctx === null) throw new Error('callerContext() called outside the synchronous part of a FUSE handler');
  const [uid, gid, pid, umask] = ctx;
  return { uid, gid, pid, umask };
}

/** The exact times of the utimens request being handled (fuse-native itself passes milliseconds only). */
export function utimensTimes(): { atime: UtimeSpec; mtime: UtimeSpec } {
  const Fuse = loadFuse();
  const t = Fuse.getUtimens();
  if (t === null) throw new Error('utimensTimes() called outside the synchronous part of a utimens handler');
  const spec = (sec: number, nsec: number): UtimeSpec =>
    nsec === Fuse.UTIME_NOW ? 'now' : nsec === Fuse.UTIME_OMIT ? 'omit' : { sec, nsec };
  return { atime: spec(t[0], t[1]), mtime: spec(t[2], t[3]) };
}
