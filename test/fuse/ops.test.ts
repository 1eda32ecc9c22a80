/**
 * The FUSE operations table without a kernel: handlers called as fuse-native calls them,
 * on a real Filesystem over a temp pool. Errors come back as negative errnos through
 * the one translator (unexpected ones as EIO, logged), handlers never throw, new entries
 * belong to the caller, id maps shift both ways, and the mount options are the ones
 * options.ts documents.
 */
import * as path from 'node:path';
import { constants } from 'node:os';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ThinfsError } from '../../src/errors.js';
import { Filesystem } from '../../src/fs/index.js';
import { IdMap, OVERFLOW_ID, parseIdRange } from '../../src/fuse/idmap.js';
import { makeOps, type FuseOps } from '../../src/fuse/ops.js';
import { mountOptions, userAllowOther } from '../../src/fuse/options.js';
import { toErrno } from '../../src/fuse/errno.js';
import { Pool, type DevId } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';

const caller = { uid: 1000, gid: 100, pid: 1, umask: 0o022 };
vi.mock('../../src/fuse/native.js', () => ({
  callerContext: () => ({ ...caller }),
  utimensTimes: () => ({ atime: 'omit', mtime: { sec: 1_600_000_000, nsec: 123_456_789 } }),
  loadFuse: () => {
    throw new Error('no fuse-native in this test');
  },
}));

const E = constants.errno;

/** Call a handler and collect what it answered. */
function call(ops: FuseOps, op: string, ...args: unknown[]): Promise<unknown[]> {
  return new Promise((resolve) => ops[op]!(...args, (...out: unknown[]) => resolve(out)));
}

let t: ReturnType<typeof tmpDir>;
let pool: Pool;
let fs: Filesystem;
let devId: DevId;
beforeEach(() => {
  t = tmpDir('thinfs-ops-');
  pool = Pool.create(path.join(t.dir, 'root'), { dataSizeBytes: 64 * 1024 * 1024 });
  devId = pool.createThin('c1', { kind: 'container' });
  fs = Filesystem.open(pool, devId);
});
afterEach(() => {
  fs.close();
  pool.close();
  t.cleanup();
});

