/**
 * The low-level operations table without a kernel: handlers called as lowlevel.ts calls
 * them, on a real Filesystem over a temp pool. Every entry handed out is one lookup the
 * kernel holds (an unlinked file lives until forget), ids are shown through the maps and
 * new owners mapped back, O_WRONLY opens readable and O_APPEND is left to the kernel
 * (writeback cache), byte counts reach the counters, errors become errnos through the one
 * translator (unexpected ones EIO), and the session options are the ones options.ts
 * documents.
 */
import * as path from 'node:path';
import { constants } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Filesystem, ROOT_INO, type Ino } from '../../src/fs/index.js';
import { MountCounters } from '../../src/fuse/counters.js';
import { IdMap, OVERFLOW_ID, parseIdRange } from '../../src/fuse/idmap.js';
import { makeLowLevelOps } from '../../src/fuse/ll-ops.js';
import { mountOptions, userAllowOther } from '../../src/fuse/options.js';
import { toErrno } from '../../src/fuse/errno.js';
import { ThinfsError } from '../../src/errors.js';
import { constants as osConstants } from 'node:os';
import { Pool, type DevId } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';

const caller = { uid: 1000, gid: 100, pid: 1, umask: 0o022 };
const REG = 0o100644;

let t: ReturnType<typeof tmpDir>;
let pool: Pool;
let fs: Filesystem;
let devId: DevId;
beforeEach(() => {
  t = tmpDir('thinfs-llops-');
  pool = Pool.create(path.join(t.dir, 'root'), { dataSizeBytes: 64 * 1024 * 1024 });
  devId = pool.createThin('c1', { kind: 'container' });
  fs = Filesystem.open(pool, devId);
});
afterEach(() => {
  fs.close();
  pool.close();
  t.cleanup();
});

const ops = (uids = new IdMap(), gids = new IdMap(), counters?: MountCounters) =>
  makeLowLevelOps(fs, { uids, gids, counters, keepCache: true, writebackCache: true });

