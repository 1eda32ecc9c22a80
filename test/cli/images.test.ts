/**
 * Images and containers through the built CLI: import (directory, tar, gzip, stdin),
 * create, commit, ls, inspect, rm with its deferred deletion — and bad input to each
 * command: exactly one line on stderr, a non-zero exit, and the pool unchanged.
 */
import { constants } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rm as rmOp } from '../../src/daemon/ops/image-ops.js';
import type { DeviceSummary, InspectResult } from '../../src/daemon/ops/index.js';
import { Filesystem } from '../../src/fs/index.js';
import { Pool } from '../../src/pool/index.js';
import { buildBusyboxRootfs, haveBusybox, makeTar, writeTar, writeWhiteoutLayer } from '../helpers/layers.js';
import { tmpDir } from '../helpers/tmp.js';
import { namesIn, readFile, treeOf } from '../helpers/tree.js';
import { json, thinfs, thinfsAt, thinfsWithInput } from './helpers.js';

const ROOT_CALLER = { uid: 0, gid: 0 };

/** Open the pool in this process (no daemon runs in these tests) for a moment. */
function withPool<R>(root: string, fn: (pool: Pool) => R, readOnly = true): R {
  const pool = Pool.open(root, { readOnly });
  try {
    return fn(pool);
  } finally {
    pool.close();
  }
}

function viewOf<R>(root: string, name: string, fn: (v: Filesystem) => R): R {
  return withPool(root, (pool) => {
    const v = Filesystem.open(pool, pool.findDevice(name)!.id, { readOnly: true });
    try {
      return fn(v);
    } finally {
      v.close();
    }
  });
}

const byName = (devices: DeviceSummary[]) => Object.fromEntries(devices.map((d) => [d.name, d]));

