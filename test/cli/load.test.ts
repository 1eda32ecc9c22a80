/**
 * `thinfs load`, `save`, `ls`, `inspect` and `rm` of real images through the built CLI
 * (images built at test time with umoci and skopeo): each form loads to the tree `umoci
 * unpack` gives (exported with `thinfs export` and extracted, and through a real mount);
 * a second form adds no layer data; saves read back equal through skopeo and umoci;
 * a corrupt blob and a rootfs tar are refused with one line, leaving the pool as it was
 * and clean; with a daemon running, load goes through it and the mount keeps answering.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runOp } from '../../src/daemon/client.js';
import type { DeviceSummary, InspectResult } from '../../src/daemon/ops/index.js';
import type { LoadResult, SaveResult } from '../../src/layers/index.js';
import { fuseSkipReason, TestPool } from '../fuse/helpers.js';
import { buildTestImage, hostTree, missingForImages, run, type Node, type TestImage } from '../helpers/oci-images.js';
import { tmpDir } from '../helpers/tmp.js';
import { CLI, json, thinfs, thinfsAt, thinfsWithInput } from './helpers.js';

const missing = missingForImages();
if (missing !== undefined) console.warn(`skipping the load CLI tests: ${missing}`);

describe('help', () => {
  it.each(['load', 'save'])('%s --help', async (c) => {
    const r = await thinfs([c, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: thinfs ${c}`);
    expect(r.stdout).toMatch(/oci-archive:FILE/);
  });

  it('save without a format is a usage error', async () => {
    const r = await thinfs(['save', 'x', '/tmp/x.tar']);
    expect(r).toMatchObject({ code: 2 });
    expect(r.errLines).toEqual(['thinfs: say which format to write: oci:/tmp/x.tar, oci-archive:/tmp/x.tar or docker-archive:/tmp/x.tar']);
  });
});

describe.skipIf(missing !== undefined)('load, save, ls, inspect, rm through the CLI', () => {
  let t: { dir: string; cleanup: () => void };
  let img: TestImage;
  let want: Record<string, Node>;
  let root: string;
  const { cli, ok } = thinfsAt(() => root);
  const ls = async () => json<DeviceSummary[]>(await ok('ls', '--json'));
  const info = async () => json<{ dataUsed: number; dataOnDisk: number }>(await ok('info', '--json'));
  /** The tree of device `name`, exported with `thinfs export` and extracted by GNU tar as root. */
  const exported = async (name: string) => {
    const dir = fs.mkdtempSync(path.join(t.dir, 'x-'));
    await ok('export', name, `${dir}.tar`);
    run('tar', ['--xattrs', '--xattrs-include=*', '--numeric-owner', '-xpf', `${dir}.tar`, '-C', dir]);
    return hostTree(dir, { mtimes: true });
  };

  beforeAll(async () => {
    t = tmpDir('thinfs-load-cli-');
    img = buildTestImage(t.dir);
    want = hostTree(img.unpacked, { mtimes: true });
    root = path.join(t.dir, 'root');
    await ok('init', '--data-size', '1G');
  }, 120_000);
  afterAll(() => t?.cleanup());

  it('loads oci:DIR:TAG, then oci-archive, docker-archive and stdin without adding layer data', async () => {
    const a = await ok('load', `oci:${path.join(t.dir, 'layout')}:t`);
    expect(a.stdout).toMatch(/^loaded image layout:t: sha256:[0-9a-f]{12}, 3 layers\nfrom oci:.*layout:t: 3 new layers \(.*\), 0 layers already in the pool, in [\d.]+ s\n$/);
    const used = (await info()).dataUsed;
    expect(used).toBeGreaterThan(0);
    const b = json<LoadResult>(await ok('load', '--json', `oci-archive:${img.ociArchive}`));
    expect(b).toMatchObject({ newLayers: 0, sharedLayers: 3, images: [{ reference: 'image.oci:t' }] });
    expect((await ok('load', img.dockerArchive)).stdout).toMatch(/^loaded image example.org\/test\/img:t \(device example.org_test_img:t\): .*\n.*0 new layers .* 3 layers already in the pool/);
    const piped = await thinfsWithInput(['--root', root, 'load', '--name', 'piped', '-'], fs.readFileSync(img.dockerArchive));
    expect(piped).toMatchObject({ code: 0, stderr: '' });
    expect(piped.stdout).toMatch(/^loaded image piped:latest: .*\nfrom stdin: 0 new layers/);
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]);
    expect((await info()).dataUsed).toBe(used);
    for (const name of ['layout:t', 'image.oci:t', 'example.org/test/img:t', 'piped:latest']) expect(await exported(name)).toEqual(want);
  });

  it('ls lists the images by repository and tag, layer devices with --all; --json carries both', async () => {
    const text = (await ok('ls')).stdout;
    expect(text).toMatch(/^NAME\s+KIND\s+PARENT\s+MODE\s+USED\s+EXCLUSIVE\s+CREATED\s+STATE\s+MOUNTED\n/);
    expect(text).not.toMatch(/^layer-/m);
    expect(text).toMatch(/\nIMAGES\nREPOSITORY\s+TAG\s+IMAGE ID\s+DEVICE\s+LAYERS\s+SIZE\s+CREATED\n/);
    expect(text).toMatch(/^example.org\/test\/img\s+t\s+[0-9a-f]{12}\s+example.org_test_img:t\s+3\s/m);
    expect(text).toMatch(/^layout\s+t\s+[0-9a-f]{12}\s+layout:t\s+3\s/m);
    expect((await ok('ls', '--all')).stdout).toMatch(/^layer-[0-9a-f]{16}\s+image\s+layer-[0-9a-f]{16}\s+ro\s/m);
    const devices = await ls();
    expect(devices.filter((d) => d.layer)).toHaveLength(3);
    expect(devices.find((d) => d.name === 'layout:t')?.image).toMatchObject({ reference: 'layout:t', repository: 'layout', tag: 't', layers: 3 });
  });

  it('inspect shows the config and the layers; --json gives the whole config', async () => {
    const text = (await ok('inspect', 'example.org/test/img:t')).stdout;
    expect(text).toMatch(/^Image: example.org_test_img:t\n/);
    expect(text).toMatch(/\nImage: example.org\/test\/img:t\n Reference: example.org\/test\/img:t\n Id: sha256:[0-9a-f]{64}\n Manifest: -\n Loaded from: docker-archive:/);
    expect(text).toContain(' Entrypoint: ["/bin/sh","-c"]\n Cmd: ["echo hi; id"]\n Env: PATH=/usr/bin:/bin GREETING=hello world\n WorkingDir: /etc\n User: 1000:1000\n Labels: {"org.example.test":"yes"}\n');
    expect(text).toMatch(/ Layers: 3\n {3}1\. sha256:[0-9a-f]{64} layer-[0-9a-f]{16}\n/);
    const i = json<InspectResult>(await ok('inspect', '--json', 'layout:t'));
    expect(i.imageInfo?.config).toMatchObject({ os: 'linux', config: { WorkingDir: '/etc', User: '1000:1000' } });
    await ok('create', 'c1', 'layout:t');
    const c = json<InspectResult>(await ok('inspect', '--json', 'c1'));
    expect(c.imageInfo).toMatchObject({ reference: 'layout:t', inherited: true, device: 'layout:t' });
    expect((await ok('inspect', 'c1')).stdout).toMatch(/\nCreated from image: layout:t\n/);
  });

  it('save to each form reads back equal through skopeo and umoci', async () => {
    const orig = JSON.parse(run('skopeo', ['inspect', '--config', img.layout])) as { config: unknown };
    for (const dest of [`oci:${path.join(t.dir, 'saved')}:s`, `oci-archive:${path.join(t.dir, 'saved.oci.tar')}`, `docker-archive:${path.join(t.dir, 'saved.docker.tar')}`]) {
      const r = json<SaveResult>(await ok('save', '--json', 'layout:t', dest));
      expect(r.layers).toHaveLength(3);
      const got = JSON.parse(run('skopeo', ['inspect', '--config', dest])) as { config: unknown };
      expect(got.config).toEqual(orig.config);
      const work = fs.mkdtempSync(path.join(t.dir, 'u-'));
      run('skopeo', ['copy', '-q', dest, `oci:${work}/l:x`]);
      run('umoci', ['unpack', '--image', `${work}/l:x`, `${work}/b`]);
      expect(hostTree(`${work}/b/rootfs`, { mtimes: true })).toEqual(want);
    }
    expect((await ok('save', 'layout:t', `oci-archive:${path.join(t.dir, 'again.tar')}:v9`)).stdout).toMatch(/^saved image layout:t to oci-archive:.*again.tar:v9 \(oci-archive, tag v9\): 3 layers/);
  });

  it('a corrupt blob and a rootfs tar are refused with one line; the pool is as it was and checks clean', async () => {
    const bad = path.join(t.dir, 'bad');
    fs.cpSync(path.join(t.dir, 'layout'), bad, { recursive: true });
    // flip a byte in the middle of every layer blob of the sibling (its top layer is not in the pool yet)
    const index = JSON.parse(fs.readFileSync(path.join(bad, 'index.json'), 'utf8')) as { manifests: { digest: string; annotations: Record<string, string> }[] };
    const m = index.manifests.find((x) => x.annotations['org.opencontainers.image.ref.name'] === 'u')!;
    const manifest = JSON.parse(fs.readFileSync(path.join(bad, 'blobs', 'sha256', m.digest.slice(7)), 'utf8')) as { layers: { digest: string }[] };
    const blob = path.join(bad, 'blobs', 'sha256', manifest.layers[2]!.digest.slice(7));
    const bytes = fs.readFileSync(blob);
    bytes[Math.floor(bytes.length / 2)]! ^= 0x55;
    fs.writeFileSync(blob, bytes);
    const before = await ls();
    const used = (await info()).dataUsed;
    const r = await cli('load', `oci:${bad}:u`);
    expect(r.code).toBe(1);
    expect(r.errLines).toHaveLength(1);
    expect(r.errLines[0]).toMatch(/^thinfs: EINVAL: digest mismatch: its blob is sha256:[0-9a-f]{64}, the image says sha256:[0-9a-f]{64} \(corrupt or altered\); refused, nothing loaded/);
    const tar = path.join(t.dir, 'rootfs.tar');
    run('tar', ['-C', img.unpacked, '-cf', tar, '.']);
    const n = await cli('load', tar);
    expect(n.code).toBe(1);
    expect(n.errLines).toEqual([`thinfs: EINVAL: not an image: a tar without oci-layout or manifest.json (a rootfs or layer tar? import it with \`thinfs import\`), load '${tar}'`]);
    expect(await ls()).toEqual(before);
    expect((await info()).dataUsed).toBe(used);
    const check = await cli('check');
    expect(check).toMatchObject({ code: 0 });
  });

  it('rm of the images removes the layer devices once no image needs them, and says so', async () => {
    await ok('rm', 'c1');
    for (const name of ['layout:t', 'image.oci:t', 'example.org/test/img:t']) await ok('rm', name);
    const layers = (await ls()).filter((d) => d.layer);
    expect(layers).toHaveLength(3); // piped:latest still needs them
    const last = await ok('rm', 'piped:latest');
    // Top down: the layer right below the image first, then each one's parent.
    const topDown: string[] = [];
    for (let l = layers.find((x) => !layers.some((y) => y.parent === x.name)); l !== undefined; l = layers.find((x) => x.name === l!.parent)) topDown.push(l.name);
    expect(topDown).toHaveLength(3);
    expect(last.stdout.split('\n').filter((l) => l !== '')).toEqual(['deleted image piped:latest', ...topDown.map((n) => `deleted layer ${n}`)]);
    expect(await ls()).toEqual([]);
    expect(await info()).toMatchObject({ dataUsed: 0, dataOnDisk: 0 }); // freed and punched out of the data file
  });
});

