/**
 * Scenarios from the devicemapper thin-provisioning documentation, plus the pool's
 * crash, space and snapshot rules.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Pool, KiB, MiB, type FileKey } from '../../src/pool/index.js';
import { isThinfsError } from '../../src/errors.js';
import { allocatedBytes, tmpDir } from '../helpers/tmp.js';

const K = 7 as FileKey;
let t: { dir: string; cleanup: () => void };
let pool: Pool | undefined;

beforeEach(() => {
  t = tmpDir();
});
afterEach(() => {
  try {
    pool?.close();
  } catch {
    /* already closed */
  }
  pool = undefined;
  t.cleanup();
});

function fill(len: number, byte: number): Buffer {
  return Buffer.alloc(len, byte);
}

function readBack(p: Pool, name: string, key: FileKey, off: number, len: number): Buffer {
  const dev = p.openDevice(p.findDevice(name)!.id);
  const buf = Buffer.alloc(len);
  dev.read(key, off, buf);
  dev.close();
  return buf;
}

function expectErrno(fn: () => unknown, code: string): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(isThinfsError(err), `expected ${code}, got ${String(err)}`).toBe(true);
  expect((err as { code: string }).code).toBe(code);
}

describe('devicemapper scenarios', () => {
  it('a 56 KiB write to an empty device allocates exactly one 64 KiB block', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const id = pool.createThin('thin');
    const dev = pool.openDevice(id);
    dev.write(K, 0, fill(56 * KiB, 0xab));
    expect(dev.counts()).toEqual({ mappedBlocks: 1, exclusiveBlocks: 1 });
    expect(pool.status().dataUsedBytes).toBe(64 * KiB);
    const back = Buffer.alloc(64 * KiB);
    dev.read(K, 0, back);
    expect(back.subarray(0, 56 * KiB).equals(fill(56 * KiB, 0xab))).toBe(true);
    expect(back.subarray(56 * KiB).equals(fill(8 * KiB, 0))).toBe(true);
    dev.close();
  });

  it('a 32 KiB write into a block only the parent maps copies exactly that block; the parent is unchanged', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const base = pool.createThin('base');
    const b = pool.openDevice(base);
    b.write(K, 0, fill(4 * 64 * KiB, 0x11)); // four blocks in the parent
    b.close();
    pool.setReadOnly(base);
    const snap = pool.createSnapshot(base, 'snap');
    const usedBefore = pool.status().dataUsedBytes;
    const s = pool.openDevice(snap);
    s.write(K, 64 * KiB + 16 * KiB, fill(32 * KiB, 0x22));
    expect(pool.status().dataUsedBytes - usedBefore).toBe(64 * KiB);
    expect(s.counts()).toEqual({ mappedBlocks: 4, exclusiveBlocks: 1 });
    const got = Buffer.alloc(64 * KiB);
    s.read(K, 64 * KiB, got);
    expect(got.subarray(0, 16 * KiB).equals(fill(16 * KiB, 0x11))).toBe(true);
    expect(got.subarray(16 * KiB, 48 * KiB).equals(fill(32 * KiB, 0x22))).toBe(true);
    expect(got.subarray(48 * KiB).equals(fill(16 * KiB, 0x11))).toBe(true);
    // Later writes to the copied block go in place: no new allocation.
    s.write(K, 64 * KiB, fill(4 * KiB, 0x33));
    expect(s.counts().exclusiveBlocks).toBe(1);
    s.close();
    expect(readBack(pool, 'base', K, 0, 4 * 64 * KiB).equals(fill(4 * 64 * KiB, 0x11))).toBe(true);
    expect(pool.check().clean).toBe(true);
  });

  it('write then discard frees the blocks and the data file shrinks on disk', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 256 * MiB, minFreePercent: 0 });
    const dev = pool.openDevice(pool.createThin('thin'));
    dev.write(K, 0, fill(8 * MiB, 0x5a));
    pool.commit();
    const before = allocatedBytes(pool.dataFile);
    expect(before).toBeGreaterThanOrEqual(8 * MiB);
    dev.discard(K, 0, 128);
    pool.commit();
    expect(dev.counts()).toEqual({ mappedBlocks: 0, exclusiveBlocks: 0 });
    expect(pool.status().dataUsedBytes).toBe(0);
    expect(allocatedBytes(pool.dataFile)).toBeLessThanOrEqual(before - 8 * MiB);
    dev.close();
    expect(pool.check().clean).toBe(true);
  });

  it('a full pool answers ENOSPC, leaves everything consistent, and takes writes again after a discard', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 16 * 64 * KiB, minFreePercent: 0 });
    const dev = pool.openDevice(pool.createThin('thin'));
    dev.write(K, 0, fill(16 * 64 * KiB, 1));
    // 40 KiB: more than the inline threshold (32 KiB), so it needs a pool block.
    expectErrno(() => dev.write(K, 16 * 64 * KiB, fill(40 * KiB, 2)), 'ENOSPC');
    expect(pool.mode()).toBe('out-of-data-space');
    // A write spanning a mapped and an unmapped block changes nothing when it fails.
    expectErrno(() => dev.write(K, 16 * 64 * KiB - 5, fill(5 + 40 * KiB, 3)), 'ENOSPC');
    const tail = Buffer.alloc(5);
    dev.read(K, 16 * 64 * KiB - 5, tail);
    expect(tail.equals(fill(5, 1))).toBe(true);
    // Small data still fits: it is kept inline in the metadata.
    dev.write(2 as FileKey, 0, fill(100, 5));
    expect(readBack(pool, 'thin', 2 as FileKey, 0, 100).equals(fill(100, 5))).toBe(true);
    dev.removeKey(2 as FileKey);
    dev.discard(K, 0, 2);
    pool.commit(); // freed blocks are reusable once the freeing transaction commits
    dev.write(K, 16 * 64 * KiB, fill(2 * 64 * KiB, 4));
    expect(pool.mode()).toBe('write');
    dev.close();
    expect(pool.check().clean).toBe(true);
  });

  it('the minimum free space is kept: allocations that would eat into it fail with ENOSPC', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 100 * 64 * KiB, minFreePercent: 10 });
    const dev = pool.openDevice(pool.createThin('thin'));
    dev.write(K, 0, fill(90 * 64 * KiB, 1));
    expectErrno(() => dev.write(K, 90 * 64 * KiB, fill(40 * KiB, 1)), 'ENOSPC');
    expect(pool.status().dataAvailableBytes).toBe(0);
    dev.close();
  });

  it('autoextend grows the data file up to its maximum', () => {
    pool = Pool.create(t.dir, {
      dataSizeBytes: 16 * 64 * KiB,
      minFreePercent: 0,
      autoextend: { thresholdPercent: 80, percent: 50, maxBytes: 40 * 64 * KiB },
    });
    const dev = pool.openDevice(pool.createThin('thin'));
    dev.write(K, 0, fill(30 * 64 * KiB, 1));
    expect(pool.status().dataTotalBytes).toBeGreaterThan(16 * 64 * KiB);
    expect(pool.status().dataTotalBytes).toBeLessThanOrEqual(40 * 64 * KiB);
    expectErrno(() => dev.write(K, 30 * 64 * KiB, fill(11 * 64 * KiB, 1)), 'ENOSPC');
    expect(fs.statSync(pool.dataFile).size).toBe(pool.status().dataTotalBytes);
    dev.close();
  });

  it("a device's size limit answers ENOSPC", () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0, baseSizeBytes: 4 * 64 * KiB });
    const dev = pool.openDevice(pool.createThin('thin'));
    dev.write(K, 0, fill(4 * 64 * KiB, 1));
    expectErrno(() => dev.write(K, 4 * 64 * KiB, fill(1, 1)), 'ENOSPC');
    dev.write(K, 0, fill(64 * KiB, 2)); // in place: fine
    dev.close();
  });
});

