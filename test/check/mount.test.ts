/**
 * The reviewer's case on a real mount: a dangling directory entry makes `ls -l` fail with
 * EIO on the mount; `check` (through the daemon while mounted) calls it fatal instead of
 * clean and does not repair the mounted view; unmounted, `check --repair` removes the
 * entry, and the next mount lists and reads everything.
 */
import { constants } from 'node:fs';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { json } from '../cli/helpers.js';
import { fuseSkipReason, sh, shOk, TestPool } from '../fuse/helpers.js';
import { Filesystem } from '../../src/fs/index.js';
import { Pool } from '../../src/pool/index.js';
import { withSql, writeTree } from './helpers.js';

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/check/mount: skipped: ${skip}`);

describe.skipIf(skip !== undefined)('a dangling entry on a real mount', () => {
  let pool: TestPool;
  beforeAll(async () => {
    pool = await TestPool.create({}, 'thinfs-check-mount-');
    const p = Pool.open(pool.root);
    try {
      const id = p.createThin('img', { kind: 'base' });
      const f = Filesystem.open(p, id);
      writeTree(f, { '/etc/hostname': 'box\n', '/etc/motd': 'hello\n' });
      f.close();
      p.setReadOnly(id);
    } finally {
      p.close();
    }
    withSql(pool.root, (db) => {
      const etc = db.prepare('SELECT child FROM fs_dirents WHERE parent = 1').pluck().get() as number;
      const layer = db.prepare("SELECT layer_id FROM devices WHERE name = 'img'").pluck().get() as number;
      db.prepare('INSERT INTO fs_dirents (parent, name, layer, child, type) VALUES (?, ?, ?, 777777, ?)').run(etc, Buffer.from('passwd'), layer, constants.S_IFREG);
    });
  });
  afterAll(async () => {
    await pool?.cleanup();
  });

  it('ls gives EIO; check says fatal; unmounted, --repair fixes it; ls works', async () => {
    const m = await pool.mount('img');
    const ls = await sh(`ls -l "${m}/etc"`);
    expect(ls.code).not.toBe(0);
    expect(ls.stderr).toMatch(/Input\/output error/);

    const served = await pool.cli('check', '--json');
    expect(served.code).toBe(1);
    const r = json<{ report: { issues: { severity: string; message: string }[] } }>(served);
    expect(r.report.issues.filter((i) => i.severity === 'fatal').map((i) => i.message)).toEqual([
      'base img: 1 entry points at inodes that do not exist (ls shows EIO): /etc/passwd -> inode 777777',
    ]);
    const notHere = json<{ clean: boolean; recheck: { issues: { fix: string }[] } }>(await pool.cli('check', '--repair', '--json'));
    expect(notHere.clean).toBe(false);
    expect(notHere.recheck.issues[0]!.fix).toMatch(/not while img is mounted: unmount it/);
    await pool.umount('img');
    await pool.waitDaemonsGone();

    const repair = await pool.cli('check', '--repair');
    expect(repair.code, repair.stdout + repair.stderr).toBe(0);
    expect(repair.stdout).toContain('repaired: base img: removed 1 entry that pointed at missing inodes');
    const m2 = await pool.mount('img');
    expect((await shOk(`ls "${m2}/etc"`)).split('\n').filter((l) => l !== '')).toEqual(['hostname', 'motd']);
    expect(fs.readFileSync(path.join(m2, 'etc', 'motd'), 'utf8')).toBe('hello\n');
    await pool.umount('img');
  });
});
