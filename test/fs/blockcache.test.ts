/**
 * The contract the FUSE C hot path relies on (fs/data.ts BlockCache, pool blockMap): the
 * filesystem drops an inode's cached mappings before its blocks or size change, drops
 * everything on a rollback or a snapshot, and quiesces before freed blocks are punched or
 * reused; the block map says exactly which blocks may be written in place. In process,
 * with a recording cache; the real C side is tested through mounts (test/fuse/hotpath).
 */
import { constants } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Filesystem, ROOT_INO, type Ino } from '../../src/fs/index.js';
import { BLOCK_MAP_INLINE, BLOCK_MAP_ZERO, KiB, MiB, Pool, type DevId } from '../../src/pool/index.js';
import { FaultPlan } from '../helpers/faults.js';
import { tmpDir } from '../helpers/tmp.js';

const ROOT = { uid: 0, gid: 0 };
const BS = 4 * KiB;
const { O_RDWR } = constants;

/** Records what the filesystem tells it, and checks each call happens where the contract says. */
class RecordingCache {
  calls: string[] = [];
  drop(ino: Ino): void {
    this.calls.push(`drop ${ino}`);
  }
  dropAll(): void {
    this.calls.push('dropAll');
  }
  quiesce(): void {
    this.calls.push('quiesce');
  }
  take(): string[] {
    const c = this.calls;
    this.calls = [];
    return c;
  }
}

let t: { dir: string; cleanup: () => void };
let pool: Pool;
let faults: FaultPlan;
let dev: DevId;
let fs: Filesystem;
let cache: RecordingCache;

beforeEach(() => {
  t = tmpDir('thinfs-blockcache-');
  const root = path.join(t.dir, 'pool');
  Pool.create(root, { blockSizeBytes: BS, dataSizeBytes: 64 * MiB, minFreePercent: 0, inlineMaxBytes: 1 * KiB }).close();
  faults = new FaultPlan();
  pool = Pool.open(root, { faults });
  dev = pool.createThin('c');
  fs = Filesystem.open(pool, dev);
  cache = new RecordingCache();
  fs.attachBlockCache(cache);
});
afterEach(() => {
  try {
    fs.close();
  } catch {
    /* closed by the test */
  }
  try {
    pool.close({ commit: false });
  } catch {
    /* fail mode */
  }
  t.cleanup();
});

function create(name: string, bytes: Buffer): { ino: Ino; fh: number } {
  const { entry, fh } = fs.createAt(ROOT_INO, name, 0o644, ROOT, O_RDWR);
  if (bytes.length > 0) fs.write(fh, 0, bytes);
  return { ino: entry.ino, fh };
}

describe('the block cache contract', () => {
  it('drops an inode before its blocks or size change, and quiesces before freed blocks are reused', () => {
    const { ino, fh } = create('f', Buffer.alloc(4 * BS, 7));
    fs.commit();
    cache.take();

    fs.write(fh, BS, Buffer.alloc(100, 1)); // in place into an own block, inside the size: the mappings hold
    expect(cache.take()).toEqual([]);
    fs.write(fh, 4 * BS - 10, Buffer.alloc(100, 1)); // grows the file: its size changes
    expect(cache.take()).toContain(`drop ${ino}`);
    fs.write(fh, 6 * BS, Buffer.alloc(BS, 1)); // past the end: a fresh block (and the size)
    expect(cache.take()).toContain(`drop ${ino}`);
    fs.commit();
    cache.take();

    fs.setattrIno(ino, { size: BS }); // frees 5 blocks
    expect(cache.take()).toEqual([`drop ${ino}`]);
    fs.commit(); // the commit that frees them: quiesce before they are punched / reusable
    expect(cache.take()).toEqual(['quiesce']);

    fs.commit(); // nothing freed: nothing to wait for
    expect(cache.take()).toEqual([]);

    fs.release(fh);
    fs.unlinkAt(ROOT_INO, 'f'); // the last name, no handle: its blocks go
    expect(cache.take()).toContain(`drop ${ino}`);
    fs.commit();
    expect(cache.take()).toEqual(['quiesce']);
  });

  it('drops an inode when a write copies a lower block or fills a hole inside the file', () => {
    const { ino, fh } = create('f', Buffer.alloc(4 * BS, 7));
    fs.setattrIno(ino, { size: 8 * BS }); // blocks 4..7: holes inside the size
    fs.release(fh);
    fs.close();
    const img = pool.createSnapshot(dev, 'img0', { readOnly: true });
    const c = pool.createSnapshot(img, 'c0');
    fs = Filesystem.open(pool, c);
    fs.attachBlockCache(cache);
    const h = fs.openIno(ino, O_RDWR);
    cache.take();
    fs.write(h, 0, Buffer.alloc(10, 1)); // block 0 is the image's: copied
    expect(cache.take()).toEqual([`drop ${ino}`]);
    fs.write(h, 5 * BS, Buffer.alloc(BS, 1)); // a hole inside the file: allocated
    expect(cache.take()).toEqual([`drop ${ino}`]);
    fs.write(h, 5 * BS + 100, Buffer.alloc(10, 2)); // now own: in place
    expect(cache.take()).toEqual([]);
    fs.release(h);
  });

  it('drops everything (and lets in-flight I/O end) when an operation rolls back and when the device is snapshotted', () => {
    const { fh } = create('f', Buffer.alloc(2 * BS, 7));
    fs.commit();
    cache.take();

    faults.arm('pwrite', 1, 'EIO');
    expect(() => fs.write(fh, 10 * BS, Buffer.alloc(BS, 1))).toThrow(/EIO/);
    const afterFail = cache.take();
    expect(afterFail).toContain('dropAll');
    expect(afterFail.indexOf('quiesce')).toBeGreaterThan(afterFail.indexOf('dropAll'));

    pool.createSnapshot(dev, 'img', { readOnly: true }); // the container's own blocks become the image's
    const afterSnap = cache.take();
    expect(afterSnap.slice(0, 2)).toEqual(['dropAll', 'quiesce']);
  });

  it('detached, it hears nothing', () => {
    const { fh } = create('f', Buffer.alloc(BS, 7));
    fs.attachBlockCache(undefined);
    cache.take();
    fs.write(fh, 0, Buffer.alloc(BS, 2));
    fs.commit();
    expect(cache.take()).toEqual([]);
  });
});

