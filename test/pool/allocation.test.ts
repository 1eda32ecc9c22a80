/**
 * st_blocks (ThinDevice.keyAllocatedBytes) stays exact while it is cached: per device, and
 * per frozen layer for devices whose own layer has no rows of the key (thin.ts
 * keyAllocation). Random writes, discards, removals, snapshots (images and containers),
 * deletions and commits over a tree of devices (ids of removed devices and layers are reused:
 * their cached counts must go with them); after each step every live device's count
 * is compared with the count of a freshly opened pool, which has nothing cached.
 */
import * as path from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { KiB, MiB, Pool, type DevId, type FileKey } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';

const BS = 64 * KiB;
const KEYS = [1, 2] as FileKey[];

type Op =
  | { op: 'write'; dev: number; key: number; fb: number; len: number }
  | { op: 'discard'; dev: number; key: number; fb: number }
  | { op: 'remove'; dev: number; key: number }
  | { op: 'snapshot'; dev: number; readOnly: boolean }
  | { op: 'delete'; dev: number }
  | { op: 'commit' };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 5, arbitrary: fc.record({ op: fc.constant('write' as const), dev: fc.nat(7), key: fc.nat(1), fb: fc.nat(5), len: fc.oneof(fc.constant(BS), fc.integer({ min: 1, max: 9000 })) }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('discard' as const), dev: fc.nat(7), key: fc.nat(1), fb: fc.nat(5) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('remove' as const), dev: fc.nat(7), key: fc.nat(1) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('snapshot' as const), dev: fc.nat(7), readOnly: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), dev: fc.nat(7) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('commit' as const) }) },
);

let t: { dir: string; cleanup: () => void };
beforeEach(() => {
  t = tmpDir('thinfs-alloc-');
});
afterEach(() => t.cleanup());

describe('cached st_blocks', () => {
  it('equals what a freshly opened pool counts, after any sequence of changes', () => {
    let run = 0;
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 5, maxLength: 40 }), (ops) => {
        const root = path.join(t.dir, `run-${run++}`);
        Pool.create(root, { blockSizeBytes: BS, dataSizeBytes: 64 * MiB, minFreePercent: 0, inlineMaxBytes: 16 * KiB }).close();
        const pool = Pool.open(root);
        const live: { id: DevId; writable: boolean }[] = [{ id: pool.createThin('d0'), writable: true }];
        let names = 1;
        const counts = (p: Pool) =>
          live.map(({ id }) => {
            const d = p.openDevice(id);
            try {
              return KEYS.map((k) => d.keyAllocatedBytes(k));
            } finally {
              d.close();
            }
          });
        try {
          for (const o of ops) {
            const target = live[('dev' in o ? o.dev : 0) % live.length]!;
            const d = pool.openDevice(target.id);
            try {
              if (o.op === 'write' && target.writable) d.write(KEYS[o.key]!, o.fb * BS + (o.len < BS ? 100 : 0), Buffer.alloc(o.len, 1 + o.fb));
              else if (o.op === 'discard' && target.writable) d.discard(KEYS[o.key]!, o.fb, o.fb + 1);
              else if (o.op === 'remove' && target.writable) d.removeKey(KEYS[o.key]!);
            } finally {
              d.close();
            }
            if (o.op === 'snapshot') live.push({ id: pool.createSnapshot(target.id, `d${names++}`, { readOnly: o.readOnly }), writable: !o.readOnly });
            else if (o.op === 'delete' && live.length > 1) {
              pool.deleteDevice(target.id); // deleted, or deferred until its snapshots go: not opened again either way
              live.splice(live.indexOf(target), 1);
            } else if (o.op === 'commit') pool.commit();
            // Count in this pool (cached), then in a second, fresh one over the committed state.
            const cached = counts(pool);
            pool.commit();
            const fresh = Pool.open(root, { readOnly: true });
            try {
              expect(counts(fresh)).toEqual(cached);
            } finally {
              fresh.close();
            }
          }
        } finally {
          pool.close();
        }
      }),
      { numRuns: 40, seed: 20261201 },
    );
  }, 120_000);
});