describe('help', () => {
  it.each(['import', 'export', 'create', 'commit', 'ls', 'inspect', 'rm'])('%s --help', async (c) => {
    const r = await thinfs([c, '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`Usage: thinfs ${c}`);
  });

  it('rm --help states what --force does to an image with containers', async () => {
    const r = await thinfs(['rm', '--help']);
    expect(r.stdout).toMatch(/refused unless --force/);
  });
});

describe.skipIf(!haveBusybox())('images and containers end to end', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  let rootfs: string;
  let applets: string[];
  const { cli, ok } = thinfsAt(() => root);
  const ls = async () => json<DeviceSummary[]>(await ok('ls', '--json'));

  beforeAll(async () => {
    t = tmpDir('thinfs-images-');
    root = path.join(t.dir, 'root');
    rootfs = path.join(t.dir, 'rootfs');
    applets = buildBusyboxRootfs(rootfs);
    await ok('init', '--data-size', '256M');
  });
  afterAll(() => t.cleanup());

  it('imports the busybox rootfs and a whiteout layer, from files and from stdin', async () => {
    const r = await ok('import', 'busybox', rootfs);
    expect(r.stdout).toMatch(/^imported image busybox from .* \(directory\): \d+ entries, /);
    const tarFile = writeWhiteoutLayer(path.join(t.dir, 'layer2.tar'));
    expect((await ok('import', 'layer2', tarFile, '--parent', 'busybox')).stdout).toMatch(/^imported image layer2 on busybox .*\(tar\).*3 whiteouts, 1 opaque directory/);
    const gz = zlib.gzipSync(makeTar([{ path: 'etc/from-stdin', data: 'piped\n' }]));
    const piped = await thinfsWithInput(['--root', root, 'import', 'layer3', '-', '--parent', 'layer2'], gz);
    expect(piped).toMatchObject({ code: 0, stderr: '' });
    expect(piped.stdout).toMatch(/^imported image layer3 on layer2 from stdin \(tar\): 1 entry, 1 file /);
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]); // the spooled copy is gone

    const d = byName(await ls());
    expect(d.busybox).toMatchObject({ kind: 'image', parent: null, readOnly: true, state: 'active' });
    expect(d.layer2).toMatchObject({ kind: 'image', parent: 'busybox', readOnly: true, state: 'active' });
    expect(d.layer3).toMatchObject({ kind: 'image', parent: 'layer2', readOnly: true, state: 'active' });
    expect(d.busybox!.exclusiveBytes).toBeGreaterThan(1_900_000);
    expect(Date.parse(d.busybox!.created)).toBeGreaterThan(Date.now() - 60_000);
    viewOf(root, 'layer3', (v) => {
      expect(readFile(v, '/etc/from-stdin').toString()).toBe('piped\n');
      expect(namesIn(v, '/bin')).toHaveLength(applets.length); // busybox + applets - vi
      expect(namesIn(v, '/var/lib/app')).toEqual(['c']);
    });
    const text = await ok('ls');
    expect(text.stdout).toMatch(/^NAME\s+KIND\s+PARENT\s+MODE\s+USED\s+EXCLUSIVE\s+CREATED\s+STATE\s+MOUNTED\n/);
    expect(text.stdout).toMatch(/^layer2\s+image\s+busybox\s+ro\s/m);
  });

  it('create, write, commit, create from the committed image; inspect shows the chain', async () => {
    expect((await ok('create', 'c1', 'layer3')).stdout).toBe('created container c1 from image layer3\n');
    // Write into the container as a mount would (no daemon runs here: the pool opens directly).
    withPool(
      root,
      (pool) => {
        const v = Filesystem.open(pool, pool.findDevice('c1')!.id);
        const fh = v.create('/root/work', 0o600, ROOT_CALLER);
        v.write(fh, 0, Buffer.from('done'));
        v.release(fh);
        v.unlink('/etc/passwd');
        v.close();
      },
      false,
    );
    expect((await ok('commit', 'c1', 'snap')).stdout).toBe('committed container c1 as image snap\n');
    await ok('create', 'c2', 'snap');
    viewOf(root, 'c2', (v) => {
      expect(readFile(v, '/root/work').toString()).toBe('done');
      expect(() => v.getattr('/etc/passwd')).toThrow(/ENOENT/);
      expect(v.getattr('/root/work').mode).toBe(constants.S_IFREG | 0o600);
    });
    viewOf(root, 'layer3', (v) => expect(readFile(v, '/etc/passwd').toString()).toMatch(/^root:/));
    const i = json<InspectResult>(await ok('inspect', 'c2', '--json'));
    expect(i).toMatchObject({ name: 'c2', kind: 'container', parent: 'snap', origin: 'snap', readOnly: false, state: 'active', depth: 5 });
    expect(i.chain).toEqual([
      { name: 'snap', kind: 'image' },
      { name: 'layer3', kind: 'image' },
      { name: 'layer2', kind: 'image' },
      { name: 'busybox', kind: 'image' },
    ]);
    const snap = json<InspectResult>(await ok('inspect', 'snap', '--json'));
    expect(snap.children.map((c) => c.name).sort()).toEqual(['c1', 'c2']);
    expect((await ok('inspect', 'busybox')).stdout).toMatch(/^Image: busybox\n Id: \d+\n Kind: image\n/);
  });

  it('export --diff of a layer, imported again on its parent, gives the same tree; export to stdout works too', async () => {
    const file = path.join(t.dir, 'layer2-diff.tar');
    const r = await ok('export', 'layer2', file, '--diff');
    expect(r.stdout).toBe(`exported the changes of layer2 to ${file}: 8 entries (92 B of file data), 3 whiteouts, 1 opaque directory\n`);
    await ok('import', 'layer2b', file, '--parent', 'busybox');
    const shape = (name: string) =>
      viewOf(root, name, (v) => {
        const tree = treeOf(v);
        return Object.fromEntries(Object.entries(tree).map(([p, { ino: _i, ...rest }]) => [p, p === '/' ? { ...rest, mtimeNs: '' } : rest]));
      });
    expect(shape('layer2b')).toEqual(shape('layer2'));
    const piped = await thinfs(['--root', root, 'export', 'layer2', '--diff']);
    expect(piped.code).toBe(0);
    expect(Buffer.byteLength(piped.stdout, 'latin1')).toBeGreaterThan(1024);
    expect(piped.stderr).toBe('exported the changes of layer2 to stdout: 8 entries (92 B of file data), 3 whiteouts, 1 opaque directory\n');
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]);
    await ok('rm', 'layer2b');
  });

  it('rm: deferred while devices sit on it, refused for an image with containers unless --force', async () => {
    await ok('create', 'c3', 'layer3');
    expect((await ok('rm', 'busybox')).stdout).toBe('deferred image busybox (waiting for image layer2)\n');
    let info = json<{ devices: number; deferredDeletions: number }>(await ok('info', '--json'));
    expect(info.deferredDeletions).toBe(1);
    expect(byName(await ls()).busybox!.state).toBe('deferred');
    // A deferred image can't be built on.
    const r = await cli('create', 'c4', 'busybox');
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual(["thinfs: ENOENT: image 'busybox' is being deleted, create 'busybox'"]);

    const refused = await cli('rm', 'layer3');
    expect(refused.code).toBe(1);
    expect(refused.errLines).toEqual([
      "thinfs: EBUSY: image 'layer3' has containers: c3 (remove them first, or use --force to remove them too), rm 'layer3'",
    ]);
    expect((await ok('rm', 'layer3', '--force')).stdout).toBe('deleted container c3\ndeferred image layer3 (waiting for image snap)\n');
    expect((await ok('rm', 'c1')).stdout).toBe('deleted container c1\n');
    await ok('rm', 'c2');
    expect((await ok('rm', 'snap')).stdout).toBe('deleted image snap\n');
    // snap was the last device on layer3, layer3 on layer2, layer2 on busybox: all gone now.
    expect(byName(await ls())).toMatchObject({ layer2: { state: 'active' } });
    expect((await ok('rm', 'layer2')).stdout).toBe('deleted image layer2\n');
    expect(await ls()).toEqual([]);
    info = json(await ok('info', '--json'));
    expect(info).toMatchObject({ devices: 0, deferredDeletions: 0, dataUsed: 0 });
    expect((await ok('check')).stdout).toMatch(/clean/);
  });
});

