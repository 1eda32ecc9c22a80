/**
 * The implementations of FsUnderTest: thinfs through its path-based API, thinfs through its
 * inode-based API (driven as the kernel drives FUSE's low level), and a real directory
 * through node:fs. Paths, names and symlink targets are byte strings on all (src/fs/bytes.ts):
 * the node:fs adapter converts them to Buffers and reads names back with `encoding: 'buffer'`,
 * so a name that is not UTF-8 means the same bytes to both.
 */
import * as nodefs from 'node:fs';
import { constants } from 'node:fs';
import { expect } from 'vitest';
import { fail } from '../../src/errors.js';
import { ROOT_INO, type Attr, type EntryAttr, type Filesystem, type Ino } from '../../src/fs/index.js';
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

/** The inode-based adapter: FsUnderTest plus what a kernel does beside the calls. */
export interface InoFsUnderTest extends FsUnderTest {
  /** The inode at `p`, by lookups from the root (each one counted, as the kernel counts it). */
  inoOf(p: string): Ino;
  /** Forget every lookup taken so far (the kernel evicting its inodes). */
  forgetAll(): void;
  /** Lookups held now. */
  held(): number;
}

/**
 * thinfs through the inode-based API, as the kernel uses it: every path is walked by
 * lookup(parent, name) from the root inode, every entry the filesystem answers (lookup,
 * mkdirAt, createAt, linkAt, symlinkAt, readdirplus entries but '.' and '..') is one
 * reference taken with ref() and kept until forgetAll(), as the kernel keeps inodes in its
 * cache, so unlinked inodes stay alive in between. Directories are listed in pages of
 * `pageEntries` through opendirIno + readdirplusIno, and each entry's attributes must equal
 * getattrIno's. `get` returns the Filesystem to use now; lookups taken on an earlier one
 * are dropped with it (its close or crash ends them, as an unmount does).
 */
export function thinfsInoAdapter(get: () => Filesystem, pageEntries = 3): InoFsUnderTest {
  const held = new Map<Ino, number>();
  let bound: Filesystem | undefined;
  const fs = (): Filesystem => {
    const f = get();
    if (f !== bound) {
      bound = f;
      held.clear();
    }
    return f;
  };
  const take = <E extends EntryAttr>(e: E): E => {
    expect(e.generation, 'generation').toBe(0);
    fs().ref(e.ino);
    held.set(e.ino, (held.get(e.ino) ?? 0) + 1);
    return e;
  };
  const stat = (a: Attr): Stat => ({ ino: a.ino, mode: a.mode, nlink: a.nlink, uid: a.uid, gid: a.gid, size: a.size });
  const parts = (p: string): string[] => p.split('/').filter((c) => c !== '');
  const walk = (names: string[]): { ino: Ino; mode: number } => {
    let at = { ino: ROOT_INO, mode: constants.S_IFDIR };
    for (const n of names) at = take(fs().lookup(at.ino, n));
    return at;
  };
  const inoOf = (p: string): Ino => walk(parts(p)).ino;
  // As the kernel's path walk: every component a name follows must be a directory.
  const parentOf = (p: string): { parent: Ino; name: string } => {
    const ps = parts(p);
    const name = ps.pop()!;
    const dir = walk(ps);
    if ((dir.mode & constants.S_IFMT) !== constants.S_IFDIR) throw fail('ENOTDIR', 'walk', p);
    return { parent: dir.ino, name };
  };
  const withFh = <T>(fh: number, fn: (fh: number) => T): T => {
    try {
      return fn(fh);
    } finally {
      fs().release(fh);
    }
  };
  const create = (p: string, mode: number, flags: number): number => {
    const { parent, name } = parentOf(p);
    const { entry, fh } = fs().createAt(parent, name, mode, ROOT_CALLER, flags);
    take(entry);
    return fh;
  };
  const withoutGeneration = ({ generation, ...a }: EntryAttr): Attr => (void generation, a);
  return {
    kind: 'thinfs',
    inoOf,
    forgetAll: () => {
      const f = fs();
      for (const [ino, n] of held) f.forget(ino, n);
      held.clear();
    },
    held: () => [...held.values()].reduce((a, b) => a + b, 0),
    mkdir: (p, mode) => {
      const { parent, name } = parentOf(p);
      take(fs().mkdirAt(parent, name, mode, ROOT_CALLER));
    },
    createFile: (p, mode, excl) => fs().release(create(p, mode, constants.O_CREAT | constants.O_WRONLY | (excl ? constants.O_EXCL : 0))),
    writeAt: (p, off, data, append) =>
      withFh(fs().openIno(inoOf(p), constants.O_WRONLY | (append ? constants.O_APPEND : 0)), (fh) => void fs().write(fh, off, data)),
    readAll: (p) => withFh(fs().openIno(inoOf(p), constants.O_RDONLY), (fh) => fs().read(fh, 0, fs().fgetattr(fh).size)),
    truncate: (p, size) => void fs().setattrIno(inoOf(p), { size }),
    link: (a, b) => {
      const ino = inoOf(a);
      const { parent, name } = parentOf(b);
      take(fs().linkAt(ino, parent, name));
    },
    symlink: (t, p) => {
      const { parent, name } = parentOf(p);
      take(fs().symlinkAt(parent, name, t, ROOT_CALLER));
    },
    readlink: (p) => fs().readlinkIno(inoOf(p)),
    rename: (a, b) => {
      const from = parentOf(a);
      const to = parentOf(b);
      fs().renameAt(from.parent, from.name, to.parent, to.name);
    },
    unlink: (p) => {
      const { parent, name } = parentOf(p);
      fs().unlinkAt(parent, name);
    },
    rmdir: (p) => {
      const { parent, name } = parentOf(p);
      fs().rmdirAt(parent, name);
    },
    chmod: (p, mode) => void fs().setattrIno(inoOf(p), { mode }),
    chown: (p, uid, gid) => void fs().setattrIno(inoOf(p), { uid, gid }),
    lstat: (p) => {
      const ps = parts(p);
      if (ps.length === 0) return stat(fs().getattrIno(ROOT_INO));
      const name = ps.pop()!;
      const e = take(fs().lookup(walk(ps).ino, name));
      const a = fs().getattrIno(e.ino);
      expect(withoutGeneration(e), `lookup and getattrIno of ${p}`).toEqual(a);
      return stat(a);
    },
    readdir: (p) => {
      const ino = inoOf(p);
      const f = fs();
      return withFh(f.opendirIno(ino), (fh) => {
        const names: string[] = [];
        let offset = 0;
        for (;;) {
          const page = f.readdirplusIno(ino, fh, offset, pageEntries);
          if (page.length === 0) break;
          for (const e of page) {
            expect(e.attr.ino, `readdirplus ${p} ${e.name}`).toBe(e.ino);
            if (e.name === '.' || e.name === '..') continue;
            take(e.attr);
            expect(withoutGeneration(e.attr), `readdirplus and getattrIno of ${p}/${e.name}`).toEqual(f.getattrIno(e.ino));
            names.push(e.name);
          }
          offset = page[page.length - 1]!.offset;
        }
        expect(new Set(names).size, `${p}: each name once`).toBe(names.length);
        return names.sort();
      });
    },
    open: (p, flags) => ((flags & constants.O_CREAT) !== 0 ? create(p, 0o644, flags) : fs().openIno(inoOf(p), flags)),
    pread: (h, off, len) => fs().read(h, off, len),
    pwrite: (h, off, data) => fs().write(h, off, data),
    fstat: (h) => stat(fs().fgetattr(h)),
    close: (h) => fs().release(h),
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
