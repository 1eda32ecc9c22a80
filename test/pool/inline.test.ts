/**
 * Inline blocks (src/pool/thin.ts): a block whose bytes end within the pool's inline
 * threshold is kept in its mappings row instead of a pool block. One rule per test:
 * space and counters, growing past the threshold and shrinking back, copy-on-write that
 * never touches the image, discard and remove, crash, a failing pwrite or statement while
 * converting, check and repair of inline rows, the schema-1 migration, block-only pools,
 * and a host file system that fills up with inline data (root only: a small tmpfs).
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { fail, isThinfsError } from '../../src/errors.js';
import { KiB, MiB, Pool, type FileKey, type ThinDevice } from '../../src/pool/index.js';
import { codeOf, pattern } from '../helpers/data.js';
import { FaultPlan } from '../helpers/faults.js';
import { tmpDir } from '../helpers/tmp.js';

const K = 7 as FileKey;
const BS = 64 * KiB;
const MAX = 32 * KiB; // the default threshold of a 64 KiB pool

let t: { dir: string; cleanup: () => void };
let pool: Pool | undefined;

beforeEach(() => {
  t = tmpDir('thinfs-inline-');
});
afterEach(() => {
  try {
    pool?.close({ commit: false });
  } catch {
    /* already closed */
  }
  pool = undefined;
  t.cleanup();
});

function readAll(d: ThinDevice, key: FileKey, len: number): Buffer {
  const buf = Buffer.alloc(len, 0xee);
  d.read(key, 0, buf);
  return buf;
}
function newPool(opts: Parameters<typeof Pool.create>[1] = {}): Pool {
  return Pool.create(t.dir, { dataSizeBytes: 64 * MiB, minFreePercent: 0, ...opts });
}
function rows(p: Pool): { fblock: number; layer: number; pblock: number | null; len: number | null }[] {
  return p
    .metadataDb()
    .prepare('SELECT m.fblock, m.layer, m.pblock, length(i.data) AS len FROM mappings m LEFT JOIN inline_blocks i ON i.id = m.inline_id ORDER BY m.ino, m.fblock, m.layer')
    .all() as never;
}
function inlineRowCount(p: Pool): number {
  return p.metadataDb().prepare('SELECT count(*) FROM inline_blocks').pluck().get() as number;
}

