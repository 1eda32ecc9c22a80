/**
 * A host filesystem that fills up under a mounted container (issue 7, DESIGN.md §5: "a
 * full host disk, a full pool or a failing log write never takes the daemon down: the
 * caller gets ENOSPC"). The pool root — data file, metadata and the daemon's log
 * ROOT/logs/daemon.log — sits on a small ext4 on a loop device; the pool itself is far
 * larger (1G, no free-space floor), so it is the host that runs out, not the pool.
 *
 * The sequence: a file is written and fsync'ed; a writer fills the host through the
 * mount; a plain file beside the pool takes the last free block, so the daemon's log
 * writes fail too, while more writes (which log warnings, at debug every operation)
 * fail; then the space is given back. What must hold: writers see ENOSPC, never ENOTCONN;
 * the daemon lives throughout; what was fsync'ed reads back byte-exact; a failed write
 * into an image-backed file changes nothing (after a remount too); writes work again once
 * space returns; the log says what it could not write; umount works and `check` is clean.
 *
 * Root only (loop devices, mount); skipped otherwise, saying why. Cleanup runs always:
 * the FUSE view, the daemon this test started (by pid), the loop filesystem and device.
 */
import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lazyUnmount, mountTable } from '../../src/fuse/kernel.js';
import { alive, fuseSkipReason, sh, sleep, thinfs, type Run } from './helpers.js';

const HOST_FS_BYTES = 48 * 1024 * 1024;

