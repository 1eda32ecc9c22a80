/**
 * A first write into a fresh block writes only its own bytes when fresh blocks read as
 * zeros (never used, or punched: datafile.ts freshBlocksReadZero), and the whole block
 * otherwise. Each way a free block could keep old bytes is covered: reuse after a commit,
 * a punch that failed, an operation rolled back after its pwrite, a punch lost to a crash
 * (the next open punches every free block).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MiB, Pool, type DevId, type FileKey, type ThinDevice } from '../../src/pool/index.js';
import { FaultPlan } from '../helpers/faults.js';
import { tmpDir } from '../helpers/tmp.js';

const BS = 64 * KiB;
const A = 1 as FileKey;
const B = 2 as FileKey;

let t: { dir: string; cleanup: () => void };
let root: string;
let faults: FaultPlan;
let pool: Pool;
let devId: DevId;
let dev: ThinDevice;

function open(): void {
  faults = new FaultPlan();
  pool = Pool.open(root, { faults });
  dev = pool.openDevice(devId);
}
function reopen(): void {
  dev.close();
  pool.close();
  open();
}
const hostBytes = (): number => fs.statSync(path.join(root, 'pool', 'data')).blocks * 512;
/** Block 0 of `key` is 4 KiB of 0x5a at 8 KiB and zeros around it. */
function expectSliceInZeros(key: FileKey): void {
  const got = dev.readBytes(key, 0, BS);
  const want = Buffer.alloc(BS);
  want.fill(0x5a, 8 * KiB, 12 * KiB);
  expect(got.equals(want)).toBe(true);
}
/** A block full of 0xaa under `key`, then freed and committed (punched, unless the punch fails). */
function usedAndFreed(key: FileKey): number {
  dev.write(key, 0, Buffer.alloc(BS, 0xaa));
  pool.commit();
  const pb = dev.findBlock(key, 0)!.pblock!;
  dev.removeKey(key);
  pool.commit();
  return pb;
}

beforeEach(() => {
  t = tmpDir('thinfs-fresh-');
  root = path.join(t.dir, 'pool');
  Pool.create(root, { blockSizeBytes: BS, dataSizeBytes: 64 * MiB, minFreePercent: 0, inlineMaxBytes: 0 }).close();
  const p = Pool.open(root);
  devId = p.createThin('d');
  p.close();
  open();
});
afterEach(() => {
  try {
    dev.close();
    pool.close({ commit: false });
  } catch {
    /* closed by the test */
  }
  t.cleanup();
});

describe('fresh blocks', () => {
  it('a 4 KiB write into a never-used block writes 4 KiB, not the block', () => {
    expect(pool.freshBlocksReadZero).toBe(true);
    const before = hostBytes();
    dev.write(A, 8 * KiB, Buffer.alloc(4 * KiB, 0x5a));
    pool.commit();
    expect(hostBytes() - before).toBeLessThan(BS / 2);
    expectSliceInZeros(A);
    reopen();
    expectSliceInZeros(A);
  });

  it('a reused block (freed, committed, punched) reads as zeros around a partial write', () => {
    const pb = usedAndFreed(A);
    dev.write(B, 8 * KiB, Buffer.alloc(4 * KiB, 0x5a));
    expect(dev.findBlock(B, 0)!.pblock).toBe(pb); // the same block, handed out again
    expectSliceInZeros(B);
  });

  it('after a failed punch, fresh blocks are written whole: the old bytes never show', () => {
    faults.arm('punch', 1, 'EIO');
    const pb = usedAndFreed(A);
    expect(faults.disarm()).toBe('punch');
    expect(pool.freshBlocksReadZero).toBe(false);
    dev.write(B, 8 * KiB, Buffer.alloc(4 * KiB, 0x5a));
    expect(dev.findBlock(B, 0)!.pblock).toBe(pb);
    expectSliceInZeros(B);
  });

  it('an operation that fails after its pwrite punches the fresh blocks it wrote', () => {
    expect(() =>
      pool.atomically('test', () => {
        dev.write(A, 0, Buffer.alloc(BS / 2, 0xaa));
        throw new Error('a later step of the same operation fails');
      }),
    ).toThrow();
    expect(pool.freshBlocksReadZero).toBe(true);
    dev.write(B, 8 * KiB, Buffer.alloc(4 * KiB, 0x5a)); // takes the block the failed operation wrote
    expectSliceInZeros(B);
  });

  it('a punch lost to a crash: the next open punches every free block', () => {
    faults.arm('punch', 1, 'EIO'); // stands for a crash between the commit and the punch
    const pb = usedAndFreed(A);
    faults.disarm();
    reopen();
    expect(pool.freshBlocksReadZero).toBe(true);
    dev.write(B, 8 * KiB, Buffer.alloc(4 * KiB, 0x5a));
    expect(dev.findBlock(B, 0)!.pblock).toBe(pb);
    expectSliceInZeros(B);
  });
});
