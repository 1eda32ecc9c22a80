/**
 * Union scenarios: Docker's graph-driver tests (base, snapshots, deep chains, changes,
 * copy-on-write costs) and the layer rules of thinfs (whiteouts, copy-up, images, crash).
 */
import { constants } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Filesystem, XATTR_CREATE, XATTR_REPLACE, type Change } from '../../src/fs/index.js';
import { GiB, KiB, MiB, Pool, type DevId } from '../../src/pool/index.js';
import { allocatedBytes, tmpDir } from '../helpers/tmp.js';
import { errnoOf } from './model.js';

const ROOT = { uid: 0, gid: 0 };
let t: { dir: string; cleanup: () => void };
let pool: Pool;
let open: Filesystem[] = [];

function mkPool(opts: Parameters<typeof Pool.create>[1] = {}): Pool {
  pool = Pool.create(path.join(t.dir, 'pool'), { dataSizeBytes: 4 * GiB, minFreePercent: 0, ...opts });
  return pool;
}

function fsOf(id: DevId, opts?: { readOnly?: boolean }): Filesystem {
  const fs = Filesystem.open(pool, id, opts);
  open.push(fs);
  return fs;
}

function closeFs(fs: Filesystem): void {
  fs.close();
  open = open.filter((f) => f !== fs);
}

function writeFile(fs: Filesystem, p: string, data: string | Buffer, mode = 0o644, offset = 0): void {
  const fh = fs.create(p, mode, ROOT, constants.O_WRONLY | constants.O_CREAT);
  fs.write(fh, offset, Buffer.from(data));
  fs.release(fh);
}

function readFile(fs: Filesystem, p: string): Buffer {
  const fh = fs.open(p, constants.O_RDONLY);
  try {
    return fs.read(fh, 0, fs.fgetattr(fh).size);
  } finally {
    fs.release(fh);
  }
}

function names(fs: Filesystem, p: string): string[] {
  return fs
    .readdir(p)
    .map((e) => e.name)
    .sort();
}

/** Freeze `id` as an image and return a writable container on it. */
function container(id: DevId, name: string): DevId {
  pool.setReadOnly(id);
  return pool.createSnapshot(id, name);
}

beforeEach(() => {
  t = tmpDir('thinfs-union-');
});
afterEach(() => {
  for (const fs of open) {
    try {
      fs.close();
    } catch {
      /* pool already gone */
    }
  }
  open = [];
  try {
    pool.close();
  } catch {
    /* closed by the test */
  }
  t.cleanup();
});