function skipReason(): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (a loop device and mount(8) for the small host filesystem)';
  const fuse = fuseSkipReason();
  if (fuse !== undefined) return fuse;
  for (const tool of ['losetup', 'mkfs.ext4', 'mount', 'umount']) {
    if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} is missing`;
  }
  if (spawnSync('losetup', ['--find']).status !== 0) return 'no free loop device (losetup --find failed)';
  return undefined;
}

const skip = skipReason();
if (skip !== undefined) console.warn(`test/fuse/fullhost: skipped: ${skip}`);

const sha256 = (file: string) => createHash('sha256').update(fs.readFileSync(file)).digest('hex');

/** A write that failed the way a full disk should: ENOSPC, not a dead daemon (ENOTCONN) nor EIO. */
function expectNoSpace(r: Run, what: string): void {
  expect(r.code, `${what} should fail`).not.toBe(0);
  expect(r.stderr, what).not.toMatch(/Transport endpoint is not connected|Software caused connection abort/);
  expect(r.stderr, what).toMatch(/No space left on device/);
}

describe.skipIf(skip !== undefined)('the host filesystem under the pool fills up', () => {
  let dir: string; // temp dir on the machine's own disk: loop image, sources
  let host: string; // the small ext4 mounted from the loop device
  let dev: string | undefined;
  let hostMounted = false;
  let root: string;
  let mnt: string;
  let pid: number | undefined;
  const blob = Buffer.alloc(256 * 1024);
  let keepSha: string;

  const cli = (...args: string[]) => thinfs(['--root', root, ...args]);
  const hostFree = () => {
    const st = fs.statfsSync(host);
    return st.bavail * st.bsize;
  };
  /**
   * Take every free block of the host with plain files beside the pool. Repeated, because
   * space comes back on its own (SQLite truncating its WAL after a checkpoint, blocks of
   * failed writes punched out, ext4 settling delayed allocations at sync).
   */
  const fillHost = async () => {
    for (let i = 0; i < 20 && hostFree() > 0; i++) {
      const r = await sh(`dd if=/dev/zero of=${host}/filler-$(date +%s%N) bs=1K status=none; sync -f ${host}`);
      expect(r.stderr).toMatch(/No space left on device/);
    }
    expect(hostFree(), 'the host filesystem could not be filled').toBe(0);
  };
  const daemonLog = () => path.join(root, 'logs', 'daemon.log');
  const daemonAlive = () => pid !== undefined && alive(pid);
  /** The pool's mode as the daemon reports it, for failure messages. */
  const poolMode = async () => {
    const r = await cli('info', '--json');
    return r.code === 0 ? `pool mode ${(JSON.parse(r.stdout) as { mode: string }).mode}` : r.stderr.trim();
  };

  beforeAll(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'thinfs-fullhost-'));
    const img = path.join(dir, 'host.img');
    fs.writeFileSync(img, '');
    fs.truncateSync(img, HOST_FS_BYTES);
    const lo = spawnSync('losetup', ['--find', '--show', img], { encoding: 'utf8' });
    if (lo.status !== 0) throw new Error(`losetup failed: ${lo.stderr}`);
    dev = lo.stdout.trim();
    // -m 0: no blocks reserved for root (the daemon runs as root and would use them).
    const mk = spawnSync('mkfs.ext4', ['-q', '-F', '-m', '0', dev], { encoding: 'utf8' });
    if (mk.status !== 0) throw new Error(`mkfs.ext4 failed: ${mk.stderr}`);
    host = path.join(dir, 'host');
    fs.mkdirSync(host);
    const mo = spawnSync('mount', [dev, host], { encoding: 'utf8' });
    if (mo.status !== 0) throw new Error(`mount failed: ${mo.stderr}`);
    hostMounted = true;

    root = path.join(host, 'root');
    const src = path.join(dir, 'src');
    fs.mkdirSync(path.join(src, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(src, 'etc', 'hostname'), 'fullhost\n');
    for (let i = 0; i < blob.length; i++) blob[i] = (i * 7919) % 251;
    fs.writeFileSync(path.join(src, 'etc', 'blob'), blob);
    for (const args of [
      ['init', '--data-size', '1G', '--min-free-space', '0'],
      ['import', 'img', src],
      ['create', 'c', 'img'],
    ]) {
      const r = await cli(...args);
      if (r.code !== 0) throw new Error(`thinfs ${args.join(' ')} failed: ${r.stderr}`);
    }
    // At debug the daemon logs every FUSE operation: with the host full, its log writes fail.
    const m = await cli('--log-level', 'debug', 'mount', 'c', '--json');
    pid = Number(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8').trim()) || undefined;
    if (m.code !== 0) throw new Error(`thinfs mount failed: ${m.stderr}`);
    mnt = (JSON.parse(m.stdout) as { mountpoint: string }).mountpoint;
  });

  afterAll(async () => {
    if (root !== undefined) await cli('umount', 'c').catch(() => undefined);
    if (pid !== undefined && alive(pid)) {
      process.kill(pid, 'SIGTERM');
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
      if (alive(pid)) process.kill(pid, 'SIGKILL');
      for (let i = 0; i < 50 && alive(pid); i++) await sleep(100);
    }
    if (dir !== undefined) {
      for (const m of mountTable().filter((e) => e.fstype === 'fuse.thinfs' && e.mountpoint.startsWith(`${dir}/`))) {
        await lazyUnmount(m.mountpoint).catch(() => undefined);
      }
    }
    if (hostMounted && spawnSync('umount', [host]).status !== 0) spawnSync('umount', ['-l', host]);
    if (dev !== undefined) spawnSync('losetup', ['-d', dev]);
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a writer that fills the host gets ENOSPC, never ENOTCONN, and the daemon lives', async () => {
    const keepSrc = path.join(dir, 'keep.src');
    fs.writeFileSync(keepSrc, Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 31 + 7) % 256)));
    keepSha = sha256(keepSrc);
    const keep = await sh(`dd if=${keepSrc} of=${mnt}/keep bs=64K conv=fsync status=none`);
    expect(keep.code, keep.stderr).toBe(0);
    expect(daemonAlive()).toBe(true);

    const fill = await sh(`dd if=/dev/urandom of=${mnt}/big bs=1M count=${(2 * HOST_FS_BYTES) / (1024 * 1024)} conv=fsync status=none`);
    expectNoSpace(fill, 'filling the host through the mount');
    expect(daemonAlive()).toBe(true);
    // It was the host that ran out, not the pool: by its own count it is nearly empty.
    const info = await cli('info', '--json');
    expect(info.code, info.stderr).toBe(0);
    const { dataUsed, dataTotal } = JSON.parse(info.stdout) as { dataUsed: number; dataTotal: number };
    expect(dataUsed).toBeLessThan(dataTotal / 8);
  });

  it('with the last block taken beside the pool, failing writes and failing log writes do not take the daemon down', async () => {
    await fillHost();

    for (let i = 0; i < 5; i++) {
      expectNoSpace(await sh(`head -c 200000 /dev/urandom > ${mnt}/small${i}; sync ${mnt}/small${i}`), `write ${i} on a full host`);
      expect(daemonAlive(), `daemon after write ${i}`).toBe(true);
    }
    // The data loss: a 4 KiB write into an image-backed file needs a copy of its
    // block, which cannot land; it must fail and leave the file as it was (checked after
    // the remount below, when no page cache can hide a difference).
    expectNoSpace(await sh(`dd if=/dev/urandom of=${mnt}/etc/blob bs=4K seek=3 count=1 conv=notrunc,fsync status=none`), 'a CoW write into etc/blob');

    // Many operations, each logged at debug, none of which the log can take.
    await fillHost();
    const logBytes = fs.statSync(daemonLog()).size;
    const busy = await sh(`for i in $(seq 200); do ls -la ${mnt} >/dev/null; stat ${mnt}/keep >/dev/null; done`);
    expect(busy.code, busy.stderr).toBe(0);
    // 400 operations at debug are ~100 KiB of log; what went in is at most the slack of its last blocks.
    expect(fs.statSync(daemonLog()).size - logBytes, 'the log kept growing: its writes did not fail').toBeLessThan(16 * 1024);
    expect(daemonAlive()).toBe(true);
    const status = await cli('mounts', '--json');
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({ daemon: { pid }, mounts: [{ name: 'c', state: 'mounted' }] });
  });

  it('what was fsync\'ed before the fill reads back byte-exact', () => {
    expect(sha256(path.join(mnt, 'keep'))).toBe(keepSha);
  });

  it('once space returns, writes work again and the log says what it could not write', async () => {
    for (const f of fs.readdirSync(host)) if (f.startsWith('filler-')) fs.rmSync(path.join(host, f));
    // The pool may take a moment to see the room (and to commit the frees): bounded retries.
    const retry = async (script: string): Promise<Run> => {
      let last = await sh(script);
      for (const deadline = Date.now() + 10_000; last.code !== 0 && Date.now() < deadline; last = await sh(script)) await sleep(250);
      return last;
    };
    const rm = await retry(`rm -f ${mnt}/big ${mnt}/small*; sync`);
    expect(rm.code, `deleting the fill once the host has room (${await poolMode()}): ${rm.stderr}`).toBe(0);
    fs.writeFileSync(path.join(dir, 'after.src'), Buffer.alloc(65536, 0xa5));
    const write = await retry(`dd if=${dir}/after.src of=${mnt}/after bs=64K conv=fsync status=none`);
    expect(write.code, `a small write after freeing space (${await poolMode()}): ${write.stderr}`).toBe(0);
    expect(sha256(path.join(mnt, 'after'))).toBe(sha256(path.join(dir, 'after.src')));
    expect(daemonAlive()).toBe(true);

    // The log's sink retries every second: wait for its notice about the lines it held.
    let notice: { msg: string } | undefined;
    for (let i = 0; i < 50 && notice === undefined; i++) {
      await sleep(100);
      notice = fs
        .readFileSync(daemonLog(), 'utf8')
        .split('\n')
        .filter((l) => l.includes('"component":"log"'))
        .map((l) => JSON.parse(l) as { msg: string })
        .find((r) => /could not be written .*\(ENOSPC\)/.test(r.msg));
    }
    expect(notice?.msg).toMatch(/the log could not be written for \d+ s \(ENOSPC\): \d+ log lines were dropped, \d+ delayed lines follow/);
  });

  it('umount works, the daemon then exits, check is clean, and the failed write changed nothing', async () => {
    const u = await cli('umount', 'c');
    expect(u.code, u.stderr).toBe(0);
    for (let i = 0; i < 100 && daemonAlive(); i++) await sleep(100);
    expect(daemonAlive(), 'the daemon exits after its last umount').toBe(false);
    const check = await cli('check');
    expect(check.code, check.stdout + check.stderr).toBe(0);
    expect(check.stdout).toMatch(/clean/);

    const m = await cli('mount', 'c', '--json');
    pid = Number(fs.readFileSync(path.join(root, 'run', 'daemon.pid'), 'utf8').trim()) || undefined;
    expect(m.code, m.stderr).toBe(0);
    expect(fs.readFileSync(path.join(mnt, 'etc', 'blob')).equals(blob), 'etc/blob after the failed CoW write and a remount').toBe(true);
    expect(sha256(path.join(mnt, 'keep'))).toBe(keepSha);
    expect((await cli('umount', 'c')).code).toBe(0);
  });
});