describe('the operations table', () => {
  it('answers errnos, never throws', async () => {
    const ops = makeOps(fs, { name: 'c1', uids: new IdMap(), gids: new IdMap() });
    expect(await call(ops, 'getattr', '/missing')).toEqual([-E.ENOENT]);
    expect(await call(ops, 'rmdir', '/')).toEqual([expect.any(Number)]);
    expect(await call(ops, 'read', '/x', 999, Buffer.alloc(10), 10, 0)).toEqual([-E.EBADF]);
    expect(await call(ops, 'getxattr', '/', 'user.none', 0)).toEqual([-E.ENODATA]);
    expect(await call(ops, 'opendir', '/', 0)).toEqual([0, 0]);
  });

  it('creates as the caller, reads and writes through handles, and reports stat in ms', async () => {
    const ops = makeOps(fs, { name: 'c1', uids: new IdMap(), gids: new IdMap() });
    const [code, fh] = await call(ops, 'create', '/f', 0o100644);
    expect(code).toBe(0);
    expect(await call(ops, 'write', '/f', fh, Buffer.from('hello world'), 5, 0)).toEqual([5]);
    const buf = Buffer.alloc(16);
    expect(await call(ops, 'read', '/f', fh, buf, 16, 0)).toEqual([5]);
    expect(buf.subarray(0, 5).toString()).toBe('hello');
    expect(await call(ops, 'utimens', '/f', 0, 0)).toEqual([0]);
    const [, st] = (await call(ops, 'getattr', '/f')) as [number, Record<string, number>];
    expect(st).toMatchObject({ uid: 1000, gid: 100, size: 5, mode: 0o100644, mtime: 1_600_000_000_123 });
    const [, names, stats] = (await call(ops, 'readdir', '/')) as [number, string[], { ino: number }[]];
    expect(names).toEqual(['.', '..', 'f']);
    expect(stats[2]!.ino).toBe(st.ino);
    expect(await call(ops, 'release', '/f', fh)).toEqual([0]);
  });

  it('turns unexpected errors into EIO', async () => {
    const broken = new Proxy(fs, {
      get: (target, prop) => (prop === 'getattr' ? () => { throw new TypeError('boom'); } : Reflect.get(target, prop)),
    });
    const ops = makeOps(broken, { name: 'c1', uids: new IdMap(), gids: new IdMap() });
    expect(await call(ops, 'getattr', '/')).toEqual([-E.EIO]);
    expect(toErrno(new ThinfsError('ENOSPC', 'write'), 'write', '/x')).toBe(-E.ENOSPC);
  });

  it('shifts ids through the maps both ways', async () => {
    const uids = new IdMap([parseIdRange('0:1000:1'), parseIdRange('1:100001:65535')]);
    const gids = new IdMap([parseIdRange('0:100:1')]);
    const ops = makeOps(fs, { name: 'c1', uids, gids });
    // The root is stored 0:0, shown 1000:100; the caller (1000:100) creates as stored 0:0.
    expect(((await call(ops, 'getattr', '/')) as [number, { uid: number; gid: number }])[1]).toMatchObject({ uid: 1000, gid: 100 });
    expect(await call(ops, 'mkdir', '/d', 0o755)).toEqual([0]);
    expect(fs.getattr('/d')).toMatchObject({ uid: 0, gid: 0 });
    expect(await call(ops, 'chown', '/d', 100_005, 2 ** 32 - 1)).toEqual([0]);
    expect(fs.getattr('/d')).toMatchObject({ uid: 5, gid: 0 });
    expect(await call(ops, 'chown', '/d', 7, 100)).toEqual([-E.EINVAL]);
    fs.chown('/d', 0, 4242);
    expect(((await call(ops, 'getattr', '/d')) as [number, { gid: number }])[1].gid).toBe(OVERFLOW_ID);
    caller.uid = 5;
    try {
      expect(await call(ops, 'mkdir', '/e', 0o755)).toEqual([-E.EOVERFLOW]);
    } finally {
      caller.uid = 1000;
    }
  });
});

describe('id maps and mount options', () => {
  it('parses C:H:N and refuses overlaps', () => {
    expect(parseIdRange('0:1000:1')).toEqual({ containerId: 0, hostId: 1000, count: 1 });
    for (const bad of ['0:1000', 'a:b:c', '1:2:0', '-1:2:3', '0:4294967295:2']) expect(() => parseIdRange(bad)).toThrow(/EINVAL/);
    expect(() => new IdMap([parseIdRange('0:1000:10'), parseIdRange('5:2000:10')])).toThrow(/overlap/);
    expect(() => new IdMap([parseIdRange('0:1000:10'), parseIdRange('100:1005:1')])).toThrow(/overlap/);
  });

  it('mounts root views allow_other + default_permissions, with big I/O options', () => {
    const { options, warnings } = mountOptions({ name: 'c,1', readOnly: true, asRoot: true });
    expect(options).toMatchObject({ allowOther: true, defaultPermissions: true, fsname: 'thinfs:c_1', subtype: 'thinfs', maxRead: 131072, timeout: false });
    expect(options.extraOptions).toEqual(expect.arrayContaining(['big_writes', 'max_write=131072', 'use_ino', 'hard_remove', 'ro']));
    expect(warnings).toEqual([]);
  });

  it('gives non-root mounts allow_other only where fuse.conf allows it, and says so', () => {
    const denied = mountOptions({ name: 'c1', readOnly: false, asRoot: false, fuseConf: '#user_allow_other\n' });
    expect(denied.options.allowOther).toBe(false);
    expect(denied.warnings[0]).toMatch(/user_allow_other/);
    const allowed = mountOptions({ name: 'c1', readOnly: false, asRoot: false, fuseConf: 'user_allow_other\n' });
    expect(allowed.options).toMatchObject({ allowOther: true, defaultPermissions: true });
    expect(userAllowOther('  user_allow_other  # yes\n')).toBe(true);
  });
});
