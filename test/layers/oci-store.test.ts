/**
 * The image tables (layers/image-store.ts) and the `imageConfig` operation, in process:
 * chain IDs as the OCI spec computes them, reference → device resolution, and the config
 * a device answers with — its own, its origin's (a container, a committed image), or
 * null for a plain import.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commit, create, imageConfig, importOp } from '../../src/daemon/ops/image-ops.js';
import { chainIds, deviceNameFor, familiarReference, insertImage, prepareImageTables, resolveImageName, sha256Digest } from '../../src/layers/image-store.js';
import { TarStore } from '../../src/layers/archive.js';
import { formatImageSpec, parseImageSpec } from '../../src/layers/sources.js';
import { GiB, Pool } from '../../src/pool/index.js';
import { writeTar } from '../helpers/layers.js';
import { tmpDir } from '../helpers/tmp.js';

describe('chain IDs and names', () => {
  it('chainID(n) = sha256(chainID(n-1) + " " + diffID(n)), chainID(1) = diffID(1)', () => {
    const a = sha256Digest('a');
    const b = sha256Digest('b');
    const c = sha256Digest('c');
    const ids = chainIds([a, b, c]);
    expect(ids[0]).toBe(a);
    expect(ids[1]).toBe(sha256Digest(`${a} ${b}`));
    expect(ids[2]).toBe(sha256Digest(`${ids[1]} ${c}`));
    expect(chainIds([])).toEqual([]);
  });

  it('familiar references and device names', () => {
    expect(familiarReference('docker.io/library/debian:12')).toBe('debian:12');
    expect(familiarReference('docker.io/me/app')).toBe('me/app:latest');
    expect(familiarReference('localhost:5000/app')).toBe('localhost:5000/app:latest');
    expect(deviceNameFor('docker.io/library/debian:12')).toBe('debian:12');
    expect(deviceNameFor('quay.io/a/b:1')).toBe('quay.io_a_b:1');
    expect(deviceNameFor('busybox')).toBe('busybox:latest');
  });
});

describe('transport syntax', () => {
  it('splits at the first colon after the transport, as containers/image does', () => {
    expect(parseImageSpec('oci:/a/b:t', 'load')).toEqual({ transport: 'oci', path: '/a/b', ref: 't' });
    expect(parseImageSpec('oci-archive:/x.tar:foo:bar', 'load')).toEqual({ transport: 'oci-archive', path: '/x.tar', ref: 'foo:bar' });
    expect(parseImageSpec('docker-archive:/x.tar', 'load')).toEqual({ transport: 'docker-archive', path: '/x.tar', ref: undefined });
    expect(parseImageSpec('docker-archive:/x.tar:@1', 'load')).toMatchObject({ ref: '@1' });
    expect(parseImageSpec('/plain/x.tar', 'load')).toEqual({ transport: undefined, path: '/plain/x.tar' });
    expect(formatImageSpec({ transport: 'oci', path: '/a', ref: 't' })).toBe('oci:/a:t');
    expect(() => parseImageSpec('oci:', 'load')).toThrow(/^EINVAL: no path after 'oci:'/);
    expect(() => parseImageSpec('oci:/a:', 'load')).toThrow(/^EINVAL: empty tag after the path/);
  });
});

describe('TarStore: an archive read in place', () => {
  let t: { dir: string; cleanup: () => void };
  beforeAll(() => {
    t = tmpDir('thinfs-tarstore-');
  });
  afterAll(() => t?.cleanup());

  it('finds files, follows links inside the archive (docker legacy layer.tar symlinks), never out of it', () => {
    const file = path.join(t.dir, 'a.tar');
    writeTar(file, [
      { path: 'manifest.json', data: '[]' },
      { path: 'aaa.tar', data: 'layer bytes' },
      { path: 'id1', type: 'dir' },
      { path: 'id1/layer.tar', type: 'symlink', linkpath: '../aaa.tar' },
      { path: 'id2/layer.tar', type: 'link', linkpath: 'aaa.tar' },
      { path: 'evil', type: 'symlink', linkpath: '../../etc/passwd' },
      { path: 'abs', type: 'symlink', linkpath: '/etc/passwd' },
    ]);
    const s = TarStore.open(file);
    expect(s.read('manifest.json').toString()).toBe('[]');
    expect(s.read('./id1/layer.tar').toString()).toBe('layer bytes');
    expect(s.read('id2/layer.tar').toString()).toBe('layer bytes');
    expect(s.has('evil')).toBe(false);
    expect(s.has('abs')).toBe(false);
    expect(() => s.read('nope')).toThrow(/^ENOENT: nope is missing from the archive/);
    expect(TarStore.isImageArchive(file)).toBe(false); // 'evil' is no name an image archive holds
  });

  it('refuses what is not a tar, and a truncated one', () => {
    const junk = path.join(t.dir, 'junk');
    fs.writeFileSync(junk, Buffer.alloc(2048, 0x41));
    expect(() => TarStore.open(junk)).toThrow(/^EINVAL: not an image: not a tar archive/);
    const cut = path.join(t.dir, 'cut.tar');
    writeTar(cut, [{ path: 'blob', data: Buffer.alloc(5000, 1) }]);
    fs.truncateSync(cut, 2048);
    expect(() => TarStore.open(cut)).toThrow(/truncated inside blob/);
  });
});

describe('imageConfig', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  let pool: Pool;
  const config = { architecture: 'amd64', os: 'linux', config: { Cmd: ['/bin/sh'], Env: ['A=1'], WorkingDir: '/w', User: '1:2' }, rootfs: { type: 'layers', diff_ids: [] } };

  beforeAll(async () => {
    t = tmpDir('thinfs-store-');
    root = path.join(t.dir, 'root');
    pool = Pool.create(root, { dataSizeBytes: 1 * GiB, minFreePercent: 0 });
    const tar = path.join(t.dir, 'l.tar');
    writeTar(tar, [{ path: 'etc/hostname', data: 'x\n' }]);
    const ctx = { root, pool };
    await importOp(ctx, { name: 'plain', source: tar });
    await importOp(ctx, { name: 'docker.io_me_app:1', source: tar });
    const id = pool.findDevice('docker.io_me_app:1')!.id;
    prepareImageTables(pool);
    const bytes = Buffer.from(JSON.stringify(config));
    pool.atomically('test', () =>
      insertImage(pool, { deviceId: id, reference: 'docker.io/me/app:1', configBytes: bytes, configDigest: sha256Digest(bytes), manifestDigest: null, source: 'test', loadedNs: 0n }),
    );
    pool.commit();
    await create(ctx, { name: 'c1', image: 'docker.io_me_app:1' });
    await commit(ctx, { container: 'c1', name: 'snap' });
    await create(ctx, { name: 'c2', image: 'snap' });
  });
  afterAll(() => {
    pool?.close();
    t?.cleanup();
  });

  it('an image answers with its config; a reference resolves to its device', async () => {
    const ctx = { root, pool };
    expect(await imageConfig(ctx, { name: 'docker.io_me_app:1' })).toEqual({ config: config.config });
    expect(await imageConfig(ctx, { name: 'docker.io/me/app:1' })).toEqual({ config: config.config });
    expect(await imageConfig(ctx, { name: 'me/app:1' })).toEqual({ config: config.config });
    expect(resolveImageName(pool, 'me/app:1')?.name).toBe('docker.io_me_app:1');
  });

  it('containers and committed images answer with the config of the image they come from', async () => {
    const ctx = { root, pool };
    for (const name of ['c1', 'snap', 'c2']) expect(await imageConfig(ctx, { name })).toEqual({ config: config.config });
  });

  it('a plain import has no config; an unknown name is ENOENT', async () => {
    const ctx = { root, pool };
    expect(await imageConfig(ctx, { name: 'plain' })).toEqual({ config: null });
    await expect(imageConfig(ctx, { name: 'nope' })).rejects.toThrow(/ENOENT/);
    await expect(imageConfig(ctx, {})).rejects.toThrow(/EINVAL/);
  });
});
