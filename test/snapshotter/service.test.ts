/**
 * The Snapshots service against a pool, without containerd and without FUSE: the real gRPC
 * server (src/snapshotter/server.ts) on a unix socket, each call run by the daemon's
 * operations (daemon/ops/snapshot-ops.ts) on a pool opened here, as the daemon runs them;
 * the daemon's mount table replaced by a recording fake (views are "mounted" at their
 * default mountpoints, nothing is served). What unpacking writes through a view is
 * written here through the Filesystem API of the device instead.
 *
 * Shows: containerd's lifecycle (Prepare, Commit, Prepare on the committed parent, View,
 * Remove) on pool devices, the status codes containerd acts on, labels and Update masks,
 * Usage from the pool's counts, List with containerd's filters and batching, Cleanup of
 * devices no record knows, undo of a Prepare whose view does not mount, records surviving a
 * reopen, and that outside the daemon nothing is mounted.
 */
import { constants } from 'node:fs';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';
import { runLocal } from '../../src/daemon/client.js';
import { OPS, type MountService, type OpContext } from '../../src/daemon/ops/index.js';
import type { MountRequest, MountResult } from '../../src/daemon/ops/mount-ops.js';
import type { MountRecord } from '../../src/daemon/runfiles.js';
import { fail } from '../../src/errors.js';
import { Filesystem } from '../../src/fs/index.js';
import { Pool, type DevId } from '../../src/pool/index.js';
import { listenSnapshots, statusOf, type SnapshotServer } from '../../src/snapshotter/index.js';
import { findSnapshot, isSnapshotDeviceName, parseFilters, snapshotDeviceName } from '../../src/snapshotter/snapshots/index.js';
import { readFile } from '../helpers/tree.js';
import { tmpDir } from '../helpers/tmp.js';
import { codeOf, Snapshots } from './helpers.js';

const ROOT_CALLER = { uid: 0, gid: 0 };
const MiB = 1024 * 1024;

/** The daemon's mount table, recorded: mount/umount calls, a view that refuses to unmount (busy), a mount that fails. */
class FakeMounts {
  readonly mounted = new Map<string, MountRecord>();
  readonly calls: string[] = [];
  busy = new Set<string>();
  failMount: string | undefined;

  constructor(private readonly root: string) {}

  service(): MountService {
    return {
      mount: (req: MountRequest): Promise<MountResult> => {
        this.calls.push(`mount ${req.name}${req.readOnly ? ' ro' : ''}`);
        if (this.failMount !== undefined) return Promise.reject(fail('EIO', 'mount', req.name, this.failMount));
        const rec: MountRecord = {
          name: req.name,
          devId: 0,
          mountpoint: path.join(this.root, 'mnt', req.name),
          readOnly: req.readOnly,
          allowOther: true,
          setuid: true,
          uidMap: req.uids.toStrings(),
          gidMap: req.gids.toStrings(),
          mountedAt: new Date().toISOString(),
        };
        this.mounted.set(req.name, rec);
        return Promise.resolve({ ...rec, warnings: [] });
      },
      umount: (name: string) => {
        this.calls.push(`umount ${name}`);
        if (this.busy.has(name)) return Promise.reject(fail('EBUSY', 'umount', name, 'target is busy (held by pid 1 (init): cwd)'));
        const rec = this.mounted.get(name);
        if (rec === undefined) return Promise.reject(fail('EINVAL', 'umount', name, 'not mounted'));
        this.mounted.delete(name);
        return Promise.resolve({ name, mountpoint: rec.mountpoint, stale: false, warnings: [] });
      },
      list: () => [...this.mounted.values()],
      status: () => {
        throw new Error('not used');
      },
      stats: () => [],
    } as unknown as MountService;
  }
}

interface Rig {
  root: string;
  pool: Pool;
  mounts: FakeMounts;
  server: SnapshotServer;
  client: Snapshots;
  close(): Promise<void>;
}

const dirs: (() => void)[] = [];
afterAll(() => dirs.forEach((c) => c()));

