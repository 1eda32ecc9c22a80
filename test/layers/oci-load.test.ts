/**
 * Loading real images (built at test time with umoci and skopeo, test/helpers/oci-images.ts)
 * in process, against a Pool: every form gives the tree `umoci unpack` gives (owners,
 * modes, links, xattrs, device nodes, mtimes, a name that is not UTF-8, the whiteout and
 * the opaque directory applied); layers are shared by chain ID, so a second form, or a
 * sibling image on the same base, adds no layer data; a corrupt blob or layer is refused
 * and leaves the pool as it was; what is not an image is refused with one line.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Filesystem } from '../../src/fs/index.js';
import { imageOf, importImage, loadImage, type LoadResult } from '../../src/layers/index.js';
import { GiB, Pool } from '../../src/pool/index.js';
import { buildTestImage, hostTree, missingForImages, run, viewTree, type Node, type TestImage } from '../helpers/oci-images.js';
import { tmpDir } from '../helpers/tmp.js';

const missing = missingForImages();
if (missing !== undefined) console.warn(`skipping the image load tests: ${missing}`);

describe.skipIf(missing !== undefined)('load: OCI layout, oci-archive, docker-archive', () => {
  let t: { dir: string; cleanup: () => void };
  let img: TestImage;
  let want: Record<string, Node>;
  const pools: Pool[] = [];
  const newPool = (name: string) => {
    const p = Pool.create(path.join(t.dir, name), { dataSizeBytes: 1 * GiB, minFreePercent: 0 });
    pools.push(p);
    return p;
  };
  const load = (pool: Pool, source: string, name?: string): Promise<LoadResult> => loadImage(pool, { source, name, spoolDir: path.join(pool.root, 'tmp') });
  const treeOfDevice = (pool: Pool, name: string) => {
    const d = pool.findDevice(name);
    if (d === undefined) throw new Error(`no device ${name}: ${pool.listDevices().map((x) => x.name).join(', ')}`);
    const v = Filesystem.open(pool, d.id, { readOnly: true });
    try {
      return viewTree(v, { mtimes: true });
    } finally {
      v.close();
    }
  };
  /** What a refused load must leave as it was. */
  const stateOf = (pool: Pool) => ({
    devices: pool.listDevices().map((d) => `${d.name} ${d.kind} ${d.readOnly} ${d.state}`),
    dataUsedBytes: pool.status().dataUsedBytes,
  });

  beforeAll(() => {
    t = tmpDir('thinfs-oci-');
    img = buildTestImage(t.dir);
    want = hostTree(img.unpacked, { mtimes: true });
  }, 120_000);
  afterAll(() => {
    for (const p of pools) p.close();
    t?.cleanup();
  });

  it('the test image is what it should be: whiteout, removed tree and opaque directory applied by umoci', () => {
    expect(want['/etc/b']).toBeUndefined();
    expect(want['/gone']).toBeUndefined();
    expect(Object.keys(want).filter((p) => p.startsWith('/opq/'))).toEqual(['/opq/new']);
    expect(want['/etc/a']).toMatchObject({ links: ['/etc/hard'], xattrs: { 'user.k': 'dmFs' } });
    expect(want['/usr/bin/tool']).toMatchObject({ mode: '4755', xattrs: { 'security.capability': expect.any(String) } });
    expect(want['/caf\xe9']).toMatchObject({ type: 'file' });
    expect(want['/data']).toMatchObject({ mode: '700', uid: 1001 });
  });

  describe('one pool, every form', () => {
    let pool: Pool;
    beforeAll(() => {
      pool = newPool('pool1');
    });

    it('oci:DIR:TAG: three new layers; the tree umoci unpacks; the config kept byte-exact', async () => {
      const r = await load(pool, img.layout);
      expect(r).toMatchObject({ format: 'oci', newLayers: 3, sharedLayers: 0 });
      expect(r.images).toMatchObject([{ reference: 'layout:t', device: 'layout:t', result: 'loaded' }]);
      expect(treeOfDevice(pool, 'layout:t')).toEqual(want);
      const rec = imageOf(pool, pool.findDevice('layout:t')!)!;
      const manifest = JSON.parse(fs.readFileSync(path.join(t.dir, 'layout', 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
      expect(rec.manifestDigest).toBe(manifest.manifests.find((m) => m.annotations['org.opencontainers.image.ref.name'] === 't')!.digest);
      const config = JSON.parse(rec.configBytes.toString()) as { config: Record<string, unknown> };
      expect(config.config).toMatchObject({
        Entrypoint: ['/bin/sh', '-c'],
        Cmd: ['echo hi; id'],
        Env: ['PATH=/usr/bin:/bin', 'GREETING=hello world'],
        WorkingDir: '/etc',
        User: '1000:1000',
        Labels: { 'org.example.test': 'yes' },
      });
      expect(r.images[0]!.configDigest).toBe(`sha256:${(await import('node:crypto')).createHash('sha256').update(rec.configBytes).digest('hex')}`);
    });

    it('the same image as oci-archive and docker-archive: no new layer, no data, the same tree', async () => {
      const before = pool.status().dataUsedBytes;
      const a = await load(pool, `oci-archive:${img.ociArchive}`);
      expect(a).toMatchObject({ format: 'oci-archive', newLayers: 0, sharedLayers: 3 });
      expect(a.images.map((i) => i.reference)).toEqual(['image.oci:t']);
      const d = await load(pool, img.dockerArchive); // recognised by content
      expect(d).toMatchObject({ format: 'docker-archive', newLayers: 0, sharedLayers: 3 });
      expect(d.images).toMatchObject([{ reference: 'example.org/test/img:t', device: 'example.org_test_img:t', manifestDigest: null }]);
      expect(pool.status().dataUsedBytes).toBe(before);
      expect(treeOfDevice(pool, 'image.oci:t')).toEqual(want);
      expect(treeOfDevice(pool, 'example.org_test_img:t')).toEqual(want);
      // every image device sits on the same top layer device
      const parents = ['layout:t', 'image.oci:t', 'example.org_test_img:t'].map((n) => pool.chainOf(pool.findDevice(n)!.id).layers[1]);
      expect(new Set(parents).size).toBe(1);
    });

    it('a sibling on the same first two layers loads only its own top layer', async () => {
      const r = await load(pool, img.sibling, 'sib:1');
      expect(r).toMatchObject({ newLayers: 1, sharedLayers: 2 });
      const tree = treeOfDevice(pool, 'sib:1');
      expect(tree['/sib/only']).toMatchObject({ type: 'file' });
      expect(Object.keys(tree).filter((p) => p.startsWith('/opq/'))).toEqual(['/opq/old', '/opq/sub', '/opq/sub/deep']);
    });

    it('loading a name that already names this image does nothing; a name taken by another image is refused', async () => {
      const again = await load(pool, img.layout);
      expect(again.images).toMatchObject([{ reference: 'layout:t', result: 'exists' }]);
      const before = stateOf(pool);
      await expect(load(pool, img.sibling, 'layout:t')).rejects.toThrow(/^EEXIST: an image or container named 'layout:t' exists/);
      expect(stateOf(pool)).toEqual(before);
    });

    it('a layout of several images needs a tag; an unknown tag is ENOENT naming the tags', async () => {
      await expect(load(pool, `oci:${path.join(t.dir, 'layout')}`)).rejects.toThrow(/holds 2 images \(tags: t, u\); name one, as oci:DIR:TAG/);
      await expect(load(pool, `oci:${path.join(t.dir, 'layout')}:nope`)).rejects.toThrow(/^ENOENT: no image tagged 'nope' in the layout \(tags: t, u\)/);
    });

    it('the pool checks clean', () => {
      expect(pool.check()).toMatchObject({ clean: true });
    });
  });

  it('two loads of one image at once load each layer once; a leftover layer device of an interrupted load is replaced', async () => {
    const pool = newPool('pool-race');
    // An interrupted load left the bottom layer's device behind: writable, recorded nowhere.
    const config = JSON.parse(run('skopeo', ['inspect', '--config', img.layout])) as { rootfs: { diff_ids: string[] } };
    const stale = `layer-${config.rootfs.diff_ids[0]!.slice(7, 23)}`;
    pool.createThin(stale, { kind: 'image' });
    const [a, b] = await Promise.all([load(pool, img.layout), load(pool, `oci-archive:${img.ociArchive}`)]);
    expect(a.newLayers + b.newLayers).toBe(3);
    expect(a.newLayers + a.sharedLayers).toBe(3);
    expect(b.newLayers + b.sharedLayers).toBe(3);
    expect(pool.findDevice(stale)).toMatchObject({ readOnly: true });
    expect(pool.listDevices().map((d) => d.name).sort()).toEqual(['image.oci:t', 'layout:t', ...pool.listDevices().filter((d) => d.name.startsWith('layer-')).map((d) => d.name)].sort());
    expect(pool.listDevices().filter((d) => d.name.startsWith('layer-'))).toHaveLength(3);
    expect(treeOfDevice(pool, 'image.oci:t')).toEqual(want);
    expect(pool.check()).toMatchObject({ clean: true });
  });

  it('import refuses a whole image: it is for layers (load takes images)', async () => {
    const pool = newPool('pool-import');
    for (const source of [img.dockerArchive, img.ociArchive, path.join(t.dir, 'layout')]) {
      await expect(importImage(pool, { name: 'x', source })).rejects.toThrow(/^EINVAL: this is a whole image \(an OCI layout or a docker archive\), not a layer: load it with `thinfs load`/);
    }
    expect(pool.listDevices()).toEqual([]);
    const tar = path.join(t.dir, 'rootfs-for-import.tar');
    run('tar', ['-C', img.unpacked, '-cf', tar, '.']);
    await importImage(pool, { name: 'rootfs', source: tar }); // a rootfs tar still imports
    expect(treeOfDevice(pool, 'rootfs')['/opq/new']).toMatchObject({ type: 'file' });
  });

  it('a multi-platform index: the linux manifest of this machine\'s architecture is loaded', async () => {
    const pool = newPool('pool-multiarch');
    const dir = path.join(t.dir, 'multiarch');
    fs.cpSync(path.join(t.dir, 'layout'), dir, { recursive: true });
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: { digest: string; size: number; annotations: Record<string, string> }[] };
    const m = index.manifests.find((x) => x.annotations['org.opencontainers.image.ref.name'] === 't')!;
    const arch = { x64: 'amd64', arm64: 'arm64' }[process.arch as 'x64' | 'arm64'] ?? process.arch;
    const other = arch === 'amd64' ? 'arm64' : 'amd64';
    const nested = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${'0'.repeat(64)}`, size: 1, platform: { os: 'linux', architecture: other } },
          { mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: m.digest, size: m.size, platform: { os: 'linux', architecture: arch } },
        ],
      }),
    );
    const digest = (await import('node:crypto')).createHash('sha256').update(nested).digest('hex');
    fs.writeFileSync(path.join(dir, 'blobs', 'sha256', digest), nested);
    fs.writeFileSync(
      path.join(dir, 'index.json'),
      JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.index.v1+json', digest: `sha256:${digest}`, size: nested.length, annotations: { 'org.opencontainers.image.ref.name': 'multi' } }] }),
    );
    const r = await load(pool, `oci:${dir}`);
    expect(r.images).toMatchObject([{ reference: 'multiarch:multi', manifestDigest: m.digest }]);
    expect(treeOfDevice(pool, 'multiarch:multi')).toEqual(want);
  });

  it('zstd layers and a gzip-compressed docker archive', async () => {
    const pool = newPool('pool-zstd');
    const z = await load(pool, img.zstdLayout);
    expect(z).toMatchObject({ newLayers: 3 });
    expect(treeOfDevice(pool, 'zstd-layout:t')).toEqual(want);
    const before = pool.status().dataUsedBytes;
    const g = await load(pool, `docker-archive:${img.dockerArchiveGz}`, 'gz');
    expect(g).toMatchObject({ newLayers: 0, sharedLayers: 3, images: [{ reference: 'gz:latest', device: 'gz:latest' }] });
    expect(pool.status().dataUsedBytes).toBe(before);
    expect(fs.readdirSync(path.join(pool.root, 'tmp'))).toEqual([]); // the decompressed copy is gone
  });

  describe('refusals leave the pool as it was', () => {
    let pool: Pool;
    beforeAll(async () => {
      pool = newPool('pool-bad');
      await load(pool, img.sibling, 'sib:1'); // layers 1-2 present: a refused load must not touch them
    });

    it('a flipped byte in a layer blob: digest mismatch, nothing of the load remains', async () => {
      const bad = path.join(t.dir, 'bad-layout');
      fs.cpSync(path.join(t.dir, 'layout'), bad, { recursive: true });
      const index = JSON.parse(fs.readFileSync(path.join(bad, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
      const m = index.manifests.find((x) => x.annotations['org.opencontainers.image.ref.name'] === 't')!;
      const manifest = JSON.parse(fs.readFileSync(path.join(bad, 'blobs', 'sha256', m.digest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
      const blob = path.join(bad, 'blobs', 'sha256', manifest.layers[2]!.digest.slice(7));
      const bytes = fs.readFileSync(blob);
      bytes[Math.floor(bytes.length / 2)]! ^= 0xff;
      fs.writeFileSync(blob, bytes);
      const before = stateOf(pool);
      await expect(load(pool, `oci:${bad}:t`)).rejects.toThrow(/^EINVAL: digest mismatch: its blob is sha256:[0-9a-f]{64}, the image says sha256:[0-9a-f]{64} \(corrupt or altered\); refused, nothing loaded, load '.*layer 3 of 3/);
      expect(stateOf(pool)).toEqual(before);
      expect(pool.check()).toMatchObject({ clean: true });
    });

    it('a changed byte in a docker-archive layer (no blob digest there): diffID mismatch, nothing remains', async () => {
      const bytes = fs.readFileSync(img.dockerArchive);
      const at = bytes.indexOf('fresh\n'); // opq/new in layer 3, stored uncompressed
      expect(at).toBeGreaterThan(0);
      bytes[at] = 'F'.charCodeAt(0);
      const bad = path.join(t.dir, 'bad.docker.tar');
      fs.writeFileSync(bad, bytes);
      const before = stateOf(pool);
      await expect(load(pool, `docker-archive:${bad}`)).rejects.toThrow(/^EINVAL: digest mismatch: its uncompressed tar \(diffID\) is sha256:/);
      expect(stateOf(pool)).toEqual(before);
      expect(pool.check()).toMatchObject({ clean: true });
    });

    it('a plain rootfs tar, a rootfs directory, and a file that is no tar are not images', async () => {
      const tar = path.join(t.dir, 'rootfs.tar');
      run('tar', ['-C', img.unpacked, '-cf', tar, '.']);
      const before = stateOf(pool);
      await expect(load(pool, tar)).rejects.toThrow(/^EINVAL: not an image: a tar without oci-layout or manifest.json/);
      await expect(load(pool, img.unpacked)).rejects.toThrow(/^EINVAL: not an image: a directory without oci-layout/);
      const junk = path.join(t.dir, 'junk');
      fs.writeFileSync(junk, 'hello, not a tar at all'.repeat(100));
      await expect(load(pool, junk)).rejects.toThrow(/^EINVAL: not an image: not a tar archive/);
      await expect(load(pool, `oci-archive:${tar}`)).rejects.toThrow(/not an OCI image layout: no oci-layout file/);
      await expect(load(pool, `oci:${tar}`)).rejects.toThrow(/^ENOTDIR/);
      await expect(load(pool, path.join(t.dir, 'missing.tar'))).rejects.toThrow(/^ENOENT/);
      expect(stateOf(pool)).toEqual(before);
    });
  });
});