describe('the block map', () => {
  it('marks own pool blocks writable, lower blocks read-only, holes as zeros, inline blocks for JS; nothing writable in fail mode', () => {
    // Image: file with blocks 0 and 1; container: writes block 2, leaves 3 a hole, block 4 inline (small tail).
    const { ino, fh } = create('f', Buffer.alloc(2 * BS, 7));
    fs.release(fh);
    fs.close();
    const img = pool.createSnapshot(dev, 'img', { readOnly: true });
    const c = pool.createSnapshot(img, 'c2');
    fs = Filesystem.open(pool, c);
    fs.attachBlockCache(cache);
    const h = fs.openIno(ino, O_RDWR);
    fs.write(h, 2 * BS, Buffer.alloc(BS, 3));
    fs.write(h, 4 * BS, Buffer.alloc(100, 4));

    const m = fs.blockMap(ino, 0, 6)!;
    expect(m.sizeBytes).toBe(4 * BS + 100);
    const e = [...m.entries];
    expect(e[0]! % 2).toBe(0); // lower: read in C, never written in place
    expect(e[0]!).toBeGreaterThanOrEqual(0);
    expect(e[1]! % 2).toBe(0);
    expect(e[2]! % 2).toBe(1); // own pool block
    expect(e[3]).toBe(BLOCK_MAP_ZERO);
    expect(e[4]).toBe(BLOCK_MAP_INLINE);
    expect(e[5]).toBe(BLOCK_MAP_ZERO);

    // A read-only view of the same device never marks own blocks writable.
    const ro = Filesystem.open(pool, img, { readOnly: true });
    const r = ro.blockMap(ino, 0, 2)!;
    expect([...r.entries].every((x) => x >= 0 && x % 2 === 0)).toBe(true);
    ro.close();

    // Fail mode: a failed commit; from then on nothing is written, in C either.
    fs.commit();
    fs.write(h, 0, Buffer.alloc(10, 9));
    fs.release(h);
    faults.arm('fdatasync', 1, 'EIO');
    expect(() => fs.commit()).toThrow();
    expect(pool.mode()).toBe('fail');
    const f = fs.blockMap(ino, 0, 6)!;
    expect(f.entries[2]! % 2).toBe(0); // the own block of the last commit: still mapped, no longer writable
    expect([...f.entries].every((x) => x < 0 || x % 2 === 0)).toBe(true);

    expect(fs.blockMap(ROOT_INO, 0, 1)).toBeUndefined(); // not a regular file
  });

  it('commit() after external writes fdatasyncs the data file even with no metadata change', () => {
    const { fh } = create('f', Buffer.alloc(2 * BS, 7));
    fs.release(fh);
    fs.commit();
    faults.recording = true;
    fs.commit();
    expect(faults.calls.filter((c) => c === 'fdatasync')).toEqual([]);
    fs.noteExternalWrites();
    fs.commit();
    expect(faults.calls.filter((c) => c === 'fdatasync')).toEqual(['fdatasync']);
    fs.commit();
    expect(faults.calls.filter((c) => c === 'fdatasync')).toEqual(['fdatasync']);
    // A failing fdatasync of those writes is a failed commit: fail mode.
    fs.noteExternalWrites();
    faults.arm('fdatasync', 1, 'EIO');
    expect(() => fs.commit()).toThrow(/EIO/);
    expect(pool.mode()).toBe('fail');
  });
});
