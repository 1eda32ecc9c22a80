/**
 * Layer import, in process against Pool + Filesystem: what a directory or a tar keeps
 * (owners, modes with setuid/setgid/sticky, nanosecond times, binary xattrs, hard links,
 * symlinks, fifos, device nodes, holes), GNU tar compatibility, OCI whiteout rules
 * (including same-layer entries), and refusals — escaping names, truncated and corrupt
 * archives — which leave the pool exactly as it was.
 */
import { spawnSync } from 'node:child_process';
import { constants } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { beforeEach, describe, expect, it } from 'vitest';
import { importImage, type ImportProgress } from '../../src/layers/index.js';
import { GiB, KiB, MiB, type DevId } from '../../src/pool/index.js';
import { makeTar, writeTar, type TarEntry } from '../helpers/layers.js';
import { freshPool } from '../helpers/scratch-pool.js';
import { namesIn, readFile, treeOf, type NodeInfo } from '../helpers/tree.js';

const isRoot = process.getuid?.() === 0;
const have = (cmd: string) => spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;

const s = freshPool('thinfs-import-', { dataSizeBytes: 1 * GiB, minFreePercent: 0 });
const view = s.view;

function sh(script: string, cwd: string): void {
  const r = spawnSync('sh', ['-ec', script], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${script}: ${r.stderr}`);
}

/** The tree without inode numbers (they differ between two imports of the same content). */
function shape(tree: Record<string, NodeInfo>): Record<string, Omit<NodeInfo, 'ino'>> {
  return Object.fromEntries(Object.entries(tree).map(([p, { ino: _ino, ...rest }]) => [p, rest]));
}

// security.capability v2 with cap_net_raw and cap_setuid permitted, effective: binary (0x80).
const CAPS = Buffer.from([0x01, 0, 0, 0x02, 0x80, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);

/** A source directory with every kind of entry; device nodes, owners and trusted/security xattrs as root. */
function makeSourceDir(): string {
  const src = path.join(s.dir, 'src');
  fs.mkdirSync(src);
  sh(
    `
    mkdir -p a sticky empty
    printf 'hello file\\n' > a/file
    ln a/file a/hard1; ln a/file hard2
    printf '#!/bin/sh\\n' > suid; chmod 04711 suid
    printf 'g\\n' > sgid; chmod 02755 sgid
    chmod 01777 sticky; chmod 02755 a
    ln -s /etc/passwd abs-link; ln -s ../x rel-link
    mkfifo fifo
    truncate -s 10M sparse; printf 'middle' | dd of=sparse bs=1 seek=5242880 conv=notrunc status=none
    touch -h -d '@1600000000.123456789' a/file abs-link fifo
    touch -d '@1500000000.987654321' a sticky
    `,
    src,
  );
  if (isRoot) {
    sh(
      `
      mknod chr c 4 64; mknod blk b 7 3; chmod 0620 chr
      chown 1001:1002 a/file; chown -h 1003:1004 abs-link; chown 1000:1000 a
      chmod 04711 suid
      setfattr -n security.capability -v 0s${CAPS.toString('base64')} suid
      setfattr -n trusted.t -v 0x00ff01 a/file
      `,
      src,
    );
  }
  sh('setfattr -n user.note -v "dir note" a && setfattr -n user.bin -v 0xdeadbeef00 a/file || true', src);
  return src;
}

describe('importing a directory', () => {
  it('keeps owners, modes, ns mtimes, xattrs, hard links, symlinks, fifos, device nodes and holes', async () => {
    const src = makeSourceDir();
    const r = await importImage(s.pool, { name: 'img', source: src });
    expect(r.sourceKind).toBe('directory');
    view(r.id, (v) => {
      for (const rel of ['', ...fs.readdirSync(src, { recursive: true, encoding: 'utf8' })]) {
        const st = fs.lstatSync(path.join(src, rel), { bigint: true });
        const a = v.getattr(`/${rel}`);
        expect({ rel, mode: a.mode, uid: a.uid, gid: a.gid, nlink: a.nlink, size: a.size, mtime: a.mtimeNs }).toEqual({
          rel,
          mode: Number(st.mode),
          uid: Number(st.uid),
          gid: Number(st.gid),
          nlink: st.isDirectory() ? a.nlink : Number(st.nlink),
          size: st.isDirectory() ? a.size : Number(st.size),
          mtime: st.mtimeNs,
        });
        if (st.isCharacterDevice() || st.isBlockDevice()) expect(a.rdev).toBe(Number(st.rdev));
      }
      expect(v.getattr('/a/file').mtimeNs).toBe(1_600_000_000_123_456_789n);
      expect(v.getattr('/a').mtimeNs).toBe(1_500_000_000_987_654_321n);
      expect(v.getattr('/a/file').ino).toBe(v.getattr('/hard2').ino);
      expect(v.getattr('/a/file').nlink).toBe(3);
      expect(v.readlink('/abs-link')).toBe('/etc/passwd');
      expect(v.readlink('/rel-link')).toBe('../x');
      expect(v.getattr('/fifo').mode & constants.S_IFMT).toBe(constants.S_IFIFO);
      expect(v.getattr('/sticky').mode & 0o7777).toBe(0o1777);
      expect(v.getattr('/suid').mode & 0o7777).toBe(0o4711);
      expect(v.getattr('/sgid').mode & 0o7777).toBe(0o2755);
      const sparse = readFile(v, '/sparse');
      expect(sparse.length).toBe(10 * MiB);
      expect(sparse.subarray(5 * MiB, 5 * MiB + 6).toString()).toBe('middle');
      expect(sparse.subarray(0, 5 * MiB).every((b) => b === 0)).toBe(true);
      if (v.listxattr('/a').includes('user.note')) {
        expect(v.getxattr('/a', 'user.note').toString()).toBe('dir note');
        expect(v.getxattr('/a/file', 'user.bin')).toEqual(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00]));
      }
      if (isRoot) {
        expect(v.getattr('/chr')).toMatchObject({ mode: constants.S_IFCHR | 0o620, rdev: (4 << 8) | 64 });
        expect(v.getattr('/blk')).toMatchObject({ mode: constants.S_IFBLK | 0o644, rdev: (7 << 8) | 3 });
        expect(v.getxattr('/suid', 'security.capability')).toEqual(CAPS);
        expect(v.getattr('/suid').mode & 0o7777).toBe(0o4711);
        expect(v.getxattr('/a/file', 'trusted.t')).toEqual(Buffer.from([0x00, 0xff, 0x01]));
      }
    });
    // Holes stay holes: the 10 MiB file with 6 bytes costs one block.
    expect(s.pool.getDevice(r.id)!.mappedBlocks).toBeLessThan(8);
    expect(r.stats).toMatchObject({ hardlinks: 2, symlinks: 2 });
  });

  it.skipIf(!have('tar') || !have('setfattr'))('a GNU tar (--format=pax --xattrs) of the directory imports to the same tree', async () => {
    const src = makeSourceDir();
    const tarFile = path.join(s.dir, 'gnu.tar');
    sh(`tar --format=pax --xattrs --xattrs-include='*' -C '${src}' -cf '${tarFile}' .`, s.dir);
    const fromDir = await importImage(s.pool, { name: 'from-dir', source: src });
    const fromTar = await importImage(s.pool, { name: 'from-tar', source: tarFile });
    expect(fromTar.sourceKind).toBe('tar');
    const a = view(fromDir.id, (v) => shape(treeOf(v)));
    const b = view(fromTar.id, (v) => shape(treeOf(v)));
    expect(b).toEqual(a);
  });
});

describe('importing a tar', () => {
  it('keeps PAX ns times, binary SCHILY xattrs, numeric owners, device nodes, fifos, links', async () => {
    const file = writeTar(path.join(s.dir, 'l.tar'), [
      { path: './', type: 'dir', mode: 0o755 },
      { path: './bin/', type: 'dir', mode: 0o755 },
      {
        path: './bin/ping',
        data: 'ELF',
        mode: 0o4755,
        uid: 0,
        gid: 0,
        pax: { mtime: '1700000000.123456789', atime: '1700000001.5', 'SCHILY.xattr.security.capability': CAPS, 'SCHILY.xattr.user.k': 'v' },
      },
      { path: './bin/ping6', type: 'link', linkpath: './bin/ping' },
      { path: './bin/sh', type: 'symlink', linkpath: '/bin/busybox', uid: 5, gid: 6 },
      { path: './dev/', type: 'dir' },
      { path: './dev/tty', type: 'char', devmaj: 5, devmin: 0, mode: 0o666 },
      { path: './dev/big', type: 'char', devmaj: 300, devmin: 70000, mode: 0o600 },
      { path: './dev/loop0', type: 'block', devmaj: 7, devmin: 0, mode: 0o660, gid: 6 },
      { path: './run/', type: 'dir', mode: 0o755 },
      { path: './run/fifo', type: 'fifo', mode: 0o600 },
      { path: './home/u/', type: 'dir', mode: 0o700, uid: 70000, gid: 70001 },
      { path: './home/u/x', data: 'x', uid: 70000, gid: 70001, mode: 0o2640 },
      { path: './tmp/', type: 'dir', mode: 0o1777 },
    ]);
    const r = await importImage(s.pool, { name: 'img', source: file });
    view(r.id, (v) => {
      expect(v.getattr('/bin/ping')).toMatchObject({ mode: constants.S_IFREG | 0o4755, nlink: 2, mtimeNs: 1_700_000_000_123_456_789n, atimeNs: 1_700_000_001_500_000_000n });
      expect(v.getxattr('/bin/ping', 'security.capability')).toEqual(CAPS);
      expect(v.getxattr('/bin/ping', 'user.k').toString()).toBe('v');
      expect(v.getattr('/bin/ping6').ino).toBe(v.getattr('/bin/ping').ino);
      expect(v.readlink('/bin/sh')).toBe('/bin/busybox');
      expect(v.getattr('/bin/sh')).toMatchObject({ uid: 5, gid: 6, mtimeNs: 1_700_000_000_000_000_000n });
      expect(v.getattr('/dev/tty')).toMatchObject({ mode: constants.S_IFCHR | 0o666, rdev: (5 << 8) | 0 });
      // Linux's st_rdev encoding of 300:70000, as glibc makedev.
      expect(v.getattr('/dev/big').rdev).toBe((70000 & 0xff) | ((300 & 0xfff) << 8) | ((70000 & ~0xff) << 12));
      expect(v.getattr('/dev/loop0')).toMatchObject({ mode: constants.S_IFBLK | 0o660, rdev: 7 << 8, gid: 6 });
      expect(v.getattr('/run/fifo').mode).toBe(constants.S_IFIFO | 0o600);
      expect(v.getattr('/home/u')).toMatchObject({ mode: constants.S_IFDIR | 0o700, uid: 70000, gid: 70001 });
      expect(v.getattr('/home/u/x')).toMatchObject({ mode: constants.S_IFREG | 0o2640, uid: 70000, gid: 70001 });
      expect(v.getattr('/tmp').mode).toBe(constants.S_IFDIR | 0o1777);
      expect(v.getattr('/').mtimeNs).toBe(1_700_000_000_000_000_000n);
    });
    expect(r.stats).toMatchObject({ files: 2, hardlinks: 1, symlinks: 1, nodes: 4, directories: 6 });
  });

  it('reads gzip tars and reports progress', async () => {
    const file = writeTar(path.join(s.dir, 'l.tar.gz'), [{ path: 'a/b', data: Buffer.alloc(300 * KiB, 1) }], { gzip: true });
    const seen: ImportProgress[] = [];
    const r = await importImage(s.pool, { name: 'img', source: file, onProgress: (p) => seen.push(p) });
    view(r.id, (v) => expect(readFile(v, '/a/b').equals(Buffer.alloc(300 * KiB, 1))).toBe(true));
    expect(seen.at(-1)).toMatchObject({ unit: 'bytes', done: fs.statSync(file).size, total: fs.statSync(file).size, entries: 1 });
  });

  it('an archive of only its end blocks is an empty layer', async () => {
    const base = await importImage(s.pool, { name: 'base', source: writeTar(path.join(s.dir, 'b.tar'), [{ path: 'f', data: 'f' }]) });
    const r = await importImage(s.pool, { name: 'empty', source: writeTar(path.join(s.dir, 'e.tar'), []), parent: 'base' });
    expect(r.stats.entries).toBe(0);
    view(r.id, (v) => expect(namesIn(v, '/')).toEqual(['f']));
    view(base.id, (v) => expect(v.changes()).toEqual([{ path: '/f', kind: 'added' }]));
  });

  it('replaces lower entries of another type; merges a directory over a directory', async () => {
    await importImage(s.pool, {
      name: 'base',
      source: writeTar(path.join(s.dir, 'b.tar'), [
        { path: 'd/x', data: 'x' },
        { path: 'f', data: 'f' },
        { path: 'keep/', type: 'dir', mode: 0o700 },
        { path: 'keep/old', data: 'old' },
      ]),
    });
    const r = await importImage(s.pool, {
      name: 'top',
      parent: 'base',
      source: writeTar(path.join(s.dir, 't.tar'), [
        { path: 'd', data: 'now a file' },
        { path: 'f/', type: 'dir', mode: 0o750 },
        { path: 'f/inner', data: 'i' },
        { path: 'keep/', type: 'dir', mode: 0o755, uid: 3 },
        { path: 'keep/new', data: 'new' },
      ]),
    });
    view(r.id, (v) => {
      expect(readFile(v, '/d').toString()).toBe('now a file');
      expect(v.getattr('/f').mode).toBe(constants.S_IFDIR | 0o750);
      expect(namesIn(v, '/f')).toEqual(['inner']);
      expect(namesIn(v, '/keep')).toEqual(['new', 'old']);
      expect(v.getattr('/keep')).toMatchObject({ mode: constants.S_IFDIR | 0o755, uid: 3 });
    });
  });

  it('whiteouts hide only the layers below, never entries of their own layer, in any order', async () => {
    await importImage(s.pool, {
      name: 'base',
      source: writeTar(path.join(s.dir, 'b.tar'), [
        { path: 'd/lower1', data: '1' },
        { path: 'd/sub/lower2', data: '2' },
        { path: 'e/lowerfile', data: 'e' },
        { path: 'share/doc/README', data: 'r' },
        { path: 'gone/deep/file', data: 'g' },
        { path: 'x', data: 'x' },
      ]),
    });
    const r = await importImage(s.pool, {
      name: 'top',
      parent: 'base',
      source: writeTar(path.join(s.dir, 't.tar'), [
        // entries before the opaque marker of their directory stay
        { path: 'd/', type: 'dir', mode: 0o711 },
        { path: 'd/mine', data: 'm' },
        { path: 'd/.wh..wh..opq' },
        { path: 'd/after', data: 'a' },
        // a file of this layer, then a whiteout of its name: the file stays
        { path: 'e/newfile', data: 'n' },
        { path: 'e/.wh.newfile' },
        // a file of this layer inside a directory then whited out: only the lower content goes
        { path: 'share/doc/NEW', data: 'N' },
        { path: '.wh.share' },
        // a whole lower tree whited out; a whiteout of a name nobody has
        { path: '.wh.gone' },
        { path: '.wh.nothing-here' },
        { path: 'nodir/.wh.x' },
        // AUFS bookkeeping is ignored
        { path: '.wh..wh.plnk/', type: 'dir' },
      ]),
    });
    view(r.id, (v) => {
      expect(namesIn(v, '/')).toEqual(['d', 'e', 'share', 'x']);
      expect(namesIn(v, '/d')).toEqual(['after', 'mine']);
      expect(v.getattr('/d').mode).toBe(constants.S_IFDIR | 0o711);
      expect(namesIn(v, '/e')).toEqual(['lowerfile', 'newfile']);
      expect(namesIn(v, '/share')).toEqual(['doc']);
      expect(namesIn(v, '/share/doc')).toEqual(['NEW']);
    });
    expect(r.stats).toMatchObject({ whiteouts: 5, opaques: 1 });
    expect(s.pool.check().clean).toBe(true);
  });
});

describe('refused input leaves the pool as it was', () => {
  let base: DevId;
  let before: { devices: string; used: number; tree: unknown };

  beforeEach(async () => {
    base = (await importImage(s.pool, { name: 'base', source: writeTar(path.join(s.dir, 'base.tar'), [{ path: 'etc/passwd', data: 'root:x:0:0::/root:/bin/sh\n' }]) })).id;
    before = snapshot();
  });

  function snapshot() {
    return {
      devices: JSON.stringify(s.pool.listDevices(), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)),
      used: s.pool.status().dataUsedBytes,
      tree: view(base, (v) => treeOf(v)),
    };
  }

  async function refused(source: string, message: RegExp): Promise<void> {
    await expect(importImage(s.pool, { name: 'bad', source, parent: 'base' })).rejects.toThrow(message);
    expect(s.pool.findDevice('bad')).toBeUndefined();
    expect(snapshot()).toEqual(before);
    expect(s.pool.check().clean).toBe(true);
  }

  const tar = (name: string, entries: TarEntry[], opts: { end?: boolean } = {}) => writeTar(path.join(s.dir, name), entries, opts);
  const good: TarEntry[] = [
    { path: 'ok/', type: 'dir' },
    { path: 'ok/data', data: Buffer.alloc(200 * KiB, 9) },
  ];

  it("refuses '..' components, absolute names and links out of the tree, naming the entry", async () => {
    await refused(tar('1.tar', [...good, { path: '../evil', data: 'x' }]), /entry '\.\.\/evil' has a '\.\.' component/);
    await refused(tar('2.tar', [...good, { path: '/etc/evil', data: 'x' }]), /entry '\/etc\/evil' is an absolute path/);
    await refused(tar('3.tar', [...good, { path: 'a/../../evil', data: 'x' }]), /entry 'a\/\.\.\/\.\.\/evil' has a '\.\.' component/);
    await refused(tar('4.tar', [...good, { path: 'x', type: 'link', linkpath: '../../etc/passwd' }]), /entry 'x': hard link target '\.\.\/\.\.\/etc\/passwd' has a '\.\.' component/);
    await refused(tar('5.tar', [...good, { path: 'x', type: 'link', linkpath: '/etc/passwd' }]), /hard link target '\/etc\/passwd' is an absolute path/);
    await refused(tar('6.tar', [...good, { path: 'x', type: 'link', linkpath: 'no/such' }]), /entry 'x': no such file or directory/);
    await refused(tar('7.tar', [...good, { path: 'ok', type: 'link', linkpath: 'etc' }]), /entry 'ok': hard links to directories are not allowed/);
  });

  it('never extracts through a symlink (absolute or relative)', async () => {
    await refused(
      tar('s1.tar', [...good, { path: 'link', type: 'symlink', linkpath: '/etc' }, { path: 'link/passwd', data: 'owned' }]),
      /entry 'link\/passwd': a parent is a symbolic link; entries are never extracted through symlinks/,
    );
    await refused(
      tar('s2.tar', [...good, { path: 'up', type: 'symlink', linkpath: '../..' }, { path: 'up/x/y', data: 'owned' }]),
      /entry 'up\/x\/y': a parent is a symbolic link/,
    );
  });

  it('refuses truncated, corrupt and non-tar input', async () => {
    const whole = makeTar([...good, { path: 'big', data: Buffer.alloc(100 * KiB, 3) }]);
    const cut = path.join(s.dir, 'cut.tar');
    fs.writeFileSync(cut, whole.subarray(0, whole.length - 1024 - 50 * KiB));
    await refused(cut, /the tar is truncated inside entry 'big'/);
    await refused(tar('noend.tar', good, { end: false }), /the tar is truncated: it ends after entry 'ok\/data' without its end-of-archive blocks/);
    const bad = Buffer.from(whole);
    bad[512 * 1 + 10] ^= 0xff; // the second header's name
    const corrupt = path.join(s.dir, 'corrupt.tar');
    fs.writeFileSync(corrupt, bad);
    await refused(corrupt, /corrupt tar: a header after entry 'ok\/' fails its checksum/);
    const noise = path.join(s.dir, 'noise.tar');
    fs.writeFileSync(noise, Buffer.alloc(8192, 'not a tar at all '));
    await refused(noise, /not a tar archive/);
    const empty = path.join(s.dir, 'empty.tar');
    fs.writeFileSync(empty, '');
    await refused(empty, /not a tar archive/);
    const gz = zlib.gzipSync(whole);
    const gzCut = path.join(s.dir, 'cut.tar.gz');
    fs.writeFileSync(gzCut, gz.subarray(0, gz.length >> 1));
    await refused(gzCut, /the gzip stream is truncated or corrupt/);
  });

  it('checks name, parent and source before creating anything', async () => {
    await expect(importImage(s.pool, { name: 'base', source: tar('x.tar', good) })).rejects.toThrow(/EEXIST: an image or container named 'base' exists/);
    await expect(importImage(s.pool, { name: 'n', source: tar('x.tar', good), parent: 'nope' })).rejects.toThrow(/ENOENT: no image named 'nope' \(see `thinfs ls`\), import 'nope'/);
    s.pool.createSnapshot(base, 'ctr', { kind: 'container' });
    before = snapshot();
    await expect(importImage(s.pool, { name: 'n', source: tar('x.tar', good), parent: 'ctr' })).rejects.toThrow(/'ctr' is a container, not an image/);
    await expect(importImage(s.pool, { name: 'n', source: path.join(s.dir, 'missing.tar') })).rejects.toThrow(/ENOENT: cannot read the source/);
    await expect(importImage(s.pool, { name: 'bad name!', source: tar('x.tar', good) })).rejects.toThrow(/EINVAL: device names are/);
    expect(snapshot()).toEqual(before);
  });
});
