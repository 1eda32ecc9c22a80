/**
 * The FUSE operations table (libfuse's passthrough_hp habit: every supported operation
 * assigned in one place). Each handler is mechanical: decode fuse-native's arguments,
 * make one Filesystem call, reply. `reply` is the only place that catches: it turns any
 * error into an errno through errno.ts, logs the operation at debug level (op, path,
 * errno, ms), warns when one took longer than a second, and counts it in the mount's
 * counters (counters.ts; read and write also their bytes). No handler ever throws into
 * fuse-native, so a bad request can't take the daemon down.
 *
 * Rules fuse-native imposes, kept here:
 *  - callerContext() and utimensTimes() are valid only in the synchronous part of a
 *    handler: each handler that needs them reads them first, before anything else.
 *  - read/write buffers point into libfuse's memory and are detached after the reply:
 *    every Filesystem call here is synchronous and copies what it keeps.
 *  - read, write and getxattr answer with a count (or a negative errno) as the first
 *    callback argument; everything else answers (errno, value).
 *  - Names are bytes: every path, name and symlink target argument arrives as a byte
 *    string (one char per byte, fs/bytes.ts), and readdir names, readlink targets and
 *    listxattr names go back the same way, so they pass through here untouched. Only
 *    log lines decode them (toText), for a person to read.
 */
import { constants } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fail } from '../errors.js';
import { toText, type Caller, type Filesystem, type TimeSpec } from '../fs/index.js';
import { logger } from '../log.js';
import type { MountCounters } from './counters.js';
import { toErrno } from './errno.js';
import type { IdMap } from './idmap.js';
import { callerContext, utimensTimes, type UtimeSpec } from './native.js';
import { entryStat, toFuseStat, toFuseStatfs } from './stat.js';

const log = logger('fuse');

/** Operations slower than this are logged at warn. */
const SLOW_OP_MS = 1000;
/** (uid_t)-1 / (gid_t)-1 as fuse-native passes them: "leave unchanged". */
const NO_ID = 2 ** 32 - 1;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;

export interface OpsConfig {
  /** The device name, for logs. */
  name: string;
  uids: IdMap;
  gids: IdMap;
  /** Where each answered operation is counted (`thinfs stats`). */
  counters?: MountCounters;
}

type Cb = (code: number, ...values: unknown[]) => void;
/** fuse-native's handler object: name -> function(...args, cb). */
export type FuseOps = Record<string, (...args: any[]) => void>;