describe('the low-level operations table', () => {
  it('counts a lookup per entry handed out: an unlinked file lives until the kernel forgets it', () => {
    const h = ops();
    const c = h.create(ROOT_INO, 'f', REG, constants.O_WRONLY | constants.O_CREAT, caller);
    expect(c.open.keepCache).toBe(true);
    expect(h.write(c.entry.ino, Buffer.from('abc'), 0, c.open.fh, false, false)).toBe(3);
    h.release(c.entry.ino, c.open.fh);
    const again = h.lookup(ROOT_INO, 'f');
    expect(again.ino).toBe(c.entry.ino);
    h.unlink(ROOT_INO, 'f');
    // Two lookups held (create + lookup): the inode is still there, nlink 0.
    expect(h.getattr(c.entry.ino).nlink).toBe(0);
    h.forget(c.entry.ino, 1);
    expect(h.getattr(c.entry.ino).size).toBe(3);
    h.forget(c.entry.ino, 1);
    expect(() => h.getattr(c.entry.ino)).toThrow(/ENOENT/);
  });

  it('readdirplus takes a lookup of every entry but . and .., and limits entries by the buffer size', () => {
    const h = ops();
    for (const n of ['a', 'b', 'c']) h.mkdir(ROOT_INO, n, 0o755, caller);
    const dir = h.opendir(ROOT_INO);
    const all = h.readdirplus(ROOT_INO, 0, 64 * 1024, dir.fh);
    expect(all.map((e) => e.name)).toEqual(['.', '..', 'a', 'b', 'c']);
    const few = h.readdirplus(ROOT_INO, 0, 2 * 168, dir.fh);
    expect(few.map((e) => e.name)).toEqual(['.', '..']);
    h.releasedir(ROOT_INO, dir.fh);
    // mkdir (1) + readdirplus (1): 'a' goes only after two forgets and rmdir.
    const a = all[2]!.entry.ino as Ino;
    h.rmdir(ROOT_INO, 'a');
    h.forget(a, 1);
    expect(h.getattr(a).ino).toBe(a);
    h.forget(a, 1);
    expect(() => h.getattr(a)).toThrow(/ENOENT/);
  });

  it('opens O_WRONLY handles readable and drops O_APPEND (the kernel reads and appends with the writeback cache)', () => {
    const h = ops();
    const c = h.create(ROOT_INO, 'f', REG, constants.O_WRONLY | constants.O_APPEND, caller);
    h.write(c.entry.ino, Buffer.from('0123456789'), 0, c.open.fh, false, false);
    // Not appended: the kernel sends the offset it wants.
    h.write(c.entry.ino, Buffer.from('ab'), 2, c.open.fh, true, false);
    expect(Buffer.from(h.read(c.entry.ino, 100, 0, c.open.fh, false) as Uint8Array).toString()).toBe('01ab456789');
    const o = h.open(c.entry.ino, constants.O_WRONLY);
    expect(Buffer.from(h.read(c.entry.ino, 2, 0, o.fh, false) as Uint8Array).toString()).toBe('01');
  });

  it('shows stored ids through the maps and stores new owners and chowns shifted back', () => {
    const uids = new IdMap([parseIdRange('0:100000:65536')]);
    const gids = new IdMap([parseIdRange('0:100000:65536')]);
    const h = ops(uids, gids);
    expect(() => h.mkdir(ROOT_INO, 'x', 0o755, caller)).toThrow(/EOVERFLOW/);
    const d = h.mkdir(ROOT_INO, 'd', 0o755, { ...caller, uid: 101000, gid: 100100 });
    expect([d.attr.uid, d.attr.gid]).toEqual([101000, 100100]);
    expect([fs.getattrIno(d.ino).uid, fs.getattrIno(d.ino).gid]).toEqual([1000, 100]);
    const after = h.setattr(d.ino, { uid: 100005 }, undefined);
    expect(after.uid).toBe(100005);
    expect(fs.getattrIno(d.ino).uid).toBe(5);
    expect(() => h.setattr(d.ino, { uid: 5 }, undefined)).toThrow(/EINVAL/);
    fs.setattrIno(d.ino, { uid: 70000 });
    expect(h.getattr(d.ino).uid).toBe(OVERFLOW_ID);
  });

  it('counts the bytes read and written', () => {
    const counters = new MountCounters();
    const h = ops(new IdMap(), new IdMap(), counters);
    const c = h.create(ROOT_INO, 'f', REG, constants.O_RDWR, caller);
    h.write(c.entry.ino, Buffer.alloc(5000), 0, c.open.fh, false, false);
    h.read(c.entry.ino, 8192, 0, c.open.fh, false);
    const s = counters.snapshot();
    expect([s.bytesWritten, s.bytesRead]).toEqual([5000, 5000]);
  });

  it('session options: long timeouts, writeback cache and 1 MiB writes; ro and nosuid as asked', () => {
    const rw = mountOptions({ name: 'c,1', readOnly: false, asRoot: true });
    expect(rw.options.mountOptions).toEqual(['fsname=thinfs:c_1', 'subtype=thinfs', 'allow_other', 'default_permissions', 'suid', 'nodev']);
    expect(rw.options).toMatchObject({ writebackCache: true, maxWriteBytes: 1024 * 1024, readdirplus: 'auto' });
    expect(rw.options.attrTimeout).toBeGreaterThanOrEqual(3600);
    expect(rw.keepCache).toBe(true);
    const ro = mountOptions({ name: 'img', readOnly: true, asRoot: false, fuseConf: '' });
    expect(ro.options.mountOptions).toEqual(['fsname=thinfs:img', 'subtype=thinfs', 'ro', 'nosuid', 'nodev']);
    expect(ro.warnings.join()).toMatch(/allow_other/);
  });
});

describe('errnos, id maps and mount options', () => {
  it('turns a ThinfsError into its errno and anything unexpected into EIO', () => {
    expect(toErrno(new ThinfsError('ENOSPC', 'write'), 'write', '/x')).toBe(-osConstants.errno.ENOSPC);
    expect(toErrno(new TypeError('boom'), 'getattr', '#1')).toBe(-osConstants.errno.EIO);
  });

  it('parses C:H:N and refuses overlaps', () => {
    expect(parseIdRange('0:1000:1')).toEqual({ containerId: 0, hostId: 1000, count: 1 });
    for (const bad of ['0:1000', 'a:b:c', '1:2:0', '-1:2:3', '0:4294967295:2']) expect(() => parseIdRange(bad)).toThrow(/EINVAL/);
    expect(() => new IdMap([parseIdRange('0:1000:10'), parseIdRange('5:2000:10')])).toThrow(/overlap/);
    expect(() => new IdMap([parseIdRange('0:1000:10'), parseIdRange('100:1005:1')])).toThrow(/overlap/);
  });

  it('gives non-root mounts allow_other only where fuse.conf allows it, and says so', () => {
    const denied = mountOptions({ name: 'c1', readOnly: false, asRoot: false, fuseConf: '#user_allow_other\n' });
    expect(denied.allowOther).toBe(false);
    expect(denied.options.mountOptions).not.toContain('allow_other');
    expect(denied.warnings[0]).toMatch(/user_allow_other/);
    const allowed = mountOptions({ name: 'c1', readOnly: false, asRoot: false, fuseConf: 'user_allow_other\n' });
    expect(allowed.options.mountOptions).toEqual(expect.arrayContaining(['allow_other', 'default_permissions', 'nosuid']));
    expect(userAllowOther('  user_allow_other  # yes\n')).toBe(true);
  });
});