const noFuse = fuseSkipReason();
if (noFuse !== undefined) console.warn(`skipping the load-through-the-daemon test: ${noFuse}`);

describe.skipIf(missing !== undefined || noFuse !== undefined)('load through the daemon, beside a mount', () => {
  let p: TestPool;
  let img: TestImage;
  let t: { dir: string; cleanup: () => void };
  beforeAll(async () => {
    t = tmpDir('thinfs-load-daemon-');
    img = buildTestImage(t.dir);
    p = await TestPool.create({}, 'thinfs-load-daemon-pool-');
  }, 120_000);
  afterAll(async () => {
    await p?.cleanup();
    t?.cleanup();
  });

  it('the mounted image is the tree umoci unpacks; a load while it is mounted goes through the daemon', async () => {
    const a = await p.cli('load', img.layout);
    expect(a).toMatchObject({ code: 0, stderr: '' });
    const mnt = await p.mount('layout:t');
    expect(p.daemonPid()).toBeDefined();
    const want = hostTree(img.unpacked, { mtimes: true });
    expect(hostTree(mnt, { mtimes: true })).toEqual(want);
    const b = await p.cli('load', '--json', `docker-archive:${img.dockerArchive}`);
    expect(b).toMatchObject({ code: 0, stderr: '' });
    expect(JSON.parse(b.stdout)).toMatchObject({ newLayers: 0, sharedLayers: 3 });
    const c = await p.cli('load', img.sibling, '--name', 'sib');
    expect(c).toMatchObject({ code: 0, stderr: '' });
    expect(fs.readFileSync(path.join(mnt, 'opq', 'new'), 'utf8')).toBe('fresh\n');
    expect(await runOp(p.root, 'imageConfig', { name: 'sib' })).toEqual({ config: { Cmd: ['/bin/true'] } });
    const cfg = (await runOp<{ config: Record<string, unknown> }>(p.root, 'imageConfig', { name: 'example.org/test/img:t' })).config;
    expect(cfg).toMatchObject({ WorkingDir: '/etc', User: '1000:1000', Env: ['PATH=/usr/bin:/bin', 'GREETING=hello world'] });
    await p.umount(mnt);
  });

  it('mount and umount take the full reference of a loaded image; the mountpoint is named after its device', async () => {
    const keep = await p.mount('sib'); // the daemon keeps running between the steps
    try {
      const mnt = await p.mount('example.org/test/img:t');
      expect(mnt).toBe(path.join(p.root, 'mnt', 'example.org_test_img:t'));
      expect(hostTree(mnt, { mtimes: true })).toEqual(hostTree(img.unpacked, { mtimes: true }));
      const again = await p.cli('mount', 'example.org/test/img:t');
      expect(again).toMatchObject({ code: 1, errLines: [expect.stringMatching(/^thinfs: EBUSY: already mounted at .*example.org_test_img:t, mount 'example.org\/test\/img:t'$/)] });
      const u = await p.cli('umount', 'example.org/test/img:t');
      expect(u).toMatchObject({ code: 0, stdout: `unmounted example.org_test_img:t from ${mnt}\n`, stderr: '' });
      expect(fs.existsSync(mnt)).toBe(false);
    } finally {
      await p.umount(keep);
    }
  });

  it.skipIf(!fs.existsSync('/usr/bin/script'))('load through the daemon shows its progress bar on a terminal; rm lists the layer it removed', async () => {
    const keep = await p.mount('layout:t');
    try {
      // sib's top layer is its own: removing sib removes it, so loading sib again loads one layer.
      const rm = await p.cli('rm', 'sib');
      expect(rm).toMatchObject({ code: 0, stderr: '' });
      expect(rm.stdout).toMatch(/^deleted image sib:latest\ndeleted layer layer-[0-9a-f]{16}\n$/);
      const quoted = [process.execPath, CLI, '--root', p.root, 'load', '--name', 'sib', img.sibling].map((a) => `'${a}'`).join(' ');
      const r = spawnSync('/usr/bin/script', ['-qefc', quoted, '/dev/null'], { encoding: 'utf8', env: { ...process.env, TERM: 'xterm' } });
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/loading layer 1\/1 \[[█░]+\] \d+% \| [\d.]+ [KMG]?B of [\d.]+ [KMG]?B/);
      expect(r.stdout).toMatch(/loaded image sib:latest: [^\n]*\n[^\n]*1 new layer/);
      expect(p.daemonPid()).toBeDefined(); // the daemon did the load
    } finally {
      await p.umount(keep);
    }
  });
});