describe('inline blocks', () => {
  it('a 100-byte file takes no pool block: its bytes are in the row, counted exactly, read zero-extended', () => {
    pool = newPool();
    expect(pool.inlineMaxBytes).toBe(MAX);
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(100, 1));
    expect(pool.status()).toMatchObject({ dataUsedBytes: 0, inlineBytes: 100, inlineMaxBytes: MAX });
    expect(d.counts()).toEqual({ mappedBlocks: 0, exclusiveBlocks: 0 });
    expect(d.info()).toMatchObject({ inlineMappedBytes: 100, inlineExclusiveBytes: 100, mappedBytes: 100, exclusiveBytes: 100 });
    // st_blocks counts the inline bytes in 512-byte sectors.
    expect(d.keyAllocatedBytes(K)).toBe(512);
    expect(d.keyMappedBlocks(K) * BS / 512).toBe(1);
    const found = d.findBlock(K, 0)!;
    expect(found.pblock).toBeNull();
    expect(found.data!.equals(pattern(100, 1))).toBe(true);
    const back = readAll(d, K, BS + 10);
    expect(back.subarray(0, 100).equals(pattern(100, 1))).toBe(true);
    expect(back.subarray(100).every((b) => b === 0)).toBe(true);
    // A read that starts inside the block past the bytes, and one across them.
    const mid = Buffer.alloc(50, 0xee);
    d.read(K, 80, mid);
    expect(mid.subarray(0, 20).equals(pattern(100, 1).subarray(80))).toBe(true);
    expect(mid.subarray(20).every((b) => b === 0)).toBe(true);
    expect(rows(pool)).toEqual([{ fblock: 0, layer: expect.any(Number), pblock: null, len: 100 }]);
    d.close();
    pool.commit();
    pool.close();
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    expect(readAll(again, K, 100).equals(pattern(100, 1))).toBe(true);
    expect(again.info().inlineMappedBytes).toBe(100);
    again.close();
    expect(pool.check().issues).toEqual([]);
    expect(pool.check().inlineBlocksChecked).toBe(1);
  });

  it('the small tail of a larger file is inline, its full blocks are pool blocks', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    const data = pattern(2 * BS + 5000, 2);
    d.write(K, 0, data);
    expect(d.counts().mappedBlocks).toBe(2);
    expect(d.info().inlineMappedBytes).toBe(5000);
    expect(d.keyAllocatedBytes(K)).toBe(2 * BS + 5120);
    expect(readAll(d, K, 3 * BS).subarray(0, data.length).equals(data)).toBe(true);
    d.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('a write that grows an inline block past the threshold moves it into a pool block; a truncate back below moves it inline and frees the block', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(MAX, 3)); // exactly the threshold: still inline
    expect(d.findBlock(K, 0)!.pblock).toBeNull();
    d.write(K, MAX, pattern(1, 4)); // one byte more: a pool block
    const found = d.findBlock(K, 0)!;
    expect(found.pblock).not.toBeNull();
    expect(found.data).toBeNull();
    expect(d.info()).toMatchObject({ mappedBlocks: 1, inlineMappedBytes: 0, inlineExclusiveBytes: 0 });
    const want = Buffer.concat([pattern(MAX, 3), pattern(1, 4)]);
    expect(readAll(d, K, MAX + 1).equals(want)).toBe(true);
    pool.commit();
    // Overwrites of a pool block stay in it (in place), even when they shrink nothing.
    d.write(K, 0, pattern(10, 5));
    expect(d.findBlock(K, 0)!.pblock).toBe(found.pblock);
    pool.commit();
    expect(pool.status().dataUsedBytes).toBe(BS);
    d.truncate(K, 1000);
    expect(d.findBlock(K, 0)!.pblock).toBeNull();
    expect(d.info()).toMatchObject({ mappedBlocks: 0, inlineMappedBytes: 1000 });
    const head = Buffer.concat([pattern(10, 5), pattern(MAX, 3).subarray(10, 1000)]);
    expect(readAll(d, K, BS).subarray(0, 1000).equals(head)).toBe(true);
    expect(readAll(d, K, BS).subarray(1000).every((b) => b === 0)).toBe(true);
    pool.commit();
    expect(pool.status().dataUsedBytes).toBe(0);
    // Truncating inside the inline bytes shortens them; past them changes nothing.
    d.truncate(K, 400);
    expect(d.info().inlineMappedBytes).toBe(400);
    d.truncate(K, 9000);
    expect(d.info().inlineMappedBytes).toBe(400);
    d.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('written zeros are kept as a block device keeps them: a whole block written is a pool block, a small zero write is inline', () => {
    pool = newPool();
    const base = pool.createThin('base');
    const b = pool.openDevice(base);
    b.write(K, 0, Buffer.concat([pattern(100, 6), Buffer.alloc(BS - 100)])); // a whole block, mostly zeros
    b.write(K, BS, Buffer.alloc(100)); // 100 zeros
    expect(b.info()).toMatchObject({ mappedBlocks: 1, inlineMappedBytes: 100 });
    expect(b.keyAllocatedBytes(K)).toBe(BS + 512);
    expect(rows(pool).map((r) => [r.fblock, r.pblock === null ? r.len : 'pool'])).toEqual([
      [0, 'pool'],
      [1, 100],
    ]);
    b.close();
    pool.setReadOnly(base);
    const c = pool.openDevice(pool.createSnapshot(base, 'c'));
    c.write(K, BS + 50, Buffer.alloc(10)); // zeros into the lower inline block: its 100 bytes are copied up
    expect(c.info()).toMatchObject({ mappedBlocks: 1, exclusiveBlocks: 0, inlineMappedBytes: 100, inlineExclusiveBytes: 100 });
    c.write(K, BS + 50, Buffer.alloc(200)); // and grown by zeros: 250 bytes now
    expect(c.info().inlineMappedBytes).toBe(250);
    expect(readAll(c, K, 2 * BS).subarray(BS).every((x) => x === 0)).toBe(true);
    c.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('copy-on-write of an inline block copies only its bytes into the top layer, never touching the image or the data file', () => {
    const plan = new FaultPlan();
    newPool().close();
    pool = Pool.open(t.dir, { faults: plan });
    const img = pool.createThin('img');
    const w = pool.openDevice(img);
    w.write(K, 0, pattern(3000, 8));
    w.close();
    pool.setReadOnly(img);
    pool.commit();
    const dataBefore = fs.readFileSync(pool.dataFile);
    const c = pool.openDevice(pool.createSnapshot(img, 'c'));
    plan.recording = true;
    c.write(K, 1000, pattern(10, 9));
    plan.recording = false;
    expect(plan.calls.filter((x) => x !== 'sql'), 'host calls of the copy-on-write').toEqual([]);
    expect(c.info()).toMatchObject({ mappedBlocks: 0, inlineMappedBytes: 3000, inlineExclusiveBytes: 3000 });
    const want = pattern(3000, 8);
    pattern(10, 9).copy(want, 1000);
    expect(readAll(c, K, 3000).equals(want)).toBe(true);
    c.close();
    const i = pool.openDevice(img);
    expect(readAll(i, K, 3000).equals(pattern(3000, 8))).toBe(true);
    expect(i.info()).toMatchObject({ inlineMappedBytes: 3000, inlineExclusiveBytes: 3000 });
    i.close();
    pool.commit();
    expect(fs.readFileSync(pool.dataFile).equals(dataBefore)).toBe(true);
    // Growing the copy past the threshold moves only the container's block into the data file.
    const c2 = pool.openDevice(pool.findDevice('c')!.id);
    c2.write(K, 0, pattern(40 * KiB, 10));
    expect(c2.info()).toMatchObject({ mappedBlocks: 1, exclusiveBlocks: 1, inlineMappedBytes: 0, inlineExclusiveBytes: 0 });
    c2.close();
    const i2 = pool.openDevice(img);
    expect(readAll(i2, K, 3000).equals(pattern(3000, 8))).toBe(true);
    i2.close();
    // Removing the container's copy shows the image's bytes again.
    const c3 = pool.openDevice(pool.findDevice('c')!.id);
    c3.removeKey(K);
    expect(readAll(c3, K, 3000).equals(pattern(3000, 8))).toBe(true);
    expect(c3.info()).toMatchObject({ mappedBlocks: 0, exclusiveBlocks: 0, inlineMappedBytes: 3000, inlineExclusiveBytes: 0 });
    c3.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('discard and removeKey drop inline rows: no free-list entry, the counters go back to zero', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(100, 11));
    d.write(K, BS, pattern(200, 12));
    d.write(8 as FileKey, 0, pattern(300, 13));
    d.discard(K, 0, 1);
    expect(d.info().inlineMappedBytes).toBe(500);
    d.removeKey(8 as FileKey);
    expect(d.info().inlineMappedBytes).toBe(200);
    d.discard(K, 0, 5);
    expect(d.info()).toMatchObject({ inlineMappedBytes: 0, inlineExclusiveBytes: 0 });
    expect(rows(pool)).toEqual([]);
    expect(inlineRowCount(pool), 'inline bytes dropped with their rows').toBe(0);
    expect(pool.metadataDb().prepare('SELECT count(*) FROM free_blocks').pluck().get()).toBe(0);
    expect(pool.status().inlineBytes).toBe(0);
    d.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('deleting a device drops its inline rows', () => {
    pool = newPool();
    const id = pool.createThin('c');
    const d = pool.openDevice(id);
    d.write(K, 0, pattern(5000, 14));
    d.close();
    expect(pool.status().inlineBytes).toBe(5000);
    pool.deleteDevice(id);
    expect(pool.status().inlineBytes).toBe(0);
    expect(rows(pool)).toEqual([]);
    expect(inlineRowCount(pool)).toBe(0);
    expect(pool.check().issues).toEqual([]);
  });

  it('a device size limit counts inline bytes', () => {
    pool = newPool({ baseSizeBytes: BS });
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(MAX, 15));
    d.write(8 as FileKey, 0, pattern(MAX, 16));
    expect(codeOf(() => d.write(9 as FileKey, 0, pattern(1, 17)))).toBe('ENOSPC');
    d.write(K, 0, pattern(MAX, 18)); // rewriting the same bytes takes nothing more
    d.close();
  });

  it('after a crash inline rows read exactly as at the last commit', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(1000, 19));
    pool.commit();
    d.write(K, 500, pattern(1000, 20)); // rewrites the blob (metadata)
    d.write(8 as FileKey, 0, pattern(10, 21));
    d.close();
    pool.close({ commit: false });
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    expect(readAll(again, K, 2000).subarray(0, 1000).equals(pattern(1000, 19))).toBe(true);
    expect(readAll(again, K, 2000).subarray(1000).every((b) => b === 0)).toBe(true);
    expect(readAll(again, 8 as FileKey, 10).every((b) => b === 0)).toBe(true);
    expect(again.info()).toMatchObject({ inlineMappedBytes: 1000 });
    again.close();
    expect(pool.check().issues).toEqual([]);
  });

  for (const kind of ['pwrite', 'sql'] as const) {
    it(`a ${kind} that fails while an inline block moves into a pool block leaves the inline row as it was`, () => {
      const plan = new FaultPlan();
      newPool().close();
      pool = Pool.open(t.dir, { faults: plan });
      const d = pool.openDevice(pool.createThin('c'));
      d.write(K, 0, pattern(1000, 22));
      pool.commit();
      const before = { rows: rows(pool), info: d.info(), status: pool.status() };
      // Which statements run after the pwrite: a dry run on a key of the same shape.
      d.write(9 as FileKey, 0, pattern(1000, 22));
      plan.recording = true;
      d.write(9 as FileKey, 1000, pattern(MAX, 23));
      plan.recording = false;
      expect(plan.calls).toContain('pwrite');
      const afterPwrite = plan.calls.slice(plan.calls.indexOf('pwrite')).filter((c) => c === 'sql').length;
      d.removeKey(9 as FileKey);
      pool.commit();
      const nths = kind === 'pwrite' ? [1] : Array.from({ length: afterPwrite }, (_, i) => plan.calls.slice(0, plan.calls.indexOf('pwrite')).filter((c) => c === 'sql').length + 1 + i);
      expect(nths.length).toBeGreaterThan(0);
      for (const nth of nths) {
        plan.arm(kind, nth, 'EIO');
        expect(codeOf(() => d.write(K, 1000, pattern(MAX, 23)))).toBe('EIO');
        expect(plan.disarm()).toBe(kind);
        expect(rows(pool), `${kind} ${nth}`).toEqual(before.rows);
        expect(d.findBlock(K, 0)!.data!.equals(pattern(1000, 22))).toBe(true);
        expect(d.info()).toEqual(before.info);
        expect(pool.status().dataUsedBytes).toBe(before.status.dataUsedBytes);
        expect(pool.status().inlineBytes).toBe(1000);
        expect(pool.check().issues).toEqual([]);
      }
      // And it goes on: the same write succeeds.
      d.write(K, 1000, pattern(MAX, 23));
      expect(d.findBlock(K, 0)!.pblock).not.toBeNull();
      d.close();
      pool.commit();
      expect(pool.check().issues).toEqual([]);
    });
  }
});

describe('the write-back cache of inline blocks (src/pool/inline-cache.ts)', () => {
  /** Run `fn` as one operation that then fails: everything it did must be undone. */
  const failing = (fn: () => void) =>
    expect(
      codeOf(() =>
        pool!.atomically('test', () => {
          fn();
          throw fail('EIO', 'test', undefined, 'the operation fails after its writes');
        }),
      ),
    ).toBe('EIO');

  it('rewrites of an inline block are read at once and reach the row at commit; a reopen reads them', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(100, 1));
    pool.commit();
    const want = Buffer.alloc(16_000);
    pattern(100, 1).copy(want);
    for (let i = 1; i < 160; i++) {
      const p = pattern(100, i + 1);
      d.write(K, i * 100, p); // an append, as through open(O_APPEND) + write + close
      p.copy(want, i * 100);
      if (i % 37 === 0) expect(readAll(d, K, 16_000).equals(want)).toBe(true);
    }
    d.write(K, 4000, pattern(4096, 3)); // a page overwritten inside it
    pattern(4096, 3).copy(want, 4000);
    expect(readAll(d, K, 16_000).equals(want)).toBe(true);
    expect(d.readBytes(K, 0, 16_000).equals(want)).toBe(true);
    expect(d.info()).toMatchObject({ inlineMappedBytes: 16_000, exclusiveBytes: 16_000, mappedBlocks: 0 });
    expect(d.keyAllocatedBytes(K)).toBe(16_384); // st_blocks: the cached length, in sectors
    expect(rows(pool)).toEqual([{ fblock: 0, layer: expect.any(Number), pblock: null, len: 100 }]); // the row: still the last commit's bytes
    pool.commit();
    expect(rows(pool)).toEqual([{ fblock: 0, layer: expect.any(Number), pblock: null, len: 16_000 }]);
    d.close();
    pool.close();
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    expect(readAll(again, K, 16_000).equals(want)).toBe(true);
    again.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('bytes handed out are the reader\'s own: a later rewrite does not change them', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(1000, 4));
    pool.commit();
    d.write(K, 0, pattern(1000, 5)); // cached
    const got = d.readBytes(K, 0, 1000);
    const found = d.findBlock(K, 0)!.data!;
    d.write(K, 0, pattern(1000, 6));
    expect(got.equals(pattern(1000, 5))).toBe(true);
    expect(found.equals(pattern(1000, 5))).toBe(true);
    d.close();
  });

  it('an operation that fails after the cache took its writes leaves every block as before it', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(3000, 7));
    d.write(8 as FileKey, 0, pattern(2000, 8));
    pool.commit();
    const want = Buffer.alloc(MAX);
    pattern(3000, 7).copy(want);
    const expectAsBefore = (what: string) => {
      expect(readAll(d, K, MAX).equals(want), what).toBe(true);
      expect(readAll(d, 8 as FileKey, 2000).equals(pattern(2000, 8)), what).toBe(true);
      expect(d.info().inlineMappedBytes, what).toBe(3000 + 2000);
    };
    // The first rewrite in the transaction (a new cache entry) fails.
    failing(() => d.write(K, 3000, pattern(500, 9)));
    expectAsBefore('new entry');
    // A rewrite that succeeds, then one in place over it that fails.
    d.write(K, 100, pattern(200, 10));
    pattern(200, 10).copy(want, 100);
    failing(() => d.write(K, 50, pattern(300, 11)));
    expectAsBefore('in place');
    // One that grows the entry's buffer, and two rewrites of two blocks in one operation.
    failing(() => d.write(K, 3000, pattern(MAX - 3000, 12)));
    expectAsBefore('grown');
    failing(() => {
      d.write(K, 0, pattern(3000, 13));
      d.write(K, 2000, pattern(4000, 14));
      d.write(8 as FileKey, 10, pattern(10, 15));
    });
    expectAsBefore('several');
    // A block that leaves the cache (moved into a pool block, discarded) comes back with the rollback.
    failing(() => {
      d.write(K, 3000, pattern(MAX, 16));
      d.discard(8 as FileKey, 0, 1);
    });
    expectAsBefore('moved and discarded');
    expect(pool.check().issues).toEqual([]);
    pool.commit();
    d.close();
    pool.close();
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    expect(readAll(again, K, MAX).equals(want)).toBe(true);
    expect(readAll(again, 8 as FileKey, 2000).equals(pattern(2000, 8))).toBe(true);
    again.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('an abort and a crash drop what the cache held since the last commit', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(1000, 17));
    pool.commit();
    d.write(K, 1000, pattern(1000, 18));
    pool.abort();
    expect(readAll(d, K, 2000).equals(Buffer.concat([pattern(1000, 17), Buffer.alloc(1000)]))).toBe(true);
    expect(d.info().inlineMappedBytes).toBe(1000);
    d.write(K, 0, pattern(1500, 19));
    d.close();
    pool.close({ commit: false });
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    expect(readAll(again, K, 2000).equals(Buffer.concat([pattern(1000, 17), Buffer.alloc(1000)]))).toBe(true);
    again.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('entries outlive a commit; what a later transaction changes in them goes with its abort or crash', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    const at = (n: number, seed: number) => Buffer.concat([pattern(1000, 30), pattern(n, seed)]);
    d.write(K, 0, pattern(1000, 30));
    pool.commit();
    d.write(K, 1000, pattern(100, 31)); // cached
    pool.commit(); // written back; the entry stays
    expect(rows(pool)[0]!.len).toBe(1100);
    d.write(K, 1000, pattern(200, 32)); // the kept entry, changed again
    expect(readAll(d, K, 1200).equals(at(200, 32))).toBe(true);
    failing(() => d.write(K, 1000, pattern(300, 33)));
    expect(readAll(d, K, 1200).equals(at(200, 32))).toBe(true);
    pool.abort();
    expect(readAll(d, K, 1200).equals(Buffer.concat([at(100, 31), Buffer.alloc(100)]))).toBe(true);
    expect(d.info().inlineMappedBytes).toBe(1100);
    d.write(K, 1000, pattern(400, 34));
    d.close();
    pool.close({ commit: false });
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    expect(readAll(again, K, 1400).equals(Buffer.concat([at(100, 31), Buffer.alloc(300)]))).toBe(true);
    again.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('check sees the cached bytes (clean), and the rows hold them afterwards', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(1000, 20));
    pool.commit();
    d.write(K, 1000, pattern(5000, 21));
    expect(pool.check().issues).toEqual([]);
    expect(rows(pool)[0]!.len).toBe(6000);
    d.write(K, 6000, pattern(10, 22)); // and it goes on caching
    expect(d.info().inlineMappedBytes).toBe(6010);
    d.close();
    pool.commit();
    expect(rows(pool)[0]!.len).toBe(6010);
    expect(pool.check().issues).toEqual([]);
  });

  it('a snapshot of a device with cached rewrites sees them; the origin\'s next write copies them up, the snapshot keeps them', () => {
    pool = newPool();
    const id = pool.createThin('c');
    const d = pool.openDevice(id);
    d.write(K, 0, pattern(1000, 23));
    pool.commit();
    d.write(K, 1000, pattern(1000, 24)); // cached
    const img = pool.createSnapshot(id, 'img', { readOnly: true });
    const want = Buffer.concat([pattern(1000, 23), pattern(1000, 24)]);
    const i = pool.openDevice(img);
    expect(readAll(i, K, 2000).equals(want)).toBe(true);
    d.write(K, 0, pattern(10, 25)); // copy-on-write of the (cached) lower row
    expect(readAll(i, K, 2000).equals(want)).toBe(true);
    expect(readAll(d, K, 2000).equals(Buffer.concat([pattern(10, 25), want.subarray(10)]))).toBe(true);
    d.close();
    i.close();
    pool.close();
    pool = Pool.open(t.dir);
    const again = pool.openDevice(img);
    expect(readAll(again, K, 2000).equals(want)).toBe(true);
    again.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('a row deleted with its cached rewrite lends nothing to a later row (found by the pool model)', () => {
    pool = newPool();
    const c1 = pool.createThin('c1');
    const c2 = pool.createThin('c2');
    const d1 = pool.openDevice(c1);
    d1.write(K, 0, pattern(10, 26));
    d1.close();
    pool.commit();
    pool.close();
    pool = Pool.open(t.dir);
    const again1 = pool.openDevice(pool.findDevice('c1')!.id);
    again1.write(K, 0, pattern(10, 27)); // cached: the row with the highest id
    again1.close();
    pool.deleteDevice(pool.findDevice('c1')!.id); // the row goes; its entry is stale
    const d2 = pool.openDevice(c2);
    d2.write(K, 0, pattern(20, 28)); // a new row: must not get the deleted row's id
    expect(readAll(d2, K, 20).equals(pattern(20, 28))).toBe(true);
    expect(d2.info().inlineMappedBytes).toBe(20);
    d2.truncate(K, 15);
    expect(readAll(d2, K, 20).equals(Buffer.concat([pattern(15, 28), Buffer.alloc(5)]))).toBe(true);
    d2.close();
    expect(pool.check().issues).toEqual([]);
    pool.commit();
    expect(pool.check().issues).toEqual([]);
  });

  it('past its bound the cache writes the least recently written rows back early, and a failed operation puts them back', () => {
    pool = newPool({ dataSizeBytes: 8 * MiB });
    const d = pool.openDevice(pool.createThin('c'));
    const N = 1100; // 1100 x 32 KiB buffers: past the 32 MiB bound
    const len = MAX - 1024;
    for (let k = 0; k < N; k++) d.write((100 + k) as FileKey, 0, pattern(len, k % 200));
    pool.commit();
    for (let k = 0; k < N; k++) d.write((100 + k) as FileKey, 1, pattern(10, (k % 200) + 1)); // rewrites: cached, the oldest written back
    const want = (k: number) => {
      const b = pattern(len, k % 200);
      pattern(10, (k % 200) + 1).copy(b, 1);
      return b;
    };
    failing(() => {
      for (let k = 0; k < 50; k++) d.write((100 + k) as FileKey, 0, pattern(len, 5)); // each one writes another back
    });
    for (let k = 0; k < N; k++) expect(readAll(d, (100 + k) as FileKey, len).equals(want(k)), `key ${k}`).toBe(true);
    expect(pool.check().issues).toEqual([]);
    pool.commit();
    d.close();
    pool.close();
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    for (let k = 0; k < N; k++) expect(readAll(again, (100 + k) as FileKey, len).equals(want(k)), `key ${k} after reopen`).toBe(true);
    again.close();
  });
});

