/**
 * The two implementations of FsUnderTest: thinfs (in-process) and a real directory through
 * node:fs. Paths, names and symlink targets are byte strings on both (src/fs/bytes.ts): the
 * node:fs adapter converts them to Buffers and reads names back with `encoding: 'buffer'`,
 * so a name that is not UTF-8 means the same bytes to both.
 */
import * as nodefs from 'node:fs';
import { constants } from 'node:fs';
import type { Filesystem } from '../../src/fs/index.js';
import type { FsUnderTest, Stat } from './model.js';

const ROOT_CALLER = { uid: 0, gid: 0 };

/** thinfs through the Filesystem API; `get` returns the Filesystem to use now. */
export function thinfsAdapter(get: () => Filesystem): FsUnderTest {
  const stat = (a: { ino: number; mode: number; nlink: number; uid: number; gid: number; size: number }): Stat => ({
    ino: a.ino,
    mode: a.mode,
    nlink: a.nlink,
    uid: a.uid,
    gid: a.gid,
    size: a.size,
  });
  const withFh = <T>(fh: number, fn: (fh: number) => T): T => {
    try {
      return fn(fh);
    } finally {
      get().release(fh);
    }
  };
  return {
    kind: 'thinfs',
    mkdir: (p, mode) => void get().mkdir(p, mode, ROOT_CALLER),
    createFile: (p, mode, excl) =>
      get().release(get().create(p, mode, ROOT_CALLER, constants.O_CREAT | constants.O_WRONLY | (excl ? constants.O_EXCL : 0))),
    writeAt: (p, off, data, append) =>
      withFh(get().open(p, constants.O_WRONLY | (append ? constants.O_APPEND : 0)), (fh) => void get().write(fh, off, data)),
    readAll: (p) => withFh(get().open(p, constants.O_RDONLY), (fh) => get().read(fh, 0, get().fgetattr(fh).size)),
    truncate: (p, size) => get().truncate(p, size),
    link: (a, b) => void get().link(a, b),
    symlink: (t, p) => void get().symlink(t, p, ROOT_CALLER),
    readlink: (p) => get().readlink(p),
    rename: (a, b) => get().rename(a, b),
    unlink: (p) => get().unlink(p),
    rmdir: (p) => get().rmdir(p),
    chmod: (p, mode) => get().chmod(p, mode),
    chown: (p, uid, gid) => get().chown(p, uid, gid),
    lstat: (p) => stat(get().getattr(p)),
    readdir: (p) =>
      get()
        .readdir(p)
        .map((e) => e.name)
        .filter((n) => n !== '.' && n !== '..')
        .sort(),
    open: (p, flags) => ((flags & constants.O_CREAT) !== 0 ? get().create(p, 0o644, ROOT_CALLER, flags) : get().open(p, flags)),
    pread: (h, off, len) => get().read(h, off, len),
    pwrite: (h, off, data) => get().write(h, off, data),
    fstat: (h) => stat(get().fgetattr(h)),
    close: (h) => get().release(h),
  };
}

/** A real directory `root` through node:fs (run with umask 0 to compare modes). */
export function nodeAdapter(root: string): FsUnderTest {
  const r = (p: string): Buffer => Buffer.concat([Buffer.from(root), Buffer.from(p, 'latin1')]);
  const stat = (s: nodefs.Stats): Stat => ({ ino: s.ino, mode: s.mode, nlink: s.nlink, uid: s.uid, gid: s.gid, size: s.size });
  const withFd = <T>(fd: number, fn: (fd: number) => T): T => {
    try {
      return fn(fd);
    } finally {
      nodefs.closeSync(fd);
    }
  };
  return {
    kind: 'node',
    mkdir: (p, mode) => nodefs.mkdirSync(r(p), mode),
    createFile: (p, mode, excl) =>
      nodefs.closeSync(nodefs.openSync(r(p), constants.O_CREAT | constants.O_WRONLY | (excl ? constants.O_EXCL : 0), mode)),
    writeAt: (p, off, data, append) =>
      withFd(nodefs.openSync(r(p), constants.O_WRONLY | (append ? constants.O_APPEND : 0)), (fd) => void nodefs.writeSync(fd, data, 0, data.length, off)),
    readAll: (p) => nodefs.readFileSync(r(p)),
    truncate: (p, size) => nodefs.truncateSync(r(p), size),
    link: (a, b) => nodefs.linkSync(r(a), r(b)),
    symlink: (t, p) => nodefs.symlinkSync(Buffer.from(t, 'latin1'), r(p)),
    readlink: (p) => nodefs.readlinkSync(r(p), { encoding: 'buffer' }).toString('latin1'),
    rename: (a, b) => nodefs.renameSync(r(a), r(b)),
    unlink: (p) => nodefs.unlinkSync(r(p)),
    rmdir: (p) => nodefs.rmdirSync(r(p)),
    chmod: (p, mode) => nodefs.chmodSync(r(p), mode),
    chown: (p, uid, gid) => nodefs.lchownSync(r(p), uid, gid),
    lstat: (p) => stat(nodefs.lstatSync(r(p))),
    readdir: (p) =>
      nodefs
        .readdirSync(r(p), { encoding: 'buffer' })
        .map((n) => n.toString('latin1'))
        .sort(),
    open: (p, flags) => nodefs.openSync(r(p), flags, 0o644),
    pread: (h, off, len) => {
      const buf = Buffer.alloc(len);
      const n = nodefs.readSync(h, buf, 0, len, off);
      return buf.subarray(0, n);
    },
    pwrite: (h, off, data) => nodefs.writeSync(h, data, 0, data.length, off),
    fstat: (h) => stat(nodefs.fstatSync(h)),
    close: (h) => nodefs.closeSync(h),
  };
}