/** A pool under `root` (made when missing), the gRPC server on it and a client. */
async function rig(root?: string): Promise<Rig> {
  if (root === undefined) {
    const t = tmpDir('thinfs-snapshotter-');
    dirs.push(t.cleanup);
    root = path.join(t.dir, 'root');
    Pool.create(root, { dataSizeBytes: 1024 * MiB }).close();
  }
  const pool = Pool.open(root);
  const mounts = new FakeMounts(root);
  const ctx: OpContext = { root, pool, mounts: mounts.service() };
  const server = await listenSnapshots(path.join(root, 'run', 'snapshotter.sock'), {
    call: async <R>(op: string, args: object) => (await OPS[op]!(ctx, args)) as R,
  });
  const client = new Snapshots(server.address);
  return {
    root,
    pool,
    mounts,
    server,
    client,
    close: async () => {
      client.close();
      await server.close();
      pool.close();
    },
  };
}

/** Write files into a snapshot's device, as unpacking a layer through its view would. */
function writeInto(pool: Pool, device: string, files: Record<string, Buffer | string>): void {
  const dev = pool.findDevice(device)!;
  const view = Filesystem.open(pool, dev.id);
  try {
    for (const [p, data] of Object.entries(files)) {
      const dir = path.posix.dirname(p);
      if (dir !== '/' && !exists(view, dir)) view.mkdir(dir, 0o755, ROOT_CALLER);
      const fh = view.create(p, 0o644, ROOT_CALLER, constants.O_CREAT | constants.O_WRONLY);
      view.write(fh, 0, Buffer.from(data));
      view.release(fh);
    }
  } finally {
    view.close();
  }
}

function exists(view: Filesystem, p: string): boolean {
  try {
    view.getattr(p);
    return true;
  } catch {
    return false;
  }
}

function readFrom(pool: Pool, device: string, p: string): string {
  const view = Filesystem.open(pool, pool.findDevice(device)!.id, { readOnly: true });
  try {
    return readFile(view, p).toString();
  } finally {
    view.close();
  }
}

// containerd's keys, as its metadata store makes them: namespace/id/key.
const EXTRACT = 'default/1/extract-123456789-abc sha256:1111';
const LAYER = 'default/2/sha256:1111';
const CONTAINER = 'default/3/my-container';