describe('snapshots', () => {
  it('are O(1): no mapping rows are copied, however much the origin maps', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 256 * MiB, minFreePercent: 0 });
    const origin = pool.createThin('origin');
    const d = pool.openDevice(origin);
    d.write(K, 0, fill(16 * MiB, 9));
    d.close();
    const rows = () => pool!.metadataDb().prepare('SELECT count(*) FROM mappings').pluck().get();
    const before = rows();
    pool.createSnapshot(origin, 'snap');
    expect(rows()).toBe(before);
    expect(pool.findDevice('snap')!.mappedBlocks).toBe(256);
    expect(pool.findDevice('snap')!.exclusiveBlocks).toBe(0);
  });

  it('of a writable origin: neither side sees the other side\'s later writes', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const origin = pool.createThin('origin');
    const o = pool.openDevice(origin);
    o.write(K, 0, fill(100, 1));
    const snap = pool.createSnapshot(origin, 'snap');
    o.write(K, 0, fill(50, 2)); // the open handle follows the origin onto its new layer
    const s = pool.openDevice(snap);
    s.write(K, 50, fill(50, 3));
    o.close();
    s.close();
    expect(readBack(pool, 'origin', K, 0, 100).equals(Buffer.concat([fill(50, 2), fill(50, 1)]))).toBe(true);
    expect(readBack(pool, 'snap', K, 0, 100).equals(Buffer.concat([fill(50, 1), fill(50, 3)]))).toBe(true);
    expect(pool.check().clean).toBe(true);
  });

  it('shrink-then-grow reads zeros even where a lower device holds data', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const base = pool.createThin('base');
    const b = pool.openDevice(base);
    b.write(K, 0, fill(3 * 64 * KiB, 7));
    b.close();
    pool.setReadOnly(base);
    const c = pool.openDevice(pool.createSnapshot(base, 'c'));
    c.truncate(K, 100);
    const got = Buffer.alloc(3 * 64 * KiB);
    c.read(K, 0, got);
    expect(got.subarray(0, 100).equals(fill(100, 7))).toBe(true);
    expect(got.subarray(100).equals(fill(got.length - 100, 0))).toBe(true);
    // The 100 bytes left of the first block are copied up inline; no pool block is mapped.
    expect(c.counts().mappedBlocks).toBe(0);
    expect(c.info().inlineMappedBytes).toBe(100);
    c.close();
    expect(readBack(pool, 'base', K, 0, 3 * 64 * KiB).equals(fill(3 * 64 * KiB, 7))).toBe(true);
  });

  it('read through 128 stacked snapshots sees each layer\'s own version', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0, blockSizeBytes: 4 * KiB });
    let prev = pool.createThin('l0');
    const w = pool.openDevice(prev);
    w.write(K, 0, fill(8 * KiB, 0));
    w.close();
    pool.setReadOnly(prev);
    for (let i = 1; i < 128; i++) {
      const id = pool.createSnapshot(prev, `l${i}`);
      const d = pool.openDevice(id);
      d.write(K, 4 * KiB, fill(10, i));
      d.close();
      pool.setReadOnly(id);
      prev = id;
    }
    expect(pool.getDevice(prev)!.depth).toBe(128);
    for (const i of [0, 1, 64, 127]) {
      const got = readBack(pool, `l${i}`, K, 4 * KiB, 10);
      expect(got.equals(fill(10, i))).toBe(true);
    }
    expect(readBack(pool, 'l127', K, 0, 10).equals(fill(10, 0))).toBe(true);
  });

  it('deleting an image with containers is deferred, counted, and completed with the last container', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const img = pool.createThin('img');
    const d = pool.openDevice(img);
    d.write(K, 0, fill(4 * 64 * KiB, 1));
    d.close();
    pool.setReadOnly(img);
    const c = pool.createSnapshot(img, 'c');
    expect(pool.deleteDevice(img)).toBe('deferred');
    expect(pool.status().deferredDeletions).toBe(1);
    expect(readBack(pool, 'c', K, 0, 10).equals(fill(10, 1))).toBe(true);
    expect(pool.deleteDevice(c)).toBe('deleted');
    expect(pool.status().deferredDeletions).toBe(0);
    expect(pool.listDevices()).toEqual([]);
    expect(pool.status().dataUsedBytes).toBe(0);
    expect(pool.check().clean).toBe(true);
  });

  it('deleting an open device is deferred until the handle closes', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const id = pool.createThin('busy');
    const d = pool.openDevice(id);
    d.write(K, 0, fill(10, 1));
    expect(pool.deleteDevice(id)).toBe('deferred');
    expect(pool.status().deferredDeletions).toBe(1);
    d.close();
    expect(pool.getDevice(id)).toBeUndefined();
    expect(pool.status().dataUsedBytes).toBe(0);
  });
});