describe('Docker graph-driver scenarios', () => {
  it('an empty base has a 0755 root owned 0:0 (writable and read-only views)', () => {
    mkPool();
    const base = pool.createThin('base');
    const ro = fsOf(base, { readOnly: true });
    for (const fs of [ro, fsOf(base)]) {
      const a = fs.getattr('/');
      expect(a.mode).toBe(constants.S_IFDIR | 0o755);
      expect([a.uid, a.gid, a.nlink, a.ino]).toEqual([0, 0, 2, 1]);
      expect(names(fs, '/')).toEqual(['.', '..']);
    }
    expect(errnoOf(() => ro.mkdir('/x', 0o755, ROOT))).toBe('EROFS');
  });

  it('a sticky 0705 directory owned 1:2 and a setuid 0222 file show identically in a snapshot', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    b.mkdir('/a subdir', 0o1705, ROOT);
    b.chown('/a subdir', 1, 2);
    writeFile(b, '/a file', 'Some data', 0o4222);
    closeFs(b);
    const snap = container(base, 'snap');
    for (const fs of [fsOf(snap), fsOf(base)]) {
      const d = fs.getattr('/a subdir');
      expect(d.mode).toBe(constants.S_IFDIR | 0o1705);
      expect([d.uid, d.gid]).toEqual([1, 2]);
      const f = fs.getattr('/a file');
      expect(f.mode).toBe(constants.S_IFREG | 0o4222);
      expect(readFile(fs, '/a file').toString()).toBe('Some data');
      expect(names(fs, '/')).toEqual(['.', '..', 'a file', 'a subdir']);
    }
  });

  it('128 stacked layers each rewriting one file: the top reads the last version, every layer its own', () => {
    mkPool({ blockSizeBytes: 4 * KiB });
    const ids: DevId[] = [pool.createThin('layer0', { kind: 'base' })];
    let fs = fsOf(ids[0]!);
    writeFile(fs, '/base-only', 'from the bottom');
    for (let i = 0; i < 128; i++) {
      if (i > 0) {
        ids.push(container(ids[i - 1]!, `layer${i}`));
        fs = fsOf(ids[i]!);
      }
      const fh = fs.open('/base-only', constants.O_RDONLY);
      fs.release(fh);
      const w = fs.create('/file', 0o644, ROOT, constants.O_WRONLY | constants.O_TRUNC);
      fs.write(w, 0, Buffer.from(`version ${i}`));
      fs.release(w);
      closeFs(fs);
    }
    expect(pool.getDevice(ids[127]!)!.depth).toBe(128);
    for (let i = 0; i < 128; i++) {
      const v = fsOf(ids[i]!, { readOnly: true });
      expect(readFile(v, '/file').toString()).toBe(`version ${i}`);
      expect(readFile(v, '/base-only').toString()).toBe('from the bottom');
      closeFs(v);
    }
    expect(pool.check().clean).toBe(true);
  });

  it('20 files changed in an upper layer: changes() has exactly those (and their directory, as Docker lists it)', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    b.mkdir('/directory-0', 0o755, ROOT);
    for (let i = 0; i < 20; i++) writeFile(b, `/directory-0/file-${i}`, `base ${i}`);
    for (let i = 0; i < 20; i++) writeFile(b, `/root-${i}`, `base ${i}`);
    closeFs(b);
    const up = container(base, 'upper');
    const u = fsOf(up);
    const expected: Change[] = [{ path: '/directory-0', kind: 'changed' }];
    const expectedRoot: Change[] = [];
    for (let j = 0; j < 20; j++) {
      for (const [dir, exp] of [
        ['/directory-0/file-', expected],
        ['/root-', expectedRoot],
      ] as const) {
        if (j % 3 === 0) {
          writeFile(u, `${dir}${j}`, `changed ${j}`);
          exp.push({ path: `${dir}${j}`, kind: 'changed' });
        } else if (j % 3 === 1) {
          writeFile(u, `${dir}6-${j}`, `added ${j}`);
          exp.push({ path: `${dir}6-${j}`, kind: 'added' });
        } else {
          u.unlink(`${dir}${j}`);
          exp.push({ path: `${dir}${j}`, kind: 'deleted' });
        }
      }
    }
    const changes = u.changes();
    const sort = (c: Change[]) => [...c].sort((a, b) => a.path.localeCompare(b.path));
    expect(sort(changes.filter((c) => c.path.startsWith('/directory-0')))).toEqual(sort(expected));
    expect(sort(changes.filter((c) => c.path.startsWith('/root-')))).toEqual(sort(expectedRoot));
    expect(changes).toHaveLength(41);
    expect(fsOf(base, { readOnly: true }).changes()).toHaveLength(41); // the base's own layer: all added
  });

  it('a 32 KiB write into a 1 GiB lower file allocates exactly one block in the container', () => {
    mkPool();
    const bs = pool.blockSizeBytes;
    const base = pool.createThin('base', { sizeLimitBytes: 2 * GiB });
    const b = fsOf(base);
    const target = 512 * MiB;
    writeFile(b, '/big', Buffer.alloc(bs, 0x11), 0o644, target);
    b.truncate('/big', GiB);
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    pool.commit();
    const usedBefore = pool.status().dataUsedBytes;
    const fh = cfs.open('/big', constants.O_RDWR);
    cfs.write(fh, target + 16 * KiB, Buffer.alloc(32 * KiB, 0x22));
    expect(pool.status().dataUsedBytes - usedBefore).toBe(bs);
    expect(pool.getDevice(c)!.exclusiveBlocks).toBe(1);
    const back = cfs.read(fh, target, bs);
    expect(back.subarray(0, 16 * KiB).equals(Buffer.alloc(16 * KiB, 0x11))).toBe(true);
    expect(back.subarray(16 * KiB, 48 * KiB).equals(Buffer.alloc(32 * KiB, 0x22))).toBe(true);
    expect(back.subarray(48 * KiB).equals(Buffer.alloc(16 * KiB, 0x11))).toBe(true);
    cfs.release(fh);
    expect(cfs.getattr('/big').size).toBe(GiB);
    const bro = fsOf(base, { readOnly: true });
    const bh = bro.open('/big', constants.O_RDONLY);
    expect(bro.read(bh, target, bs).equals(Buffer.alloc(bs, 0x11))).toBe(true);
    bro.release(bh);
  });

  it('unlinking a file whose blocks the container owns returns them to the host after commit', () => {
    mkPool();
    const base = pool.createThin('base');
    closeFs(fsOf(base));
    const c = container(base, 'c');
    const cfs = fsOf(c);
    writeFile(cfs, '/f', Buffer.alloc(8 * MiB, 0x5a));
    cfs.commit();
    const before = allocatedBytes(pool.dataFile);
    cfs.unlink('/f');
    cfs.commit();
    const after = allocatedBytes(pool.dataFile);
    expect(before - after).toBeGreaterThanOrEqual(8 * MiB);
    expect(pool.getDevice(c)!.exclusiveBlocks).toBe(0);
    expect(pool.check().clean).toBe(true);
  });

  it('open + unlink + write + read works until release, then the blocks are freed', () => {
    mkPool({ inlineMaxBytes: 0 }); // counts pool blocks
    const base = pool.createThin('base');
    const b = fsOf(base);
    writeFile(b, '/lower', 'lower data');
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    const fh = cfs.open('/lower', constants.O_RDWR);
    cfs.unlink('/lower');
    expect(errnoOf(() => cfs.getattr('/lower'))).toBe('ENOENT');
    cfs.write(fh, 100_000, Buffer.from('tail'));
    expect(cfs.read(fh, 0, 10).toString()).toBe('lower data');
    expect(cfs.read(fh, 100_000, 10).toString()).toBe('tail');
    expect(cfs.fgetattr(fh).nlink).toBe(0);
    // The new block, and the old last block (its bytes past the old end are zeroed before growing).
    expect(pool.getDevice(c)!.exclusiveBlocks).toBe(2);
    cfs.release(fh);
    expect(pool.getDevice(c)!.exclusiveBlocks).toBe(0);
    expect(readFile(fsOf(base, { readOnly: true }), '/lower').toString()).toBe('lower data');
    expect(pool.check().clean).toBe(true);
  });
});