describe('snapshot lifecycle through gRPC', () => {
  let r: Rig;
  beforeEach(async () => (r = await rig()));
  afterEach(async () => r.close());

  it('Prepare makes a writable device named after the key and answers a read-write bind mount of its view', async () => {
    const mounts = await r.client.prepare(EXTRACT, '', { 'containerd.io/snapshot/x': 'y' });
    const dev = snapshotDeviceName(EXTRACT);
    expect(dev).toMatch(/^snap-[0-9a-f]{24}$/);
    expect(mounts).toEqual([{ type: 'bind', source: path.join(r.root, 'mnt', dev), target: '', options: ['rbind', 'rw'] }]);
    expect(r.mounts.calls).toEqual([`mount ${dev}`]);
    const d = r.pool.findDevice(dev)!;
    expect(d.readOnly).toBe(false);
    const info = await r.client.stat(EXTRACT);
    expect(info).toMatchObject({ name: EXTRACT, parent: '', kind: 'ACTIVE', labels: { 'containerd.io/snapshot/x': 'y' } });
    expect(Number(info.created_at!.seconds)).toBeGreaterThan(1_600_000_000);
    // The same key again, in any form, is AlreadyExists; nothing new is made.
    expect(await codeOf(r.client.prepare(EXTRACT))).toBe('ALREADY_EXISTS');
    expect(await codeOf(r.client.view(EXTRACT))).toBe('ALREADY_EXISTS');
    expect(r.pool.listDevices()).toHaveLength(1);
  });

  it('Commit freezes the active device in place (same blocks, read-only, renamed after the name); the key is gone', async () => {
    await r.client.prepare(EXTRACT);
    writeInto(r.pool, snapshotDeviceName(EXTRACT), { '/etc/hello': 'world\n', '/big': Buffer.alloc(2 * MiB, 7) });
    const before = r.pool.findDevice(snapshotDeviceName(EXTRACT))!;
    const usedBefore = r.pool.status().dataUsedBytes;
    await r.client.commit(LAYER, EXTRACT, { 'containerd.io/snapshot.ref': 'sha256:1111' });
    expect(r.mounts.calls).toEqual([`mount ${before.name}`, `umount ${before.name}`]);
    const after = r.pool.findDevice(snapshotDeviceName(LAYER))!;
    expect(after.id).toBe(before.id);
    expect(after.readOnly).toBe(true);
    expect(r.pool.findDevice(before.name)).toBeUndefined();
    // O(1): no block was copied.
    expect(r.pool.status().dataUsedBytes).toBe(usedBefore);
    expect(readFrom(r.pool, after.name, '/etc/hello')).toBe('world\n');
    expect(await r.client.stat(LAYER)).toMatchObject({ name: LAYER, kind: 'COMMITTED', parent: '', labels: { 'containerd.io/snapshot.ref': 'sha256:1111' } });
    expect(await codeOf(r.client.stat(EXTRACT))).toBe('NOT_FOUND');
    expect(await codeOf(r.client.commit('default/9/other', EXTRACT))).toBe('NOT_FOUND');
    // The name exists: AlreadyExists (before the key is looked at, as containerd's metastore).
    expect(await codeOf(r.client.commit(LAYER, 'no such key'))).toBe('ALREADY_EXISTS');
  });

  it('Prepare on a committed parent sees its files; a child can\'t change it; View is read-only and can\'t be committed', async () => {
    await r.client.prepare(EXTRACT);
    writeInto(r.pool, snapshotDeviceName(EXTRACT), { '/etc/hello': 'world\n' });
    await r.client.commit(LAYER, EXTRACT);
    await r.client.prepare(CONTAINER, LAYER);
    const child = snapshotDeviceName(CONTAINER);
    expect(readFrom(r.pool, child, '/etc/hello')).toBe('world\n');
    writeInto(r.pool, child, { '/etc/hello': 'changed\n' });
    expect(readFrom(r.pool, snapshotDeviceName(LAYER), '/etc/hello')).toBe('world\n');
    expect((await r.client.stat(CONTAINER)).parent).toBe(LAYER);

    const v = await r.client.view('default/4/view', LAYER);
    expect(v[0]!.options).toEqual(['rbind', 'ro']);
    expect(r.mounts.calls.at(-1)).toBe(`mount ${snapshotDeviceName('default/4/view')} ro`);
    expect(r.pool.findDevice(snapshotDeviceName('default/4/view'))!.readOnly).toBe(true);
    expect(readFrom(r.pool, snapshotDeviceName('default/4/view'), '/etc/hello')).toBe('world\n');
    expect((await r.client.stat('default/4/view')).kind).toBe('VIEW');
    expect(await codeOf(r.client.commit('default/5/x', 'default/4/view'))).toBe('FAILED_PRECONDITION');
    // A parentless view is an empty read-only tree.
    const empty = await r.client.view('default/6/empty');
    expect(empty[0]!.options).toContain('ro');
    const ev = Filesystem.open(r.pool, r.pool.findDevice(snapshotDeviceName('default/6/empty'))!.id, { readOnly: true });
    expect(ev.readdir('/').map((e) => e.name).filter((n) => n !== '.' && n !== '..')).toEqual([]);
    ev.close();
  });

  it('parents must exist and be committed', async () => {
    expect(await codeOf(r.client.prepare(CONTAINER, 'default/2/sha256:none'))).toBe('NOT_FOUND');
    await r.client.prepare(EXTRACT);
    // An active snapshot is never a parent (containerd's metastore: InvalidArgument).
    expect(await codeOf(r.client.prepare(CONTAINER, EXTRACT))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(r.client.view(CONTAINER, EXTRACT))).toBe('INVALID_ARGUMENT');
    expect(r.pool.listDevices()).toHaveLength(1);
  });

  it('Mounts answers the view of active snapshots and views, mounting it again when it went away; committed ones have none', async () => {
    const m = await r.client.prepare(EXTRACT);
    expect(await r.client.mounts(EXTRACT)).toEqual(m);
    // The daemon restarted: the view is gone; Mounts mounts it again.
    r.mounts.mounted.clear();
    expect(await r.client.mounts(EXTRACT)).toEqual(m);
    expect(r.mounts.calls.filter((c) => c.startsWith('mount'))).toHaveLength(2);
    await r.client.commit(LAYER, EXTRACT);
    expect(await codeOf(r.client.mounts(LAYER))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(r.client.mounts('nothing'))).toBe('NOT_FOUND');
    await r.client.view('default/4/view', LAYER);
    r.mounts.mounted.clear();
    expect((await r.client.mounts('default/4/view'))[0]!.options).toEqual(['rbind', 'ro']);
    expect(r.mounts.calls.at(-1)).toBe(`mount ${snapshotDeviceName('default/4/view')} ro`);
  });

  it('Remove: FailedPrecondition while children exist, then children first; NotFound after', async () => {
    await r.client.prepare(EXTRACT);
    await r.client.commit(LAYER, EXTRACT);
    await r.client.prepare(CONTAINER, LAYER);
    await r.client.view('default/4/view', LAYER);
    expect(await codeOf(r.client.remove(LAYER))).toBe('FAILED_PRECONDITION');
    expect(r.pool.findDevice(snapshotDeviceName(LAYER))).toBeDefined();
    await r.client.remove(CONTAINER);
    await r.client.remove('default/4/view');
    expect(r.mounts.mounted.size).toBe(0);
    await r.client.remove(LAYER);
    expect(r.pool.listDevices()).toEqual([]);
    expect(await codeOf(r.client.remove(LAYER))).toBe('NOT_FOUND');
    expect(await codeOf(r.client.stat(LAYER))).toBe('NOT_FOUND');
    expect(r.pool.check().clean).toBe(true);
  });

  it('a view in use is not removed or committed behind its users: FailedPrecondition, nothing changes', async () => {
    await r.client.prepare(EXTRACT);
    const dev = snapshotDeviceName(EXTRACT);
    r.mounts.busy.add(dev);
    expect(await codeOf(r.client.remove(EXTRACT))).toBe('FAILED_PRECONDITION');
    expect(await codeOf(r.client.commit(LAYER, EXTRACT))).toBe('FAILED_PRECONDITION');
    expect((await r.client.stat(EXTRACT)).kind).toBe('ACTIVE');
    expect(await codeOf(r.client.stat(LAYER))).toBe('NOT_FOUND');
    expect(r.pool.findDevice(dev)!.readOnly).toBe(false);
    r.mounts.busy.clear();
    await r.client.remove(EXTRACT);
    expect(r.pool.findDevice(dev)).toBeUndefined();
  });

  it('a Prepare whose view does not mount leaves nothing behind', async () => {
    r.mounts.failMount = 'fusermount: mount failed';
    const err = await r.client.prepare(EXTRACT).catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.UNKNOWN);
    expect((err as grpc.ServiceError).details).toContain('fusermount: mount failed');
    expect(await codeOf(r.client.stat(EXTRACT))).toBe('NOT_FOUND');
    expect(r.pool.listDevices()).toEqual([]);
    r.mounts.failMount = undefined;
    await r.client.prepare(EXTRACT);
  });

  it('Update changes labels only: the whole set, one label by mask, an empty value removes it; other fields are InvalidArgument', async () => {
    await r.client.prepare(EXTRACT, '', { a: '1', b: '2' });
    const created = await r.client.stat(EXTRACT);
    expect((await r.client.update(EXTRACT, { c: '3' })).labels).toEqual({ c: '3' });
    expect((await r.client.update(EXTRACT, { d: '4', ignored: 'x' }, ['labels.d'])).labels).toEqual({ c: '3', d: '4' });
    expect((await r.client.update(EXTRACT, {}, ['labels.c'])).labels).toEqual({ d: '4' });
    const u = await r.client.update(EXTRACT, { e: '5' }, ['labels']);
    expect(u.labels).toEqual({ e: '5' });
    expect(u.created_at).toEqual(created.created_at);
    expect(BigInt(u.updated_at!.seconds) * 1_000_000_000n + BigInt(u.updated_at!.nanos)).toBeGreaterThanOrEqual(
      BigInt(created.updated_at!.seconds) * 1_000_000_000n + BigInt(created.updated_at!.nanos),
    );
    expect(await codeOf(r.client.update(EXTRACT, {}, ['parent']))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(r.client.update(EXTRACT, {}, ['name']))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(r.client.update('nothing', { a: 'b' }))).toBe('NOT_FOUND');
    expect((await r.client.stat(EXTRACT)).labels).toEqual({ e: '5' });
  });

  it('labels: containerd\'s 4096-byte limit, and Commit replaces the active snapshot\'s labels', async () => {
    expect(await codeOf(r.client.prepare(EXTRACT, '', { k: 'v'.repeat(4096) }))).toBe('INVALID_ARGUMENT');
    await r.client.prepare(EXTRACT, '', { 'containerd.io/snapshot/keep': 'no' });
    await r.client.commit(LAYER, EXTRACT, { fresh: 'yes' });
    expect((await r.client.stat(LAYER)).labels).toEqual({ fresh: 'yes' });
  });

  it('Usage: exclusive bytes of its own device and the entries of its own layer, not its parent\'s', async () => {
    await r.client.prepare(EXTRACT);
    writeInto(r.pool, snapshotDeviceName(EXTRACT), { '/a': Buffer.alloc(3 * MiB, 1), '/etc/b': Buffer.alloc(MiB, 2) });
    const active = await r.client.usage(EXTRACT);
    expect(active.size).toBeGreaterThanOrEqual(4 * MiB);
    expect(active.size).toBeLessThanOrEqual(4 * MiB + 2 * r.pool.blockSizeBytes);
    expect(active.inodes).toBe(3); // /a, /etc, /etc/b
    await r.client.commit(LAYER, EXTRACT);
    expect(await r.client.usage(LAYER)).toEqual(active);
    await r.client.prepare(CONTAINER, LAYER);
    expect(await r.client.usage(CONTAINER)).toEqual({ size: 0, inodes: 0 });
    writeInto(r.pool, snapshotDeviceName(CONTAINER), { '/c': Buffer.alloc(MiB, 3) });
    const c = await r.client.usage(CONTAINER);
    expect(c.size).toBeGreaterThanOrEqual(MiB);
    expect(c.size).toBeLessThan(2 * MiB);
    expect(c.inodes).toBe(1);
    expect(await codeOf(r.client.usage('nothing'))).toBe('NOT_FOUND');
  });

  it('Usage counts small files at their size: inline bytes included, exact', async () => {
    await r.client.prepare(EXTRACT);
    const files: Record<string, Buffer> = {};
    for (let i = 0; i < 10; i++) files[`/small-${i}`] = Buffer.alloc(100 + i, i + 1);
    // One full pool block and a 4464-byte tail: the tail is held inline too.
    files['/tail'] = Buffer.alloc(r.pool.blockSizeBytes + 4464, 0xaa);
    writeInto(r.pool, snapshotDeviceName(EXTRACT), files);
    const written = Object.values(files).reduce((n, b) => n + b.length, 0);
    expect(r.pool.status().inlineMaxBytes).toBeGreaterThan(4464);
    const u = await r.client.usage(EXTRACT);
    expect(u.size).toBe(written);
    expect(u.inodes).toBe(11);
  });

  it('List: everything, containerd\'s filters (any of several), batches of 100', async () => {
    await r.client.prepare(EXTRACT);
    await r.client.commit(LAYER, EXTRACT, { 'containerd.io/snapshot.ref': 'sha256:1111' });
    await r.client.prepare(CONTAINER, LAYER, { 'containerd.io/snapshot/role': 'ctr' });
    await r.client.view('default/4/view', LAYER);
    const names = async (...filters: string[]) => (await r.client.list(filters)).infos.map((i) => i.name).sort();
    expect(await names()).toEqual([LAYER, CONTAINER, 'default/4/view'].sort());
    expect(await names('kind==committed')).toEqual([LAYER]);
    expect(await names('kind==active', 'kind==view')).toEqual([CONTAINER, 'default/4/view'].sort());
    expect(await names('labels."containerd.io/snapshot.ref"==sha256:1111,parent==""')).toEqual([LAYER]);
    expect(await names('labels."containerd.io/snapshot.ref"==sha256:1111,parent==x')).toEqual([]);
    expect(await names('labels."containerd.io/snapshot.ref"==sha256:1111')).toEqual([LAYER]);
    expect(await names(`parent==${JSON.stringify(LAYER)}`)).toEqual([CONTAINER, 'default/4/view'].sort());
    expect(await names('labels."containerd.io/snapshot/role"')).toEqual([CONTAINER]);
    expect(await names('name~=/view$/')).toEqual(['default/4/view']);
    expect(await names('kind!=committed,name~=^default/3/')).toEqual([CONTAINER]);
    expect(await codeOf(r.client.list(['kind==']))).toBe('INVALID_ARGUMENT');
    expect(await codeOf(r.client.list(['"unterminated']))).toBe('INVALID_ARGUMENT');

    for (let i = 0; i < 150; i++) await r.client.view(`default/v/${i}`, LAYER);
    const all = await r.client.list();
    expect(all.infos).toHaveLength(153);
    expect(all.messages).toBe(2);
  });

  it('Cleanup removes snapshot devices no record knows, and nothing else', async () => {
    await r.client.prepare(EXTRACT);
    const orphan = r.pool.createThin(snapshotDeviceName('default/7/lost'), { kind: 'container' });
    const mine = r.pool.createThin('my-container', { kind: 'container' });
    const image = r.pool.createThin('layer-0123456789abcdef', { kind: 'image' });
    r.pool.commit();
    await r.client.cleanup();
    expect(r.pool.getDevice(orphan)).toBeUndefined();
    expect(r.pool.getDevice(mine)).toBeDefined();
    expect(r.pool.getDevice(image)).toBeDefined();
    expect(r.pool.findDevice(snapshotDeviceName(EXTRACT))).toBeDefined();
    expect((await r.client.stat(EXTRACT)).kind).toBe('ACTIVE');
  });

  it('a leftover device under a snapshot\'s name is replaced, not reported as AlreadyExists', async () => {
    r.pool.createThin(snapshotDeviceName(EXTRACT), { kind: 'container' });
    writeInto(r.pool, snapshotDeviceName(EXTRACT), { '/stale': 'left over\n' });
    await r.client.prepare(EXTRACT);
    expect(r.pool.listDevices().map((d) => d.name)).toEqual([snapshotDeviceName(EXTRACT)]);
    const view = Filesystem.open(r.pool, findSnapshot(r.pool, EXTRACT)!.deviceId, { readOnly: true });
    expect(exists(view, '/stale')).toBe(false);
    view.close();
  });

  it('keys of every shape map to valid device names; an empty key is InvalidArgument', async () => {
    for (const key of ['a', 'default/12/extract-1700000000000000000-xYz9 sha256:' + 'f'.repeat(64), 'ns/1/ünïcödé key\twith tab', 'x'.repeat(5000)]) {
      await r.client.prepare(key);
      const d = r.pool.findDevice(snapshotDeviceName(key));
      expect(d).toBeDefined();
      expect(isSnapshotDeviceName(d!.name)).toBe(true);
      expect((await r.client.stat(key)).name).toBe(key);
    }
    expect(await codeOf(r.client.prepare(''))).toBe('INVALID_ARGUMENT');
  });

  it('concurrent unpacks of one layer: each Prepare and Commit is whole, the loser of the name gets AlreadyExists', async () => {
    await r.client.prepare(EXTRACT);
    await r.client.commit(LAYER, EXTRACT);
    // Ten unpacks of the same next layer at once, as two image pulls sharing a base do.
    const results = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const key = `default/${10 + i}/extract-${i} sha256:2222`;
        await r.client.prepare(key, LAYER);
        writeInto(r.pool, snapshotDeviceName(key), { [`/from-${i}`]: `${i}\n` });
        return codeOf(r.client.commit('default/20/sha256:2222', key));
      }),
    );
    expect(results.filter((c) => c === 'OK')).toHaveLength(1);
    expect(results.filter((c) => c === 'ALREADY_EXISTS')).toHaveLength(9);
    const active = (await r.client.list(['kind==active'])).infos.map((i) => i.name);
    expect(active).toHaveLength(9);
    for (const key of active) await r.client.remove(key);
    expect((await r.client.list()).infos.map((i) => i.name).sort()).toEqual(['default/20/sha256:2222', LAYER].sort());
    expect(r.pool.listDevices()).toHaveLength(2);
    expect(r.pool.check().clean).toBe(true);
  });

  it('a thinfs device removed by hand takes its record with it', async () => {
    await r.client.prepare(EXTRACT);
    r.mounts.mounted.clear();
    r.pool.deleteDevice(r.pool.findDevice(snapshotDeviceName(EXTRACT))!.id as DevId);
    r.pool.commit();
    expect(await codeOf(r.client.stat(EXTRACT))).toBe('NOT_FOUND');
  });
});