describe('crash rules', () => {
  it('after a crash the uncommitted transaction is gone, its blocks free, and check is clean', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const id = pool.createThin('thin');
    const d = pool.openDevice(id);
    d.write(K, 0, fill(64 * KiB, 1));
    pool.commit();
    d.write(K, 64 * KiB, fill(10 * 64 * KiB, 2));
    d.write(K, 0, fill(10, 3)); // in place into a committed block: data, not metadata
    d.close();
    pool.close({ commit: false });
    pool = Pool.open(t.dir);
    expect(pool.status().dataUsedBytes).toBe(64 * KiB);
    expect(pool.findDevice('thin')!.mappedBlocks).toBe(1);
    expect(readBack(pool, 'thin', K, 64 * KiB, 10).equals(fill(10, 0))).toBe(true);
    expect(pool.check().clean).toBe(true);
  });

  it('a block freed in a transaction is not reused before that transaction commits', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const d = pool.openDevice(pool.createThin('thin'));
    d.write(K, 0, fill(64 * KiB, 1));
    pool.commit();
    const old = d.findBlock(K, 0)!.pblock;
    d.discard(K, 0, 1);
    d.write(1 as FileKey, 0, fill(64 * KiB, 2));
    expect(d.findBlock(1 as FileKey, 0)!.pblock).not.toBe(old);
    // Roll back: the old mapping must still point at intact data.
    pool.abort();
    const got = Buffer.alloc(64 * KiB);
    d.read(K, 0, got);
    expect(got.equals(fill(64 * KiB, 1))).toBe(true);
    d.close();
    expect(pool.check().clean).toBe(true);
  });

  it('abort drops the transaction and reloads counters', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const id = pool.createThin('thin');
    pool.commit();
    const d = pool.openDevice(id);
    d.write(K, 0, fill(3 * 64 * KiB, 1));
    pool.abort();
    expect(d.counts()).toEqual({ mappedBlocks: 0, exclusiveBlocks: 0 });
    expect(pool.status().dataUsedBytes).toBe(0);
    d.close();
  });
});

