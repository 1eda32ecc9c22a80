/**
 * Saving images in process: a loaded image written back as oci:, oci-archive: and
 * docker-archive: reads the same through skopeo (config: Entrypoint, Cmd, Env, WorkingDir,
 * User, Labels) and unpacks with umoci to the same tree (owners, modes, links, xattrs,
 * mtimes, byte names); loading the saved image back adds no layer data; a container
 * committed on the image saves as one more layer.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { commit, create } from '../../src/daemon/ops/image-ops.js';
import { Filesystem } from '../../src/fs/index.js';
import { loadImage, saveImage } from '../../src/layers/index.js';
import { GiB, Pool } from '../../src/pool/index.js';
import { buildTestImage, hostTree, missingForImages, run, viewTree, type Node, type TestImage } from '../helpers/oci-images.js';
import { tmpDir } from '../helpers/tmp.js';

const missing = missingForImages();
if (missing !== undefined) console.warn(`skipping the image save tests: ${missing}`);

interface SkopeoInspect {
  Architecture: string;
  Os: string;
  Env: string[];
  Labels: Record<string, string> | null;
  Layers: string[];
}
interface SkopeoConfig {
  config: Record<string, unknown>;
  rootfs: { diff_ids: string[] };
  history: { created_by?: string; empty_layer?: boolean }[];
}

describe.skipIf(missing !== undefined)('save: oci, oci-archive, docker-archive', () => {
  let t: { dir: string; cleanup: () => void };
  let img: TestImage;
  let want: Record<string, Node>;
  let pool: Pool;
  let original: { inspect: SkopeoInspect; config: SkopeoConfig };
  const save = (name: string, dest: string) => saveImage(pool, { name, dest, tmpDir: path.join(pool.root, 'tmp') });
  const inspectOf = (src: string) => ({
    inspect: JSON.parse(run('skopeo', ['inspect', src])) as SkopeoInspect,
    config: JSON.parse(run('skopeo', ['inspect', '--config', src])) as SkopeoConfig,
  });
  /** The tree umoci unpacks from `src` (any transport: copied to a layout first). */
  const unpack = (src: string, tag = 't') => {
    const work = fs.mkdtempSync(path.join(t.dir, 'unpack-'));
    run('skopeo', ['copy', '-q', src, `oci:${work}/layout:${tag}`]);
    run('umoci', ['unpack', '--image', `${work}/layout:${tag}`, `${work}/bundle`]);
    return hostTree(`${work}/bundle/rootfs`, { mtimes: true });
  };

  beforeAll(async () => {
    t = tmpDir('thinfs-save-');
    img = buildTestImage(t.dir);
    want = hostTree(img.unpacked, { mtimes: true });
    original = inspectOf(img.layout);
    pool = Pool.create(path.join(t.dir, 'root'), { dataSizeBytes: 1 * GiB, minFreePercent: 0 });
    await loadImage(pool, { source: img.layout, spoolDir: path.join(pool.root, 'tmp') });
  }, 120_000);
  afterAll(() => {
    pool?.close();
    t?.cleanup();
  });

  const sameImage = (src: string) => {
    const got = inspectOf(src);
    expect(got.inspect).toMatchObject({ Architecture: original.inspect.Architecture, Os: 'linux', Env: original.inspect.Env, Labels: original.inspect.Labels });
    expect(got.inspect.Layers).toHaveLength(3);
    expect(got.config.config).toEqual(original.config.config);
    expect(got.config.history).toEqual(original.config.history);
    expect(got.config.rootfs.diff_ids).toHaveLength(3);
  };

  it('oci:DIR:TAG — skopeo reads the same config, umoci unpacks the same tree', async () => {
    const dir = path.join(t.dir, 'out-layout');
    const r = await save('layout:t', `oci:${dir}:v1`);
    expect(r).toMatchObject({ format: 'oci', tag: 'v1', reference: 'layout:t' });
    expect(r.layers).toHaveLength(3);
    sameImage(`oci:${dir}:v1`);
    expect(unpack(`oci:${dir}:v1`)).toEqual(want);
    // a second tag goes into the same layout, sharing the blobs
    await save('layout:t', `oci:${dir}:v2`);
    const index = JSON.parse(fs.readFileSync(path.join(dir, 'index.json'), 'utf8')) as { manifests: { annotations: Record<string, string> }[] };
    expect(index.manifests.map((m) => m.annotations['org.opencontainers.image.ref.name'])).toEqual(['v1', 'v2']);
    expect(fs.readdirSync(path.join(dir, 'blobs', 'sha256')).filter((n) => n.includes('tmp'))).toEqual([]);
  });

  it('oci-archive and docker-archive — the same, through skopeo', async () => {
    const oa = path.join(t.dir, 'out.oci.tar');
    const da = path.join(t.dir, 'out.docker.tar');
    await save('layout:t', `oci-archive:${oa}`);
    const d = await save('layout:t', `docker-archive:${da}:example.org/saved:1`);
    expect(d.tag).toBe('example.org/saved:1');
    sameImage(`oci-archive:${oa}`);
    sameImage(`docker-archive:${da}`);
    expect(unpack(`oci-archive:${oa}`)).toEqual(want);
    expect(unpack(`docker-archive:${da}`)).toEqual(want);
    expect(fs.readdirSync(t.dir).filter((n) => n.includes('.tmp'))).toEqual([]);
    expect(fs.readdirSync(path.join(pool.root, 'tmp'))).toEqual([]);
  });

  it('loading a saved image back adds no layer data', async () => {
    const oa = path.join(t.dir, 'out.oci.tar');
    const before = pool.status().dataUsedBytes;
    const r = await loadImage(pool, { source: oa, name: 'back:1', spoolDir: path.join(pool.root, 'tmp') });
    expect(r).toMatchObject({ newLayers: 0, sharedLayers: 3 });
    expect(pool.status().dataUsedBytes).toBe(before);
  });

  it('a committed container saves as one more layer: its changes, whiteouts included', async () => {
    const ctx = { root: pool.root, pool };
    await create(ctx, { name: 'c1', image: 'layout:t' });
    const v = Filesystem.open(pool, pool.findDevice('c1')!.id);
    const fh = v.create('/etc/added', 0o640, { uid: 7, gid: 8 });
    v.write(fh, 0, Buffer.from('from the container\n'));
    v.release(fh);
    v.unlink('/etc/secret');
    v.rmdir('/tmp');
    v.chmod('/opq', 0o711);
    v.close();
    await commit(ctx, { container: 'c1', name: 'snap' });
    const dir = path.join(t.dir, 'out-snap');
    const r = await save('snap', `oci:${dir}:snap`);
    expect(r.layers.map((l) => l.committed)).toEqual([false, false, false, true]);
    const got = inspectOf(`oci:${dir}:snap`);
    expect(got.inspect.Layers).toHaveLength(4);
    expect(got.config.config).toEqual(original.config.config);
    expect(got.config.history.filter((h) => h.empty_layer !== true)).toHaveLength(4);
    expect(got.config.history.at(-1)?.created_by).toBe('thinfs commit (snap)');
    const snapView = Filesystem.open(pool, pool.findDevice('snap')!.id, { readOnly: true });
    let snapTree: Record<string, Node>;
    try {
      snapTree = viewTree(snapView, { mtimes: true });
    } finally {
      snapView.close();
    }
    expect(snapTree['/etc/secret']).toBeUndefined();
    expect(snapTree['/etc/added']).toMatchObject({ mode: '640', uid: 7, gid: 8 });
    expect(unpack(`oci:${dir}:snap`, 'snap')).toEqual(snapTree);
  });

  it('refuses a container, an unknown image and a destination without a format', async () => {
    await expect(save('c1', `oci:${path.join(t.dir, 'x')}`)).rejects.toThrow(/^EINVAL: 'c1' is a container; save an image/);
    await expect(save('nope', `oci:${path.join(t.dir, 'x')}`)).rejects.toThrow(/^ENOENT: no image named 'nope'/);
    await expect(save('layout:t', path.join(t.dir, 'x.tar'))).rejects.toThrow(/^EINVAL: say which format to write/);
    expect(fs.existsSync(path.join(t.dir, 'x'))).toBe(false);
  });
});