describe('union rules', () => {
  it('whiteouts hide lower entries; rmdir sees lower entries; readdir merges; the image never changes', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    b.mkdir('/d', 0o755, ROOT);
    writeFile(b, '/d/lower', 'L');
    writeFile(b, '/gone', 'G');
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    expect(errnoOf(() => cfs.rmdir('/d'))).toBe('ENOTEMPTY');
    writeFile(cfs, '/d/upper', 'U');
    expect(names(cfs, '/d')).toEqual(['.', '..', 'lower', 'upper']);
    cfs.unlink('/gone');
    cfs.unlink('/d/lower');
    expect(names(cfs, '/')).toEqual(['.', '..', 'd']);
    expect(errnoOf(() => cfs.rmdir('/d'))).toBe('ENOTEMPTY');
    cfs.unlink('/d/upper');
    cfs.rmdir('/d');
    expect(names(cfs, '/')).toEqual(['.', '..']);
    cfs.mkdir('/d', 0o700, ROOT);
    expect(names(cfs, '/d')).toEqual(['.', '..']);
    writeFile(cfs, '/gone', 'new');
    expect(readFile(cfs, '/gone').toString()).toBe('new');
    const img = fsOf(base, { readOnly: true });
    expect(names(img, '/d')).toEqual(['.', '..', 'lower']);
    expect(readFile(img, '/gone').toString()).toBe('G');
    expect(cfs.changes()).toEqual([
      { path: '/d', kind: 'changed', opaque: true },
      { path: '/gone', kind: 'changed' },
    ]);
  });

  it('hard links stay one inode across copy-up; inode numbers survive copy-up and rename', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    writeFile(b, '/a', 'shared');
    b.link('/a', '/b');
    b.mkdir('/dir', 0o755, ROOT);
    writeFile(b, '/dir/x', 'x');
    const ino = b.inoAt('/a');
    const xino = b.inoAt('/dir/x');
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    cfs.chmod('/a', 0o600);
    expect(cfs.getattr('/b').mode & 0o777).toBe(0o600);
    expect(cfs.getattr('/b').ino).toBe(ino);
    writeFile(cfs, '/b', 'SHARED');
    expect(readFile(cfs, '/a').toString()).toBe('SHARED');
    cfs.unlink('/a');
    expect(cfs.getattr('/b').nlink).toBe(1);
    cfs.rename('/dir', '/moved');
    expect(cfs.inoAt('/moved/x')).toBe(xino);
    expect(errnoOf(() => cfs.getattr('/dir/x'))).toBe('ENOENT');
    const img = fsOf(base, { readOnly: true });
    expect(img.getattr('/a').nlink).toBe(2);
    expect(readFile(img, '/a').toString()).toBe('shared');
    expect(cfs.changes()).toEqual([
      { path: '/a', kind: 'deleted' },
      { path: '/b', kind: 'changed' },
      { path: '/dir', kind: 'deleted' },
      { path: '/moved', kind: 'added' },
      { path: '/moved/x', kind: 'added' },
    ]);
  });

  it('chmod, chown, utimens and setxattr copy no data', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    writeFile(b, '/f', Buffer.alloc(MiB, 1));
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    const used = pool.status().dataUsedBytes;
    cfs.chmod('/f', 0o4711);
    cfs.chown('/f', 5, 6);
    cfs.utimens('/f', 1_000_000_000n, 'now');
    cfs.setxattr('/f', 'user.k', Buffer.from('v'), 0);
    expect(pool.status().dataUsedBytes).toBe(used);
    expect(pool.getDevice(c)!.exclusiveBlocks).toBe(0);
    const a = cfs.getattr('/f');
    expect([a.uid, a.gid, a.atimeNs]).toEqual([5, 6, 1_000_000_000n]);
    expect(readFile(cfs, '/f').equals(Buffer.alloc(MiB, 1))).toBe(true);
  });

  it('shrink then grow reads zeros although the lower layer holds data there; truncate to 0 drops lower data', () => {
    mkPool({ blockSizeBytes: 4 * KiB });
    const base = pool.createThin('base');
    const b = fsOf(base);
    writeFile(b, '/f', Buffer.alloc(20_000, 0xaa));
    writeFile(b, '/g', Buffer.alloc(20_000, 0xbb));
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    cfs.truncate('/f', 100);
    cfs.truncate('/f', 20_000);
    const f = readFile(cfs, '/f');
    expect(f.subarray(0, 100).equals(Buffer.alloc(100, 0xaa))).toBe(true);
    expect(f.subarray(100).equals(Buffer.alloc(19_900))).toBe(true);
    const fh = cfs.open('/g', constants.O_RDWR | constants.O_TRUNC);
    cfs.ftruncate(fh, 20_000);
    expect(cfs.read(fh, 0, 20_000).equals(Buffer.alloc(20_000))).toBe(true);
    cfs.release(fh);
    expect(readFile(fsOf(base, { readOnly: true }), '/g').equals(Buffer.alloc(20_000, 0xbb))).toBe(true);
  });

  it('read-only views refuse every change with EROFS', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    writeFile(b, '/f', 'x');
    b.mkdir('/d', 0o755, ROOT);
    closeFs(b);
    pool.setReadOnly(base);
    const img = fsOf(base);
    const calls: [string, () => unknown][] = [
      ['mkdir', () => img.mkdir('/n', 0o755, ROOT)],
      ['mknod', () => img.mknod('/n', constants.S_IFIFO | 0o644, 0, ROOT)],
      ['symlink', () => img.symlink('t', '/n', ROOT)],
      ['link', () => img.link('/f', '/n')],
      ['unlink', () => img.unlink('/f')],
      ['rmdir', () => img.rmdir('/d')],
      ['rename', () => img.rename('/f', '/n')],
      ['create', () => img.create('/n', 0o644, ROOT)],
      ['open for write', () => img.open('/f', constants.O_WRONLY)],
      ['truncate', () => img.truncate('/f', 0)],
      ['chmod', () => img.chmod('/f', 0)],
      ['chown', () => img.chown('/f', 1, 1)],
      ['utimens', () => img.utimens('/f', 'now', 'now')],
      ['setxattr', () => img.setxattr('/f', 'user.a', Buffer.from('x'), 0)],
      ['removexattr', () => img.removexattr('/f', 'user.a')],
      ['makeOpaque', () => img.makeOpaque('/d')],
      ['access W_OK', () => img.access('/f', constants.W_OK)],
    ];
    for (const [what, fn] of calls) expect(errnoOf(fn), what).toBe('EROFS');
    expect(readFile(img, '/f').toString()).toBe('x');
    const c = pool.createSnapshot(base, 'c');
    const forced = fsOf(c, { readOnly: true });
    expect(errnoOf(() => forced.mkdir('/n', 0o755, ROOT))).toBe('EROFS');
  });

  it('xattrs: create/replace flags, per-layer copy-up, removal hides the lower value', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    writeFile(b, '/f', 'x');
    b.setxattr('/f', 'security.capability', Buffer.from([1, 0, 0, 2]), XATTR_CREATE);
    b.setxattr('/f', 'user.keep', Buffer.from('k'), 0);
    b.setxattr('/f', 'trusted.t', Buffer.from('t'), 0);
    expect(errnoOf(() => b.setxattr('/f', 'user.keep', Buffer.from('x'), XATTR_CREATE))).toBe('EEXIST');
    expect(errnoOf(() => b.setxattr('/f', 'user.none', Buffer.from('x'), XATTR_REPLACE))).toBe('ENODATA');
    expect(errnoOf(() => b.getxattr('/f', 'user.none'))).toBe('ENODATA');
    expect(errnoOf(() => b.setxattr('/f', 'system.posix_acl_access', Buffer.from('x'), 0))).toBe('ENOTSUP');
    b.symlink('f', '/l', ROOT);
    expect(errnoOf(() => b.setxattr('/l', 'user.x', Buffer.from('x'), 0))).toBe('EPERM');
    b.setxattr('/l', 'trusted.x', Buffer.from('x'), 0);
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    expect(cfs.listxattr('/f')).toEqual(['security.capability', 'trusted.t', 'user.keep']);
    cfs.removexattr('/f', 'user.keep');
    cfs.setxattr('/f', 'trusted.t', Buffer.from('T'), XATTR_REPLACE);
    expect(errnoOf(() => cfs.removexattr('/f', 'user.keep'))).toBe('ENODATA');
    expect(cfs.listxattr('/f')).toEqual(['security.capability', 'trusted.t']);
    expect(cfs.getxattr('/f', 'trusted.t').toString()).toBe('T');
    cfs.chown('/f', 0, 0); // drops security.capability, as Linux does
    expect(cfs.listxattr('/f')).toEqual(['trusted.t']);
    const img = fsOf(base, { readOnly: true });
    expect(img.listxattr('/f')).toEqual(['security.capability', 'trusted.t', 'user.keep']);
    expect(img.getxattr('/f', 'trusted.t').toString()).toBe('t');
  });

  it('makeOpaque: a fresh empty directory with the same mode and owner hides everything below', () => {
    mkPool();
    const base = pool.createThin('base');
    const b = fsOf(base);
    b.mkdir('/d', 0o750, ROOT);
    b.chown('/d', 3, 4);
    writeFile(b, '/d/lower', 'L');
    b.mkdir('/d/sub', 0o755, ROOT);
    closeFs(b);
    const c = container(base, 'c');
    const cfs = fsOf(c);
    writeFile(cfs, '/d/upper', Buffer.alloc(100_000, 1));
    const oldIno = cfs.inoAt('/d');
    cfs.makeOpaque('/d');
    const a = cfs.getattr('/d');
    expect(a.ino).not.toBe(oldIno);
    expect([a.mode, a.uid, a.gid, a.nlink]).toEqual([constants.S_IFDIR | 0o750, 3, 4, 2]);
    expect(names(cfs, '/d')).toEqual(['.', '..']);
    expect(errnoOf(() => cfs.getattr('/d/lower'))).toBe('ENOENT');
    expect(pool.getDevice(c)!.exclusiveBlocks).toBe(0);
    writeFile(cfs, '/d/new', 'n');
    expect(names(fsOf(base, { readOnly: true }), '/d')).toEqual(['.', '..', 'lower', 'sub']);
    expect(cfs.changes()).toEqual([
      { path: '/d', kind: 'changed', opaque: true },
      { path: '/d/new', kind: 'added' },
    ]);
    cfs.makeOpaque('/');
    expect(names(cfs, '/')).toEqual(['.', '..']);
    expect(cfs.getattr('/').ino).toBe(1);
    expect(pool.check().clean).toBe(true);
  });

  it('a snapshot of an open writable device freezes its state; both go on independently', () => {
    mkPool();
    const dev = pool.createThin('c');
    const fs = fsOf(dev);
    writeFile(fs, '/f', 'one');
    fs.mkdir('/d', 0o755, ROOT);
    const img = pool.createSnapshot(dev, 'img', { readOnly: true });
    writeFile(fs, '/f', 'two');
    fs.rmdir('/d');
    writeFile(fs, '/g', 'g');
    const ifs = fsOf(img);
    expect(readFile(ifs, '/f').toString()).toBe('one');
    expect(names(ifs, '/')).toEqual(['.', '..', 'd', 'f']);
    expect(readFile(fs, '/f').toString()).toBe('two');
    expect(names(fs, '/')).toEqual(['.', '..', 'f', 'g']);
    expect(fs.changes()).toEqual([
      { path: '/d', kind: 'deleted' },
      { path: '/f', kind: 'changed' },
      { path: '/g', kind: 'added' },
    ]);
  });

  it('one writable view per device; read-only views beside it see its writes', () => {
    mkPool();
    const dev = pool.createThin('c');
    const w = fsOf(dev);
    expect(errnoOf(() => Filesystem.open(pool, dev))).toBe('EBUSY');
    const r = fsOf(dev, { readOnly: true });
    writeFile(w, '/a', 'x');
    expect(r.getattr('/a').size).toBe(1);
    w.rename('/a', '/b');
    expect(errnoOf(() => r.getattr('/a'))).toBe('ENOENT');
    expect(r.getattr('/b').size).toBe(1);
  });

  it('sibling containers hand out distinct inode numbers', () => {
    mkPool();
    const base = pool.createThin('base');
    closeFs(fsOf(base));
    const c1 = container(base, 'c1');
    const c2 = pool.createSnapshot(base, 'c2');
    const f1 = fsOf(c1);
    const f2 = fsOf(c2);
    writeFile(f1, '/x', '1');
    writeFile(f2, '/x', '2');
    expect(f1.inoAt('/x')).not.toBe(f2.inoAt('/x'));
    expect(readFile(f1, '/x').toString()).toBe('1');
    expect(readFile(f2, '/x').toString()).toBe('2');
  });

  it('deleting a container drops its namespace rows with its layer', () => {
    mkPool();
    const base = pool.createThin('base');
    closeFs(fsOf(base));
    const c = container(base, 'c');
    const cfs = fsOf(c);
    for (let i = 0; i < 10; i++) writeFile(cfs, `/f${i}`, 'data');
    cfs.setxattr('/f1', 'user.a', Buffer.from('1'), 0);
    closeFs(cfs);
    const layer = pool.getDevice(c)!.layerId;
    expect(pool.deleteDevice(c)).toBe('deleted');
    pool.commit();
    const db = pool.metadataDb();
    for (const table of ['fs_inodes', 'fs_dirents', 'fs_xattrs']) {
      expect(db.prepare(`SELECT count(*) FROM ${table} WHERE layer = ?`).pluck().get(layer), table).toBe(0);
    }
    expect(pool.check().clean).toBe(true);
  });

  it('a crash with an unlinked open file: the orphan is freed on the next writable open', () => {
    mkPool();
    const dev = pool.createThin('c');
    const fs = fsOf(dev);
    writeFile(fs, '/f', Buffer.alloc(MiB, 3));
    const fh = fs.open('/f', constants.O_RDWR);
    fs.unlink('/f');
    fs.commit();
    expect(pool.getDevice(dev)!.exclusiveBlocks).toBeGreaterThan(0);
    pool.close({ commit: false });
    open = [];
    void fh;
    pool = Pool.open(path.join(t.dir, 'pool'));
    const again = fsOf(dev);
    expect(names(again, '/')).toEqual(['.', '..']);
    again.commit();
    expect(pool.getDevice(dev)!.exclusiveBlocks).toBe(0);
    expect(pool.check().clean).toBe(true);
  });

  it('statfs: blocks from the smaller of pool and device limit; bfree drops as data is written', () => {
    mkPool({ dataSizeBytes: GiB });
    const dev = pool.createThin('c', { sizeLimitBytes: 64 * MiB });
    const fs = fsOf(dev);
    const s0 = fs.statfs();
    const unit = s0.frsize;
    expect(s0.bsize).toBe(unit);
    expect(pool.blockSizeBytes % unit).toBe(0);
    expect(s0.blocks).toBe((64 * MiB) / unit);
    expect(s0.namemax).toBe(255);
    writeFile(fs, '/f', Buffer.alloc(MiB));
    const s1 = fs.statfs();
    expect(s0.bfree - s1.bfree).toBe(MiB / unit);
    expect(s1.ffree).toBeLessThan(s0.ffree);
    const h = fs.create('/big', 0o644, ROOT);
    expect(errnoOf(() => fs.write(h, 0, Buffer.alloc(64 * MiB)))).toBe('ENOSPC');
    expect(fs.fgetattr(h).size).toBe(0);
    fs.release(h);
    expect(pool.check().clean).toBe(true);
  });

  it.each([
    ['the device limit', { dataSizeBytes: GiB }, 64 * MiB],
    ['the pool', { dataSizeBytes: 64 * MiB }, GiB],
  ])('statfs counts small files (held inline) at their size when %s binds', (_what, poolOpts, sizeLimitBytes) => {
    mkPool(poolOpts);
    expect(pool.status().inlineMaxBytes).toBeGreaterThan(2000);
    const fs = fsOf(pool.createThin('c', { sizeLimitBytes }));
    const usedBytes = () => {
      const s = fs.statfs();
      return (s.blocks - s.bfree) * s.frsize;
    };
    const before = usedBytes();
    let written = 0;
    for (let i = 0; i < 200; i++) {
      writeFile(fs, `/small-${i}`, Buffer.alloc(1000 + i, 7));
      written += 1000 + i;
    }
    expect(pool.status().dataUsedBytes).toBe(0); // all inline: no pool block taken
    const grown = usedBytes() - before;
    expect(grown).toBeGreaterThanOrEqual(written);
    expect(grown).toBeLessThan(written + 2 * fs.statfs().frsize);
    expect(pool.status().inlineBytes).toBe(written);
  });

  it('the path cache follows renames and rmdir of ancestors', () => {
    mkPool();
    const fs = fsOf(pool.createThin('c'));
    let p = '';
    for (let i = 0; i < 20; i++) {
      p += `/d${i}`;
      fs.mkdir(p, 0o755, ROOT);
    }
    writeFile(fs, `${p}/leaf`, 'leaf');
    const ino = fs.inoAt(`${p}/leaf`);
    fs.rename('/d0/d1', '/d0/x1');
    expect(errnoOf(() => fs.getattr(`${p}/leaf`))).toBe('ENOENT');
    const moved = p.replace('/d0/d1', '/d0/x1');
    expect(fs.inoAt(`${moved}/leaf`)).toBe(ino);
    fs.mkdir('/d0/d1', 0o755, ROOT);
    expect(errnoOf(() => fs.getattr('/d0/d1/d2'))).toBe('ENOENT');
    fs.rename('/d0/x1', '/d0/d1');
    expect(fs.inoAt(`${p}/leaf`)).toBe(ino);
  });

  it('mknod makes fifos, sockets and device nodes (metadata only); access checks permission bits', () => {
    mkPool();
    const fs = fsOf(pool.createThin('c'));
    fs.mknod('/fifo', constants.S_IFIFO | 0o644, 0, ROOT);
    fs.mknod('/sock', constants.S_IFSOCK | 0o755, 0, ROOT);
    const chr = fs.mknod('/null', constants.S_IFCHR | 0o666, 0x0103, ROOT);
    fs.mknod('/blk', constants.S_IFBLK | 0o660, 0x0800, { uid: 0, gid: 6 });
    expect(chr.rdev).toBe(0x0103);
    expect(fs.getattr('/blk').gid).toBe(6);
    expect(names(fs, '/')).toEqual(['.', '..', 'blk', 'fifo', 'null', 'sock']);
    expect(fs.readdir('/').find((e) => e.name === 'fifo')!.type).toBe(constants.S_IFIFO);
    expect(errnoOf(() => fs.mknod('/dir', constants.S_IFDIR | 0o755, 0, ROOT))).toBe('EPERM');
    writeFile(fs, '/secret', 's', 0o600);
    fs.chown('/secret', 1000, 1000);
    fs.access('/secret', constants.R_OK | constants.W_OK, { uid: 1000, gid: 1000 });
    expect(errnoOf(() => fs.access('/secret', constants.R_OK, { uid: 1001, gid: 1001 }))).toBe('EACCES');
    expect(errnoOf(() => fs.access('/secret', constants.X_OK, ROOT))).toBe('EACCES');
    fs.access('/secret', constants.R_OK, ROOT);
    expect(errnoOf(() => fs.access('/nope', constants.F_OK))).toBe('ENOENT');
  });

  it('EMLINK at 65000 links', () => {
    mkPool();
    const fs = fsOf(pool.createThin('c'));
    writeFile(fs, '/f', 'x');
    fs.mkdir('/l', 0o755, ROOT);
    for (let i = 1; i < 65000; i++) fs.link('/f', `/l/${i}`);
    expect(fs.getattr('/f').nlink).toBe(65000);
    expect(errnoOf(() => fs.link('/f', '/l/one-more'))).toBe('EMLINK');
  });

  it('abort rolls the namespace back and drops the caches', () => {
    mkPool();
    const fs = fsOf(pool.createThin('c'));
    writeFile(fs, '/kept', 'k');
    fs.commit();
    fs.mkdir('/gone', 0o755, ROOT);
    fs.rename('/kept', '/renamed');
    pool.abort();
    expect(names(fs, '/')).toEqual(['.', '..', 'kept']);
    expect(errnoOf(() => fs.getattr('/gone'))).toBe('ENOENT');
    expect(readFile(fs, '/kept').toString()).toBe('k');
  });

  it('a pool opened read-only shows its filesystems read-only', () => {
    mkPool();
    const dev = pool.createThin('c');
    const fs = fsOf(dev);
    writeFile(fs, '/f', 'kept');
    closeFs(fs);
    pool.close();
    pool = Pool.open(path.join(t.dir, 'pool'), { readOnly: true });
    const ro = fsOf(dev);
    expect(readFile(ro, '/f').toString()).toBe('kept');
    expect(errnoOf(() => ro.unlink('/f'))).toBe('EROFS');
  });

  it('after a crash rolls back an append, growing the file reads zeros past the old end', () => {
    mkPool();
    const dev = pool.createThin('c');
    let fs = fsOf(dev);
    writeFile(fs, '/f', 'a');
    fs.commit();
    const fh = fs.open('/f', constants.O_WRONLY | constants.O_APPEND);
    fs.write(fh, 0, Buffer.from('stale')); // in place into the committed block
    pool.close({ commit: false });
    open = [];
    pool = Pool.open(path.join(t.dir, 'pool'));
    fs = fsOf(dev);
    expect(readFile(fs, '/f').toString()).toBe('a');
    fs.truncate('/f', 6);
    expect(readFile(fs, '/f').equals(Buffer.from('a\0\0\0\0\0'))).toBe(true);
    writeFile(fs, '/f', 'z', 0o644, 10);
    expect(readFile(fs, '/f').equals(Buffer.from('a\0\0\0\0\0\0\0\0\0z'))).toBe(true);
  });
});

describe('st_blocks', () => {
  it('counts the blocks a sparse file maps, through the chain and after copy-up', () => {
    mkPool({ inlineMaxBytes: 0 }); // pool blocks; an inline block counts its bytes (test/pool/inline.test.ts)
    const base = pool.createThin('base');
    const fb = fsOf(base);
    writeFile(fb, '/sparse', Buffer.alloc(10, 1), 0o644, 10 * MiB); // one block at 10 MiB
    expect(fb.getattr('/sparse').size).toBe(10 * MiB + 10);
    expect(fb.getattr('/sparse').blocks).toBe((64 * KiB) / 512);
    closeFs(fb);
    pool.setReadOnly(base);
    const c = fsOf(pool.createSnapshot(base, 'c'));
    expect(c.getattr('/sparse').blocks).toBe((64 * KiB) / 512);
    writeFile(c, '/sparse', Buffer.alloc(10, 2), 0o644, 0); // a second block, in the container
    expect(c.getattr('/sparse').blocks).toBe((2 * 64 * KiB) / 512);
    c.truncate('/sparse', 100);
    expect(c.getattr('/sparse').blocks).toBe((64 * KiB) / 512);
  });
});
