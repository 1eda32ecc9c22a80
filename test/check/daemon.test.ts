/**
 * `check [--repair]` inside a running daemon (the operation given the daemon's open pool
 * and its mount table): a fatal finding makes the served pool read-only at once; the
 * devices it serves are not repaired behind their mounts (their unlinked inodes may be
 * open: only reported); a rebuild of damaged tables is refused with what to do instead.
 */
import { constants } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { check, type CheckResult } from '../../src/daemon/ops/check-ops.js';
import type { MountService } from '../../src/daemon/ops/index.js';
import type { MountRecord } from '../../src/daemon/runfiles.js';
import { Filesystem } from '../../src/fs/index.js';
import { Pool, type DevId } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';
import { damagePage, makeImage, noise, pagesOf, withSql, writeTree } from './helpers.js';

let t: { dir: string; cleanup: () => void };
let root: string;
let pool: Pool | undefined;
beforeEach(() => {
  t = tmpDir('thinfs-check-daemon-');
  root = path.join(t.dir, 'root');
});
afterEach(() => {
  pool?.close();
  pool = undefined;
  t.cleanup();
});

/** A mount table that serves `names` (only list() is asked for by check). */
function mounts(p: Pool, names: string[]): MountService {
  const records = names.map((name) => ({ name, devId: p.findDevice(name)!.id, mountpoint: `/mnt/${name}` }) as unknown as MountRecord);
  return { list: () => records } as unknown as MountService;
}

function inDaemon(served: string[], repair = false): Promise<CheckResult> {
  return check({ root, pool, mounts: mounts(pool!, served) }, { repair });
}

/** An image, a container c1 with a file of its own, and the pool open as the daemon holds it. */
function serve(): { c1: DevId; fs: Filesystem } {
  makeImage(root, { '/a/one': 'one', '/b': 'b' });
  pool = Pool.open(root);
  const c1 = pool.createSnapshot(pool.findDevice('img')!.id, 'c1');
  const fs = Filesystem.open(pool, c1);
  writeTree(fs, { '/mine': 'mine '.repeat(20000) });
  pool.commit();
  return { c1, fs };
}

describe('check in the daemon', () => {
  it('an unlinked file a mounted view holds open is only reported, and kept', async () => {
    const { fs } = serve();
    const fh = fs.open('/mine', constants.O_RDONLY);
    fs.unlink('/mine');
    const r = await inDaemon(['c1'], true);
    expect(r.clean).toBe(true);
    expect(r.report.issues.map((i) => [i.severity, i.message])).toEqual([['info', 'container c1: 1 unlinked inode may be held open by c1']]);
    expect(fs.read(fh, 0, 5).toString()).toBe('mine ');
    fs.release(fh);
    fs.close();
  });

  it('a fatal finding makes the served pool read-only at once; a mounted device is not repaired, and the fix says to unmount', async () => {
    const { fs } = serve();
    const layer = pool!.findDevice('c1')!.layerId;
    pool!.metadataDb().prepare('INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (1, ?, ?, 424242, ?)').run(Buffer.from('ghost'), layer, constants.S_IFREG);
    const r = await inDaemon(['c1']);
    expect(r.needsCheck).toBe(true);
    expect(pool!.mode()).toBe('read-only');
    expect(() => fs.mkdir('/new', 0o755, { uid: 0, gid: 0 })).toThrow(/EROFS/);

    const repaired = await inDaemon(['c1'], true);
    expect(repaired.clean).toBe(false);
    expect(repaired.recheck!.issues.find((i) => i.severity === 'fatal')!.fix).toMatch(/not while c1 is mounted: unmount it, then run `thinfs check --repair` again/);
    expect(pool!.mode()).toBe('read-only');
    fs.close();

    // Unmounted, the same daemon repairs it and the pool takes writes again.
    const after = await inDaemon([], true);
    expect(after).toMatchObject({ clean: true, needsCheck: false });
    expect(pool!.mode()).toBe('write');
  });

  it('damaged tables: --repair refuses to rebuild under the daemon and says what to do', async () => {
    makeImage(root, { '/a/one': 'one', '/a/two': 'two' });
    const leaf = pagesOf(root, 'fs_dirents')[0]!;
    damagePage(root, leaf.pageno, noise(4096, 5));
    pool = Pool.open(root);
    const r = await inDaemon([]);
    expect(r.report.issues[0]).toMatchObject({ area: 'sqlite', severity: 'fatal' });
    expect(pool.mode()).toBe('read-only');
    await expect(inDaemon([], true)).rejects.toThrow(
      /^EBUSY: tables of the metadata are damaged and can only be rebuilt with the pool closed: unmount every view \(`thinfs umount NAME`; the daemon then exits\), then run `thinfs check --repair` again/,
    );
    pool.close();
    pool = undefined;
    // With the daemon gone, the command repairs it itself.
    expect((await check({ root }, { repair: true })).clean).toBe(true);
    expect(withSql(root, (db) => db.pragma('integrity_check', { simple: true }))).toBe('ok');
  });
});