describe('snapshots outlive the service', () => {
  it('records, labels, kinds and data are there after the pool is closed and opened again', async () => {
    const r1 = await rig();
    await r1.client.prepare(EXTRACT, '', { l: '1' });
    writeInto(r1.pool, snapshotDeviceName(EXTRACT), { '/f': 'kept\n' });
    await r1.client.commit(LAYER, EXTRACT, { l: '2' });
    await r1.client.prepare(CONTAINER, LAYER);
    const before = (await r1.client.list()).infos;
    await r1.close();

    const r2 = await rig(r1.root);
    try {
      expect((await r2.client.list()).infos).toEqual(before);
      expect(readFrom(r2.pool, snapshotDeviceName(CONTAINER), '/f')).toBe('kept\n');
      // The view is mounted again on demand by the new daemon.
      expect((await r2.client.mounts(CONTAINER))[0]!.source).toBe(path.join(r2.root, 'mnt', snapshotDeviceName(CONTAINER)));
      expect(r2.pool.check().clean).toBe(true);
    } finally {
      await r2.close();
    }
  });

  it('outside the daemon nothing mounts: Prepare there is ENOTCONN and leaves nothing', async () => {
    const r = await rig();
    await r.close();
    await expect(runLocal(r.root, 'snapshotPrepare', { key: EXTRACT })).rejects.toMatchObject({ code: 'ENOTCONN' });
    const pool = Pool.open(r.root, { readOnly: true });
    try {
      expect(findSnapshot(pool, EXTRACT)).toBeUndefined();
      expect(pool.listDevices()).toEqual([]);
    } finally {
      pool.close();
    }
    expect(statusOf(fail('ENOTCONN', 'mount')).code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('errno to gRPC status', () => {
  it('maps what containerd acts on and keeps the message', () => {
    const cases: [Parameters<typeof fail>[0], grpc.status][] = [
      ['EEXIST', grpc.status.ALREADY_EXISTS],
      ['ENOENT', grpc.status.NOT_FOUND],
      ['EINVAL', grpc.status.INVALID_ARGUMENT],
      ['ENOTEMPTY', grpc.status.FAILED_PRECONDITION],
      ['EBUSY', grpc.status.FAILED_PRECONDITION],
      ['EROFS', grpc.status.FAILED_PRECONDITION],
      ['ENOSPC', grpc.status.RESOURCE_EXHAUSTED],
      ['EIO', grpc.status.UNKNOWN],
    ];
    for (const [code, status] of cases) {
      const s = statusOf(fail(code, 'prepare', 'k', 'why'));
      expect(s.code).toBe(status);
      expect(s.details).toBe(`${code}: why, prepare 'k'`);
    }
    expect(statusOf(new Error('plain')).code).toBe(grpc.status.UNKNOWN);
  });
});

describe('containerd filters', () => {
  const info = (fields: Record<string, string>) => (fp: string[]) => {
    if (fp[0] === 'labels') return fields[`labels.${fp.slice(1).join('.')}`];
    return fields[fp[0]!];
  };
  const m = (filters: string[], fields: Record<string, string>) => parseFilters(filters).match(info(fields));

  it('matches as containerd\'s parser does', () => {
    const s = { name: 'default/2/sha256:ab', kind: 'committed', parent: '', 'labels.containerd.io/snapshot.ref': 'sha256:ab', 'labels.x': 'a,b' };
    expect(m([], s)).toBe(true);
    expect(m([''], s)).toBe(true);
    expect(m(['kind==committed'], s)).toBe(true);
    expect(m(['kind==active'], s)).toBe(false);
    expect(m(['kind==active', 'kind==committed'], s)).toBe(true);
    expect(m(['kind==committed,name==other'], s)).toBe(false);
    expect(m(['labels."containerd.io/snapshot.ref"==sha256:ab'], s)).toBe(true);
    expect(m(['labels."containerd.io/snapshot.ref"'], s)).toBe(true);
    expect(m(['labels.missing'], s)).toBe(false);
    expect(m(['labels.missing!=x'], s)).toBe(true);
    expect(m(['labels.x=="a,b"'], s)).toBe(true);
    expect(m([' kind == committed , parent=="" '], s)).toBe(true);
    expect(m(['name~=^default/[0-9]+/sha256:'], s)).toBe(true);
    expect(m(['name~=|sha256:a.$|'], s)).toBe(true);
    expect(m(['name=="default/2/sha256:ab"'], s)).toBe(true);
    expect(m(['name=="default/2/sha256:\\x61b"'], s)).toBe(true);
  });

  it('refuses what does not parse with EINVAL', () => {
    for (const bad of ['kind==', 'kind=committed', '==x', 'kind==a b', 'labels."x', 'name~=(', 'a,', 'a..b']) {
      expect(() => parseFilters([bad]), bad).toThrow(/EINVAL/);
    }
  });
});