describe('opening', () => {
  it('refuses a directory without a pool, a non-SQLite metadata file, a foreign SQLite file and a newer schema', () => {
    expectErrno(() => Pool.open(t.dir), 'ENOENT');
    fs.mkdirSync(path.join(t.dir, 'pool'));
    fs.writeFileSync(path.join(t.dir, 'pool', 'metadata.db'), 'this is not sqlite at all, not even close'.repeat(100));
    expectErrno(() => Pool.open(t.dir), 'EINVAL');
    fs.rmSync(path.join(t.dir, 'pool'), { recursive: true });
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB });
    pool.close();
    pool = undefined;
    const db = new Database(path.join(t.dir, 'pool', 'metadata.db'));
    db.prepare('UPDATE superblock SET schema_version = 99').run();
    db.close();
    expect(() => Pool.open(t.dir)).toThrow(/newer than this thinfs understands/);
  });

  it('refuses to create over an existing pool and to shrink the data file', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB });
    expectErrno(() => Pool.create(t.dir), 'EEXIST');
    expectErrno(() => pool!.resize(32 * MiB), 'EINVAL');
    pool.resize(128 * MiB);
    expect(pool.status().dataTotalBytes).toBe(128 * MiB);
    expect(fs.statSync(pool.dataFile).size).toBe(128 * MiB);
  });

  it('marks needs_check and goes read-only when the data file is shorter than the mapped blocks', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const d = pool.openDevice(pool.createThin('thin'));
    d.write(K, 0, fill(4 * 64 * KiB, 1));
    d.close();
    pool.close();
    fs.truncateSync(path.join(t.dir, 'pool', 'data'), 64 * KiB);
    pool = Pool.open(t.dir);
    expect(pool.status().needsCheck).toBe(true);
    expect(pool.mode()).toBe('read-only');
    expectErrno(() => pool!.createThin('x'), 'EROFS');
  });

  it('a truncated data file: the advice is followable — check --repair grows it back and the pool is writable again', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const d = pool.openDevice(pool.createThin('thin'));
    d.write(K, 0, fill(4 * 64 * KiB, 1));
    d.close();
    pool.close();
    fs.truncateSync(path.join(t.dir, 'pool', 'data'), 2 * 64 * KiB);
    pool = Pool.open(t.dir);
    const r = pool.check();
    expect(r.fatal).toBe(1);
    expect(r.issues.find((i) => i.severity === 'fatal')!.fix).toMatch(/check --repair/);
    expect(pool.check({ repair: true }).repaired).toBe(true);
    expect(pool.check().clean).toBe(true);
    pool.clearNeedsCheck(); // what `thinfs check --repair` does once every check is clean
    expect(pool.mode()).toBe('write');
    expect(fs.statSync(pool.dataFile).size).toBe(64 * MiB);
    // The surviving head reads back; the lost tail reads as zeros, as the report says.
    const dev = pool.openDevice(pool.findDevice('thin')!.id);
    const buf = Buffer.alloc(4 * 64 * KiB);
    dev.read(K, 0, buf);
    expect(buf.subarray(0, 2 * 64 * KiB).equals(fill(2 * 64 * KiB, 1))).toBe(true);
    expect(buf.subarray(2 * 64 * KiB).every((b) => b === 0)).toBe(true);
    pool.createThin('after-repair');
    dev.close();
  });

  it('check finds a leak, --repair fixes it', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    pool.metadataDb().prepare('UPDATE superblock SET hwm = hwm + 3').run();
    pool.close();
    pool = Pool.open(t.dir);
    const r = pool.check();
    expect(r.clean).toBe(false);
    expect(r.fatal).toBe(0);
    expect(r.leaks).toBe(1);
    expect(pool.check({ repair: true }).repaired).toBe(true);
    expect(pool.check().clean).toBe(true);
  });

  it('trim returns free space to the host', () => {
    pool = Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0 });
    const d = pool.openDevice(pool.createThin('thin'));
    d.write(K, 0, fill(4 * MiB, 1));
    pool.abort(); // aborted blocks are punched at abort already
    d.close();
    // Write stray data into free space, as a crashed transaction would leave it.
    const fd = fs.openSync(pool.dataFile, 'r+');
    fs.writeSync(fd, fill(MiB, 9), 0, MiB, 10 * MiB);
    fs.closeSync(fd);
    expect(pool.trim()).toBeGreaterThanOrEqual(MiB);
  });
});