describe('check of inline rows', () => {
  it('a row holding both a pool block and inline bytes is fatal', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(BS, 24));
    d.close();
    const db = pool.metadataDb();
    const id = Number(db.prepare('INSERT INTO inline_blocks (data) VALUES (?)').run(pattern(10, 25)).lastInsertRowid);
    db.prepare('UPDATE mappings SET inline_id = ?').run(id);
    const r = pool.check();
    expect(r.fatal).toBe(1);
    expect(r.issues[0]!.message).toMatch(/both a pool block and inline bytes/);
  });

  it('bytes no row points at are a leak; bytes two rows point at are fatal, missing ones a leak — --repair copies the shared bytes and makes the missing ones holes', () => {
    pool = newPool();
    const base = pool.createThin('base');
    const b = pool.openDevice(base);
    b.write(9 as FileKey, 0, pattern(300, 38)); // older bytes below key 9's
    b.close();
    pool.setReadOnly(base);
    const c = pool.createSnapshot(base, 'c');
    const d = pool.openDevice(c);
    d.write(K, 0, pattern(100, 33));
    d.write(8 as FileKey, 0, pattern(200, 34));
    d.write(9 as FileKey, 0, pattern(300, 36));
    d.close();
    pool.commit();
    const db = pool.metadataDb();
    db.prepare('INSERT INTO inline_blocks (data) VALUES (?)').run(pattern(300, 35)); // nobody's
    let r = pool.check();
    expect(r.issues.map((i) => [i.severity, i.message])).toEqual([['leak', '1 inline block(s) are held but no mapping points at them']]);
    expect(pool.check({ repair: true }).repaired).toBe(true);
    expect(pool.check().issues).toEqual([]);
    expect(inlineRowCount(pool)).toBe(4);
    const layer = pool.findDevice('c')!.layerId;
    const id = (key: number) => db.prepare('SELECT inline_id FROM mappings WHERE ino = ? AND layer = ?').pluck().get(key, layer) as number;
    db.prepare('UPDATE mappings SET inline_id = ? WHERE ino = 8 AND layer = ?').run(id(K), layer); // key 8 shares key K's bytes (the trigger drops its own)
    db.prepare('DELETE FROM inline_blocks WHERE id = ?').run(id(9)); // the container's bytes of key 9 are lost
    r = pool.check();
    expect(r.issues.map((i) => [i.severity, i.message])).toEqual([
      ['fatal', '1 inline block(s) are pointed at by more than one mapping row (a write through one would change the others)'],
      ['leak', '1 inline block(s) point at bytes that are missing: their data is lost and reads as zeros'],
      ['leak', '1 layer(s) have a wrong count of inline bytes'],
      ['leak', '1 layer(s) have a wrong count of visible inline bytes'],
    ]);
    expect(pool.check({ repair: true }).repaired).toBe(true);
    expect(pool.check().issues).toEqual([]);
    const back = pool.openDevice(c);
    expect(readAll(back, K, 100).equals(pattern(100, 33))).toBe(true);
    expect(readAll(back, 8 as FileKey, 100).equals(pattern(100, 33)), 'what key 8 read before the repair').toBe(true);
    // A hole: zeros, as before the repair — not the image's older bytes below.
    expect(readAll(back, 9 as FileKey, 300).every((x) => x === 0)).toBe(true);
    // The copies are separate now: a write through one leaves the other.
    back.write(8 as FileKey, 0, pattern(50, 37));
    expect(readAll(back, K, 100).equals(pattern(100, 33))).toBe(true);
    back.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('wrong inline byte counters are a leak; --repair recounts them', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(700, 26));
    d.close();
    pool.commit();
    pool.metadataDb().prepare('UPDATE layers SET inline_owned = 5, inline_mapped = 9').run();
    pool.close();
    pool = Pool.open(t.dir);
    const r = pool.check();
    expect(r.fatal).toBe(0);
    expect(r.issues.map((i) => i.message)).toEqual([
      expect.stringMatching(/wrong count of inline bytes/),
      expect.stringMatching(/wrong count of visible inline bytes/),
    ]);
    expect(pool.check({ repair: true }).repaired).toBe(true);
    expect(pool.check().issues).toEqual([]);
    expect(pool.findDevice('c')).toMatchObject({ inlineMappedBytes: 700, inlineExclusiveBytes: 700 });
  });

  it('an inline row longer than the threshold is repairable: --repair moves its bytes into a pool block', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(1000, 27));
    d.close();
    pool.commit();
    // As a pool whose threshold was lowered behind its back (or a damaged row) would hold it.
    pool.metadataDb().prepare('UPDATE inline_blocks SET data = ?').run(pattern(40 * KiB, 28));
    pool.metadataDb().prepare('UPDATE layers SET inline_owned = ?, inline_mapped = ?').run(40 * KiB, 40 * KiB);
    pool.close();
    pool = Pool.open(t.dir);
    const r = pool.check();
    expect(r.fatal).toBe(0);
    expect(r.issues.map((i) => i.message)).toEqual([expect.stringMatching(/1 inline block\(s\) are longer than the pool's inline threshold of 32768 bytes/)]);
    expect(pool.check({ repair: true }).repaired).toBe(true);
    expect(pool.check().issues).toEqual([]);
    expect(pool.findDevice('c')).toMatchObject({ mappedBlocks: 1, exclusiveBlocks: 1, inlineMappedBytes: 0 });
    expect(inlineRowCount(pool)).toBe(0);
    pool.close();
    pool = Pool.open(t.dir);
    const again = pool.openDevice(pool.findDevice('c')!.id);
    expect(again.findBlock(K, 0)!.pblock).not.toBeNull();
    expect(readAll(again, K, 40 * KiB).equals(pattern(40 * KiB, 28))).toBe(true);
    again.close();
  });
});

