/**
 * The image chain, in process against Pool + Filesystem: a busybox base image imported
 * from a directory built at test time, a tar layer with whiteouts and an opaque
 * directory on top, and a container on that: the merged view is right, and the images
 * are unchanged (their changes() and every file) after the container writes.
 */
import { constants } from 'node:fs';
import * as fs from 'node:fs';
import { finished } from 'node:stream/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Filesystem } from '../../src/fs/index.js';
import { exportLayer, importImage } from '../../src/layers/index.js';
import { GiB, Pool, type DevId } from '../../src/pool/index.js';
import { buildBusyboxRootfs, haveBusybox, writeWhiteoutLayer } from '../helpers/layers.js';
import { tmpDir } from '../helpers/tmp.js';
import { namesIn, readFile, treeOf } from '../helpers/tree.js';

const ROOT = { uid: 0, gid: 0 };
const isRoot = process.getuid?.() === 0;

describe.skipIf(!haveBusybox())('image chain: busybox base, whiteout layer, container', () => {
  let t: { dir: string; cleanup: () => void };
  let pool: Pool;
  let rootfs: string;
  let applets: string[];
  let base: DevId;
  let layer: DevId;

  beforeAll(async () => {
    t = tmpDir('thinfs-chain-');
    rootfs = path.join(t.dir, 'rootfs');
    applets = buildBusyboxRootfs(rootfs);
    pool = Pool.create(path.join(t.dir, 'pool'), { dataSizeBytes: 1 * GiB, minFreePercent: 0 });
    const started = process.hrtime.bigint();
    const r = await importImage(pool, { name: 'busybox', source: rootfs });
    const ms = Number(process.hrtime.bigint() - started) / 1e6;
    console.log(`busybox rootfs import: ${r.stats.entries} entries, ${r.stats.dataBytes} bytes in ${ms.toFixed(0)} ms (${((r.stats.entries / ms) * 1000).toFixed(0)} entries/s)`);
    base = r.id;
    const tar = writeWhiteoutLayer(path.join(t.dir, 'layer2.tar'));
    layer = (await importImage(pool, { name: 'layer2', source: tar, parent: 'busybox' })).id;
  });
  afterAll(() => {
    pool?.close();
    t?.cleanup();
  });

  it('the base image is the busybox rootfs: applets, modes, owners, xattrs, device node', () => {
    const v = Filesystem.open(pool, base, { readOnly: true });
    try {
      expect(pool.getDevice(base)).toMatchObject({ kind: 'image', readOnly: true, state: 'active' });
      expect(namesIn(v, '/bin').length).toBe(applets.length + 1);
      expect(v.readlink('/bin/sh')).toBe('/bin/busybox');
      expect(readFile(v, '/bin/busybox').equals(fs.readFileSync(path.join(rootfs, 'bin/busybox')))).toBe(true);
      expect(v.getattr('/bin/busybox').mode).toBe(constants.S_IFREG | 0o755);
      expect(v.getattr('/tmp').mode).toBe(constants.S_IFDIR | 0o1777);
      expect(v.getattr('/root').mode).toBe(constants.S_IFDIR | 0o700);
      expect(v.getattr('/usr/bin/setuid-demo').mode).toBe(constants.S_IFREG | 0o4755);
      expect(v.getattr('/etc/secret').mode).toBe(constants.S_IFREG | 0o600);
      expect(v.getattr('/').mode).toBe(constants.S_IFDIR | 0o755);
      // Every entry of the source, with its owner, mode and mtime.
      for (const rel of fs.readdirSync(rootfs, { recursive: true, encoding: 'utf8' })) {
        const st = fs.lstatSync(path.join(rootfs, rel), { bigint: true });
        const a = v.getattr(`/${rel}`);
        expect({ rel, mode: a.mode, uid: a.uid, gid: a.gid, mtime: a.mtimeNs }).toEqual({ rel, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), mtime: st.mtimeNs });
      }
      const xattrs = v.listxattr('/etc/secret');
      if (xattrs.includes('user.thinfs.note')) expect(v.getxattr('/etc/secret', 'user.thinfs.note').toString()).toBe('lower');
      if (isRoot) {
        expect(v.getattr('/etc/secret')).toMatchObject({ uid: 0, gid: 0 });
        expect(v.getxattr('/etc/secret', 'trusted.thinfs.note').toString()).toBe('root-only');
        expect(v.getattr('/dev/null')).toMatchObject({ mode: constants.S_IFCHR | 0o666, rdev: (1 << 8) | 3 });
      }
    } finally {
      v.close();
    }
  });

  it('the whiteout layer hides files, an applet, a directory, and makes /var/lib/app opaque', () => {
    const v = Filesystem.open(pool, layer, { readOnly: true });
    try {
      expect(() => v.getattr('/etc/motd')).toThrow(/ENOENT/);
      expect(() => v.getattr('/bin/vi')).toThrow(/ENOENT/);
      expect(() => v.getattr('/usr/share')).toThrow(/ENOENT/);
      expect(namesIn(v, '/usr')).toEqual(['bin', 'sbin']);
      expect(namesIn(v, '/bin').length).toBe(applets.length); // one applet fewer, busybox itself
      expect(namesIn(v, '/var/lib/app')).toEqual(['c']);
      expect(v.getattr('/var/lib/app')).toMatchObject({ mode: constants.S_IFDIR | 0o750, uid: 1000, gid: 1000 });
      expect(readFile(v, '/var/lib/app/c').toString()).toBe('c from layer 2\n');
      expect(readFile(v, '/etc/hostname').toString()).toBe('thinfs-test\n');
      expect(readFile(v, '/etc/passwd').toString()).toMatch(/^root:.*\napp:x:1000/);
      expect(readFile(v, '/etc/group').toString()).toMatch(/^root:x:0:/);
      const changes = v.changes();
      // Directories whose entries changed are 'changed' themselves (their mtime is the layer's).
      expect(changes).toEqual([
        { path: '/bin', kind: 'changed' },
        { path: '/bin/vi', kind: 'deleted' },
        { path: '/etc', kind: 'changed' },
        { path: '/etc/hostname', kind: 'added' },
        { path: '/etc/motd', kind: 'deleted' },
        { path: '/etc/passwd', kind: 'changed' },
        { path: '/usr', kind: 'changed' },
        { path: '/usr/share', kind: 'deleted' },
        { path: '/var/lib', kind: 'changed' },
        { path: '/var/lib/app', kind: 'changed', opaque: true },
        { path: '/var/lib/app/c', kind: 'added' },
      ]);
    } finally {
      v.close();
    }
    // The base below is untouched by the layer.
    const b = Filesystem.open(pool, base, { readOnly: true });
    try {
      expect(readFile(b, '/etc/motd').toString()).toBe('welcome to thinfs busybox\n');
      expect(namesIn(b, '/var/lib/app')).toEqual(['a', 'b', 'sub']);
    } finally {
      b.close();
    }
  });

  it('exports round-trip: the layer diff re-imported on the base, the whole view re-imported as a base', async () => {
    const exportTo = async (id: DevId, file: string, diff: boolean) => {
      const v = Filesystem.open(pool, id, { readOnly: true });
      try {
        const out = fs.createWriteStream(file);
        const stats = await exportLayer(v, out, { diff });
        out.end();
        await finished(out);
        return stats;
      } finally {
        v.close();
      }
    };
    const shape = (id: DevId) => {
      const v = Filesystem.open(pool, id, { readOnly: true });
      try {
        const tree = treeOf(v);
        // Inode numbers differ between imports; the root's mtime is the importing layer's own.
        return Object.fromEntries(Object.entries(tree).map(([p, { ino: _i, ...rest }]) => [p, p === '/' ? { ...rest, mtimeNs: '' } : rest]));
      } finally {
        v.close();
      }
    };
    const diff = await exportTo(layer, path.join(t.dir, 'diff.tar'), true);
    expect(diff).toMatchObject({ whiteouts: 3, opaques: 1 });
    const again = await importImage(pool, { name: 'layer2-again', source: path.join(t.dir, 'diff.tar'), parent: 'busybox' });
    expect(shape(again.id)).toEqual(shape(layer));

    const full = await exportTo(layer, path.join(t.dir, 'full.tar'), false);
    expect(full.whiteouts).toBe(0);
    const flat = await importImage(pool, { name: 'flat', source: path.join(t.dir, 'full.tar') });
    const a = shape(flat.id);
    const b = shape(layer);
    expect({ ...a, '/': { ...a['/'], mtimeNs: '' } }).toEqual(b);
    for (const id of [again.id, flat.id]) pool.deleteDevice(id);
    pool.commit();
  });

  it('a container sees the merged view, writes, and leaves both images unchanged', () => {
    const snap = (id: DevId) => {
      const v = Filesystem.open(pool, id, { readOnly: true });
      try {
        return { tree: treeOf(v), changes: v.changes() };
      } finally {
        v.close();
      }
    };
    const before = { base: snap(base), layer: snap(layer) };
    const c = pool.createSnapshot(layer, 'c1', { kind: 'container' });
    const v = Filesystem.open(pool, c);
    try {
      expect(treeOf(v)).toEqual(before.layer.tree);
      const fh = v.create('/root/new', 0o644, ROOT);
      v.write(fh, 0, Buffer.from('hello'));
      v.release(fh);
      const pw = v.open('/etc/passwd', constants.O_WRONLY);
      v.write(pw, 0, Buffer.from('ROOT'));
      v.release(pw);
      const bb = v.open('/bin/busybox', constants.O_WRONLY);
      v.write(bb, 4096, Buffer.alloc(100, 7));
      v.release(bb);
      v.unlink('/bin/ls');
      v.unlink('/var/lib/app/c');
      v.rename('/etc', '/etc2');
      v.chmod('/tmp', 0o755);
      v.chown('/usr/bin/setuid-demo', 1000, 1000);
      v.setxattr('/etc2/group', 'user.x', Buffer.from('1'), 0);
      expect(v.getattr('/usr/bin/setuid-demo').mode & 0o7777).toBe(0o755);
      v.makeOpaque('/usr');
      v.commit();
      expect(readFile(v, '/etc2/passwd').subarray(0, 4).toString()).toBe('ROOT');
      expect(namesIn(v, '/usr')).toEqual([]);
    } finally {
      v.close();
    }
    expect(snap(base)).toEqual(before.base);
    expect(snap(layer)).toEqual(before.layer);
    expect(pool.check().clean).toBe(true);
  });
});
