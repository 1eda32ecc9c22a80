/**
 * `thinfs mount` / `umount` / `mounts` and the daemon's life: images mount read-only,
 * --read-only, uid/gid maps, setuid honoured on root mounts (--nosuid), one daemon for
 * several mounts that exits after the last umount, SIGTERM unmounts and commits, and bad
 * input answered with one line, a non-zero exit and the pool unchanged. Busy views and
 * mountpoints: busy.test.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fingerprint, json } from '../cli/helpers.js';
import { alive, fuseSkipReason, shOk, sleep, TestPool } from './helpers.js';
import type { StatusResult } from '../../src/daemon/ops/index.js';
import { mountOptions } from '../../src/fuse/index.js';

/** The pool's files (SQLite's shared-memory index and an empty WAL that a read-only open leaves aside). */
function poolFingerprint(root: string): Record<string, string> {
  const f = fingerprint(path.join(root, 'pool'));
  delete f['metadata.db-shm'];
  if (f['metadata.db-wal']?.startsWith('0:')) delete f['metadata.db-wal'];
  return f;
}

const skip = fuseSkipReason();
if (skip !== undefined) console.warn(`test/fuse/mount: skipped: ${skip}`);
const isRoot = process.getuid?.() === 0;

describe.skipIf(skip !== undefined)('thinfs mount and umount', () => {
  let pool: TestPool;
  beforeAll(async () => {
    pool = await TestPool.create({ img: 'image', c1: 'container', c2: 'container' });
  });
  afterAll(async () => {
    await pool?.cleanup();
  });

  it('serves several mounts from one daemon, lists them, and the daemon exits after the last umount', async () => {
    const m1 = await pool.mount('c1');
    const pid = pool.noteDaemon();
    const m2 = await pool.mount('c2', '--read-only');
    const mi = await pool.mount('img');
    expect(pool.noteDaemon()).toBe(pid);
    expect(m1).toBe(path.join(pool.root, 'mnt', 'c1'));
    const mounts = fs.readFileSync('/proc/self/mounts', 'utf8');
    expect(mounts).toMatch(new RegExp(`^thinfs:c1 ${m1} fuse.thinfs rw,.*default_permissions,allow_other`, 'm'));
    expect(mounts).toMatch(new RegExp(`^thinfs:img ${mi} fuse.thinfs ro,`, 'm'));

    const st = json<StatusResult>(await pool.cli('mounts', '--json'));
    expect(st.daemon?.pid).toBe(pid);
    expect(st.daemon!.rssBytes).toBeGreaterThan(1024 * 1024);
    expect(st.mounts.map((m) => [m.name, m.readOnly, m.state])).toEqual([
      ['c1', false, 'mounted'],
      ['c2', true, 'mounted'],
      ['img', true, 'mounted'],
    ]);
    expect((await pool.cli('mounts')).stdout).toMatch(/^c2 +\S+ +ro +mounted/m);

    fs.writeFileSync(path.join(m1, 'x'), 'data');
    for (const ro of [m2, mi]) expect(() => fs.writeFileSync(path.join(ro, 'x'), 'data')).toThrow(/EROFS/);
    const again = await pool.cli('mount', 'c1');
    expect(again.code).toBe(1);
    expect(again.errLines).toEqual([expect.stringMatching(/^thinfs: EBUSY: already mounted at /)]);

    await pool.umount('c2');
    await pool.umount(mi); // by path
    expect((await pool.cli('umount', 'c2')).errLines).toEqual([expect.stringMatching(/not mounted/)]);
    expect(alive(pid!)).toBe(true);
    await pool.umount('c1');
    for (let i = 0; i < 50 && alive(pid!); i++) await sleep(100);
    expect(alive(pid!)).toBe(false);
    expect(fs.readdirSync(path.join(pool.root, 'run'))).toEqual([]);
    expect(fs.existsSync(m1)).toBe(false); // default mountpoints exist only while mounted
    // What the first mount wrote was committed on umount.
    await pool.mount('c1');
    expect(fs.readFileSync(path.join(m1, 'x'), 'utf8')).toBe('data');
    await pool.umount('c1');
  });

  it('SIGTERM unmounts everything, commits, and exits 0', async () => {
    const m = await pool.mount('c1');
    const pid = pool.noteDaemon()!;
    await shOk(`echo sigterm > "${m}/term"`);
    process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
    expect(alive(pid)).toBe(false);
    expect(fs.readFileSync('/proc/self/mounts', 'utf8')).not.toContain(m);
    const log = fs.readFileSync(path.join(pool.root, 'logs', 'daemon.log'), 'utf8');
    expect(log).toContain('"reason":"SIGTERM"');
    expect(log).toMatch(/"code":0,"msg":"thinfs daemon stopped"/);
    expect((await pool.cli('check')).code).toBe(0);
    await pool.mount('c1');
    expect(fs.readFileSync(path.join(m, 'term'), 'utf8')).toBe('sigterm\n');
    await pool.umount('c1');
  });

  it('notices a mount unmounted behind its back (umount(8)), and exits when none is left', async () => {
    const m = await pool.mount('c1');
    const pid = pool.noteDaemon()!;
    await shOk(`umount "${m}"`);
    for (let i = 0; i < 60 && alive(pid); i++) await sleep(100);
    expect(alive(pid)).toBe(false);
    expect(fs.readdirSync(path.join(pool.root, 'run'))).toEqual([]);
  });

  it('a device unmounted with umount(8) mounts again at once (the daemon hears of it when the session ends)', async () => {
    const m1 = await pool.mount('c1');
    await pool.mount('c2'); // keeps the daemon running
    fs.writeFileSync(path.join(m1, 'again'), 'kept');
    await shOk(`umount "${m1}"`);
    // No wait: a prune timer would still list c1 as mounted here (EBUSY: already mounted).
    expect(await pool.mount('c1')).toBe(m1);
    expect(fs.readFileSync(path.join(m1, 'again'), 'utf8')).toBe('kept');
    await pool.umount('c1');
    await pool.umount('c2');
  });

  it.skipIf(!isRoot)('shows stored ids through --uid-map/--gid-map and stores new ids shifted back', async () => {
    // Stored 0 shows as 1000, stored 1..65535 as 100001...; new files of uid 1000 are stored as 0.
    // mkdtemp and init made these 0700: uid 1000 must reach the mountpoint.
    for (const d of [pool.dir, pool.root]) fs.chmodSync(d, 0o755);
    const m = await pool.mount('c2', '--uid-map', '0:1000:1', '--uid-map', '1:100001:65535', '--gid-map', '0:1000:1');
    const root = fs.statSync(m);
    expect([root.uid, root.gid]).toEqual([1000, 1000]);
    await shOk(`setpriv --reuid 1000 --regid 1000 --clear-groups sh -c 'echo hi > "${m}/by-1000" && mkdir "${m}/d"'`);
    await shOk(`chown 100001 "${m}/by-1000"`);
    const f = fs.statSync(path.join(m, 'by-1000'));
    expect([f.uid, f.gid]).toEqual([100001, 1000]);
    // A host id outside the map can't be stored.
    await expect(shOk(`chown 5 "${m}/by-1000"`)).rejects.toThrow(/Invalid argument/);
    await pool.umount('c2');
    const plain = await pool.mount('c2');
    expect(fs.statSync(path.join(plain, 'by-1000')).uid).toBe(1);
    expect(fs.statSync(path.join(plain, 'd')).uid).toBe(0);
    await pool.umount('c2');
  });

  it.skipIf(!isRoot)('a root mount honours setuid bits; --nosuid turns that off (nodev always)', async () => {
    // mkdtemp and init made these 0700: uid 65534 must reach the mountpoint.
    for (const d of [pool.dir, pool.root]) fs.chmodSync(d, 0o755);
    const m = await pool.mount('c1');
    await shOk(`cp /usr/bin/id "${m}/id-suid" && chown 0:0 "${m}/id-suid" && chmod 4755 "${m}/id-suid"`);
    const asNobody = `setpriv --reuid=65534 --regid=65534 --clear-groups "${m}/id-suid" -u`;
    expect((await shOk(asNobody)).trim()).toBe('0');
    const opts = () => fs.readFileSync('/proc/self/mounts', 'utf8').split('\n').find((l) => l.split(' ')[1] === m)!.split(' ')[3]!.split(',');
    expect(opts()).toContain('nodev');
    expect(opts()).not.toContain('nosuid');
    await pool.umount('c1');

    const r = await pool.cli('mount', 'c1', '--nosuid', '--json');
    pool.noteDaemon();
    expect(r.code).toBe(0);
    expect(json<{ setuid: boolean }>(r).setuid).toBe(false);
    expect((await shOk(asNobody)).trim()).toBe('65534');
    expect(opts()).toEqual(expect.arrayContaining(['nosuid', 'nodev']));
    await pool.umount('c1');
  });

  describe('bad input: one line, non-zero exit, pool unchanged', () => {
    beforeAll(() => pool.waitDaemonsGone());
    const cases: [string, string[], number, RegExp][] = [
      ['unknown name', ['mount', 'nope'], 1, /^thinfs: ENOENT: no image or container named 'nope'/],
      ['bad uid map', ['mount', 'c1', '--uid-map', '0:1000'], 2, /--uid-map.*CONTAINER:HOST:COUNT/],
      ['zero-length map', ['mount', 'c1', '--gid-map', '0:1000:0'], 2, /COUNT must be at least 1/],
      ['missing mountpoint', ['mount', 'c1', '/nonexistent/thinfs-mp'], 1, /ENOENT: the mountpoint does not exist/],
      ['umount of what is not mounted', ['umount', 'c1'], 1, /EINVAL: not mounted/],
      ['umount of an unknown name', ['umount', 'nope'], 1, /not mounted/],
    ];
    for (const [what, args, code, line] of cases) {
      it(what, async () => {
        const before = poolFingerprint(pool.root);
        const r = await pool.cli(...args);
        expect(r.code).toBe(code);
        expect(r.errLines).toEqual([expect.stringMatching(line)]);
        expect(poolFingerprint(pool.root)).toEqual(before);
        expect(fs.readdirSync(path.join(pool.root, 'run'))).toEqual([]); // no daemon was started for it
      });
    }

    it('a missing pool', async () => {
      const root = path.join(pool.dir, 'no-pool');
      for (const args of [['mount', 'c1'], ['umount', 'c1'], ['mounts']]) {
        const r = await pool.cli('--root', root, ...args);
        if (args[0] === 'mounts') {
          expect(r.code).toBe(0); // nothing mounted, nothing to say wrong
          continue;
        }
        expect(r.code).toBe(1);
        expect(r.errLines).toHaveLength(1);
      }
      expect(fs.existsSync(root)).toBe(false);
    });
  });
});

describe('setuid and device mount options', () => {
  const opts = (asRoot: boolean, nosuid: boolean) => mountOptions({ name: 'c1', readOnly: false, asRoot, nosuid, fuseConf: '' });
  it('a root mount is suid unless --nosuid; a non-root one is always nosuid (fusermount forces it); nodev always', () => {
    expect(opts(true, false)).toMatchObject({ setuid: true, options: { mountOptions: expect.arrayContaining(['suid', 'nodev']) } });
    for (const [asRoot, nosuid] of [[true, true], [false, false], [false, true]] as const) {
      const r = opts(asRoot, nosuid);
      expect(r.setuid).toBe(false);
      expect(r.options.mountOptions).toEqual(expect.arrayContaining(['nosuid', 'nodev']));
      expect(r.options.mountOptions).not.toContain('suid');
    }
  });
});