describe('rm of a container open in the daemon (mounted) is deferred until it closes', () => {
  it('deferred, then completed when the view closes', async () => {
    const t = tmpDir('thinfs-rm-');
    try {
      const root = path.join(t.dir, 'root');
      const pool = Pool.create(root, { dataSizeBytes: 64 * 1024 * 1024, minFreePercent: 0 });
      try {
        const img = pool.createThin('img', { kind: 'image' });
        pool.setReadOnly(img);
        const c = pool.createSnapshot(img, 'c', { kind: 'container' });
        const view = Filesystem.open(pool, c); // what a mount holds
        const r = await rmOp({ root, pool }, { name: 'c' });
        expect(r).toMatchObject({ name: 'c', result: 'deferred' });
        expect(pool.findDevice('c')!.state).toBe('deferred');
        view.close();
        expect(pool.findDevice('c')).toBeUndefined();
        expect(pool.status().deferredDeletions).toBe(0);
      } finally {
        pool.close();
      }
    } finally {
      t.cleanup();
    }
  });
});

describe('bad input: one line on stderr, non-zero exit, the pool unchanged', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  let lsBefore: string;
  const cli = (...args: string[]) => thinfs(['--root', root, ...args]);
  const state = () =>
    withPool(root, (pool) => ({
      devices: JSON.stringify(pool.listDevices(), (_k, v: unknown) => (typeof v === 'bigint' ? v.toString() : v)),
      used: pool.status().dataUsedBytes,
      clean: pool.check().clean,
    }));

  beforeAll(async () => {
    t = tmpDir('thinfs-badinput-');
    root = path.join(t.dir, 'root');
    expect((await cli('init', '--data-size', '128M')).code).toBe(0);
    expect((await cli('import', 'img', writeTar(path.join(t.dir, 'img.tar'), [{ path: 'etc/passwd', data: 'root:x:0:0::/:/bin/sh\n' }]))).code).toBe(0);
    expect((await cli('create', 'ctr', 'img')).code).toBe(0);
    lsBefore = (await cli('ls', '--json')).stdout;
  });
  afterAll(async () => {
    // The pool as the CLI sees it, after every refusal below.
    expect((await cli('ls', '--json')).stdout).toBe(lsBefore);
    const check = await cli('check');
    expect(check.code).toBe(0);
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]);
    t.cleanup();
  });

  const tar = (name: string, entries: Parameters<typeof makeTar>[0], opts: { end?: boolean } = {}) => () => writeTar(path.join(t.dir, name), entries, opts);
  const cases: [string, () => string[], RegExp, number?][] = [
    ['import: existing name', () => ['import', 'img', tar('a.tar', [{ path: 'x' }])()], /^thinfs: EEXIST: an image or container named 'img' exists, import 'img'$/],
    ['import: unknown parent', () => ['import', 'new', tar('b.tar', [{ path: 'x' }])(), '--parent', 'nope'], /^thinfs: ENOENT: no image named 'nope' \(see `thinfs ls`\), import 'nope'$/],
    ['import: parent is a container', () => ['import', 'new', tar('c.tar', [{ path: 'x' }])(), '--parent', 'ctr'], /^thinfs: EINVAL: 'ctr' is a container, not an image/],
    ['import: missing source', () => ['import', 'new', path.join(t.dir, 'missing.tar')], /^thinfs: ENOENT: cannot read the source \(no such file or directory\), import '.*missing\.tar'$/],
    ['import: bad name', () => ['import', 'bad/name', tar('d.tar', [{ path: 'x' }])()], /^thinfs: EINVAL: device names are 1-128 characters/],
    ['import: ../ entry', () => ['import', 'new', tar('e.tar', [{ path: 'ok', data: 'ok' }, { path: '../../evil', data: 'x' }])()], /^thinfs: EINVAL: entry '\.\.\/\.\.\/evil' has a '\.\.' component .*; refused, import '.*e\.tar'$/],
    ['import: absolute entry', () => ['import', 'new', tar('f.tar', [{ path: '/etc/shadow', data: 'x' }])()], /^thinfs: EINVAL: entry '\/etc\/shadow' is an absolute path/],
    ['import: hard link out of the tree', () => ['import', 'new', tar('g.tar', [{ path: 'x', type: 'link', linkpath: '../../etc/passwd' }])()], /hard link target '\.\.\/\.\.\/etc\/passwd' has a '\.\.' component/],
    ['import: truncated tar', () => ['import', 'new', tar('h.tar', [{ path: 'ok', data: 'ok' }], { end: false })()], /^thinfs: EINVAL: the tar is truncated: it ends after entry 'ok'/],
    ['import: not a tar', () => { const f = path.join(t.dir, 'noise'); fs.writeFileSync(f, 'hello world\n'.repeat(100)); return ['import', 'new', f]; }, /^thinfs: EINVAL: not a tar archive/],
    ['import: a device as the source', () => ['import', 'new', '/dev/null'], /^thinfs: EINVAL: the source must be a directory or a tar file/],
    ['import: no arguments', () => ['import'], /^thinfs: missing required argument 'name'$/, 2],
    ['create: unknown image', () => ['create', 'new', 'nope'], /^thinfs: ENOENT: no image named 'nope' \(see `thinfs ls`\), create 'nope'$/],
    ['create: from a container', () => ['create', 'new', 'ctr'], /^thinfs: EINVAL: 'ctr' is a container, not an image \(make an image of it with `thinfs commit ctr NEW-IMAGE`\), create 'ctr'$/],
    ['create: existing name', () => ['create', 'img', 'img'], /^thinfs: EEXIST: an image or container named 'img' exists, create 'img'$/],
    ['create: bad name', () => ['create', '-x', 'img'], /^thinfs: (unknown option '-x'|EINVAL)/, 2],
    ['commit: unknown container', () => ['commit', 'nope', 'new'], /^thinfs: ENOENT: no container named 'nope'/],
    ['commit: an image', () => ['commit', 'img', 'new'], /^thinfs: EINVAL: 'img' is an image, not a container/],
    ['commit: existing name', () => ['commit', 'ctr', 'img'], /^thinfs: EEXIST: an image or container named 'img' exists, commit 'img'$/],
    ['inspect: unknown', () => ['inspect', 'nope'], /^thinfs: ENOENT: no image or container named 'nope' \(see `thinfs ls`\), inspect 'nope'$/],
    ['ls: extra argument', () => ['ls', 'x'], /^thinfs: too many arguments/, 2],
    ['export: unknown', () => ['export', 'nope', path.join(t.dir, 'out.tar')], /^thinfs: ENOENT: no image or container named 'nope' \(see `thinfs ls`\), export 'nope'$/],
    ['export: output directory missing', () => ['export', 'img', path.join(t.dir, 'no', 'such', 'out.tar')], /^thinfs: ENOENT: cannot write the output \(.*\), export '.*out\.tar'$/],
    ['rm: unknown', () => ['rm', 'nope'], /^thinfs: ENOENT: no image or container named 'nope' \(see `thinfs ls`\), rm 'nope'$/],
    ['rm: image with containers', () => ['rm', 'img'], /^thinfs: EBUSY: image 'img' has containers: ctr \(remove them first, or use --force to remove them too\), rm 'img'$/],
  ];

  it.each(cases)('%s', async (_title, args, message, code = 1) => {
    const before = state();
    const r = await cli(...args());
    expect(r.errLines).toHaveLength(1);
    expect(r.errLines[0]).toMatch(message);
    expect(r.code).toBe(code);
    expect(r.stdout).toBe('');
    expect(state()).toEqual(before);
    expect(before.clean).toBe(true);
  });

  it('import -: an escaping tar on stdin is refused, and its spooled copy removed', async () => {
    const before = state();
    const r = await thinfsWithInput(['--root', root, 'import', 'new', '-'], makeTar([{ path: 'a', data: 'a' }, { path: '../escape', data: 'x' }]));
    expect(r.code).toBe(1);
    expect(r.errLines).toEqual([expect.stringMatching(/^thinfs: EINVAL: entry '\.\.\/escape' has a '\.\.' component/)]);
    expect(state()).toEqual(before);
    expect(fs.readdirSync(path.join(root, 'tmp'))).toEqual([]);
  });

  it.each([['ls'], ['inspect', 'x'], ['export', 'x', '/tmp/thinfs-never.tar'], ['create', 'a', 'b'], ['commit', 'a', 'b'], ['rm', 'a'], ['import', 'a', '/tmp'], ['import', 'a', '-']])(
    'without a pool: %j is one line and creates nothing',
    async (...args) => {
      const missing = path.join(t.dir, 'no-pool');
      const r = args[args.length - 1] === '-' ? await thinfsWithInput(['--root', missing, ...args], makeTar([])) : await thinfs(['--root', missing, ...args]);
      expect(r.code).toBe(1);
      expect(r.errLines).toEqual([`thinfs: ENOENT: no thinfs pool here; run \`thinfs init\` first, open '${missing}'`]);
      expect(fs.existsSync(missing)).toBe(false);
    },
  );
});