describe('pool options and schema', () => {
  it('inlineMaxBytes 0 keeps the pool block-only: a 10-byte write allocates one block', () => {
    pool = newPool({ inlineMaxBytes: 0 });
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(10, 29));
    expect(d.counts()).toEqual({ mappedBlocks: 1, exclusiveBlocks: 1 });
    expect(pool.status()).toMatchObject({ dataUsedBytes: BS, inlineBytes: 0, inlineMaxBytes: 0 });
    d.truncate(K, 5);
    expect(d.counts().mappedBlocks).toBe(1);
    d.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('refuses an inline threshold outside 0..block size', () => {
    expect(codeOf(() => Pool.create(t.dir, { inlineMaxBytes: BS + 1 }))).toBe('EINVAL');
    expect(codeOf(() => Pool.create(t.dir, { inlineMaxBytes: -1 }))).toBe('EINVAL');
    expect(fs.existsSync(path.join(t.dir, 'pool', 'metadata.db'))).toBe(false);
  });

  it('a schema-1 pool (block-only) is migrated on a read-write open: its blocks stay, small writes go inline; a read-only open first says how to upgrade', () => {
    pool = newPool();
    const d = pool.openDevice(pool.createThin('c'));
    d.write(K, 0, pattern(BS + 10, 30)); // as version 1 wrote it: two pool blocks
    d.close();
    pool.close();
    pool = undefined;
    // Turn it into what thinfs with pool schema 1 left behind.
    const db = new Database(path.join(t.dir, 'pool', 'metadata.db'));
    db.exec(`
      UPDATE mappings SET pblock = 1 WHERE fblock = 1;
      UPDATE superblock SET hwm = 2;
      UPDATE layers SET mapped = 2, owned = 2;
      DROP TRIGGER mappings_delete_inline;
      DROP TRIGGER mappings_replace_inline;
      DROP TABLE inline_blocks;
      ALTER TABLE mappings DROP COLUMN inline_id;
      ALTER TABLE layers DROP COLUMN inline_mapped;
      ALTER TABLE layers DROP COLUMN inline_owned;
      ALTER TABLE superblock DROP COLUMN inline_max;
      UPDATE superblock SET schema_version = 1;
      UPDATE schema_versions SET version = 1 WHERE component = 'pool';
    `);
    db.close();
    const fd = fs.openSync(path.join(t.dir, 'pool', 'data'), 'r+');
    fs.writeSync(fd, Buffer.concat([pattern(10, 31), Buffer.alloc(BS - 10)]), 0, BS, BS);
    fs.closeSync(fd);
    expect(() => Pool.open(t.dir, { readOnly: true })).toThrow(/schema version 1 is older.*open it read-write once/);
    pool = Pool.open(t.dir);
    expect(pool.inlineMaxBytes).toBe(MAX);
    const m = pool.openDevice(pool.findDevice('c')!.id);
    expect(m.counts()).toEqual({ mappedBlocks: 2, exclusiveBlocks: 2 });
    expect(readAll(m, K, BS + 10).subarray(BS).equals(pattern(10, 31))).toBe(true);
    m.write(8 as FileKey, 0, pattern(10, 32));
    expect(m.info().inlineMappedBytes).toBe(10);
    m.close();
    expect(pool.check().issues).toEqual([]);
    pool.close();
    pool = Pool.open(t.dir, { readOnly: true });
    expect(pool.status().inlineBytes).toBe(10);
  });
});

const hostSkip = process.getuid?.() !== 0 ? 'needs root (mounts a small tmpfs as the host file system)' : undefined;
if (hostSkip !== undefined) console.warn(`test/pool/inline: the full-host test is skipped: ${hostSkip}`);

describe.skipIf(hostSkip !== undefined)('a host file system that fills up with inline data', () => {
  it('writes get ENOSPC before a commit could fail: no fail mode, the commit goes through, frees make room again', () => {
    const mnt = path.join(t.dir, 'host');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', mnt]);
    try {
      const root = path.join(mnt, 'root');
      pool = Pool.create(root, { dataSizeBytes: 1024 * MiB, minFreePercent: 0 }); // far larger than the host
      const d = pool.openDevice(pool.createThin('c'));
      d.write(K, 0, pattern(100, 40));
      pool.commit();
      let n = 0;
      let code = 'no error';
      for (; n < 10_000; n++) {
        code = codeOf(() => d.write((1000 + n) as FileKey, 0, pattern(30_000, n)));
        if (code !== 'no error') break;
        if (n % 100 === 99) pool.commit();
      }
      expect(code).toBe('ENOSPC');
      expect(n, 'inline files written before the host was full').toBeGreaterThan(100);
      expect(pool.mode()).toBe('out-of-data-space');
      pool.commit(); // what was written goes in
      expect(pool.mode()).not.toBe('fail');
      // Freeing inline data makes room (SQLite reuses its free pages) once that is committed.
      for (let i = 0; i < n; i += 2) d.removeKey((1000 + i) as FileKey);
      pool.commit();
      d.write(9 as FileKey, 0, pattern(30_000, 41));
      pool.commit();
      d.close();
      pool.close();
      pool = Pool.open(root);
      expect(pool.check().issues).toEqual([]);
      const r = pool.openDevice(pool.findDevice('c')!.id);
      expect(readAll(r, K, 100).equals(pattern(100, 40))).toBe(true);
      expect(readAll(r, (1000 + 1) as FileKey, 30_000).equals(pattern(30_000, 1))).toBe(true);
      expect(readAll(r, 9 as FileKey, 30_000).equals(pattern(30_000, 41))).toBe(true);
      r.close();
      pool.close();
      pool = undefined;
    } finally {
      try {
        pool?.close({ commit: false });
      } catch {
        /* closed */
      }
      pool = undefined;
      execFileSync('umount', [mnt]);
    }
  });
});