/** The fuse-native handlers of one mounted Filesystem. */
export function makeOps(fs: Filesystem, cfg: OpsConfig): FuseOps {
  const debug = log.isLevelEnabled('debug');
  const { uids, gids, counters } = cfg;

  /** Run `fn` and answer cb(0, value) or cb(-errno). */
  function reply<R>(op: string, path: string | undefined, cb: Cb, fn: () => R, encode: (r: R) => unknown[] = (r) => [r]): void {
    const t0 = performance.now();
    let code = 0;
    let values: unknown[] = [];
    try {
      values = encode(fn());
    } catch (err) {
      code = toErrno(err, op, path);
    }
    finish(op, path, code, t0);
    cb(code, ...values);
  }

  /** Run `fn` (a byte count) and answer cb(count) or cb(-errno): read, write. */
  function replyCount(op: string, path: string | undefined, cb: Cb, fn: () => number): void {
    const t0 = performance.now();
    let code: number;
    try {
      code = fn();
    } catch (err) {
      code = toErrno(err, op, path);
    }
    finish(op, path, code < 0 ? code : 0, t0);
    if (code > 0 && counters !== undefined) {
      if (op === 'read') counters.read(code);
      else counters.wrote(code);
    }
    cb(code);
  }

  function finish(op: string, path: string | undefined, code: number, t0: number): void {
    const ms = performance.now() - t0;
    counters?.record(op, ms, -code);
    if (ms > SLOW_OP_MS) log.warn({ op, path: shown(path), errno: -code, ms: Math.round(ms), mount: cfg.name }, 'slow FUSE operation');
    else if (debug) log.debug({ op, path: shown(path), errno: -code, ms: Number(ms.toFixed(3)), mount: cfg.name }, 'op');
  }

  /** The creator of a new entry, in stored ids (EOVERFLOW when a map does not cover the caller). */
  function creator(): Caller | Error {
    let c;
    try {
      c = callerContext();
    } catch (err) {
      return err as Error;
    }
    const uid = uids.toStored(c.uid);
    const gid = gids.toStored(c.gid);
    if (uid === undefined || gid === undefined) {
      return fail('EOVERFLOW', 'create', undefined, `caller ${c.uid}:${c.gid} is outside the mount's id maps`);
    }
    return { uid, gid };
  }

  const must = <T>(v: T | Error): T => {
    if (v instanceof Error) throw v;
    return v;
  };

  const stat = (a: Parameters<typeof toFuseStat>[0]) => [toFuseStat(a, uids, gids)];

  return {
    init: (cb: Cb) => cb(0),
    error: (cb: Cb) => cb(0),

    // ---------------------------------------------------------------- attributes
    getattr: (path: string, cb: Cb) => reply('getattr', path, cb, () => fs.getattr(path), stat),
    // By handle: with hard_remove an open file may have no name left (path is then '').
    fgetattr: (path: string, fd: number, cb: Cb) => reply('fgetattr', path, cb, () => fs.fgetattr(fd), stat),
    access: (path: string, mode: number, cb: Cb) => reply('access', path, cb, () => fs.access(path, mode), () => []),
    statfs: (path: string, cb: Cb) => reply('statfs', path, cb, () => toFuseStatfs(fs.statfs())),
    chmod: (path: string, mode: number, cb: Cb) => reply('chmod', path, cb, () => fs.chmod(path, mode), () => []),
    chown: (path: string, uid: number, gid: number, cb: Cb) =>
      reply('chown', path, cb, () => fs.chown(path, storedId(uids, uid, path), storedId(gids, gid, path)), () => []),
    utimens: (path: string, _atimeMs: number, _mtimeMs: number, cb: Cb) => {
      let times: ReturnType<typeof utimensTimes> | Error;
      try {
        times = utimensTimes();
      } catch (err) {
        times = err as Error;
      }
      reply('utimens', path, cb, () => {
        const t = must(times);
        fs.utimens(path, timeSpec(t.atime), timeSpec(t.mtime));
      }, () => []);
    },

    // ---------------------------------------------------------------- names
    opendir: (path: string, _flags: number, cb: Cb) =>
      reply('opendir', path, cb, () => {
        if ((fs.getattr(path).mode & S_IFMT) !== S_IFDIR) throw fail('ENOTDIR', 'opendir', path);
        return 0;
      }),
    readdir: (path: string, cb: Cb) =>
      reply('readdir', path, cb, () => fs.readdir(path), (entries) => [entries.map((e) => e.name), entries.map((e) => entryStat(e.ino, e.type))]),
    releasedir: (path: string, _fd: number, cb: Cb) => reply('releasedir', path, cb, () => undefined, () => []),
    fsyncdir: (path: string, _datasync: number, _fd: number, cb: Cb) => reply('fsyncdir', path, cb, () => fs.commit(), () => []),
    mkdir: (path: string, mode: number, cb: Cb) => {
      const who = creator();
      reply('mkdir', path, cb, () => fs.mkdir(path, mode, must(who)), () => []);
    },
    mknod: (path: string, mode: number, rdev: number, cb: Cb) => {
      const who = creator();
      reply('mknod', path, cb, () => fs.mknod(path, mode, rdev, must(who)), () => []);
    },
    symlink: (target: string, path: string, cb: Cb) => {
      const who = creator();
      reply('symlink', path, cb, () => fs.symlink(target, path, must(who)), () => []);
    },
    readlink: (path: string, cb: Cb) => reply('readlink', path, cb, () => fs.readlink(path)),
    link: (existing: string, path: string, cb: Cb) => reply('link', path, cb, () => fs.link(existing, path), () => []),
    unlink: (path: string, cb: Cb) => reply('unlink', path, cb, () => fs.unlink(path), () => []),
    rmdir: (path: string, cb: Cb) => reply('rmdir', path, cb, () => fs.rmdir(path), () => []),
    rename: (from: string, to: string, cb: Cb) => reply('rename', from, cb, () => fs.rename(from, to), () => []),

    // ---------------------------------------------------------------- data
    create: (path: string, mode: number, cb: Cb) => {
      const who = creator();
      // fuse-native does not pass the open flags of create: open read-write (the kernel
      // enforces the caller's access mode on its own file descriptor).
      reply('create', path, cb, () => fs.create(path, mode, must(who), constants.O_RDWR));
    },
    open: (path: string, flags: number, cb: Cb) => reply('open', path, cb, () => fs.open(path, flags)),
    read: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
      replyCount('read', path, cb, () => {
        const data = fs.read(fd, pos, len);
        return data.copy(buf, 0, 0, Math.min(len, data.length));
      }),
    write: (path: string, fd: number, buf: Buffer, len: number, pos: number, cb: Cb) =>
      replyCount('write', path, cb, () => fs.write(fd, pos, len === buf.length ? buf : buf.subarray(0, len))),
    truncate: (path: string, size: number, cb: Cb) => reply('truncate', path, cb, () => fs.truncate(path, size), () => []),
    ftruncate: (path: string, fd: number, size: number, cb: Cb) => reply('ftruncate', path, cb, () => fs.ftruncate(fd, size), () => []),
    // Nothing is buffered above the pool: close(2) has nothing to flush.
    flush: (path: string, _fd: number, cb: Cb) => reply('flush', path, cb, () => undefined, () => []),
    fsync: (path: string, datasync: number, fd: number, cb: Cb) => reply('fsync', path, cb, () => fs.fsync(fd, datasync !== 0), () => []),
    release: (path: string, fd: number, cb: Cb) => reply('release', path, cb, () => fs.release(fd), () => []),

    // ---------------------------------------------------------------- xattrs
    setxattr: (path: string, name: string, value: Buffer, _position: number, flags: number, cb: Cb) =>
      reply('setxattr', path, cb, () => fs.setxattr(path, name, value, flags), () => []),
    getxattr: (path: string, name: string, _position: number, cb: Cb) => reply('getxattr', path, cb, () => fs.getxattr(path, name)),
    listxattr: (path: string, cb: Cb) => reply('listxattr', path, cb, () => fs.listxattr(path)),
    removexattr: (path: string, name: string, cb: Cb) => reply('removexattr', path, cb, () => fs.removexattr(path, name), () => []),
  };
}

/** A path for a log line. */
function shown(path: string | undefined): string | undefined {
  return path === undefined ? undefined : toText(path);
}

/** A chown id from the host, in stored terms; -1 stays "unchanged"; EINVAL outside the map. */
function storedId(map: IdMap, id: number, path: string): number {
  if (id === NO_ID || id === -1) return -1;
  const stored = map.toStored(id);
  if (stored === undefined) throw fail('EINVAL', 'chown', path, `id ${id} is outside the mount's id map`);
  return stored;
}

function timeSpec(t: UtimeSpec): TimeSpec {
  if (t === 'now' || t === 'omit') return t;
  return BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec);
}
