/**
 * Fault injection against a model of the pool: random sequences of create, snapshot,
 * freeze, write, discard, truncate, remove-key, delete, commit, close/reopen and crash,
 * where an operation may carry a fault that fails the Nth host call of one kind (pwrite,
 * pread, fdatasync, punch, a SQLite statement, the COMMIT) while it runs.
 *
 * After every step, every byte of every device reads as the model says and `check` is
 * clean. What the model says after a failed operation (the failure rules of pool.ts):
 *  - the operation threw a ThinfsError carrying the errno (ENOSPC or EIO) and changed
 *    nothing: the model is as before it. The one tolerance is crash rule 6: a failed write
 *    may have overwritten, in place, blocks the device already owned — those bytes read as
 *    before or as written, never anything else (never zeros);
 *  - a failed commit (or any failure that ends in fail mode): mode 'fail', reads give the
 *    last commit, later changes are refused with EIO before any host call, and a crash +
 *    reopen without faults gives exactly the last commit with `check` clean;
 *  - otherwise the pool goes on: later operations succeed, and a commit + reopen at the
 *    end gives the model.
 * A crash (close without commit) returns to the last commit. Bytes overwritten in place
 * since that commit may read as any value written there since (crash rule 6).
 *
 * The model is kept naive: per device, key -> content (zeros where unmapped), the set of
 * blocks held in pool blocks, the set of pool blocks its own layer holds (where writes go
 * in place) and the state its layer started from (what removeKey returns to). The pool
 * keeps small blocks inline (INLINE_MAX): the model keeps the length of each inline block
 * (the rules in test/pool/model.test.ts; a third of the runs are block-only). Inline
 * rows are metadata: a rollback gives them back exactly, so the in-place tolerance
 * applies to own pool blocks only. Converting an inline block to a pool block under a
 * failing pwrite must leave the inline row as it was (counted, and a regression below).
 *
 * After the model, deterministic regressions: a failed commit (fail mode, byte-exact pool
 * files, counters of the last commit), a failed SAVEPOINT, a failed truncate after its
 * in-place zeroing, and a real SQLITE_FULL.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isThinfsError } from '../../src/errors.js';
import { KiB, Pool, type DevId, type FileKey, type IoOp } from '../../src/pool/index.js';
import { codeOf, pattern } from '../helpers/data.js';
import { FaultPlan, type FaultCode } from '../helpers/faults.js';
import { tmpDir } from '../helpers/tmp.js';

const BS = 4 * KiB;
const MAX_FB = 8; // file blocks per key
const KEY_BYTES = MAX_FB * BS;
const KEYS = [1, 2, 3] as FileKey[];
// Small enough that the pool runs full now and then (ENOSPC, commit-and-retry to reclaim frees).
const DATA_BLOCKS = 24;
/** The pool's inline threshold (not a power of two: boundaries show); a third of the runs are block-only (0). */
const INLINE_MAX = 1500;
let inlineMax = INLINE_MAX;

type Blocks = Map<number, Set<number>>;
interface MDev {
  readOnly: boolean;
  files: Map<number, Uint8Array>;
  /** Blocks held in pool blocks, visible through the chain. */
  mapped: Blocks;
  /** Pool blocks the device's own (top) layer holds: a write overwrites them in place. */
  own: Blocks;
  /** Inline blocks visible through the chain, with their lengths. */
  inline: Lens;
  inherited: { files: Map<number, Uint8Array>; mapped: Blocks; inline: Lens };
}
type Lens = Map<number, Map<number, number>>;
type Model = Map<string, MDev>;

const cloneFiles = (f: Map<number, Uint8Array>) => new Map([...f].map(([k, v]) => [k, v.slice()]));
const cloneBlocks = (m: Blocks) => new Map([...m].map(([k, v]) => [k, new Set(v)]));
const cloneLens = (m: Lens): Lens => new Map([...m].map(([k, v]) => [k, new Map(v)]));
const snapshotOf = (d: MDev): MDev['inherited'] => ({ files: cloneFiles(d.files), mapped: cloneBlocks(d.mapped), inline: cloneLens(d.inline) });
const cloneDev = (d: MDev): MDev => ({
  readOnly: d.readOnly,
  files: cloneFiles(d.files),
  mapped: cloneBlocks(d.mapped),
  own: cloneBlocks(d.own),
  inline: cloneLens(d.inline),
  inherited: { files: cloneFiles(d.inherited.files), mapped: cloneBlocks(d.inherited.mapped), inline: cloneLens(d.inherited.inline) },
});
const cloneModel = (m: Model): Model => new Map([...m].map(([k, v]) => [k, cloneDev(v)]));

function content(d: MDev, key: number): Uint8Array {
  let c = d.files.get(key);
  if (c === undefined) d.files.set(key, (c = new Uint8Array(KEY_BYTES)));
  return c;
}
function blocksOf(m: Blocks, key: number): Set<number> {
  let s = m.get(key);
  if (s === undefined) m.set(key, (s = new Set()));
  return s;
}
const totalMapped = (d: MDev) => [...d.mapped.values()].reduce((n, s) => n + s.size, 0);
function lensOf(d: MDev, key: number): Map<number, number> {
  let m = d.inline.get(key);
  if (m === undefined) d.inline.set(key, (m = new Map()));
  return m;
}
/** Inline bytes visible through the chain. */
function inlineMapped(d: MDev): number {
  let n = 0;
  for (const m of d.inline.values()) for (const len of m.values()) n += len;
  return n;
}
/** Block `fb` of `key` as the device's own: a pool block, or inline of `extent` bytes when that is within INLINE_MAX. */
function storeByExtent(d: MDev, key: number, fb: number, extent: number): void {
  const pool = inlineMax === 0 || extent > inlineMax;
  for (const set of [blocksOf(d.mapped, key), blocksOf(d.own, key)]) {
    if (pool) set.add(fb);
    else set.delete(fb);
  }
  if (pool) lensOf(d, key).delete(fb);
  else lensOf(d, key).set(fb, extent);
}
/** The extent a write ending at `end` (within block `fb`) gives that block: past the inline bytes it covers; a lower pool block is a whole block. */
function extentAfter(d: MDev, key: number, fb: number, end: number): number {
  return Math.max(end, blocksOf(d.mapped, key).has(fb) ? BS : (lensOf(d, key).get(fb) ?? 0));
}

interface Fault {
  kind: IoOp;
  nth: number;
  code: FaultCode;
}
type Op =
  | { op: 'create' }
  | { op: 'snapshot'; dev: number; readOnly: boolean; fault?: Fault }
  | { op: 'freeze'; dev: number; fault?: Fault }
  | { op: 'write'; dev: number; key: number; off: number; len: number; byte: number; onMapped: number | null; grow?: boolean; rewrite?: boolean; fault?: Fault }
  | { op: 'discard'; dev: number; key: number; from: number; to: number; fault?: Fault }
  | { op: 'truncate'; dev: number; key: number; size: number; onMapped: number | null; fault?: Fault }
  | { op: 'removeKey'; dev: number; key: number; fault?: Fault }
  | { op: 'delete'; dev: number; fault?: Fault }
  | { op: 'commit'; fault?: Fault }
  | { op: 'reopen'; fault?: Fault }
  | { op: 'crash' };

/** Calls of each kind an operation makes, about: a fault armed for a later call would not fire. */
const MAX_NTH: Partial<Record<IoOp, number>> = { sql: 8, pwrite: 2, punch: 2 };

function faultArb(kinds: IoOp[]): fc.Arbitrary<Fault | undefined> {
  const fault = fc
    .constantFrom(...kinds)
    .chain((kind) => fc.record({ kind: fc.constant(kind), nth: fc.integer({ min: 1, max: MAX_NTH[kind] ?? 1 }), code: fc.constantFrom<FaultCode>('ENOSPC', 'EIO') }));
  return fc.option(fault, { freq: 2, nil: undefined });
}
// A write reads (copy-on-write of a partial block) and commits only to reclaim frees.
const writeFault = faultArb(['pwrite', 'pwrite', 'pwrite', 'pread', 'sql', 'sql', 'sql', 'punch', 'commit', 'fdatasync']);
// A shrinking truncate reads and writes its partial last block.
const truncateFault = faultArb(['pwrite', 'pwrite', 'pread', 'pread', 'sql', 'sql', 'sql']);
const metaFault = faultArb(['sql']);
const commitFault = faultArb(['fdatasync', 'fdatasync', 'commit', 'commit', 'sql', 'punch']);

const devIdx = fc.nat({ max: 7 });
const keyArb = fc.constantFrom(...KEYS);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({ op: 'create' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('snapshot' as const), dev: devIdx, readOnly: fc.boolean(), fault: metaFault }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('freeze' as const), dev: devIdx, fault: metaFault }) },
  {
    weight: 10,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      dev: devIdx,
      key: keyArb,
      // Anywhere, at 0, or near a block's head (small blocks stay inline; a later write past INLINE_MAX moves them).
      off: fc.oneof(fc.nat({ max: KEY_BYTES - 1 }), fc.constant(0), fc.tuple(fc.nat({ max: MAX_FB - 1 }), fc.nat({ max: 1400 })).map(([fb, x]) => fb * BS + x)),
      // Small, one block, a few blocks, or the whole key (fills the pool).
      len: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.constant(BS), fc.integer({ min: 1, max: 3 * BS }), fc.constant(KEY_BYTES)),
      byte: fc.integer({ min: 1, max: 255 }),
      // When set: start inside the n-th mapped block of the key (copy-on-write from below, in place).
      onMapped: fc.option(fc.nat(), { nil: null }),
      fault: writeFault,
    }),
  },
  {
    // Grow an inline block past INLINE_MAX, mostly with a failing pwrite or statement.
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      dev: devIdx,
      key: keyArb,
      off: fc.nat({ max: KEY_BYTES - 1 }),
      len: fc.integer({ min: 1500, max: 3000 }),
      byte: fc.integer({ min: 1, max: 255 }),
      onMapped: fc.constant(null),
      grow: fc.constant(true),
      fault: fc.option(
        fc.record({ kind: fc.constantFrom<IoOp>('pwrite', 'pwrite', 'sql'), nth: fc.integer({ min: 1, max: 2 }), code: fc.constantFrom<FaultCode>('ENOSPC', 'EIO') }),
        { freq: 4, nil: undefined },
      ),
    }),
  },
  {
    // Small writes into an inline block of a hot file (appends and overwrites, as a log or a database does): rewrites of
    // own rows pile up in the inline write-back cache across operations; a statement fault may fail one after the cache took it.
    weight: 6,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      dev: fc.constant(0),
      key: fc.constant(1),
      off: fc.nat({ max: 1400 }),
      len: fc.integer({ min: 1, max: 200 }),
      byte: fc.integer({ min: 1, max: 255 }),
      onMapped: fc.constant(null),
      rewrite: fc.constant(true),
      // A quarter fail at a statement (before or after the cache took the write).
      fault: fc.oneof(
        { weight: 3, arbitrary: fc.constant(undefined) },
        { weight: 1, arbitrary: fc.record({ kind: fc.constant<IoOp>('sql'), nth: fc.integer({ min: 1, max: 5 }), code: fc.constantFrom<FaultCode>('ENOSPC', 'EIO') }) },
      ),
    }),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ op: fc.constant('discard' as const), dev: devIdx, key: keyArb, from: fc.nat({ max: MAX_FB }), n: fc.nat({ max: MAX_FB }), fault: metaFault })
      .map(({ n, ...o }) => ({ ...o, to: Math.min(MAX_FB, o.from + n) })),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('truncate' as const),
      dev: devIdx,
      key: keyArb,
      // Mostly inside a block: the partial last block is rewritten (moved, or copied from below).
      size: fc.oneof(fc.nat({ max: KEY_BYTES }), fc.tuple(fc.nat({ max: MAX_FB - 1 }), fc.integer({ min: 1, max: BS - 1 })).map(([fb, tail]) => fb * BS + tail)),
      // When set: end inside the n-th mapped block of the key (its head is kept: moved or copied).
      onMapped: fc.option(fc.nat(), { nil: null }),
      fault: truncateFault,
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('removeKey' as const), dev: devIdx, key: keyArb, fault: metaFault }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), dev: devIdx, fault: metaFault }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('commit' as const), fault: commitFault }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('reopen' as const), fault: commitFault }) },
  { weight: 1, arbitrary: fc.constant({ op: 'crash' as const }) },
);

/** A write since the last commit: what an own block overwritten in place may hold after a rollback. */
interface DirtyWrite {
  name: string;
  key: number;
  off: number;
  len: number;
  byte: number;
}

describe('pool under injected faults, against a model', () => {
  let t: { dir: string; cleanup: () => void };
  beforeEach(() => {
    t = tmpDir('thinfs-faults-');
  });
  afterEach(() => t.cleanup());

  it('a failed operation changes nothing, a failed commit means fail mode and the last commit, a crash returns to the last commit', () => {
    const fired = new Map<string, number>();
    const failedOps = new Map<string, number>();
    let failModes = 0;
    let failedConversions = 0;
    let rewrites = 0;
    let run = 0;
    fc.assert(
      // Half the runs check only at commits, reopens and crashes: check writes the inline write-back cache into its rows.
      fc.property(fc.constantFrom(INLINE_MAX, INLINE_MAX, 0), fc.array(opArb, { minLength: 20, maxLength: 50 }), fc.boolean(), (max, ops, checkEachStep) => {
        const root = `${t.dir}/run-${run++}`;
        inlineMax = max;
        Pool.create(root, { blockSizeBytes: BS, dataSizeBytes: DATA_BLOCKS * BS, minFreePercent: 0, baseSizeBytes: 1 << 30, inlineMaxBytes: inlineMax }).close();
        const plan = new FaultPlan();
        let pool = Pool.open(root, { faults: plan });
        // Two committed devices to start with, so that most operations have something to work on.
        const emptyDev = (): MDev => ({
          readOnly: false,
          files: new Map(),
          mapped: new Map(),
          own: new Map(),
          inline: new Map(),
          inherited: { files: new Map(), mapped: new Map(), inline: new Map() },
        });
        let model: Model = new Map();
        for (const name of ['d0', 'd1']) {
          pool.createThin(name);
          model.set(name, emptyDev());
        }
        pool.commit();
        let committed: Model = cloneModel(model);
        let dirty: DirtyWrite[] = [];
        let nextName = 2;
        const step: string[] = [];

        const id = (name: string) => pool.findDevice(name)!.id as DevId;
        const pick = (i: number, writable: boolean) => {
          const n = [...model].filter(([, d]) => !writable || !d.readOnly).map(([k]) => k);
          return n.length === 0 ? undefined : n[i % n.length]!;
        };
        /** `offset` moved into the n-th block of the key that holds data (same offset in the block), when n is set and one does. */
        const inMapped = (name: string, key: number, n: number | null, offset: number) => {
          const d = model.get(name)!;
          const mapped = Array.from({ length: MAX_FB }, (_, fb) => fb).filter((fb) => blocksOf(d.mapped, key).has(fb) || lensOf(d, key).has(fb));
          if (n === null || mapped.length === 0) return offset;
          return mapped[n % mapped.length]! * BS + (offset % BS);
        };
        const readKey = (p: Pool, name: string, key: number) => {
          const d = p.openDevice(p.findDevice(name)!.id);
          const buf = Buffer.alloc(KEY_BYTES, 0xee);
          try {
            d.read(key as FileKey, 0, buf);
          } finally {
            d.close();
          }
          return buf;
        };
        /** Devices, counts and every byte of `p` equal `m` exactly; check is clean. */
        const expectPool = (p: Pool, m: Model, what: string, withCheck = true) => {
          const live = p.listDevices().filter((d) => d.state === 'active').map((d) => d.name).sort();
          expect(live, `${what}: devices`).toEqual([...m.keys()].sort());
          for (const [name, d] of m) {
            expect(p.findDevice(name)!.mappedBlocks, `${what}: mapped blocks of ${name}`).toBe(totalMapped(d));
            expect(p.findDevice(name)!.inlineMappedBytes, `${what}: inline bytes of ${name}`).toBe(inlineMapped(d));
            for (const key of KEYS) {
              const got = readKey(p, name, key);
              const want = Buffer.from(content(d, key));
              if (!got.equals(want)) {
                const i = got.findIndex((b, j) => b !== want[j]);
                expect.fail(`${what}: ${name} key ${key} byte ${i} (block ${Math.floor(i / BS)}) reads ${got[i]}, model says ${want[i]}`);
              }
            }
          }
          if (withCheck) expect(p.check().issues, `${what}: check`).toEqual([]);
        };
        /**
         * After a rollback to the last commit (crash, fail mode): bytes that differ from
         * the committed model must be what a write since that commit put there (crash rule
         * 6: own blocks are overwritten in place). The model takes those bytes over.
         */
        const adoptInPlaceWrites = (p: Pool, m: Model, what: string) => {
          for (const [name, d] of m) {
            if (p.findDevice(name) === undefined) continue; // expectPool reports it
            for (const key of KEYS) {
              const got = readKey(p, name, key);
              const want = content(d, key);
              for (let i = 0; i < KEY_BYTES; i++) {
                if (got[i] === want[i]) continue;
                const ok = dirty.some((w) => w.name === name && w.key === key && w.off <= i && i < w.off + w.len && w.byte === got[i]);
                if (!ok) expect.fail(`${what}: ${name} key ${key} byte ${i} reads ${got[i]}, last commit says ${want[i]} and no write since put it there`);
                // Only pool blocks are overwritten in place; inline rows come back exactly.
                if (!blocksOf(d.own, key).has(Math.floor(i / BS))) expect.fail(`${what}: ${name} key ${key} byte ${i} changed, but the last commit holds it inline or below`);
                want[i] = got[i]!;
              }
            }
          }
        };
        const reopenAfterRollback = (what: string) => {
          // Without faults first: exactly the last commit, check clean.
          const plain = Pool.open(root);
          try {
            adoptInPlaceWrites(plain, committed, what);
            expectPool(plain, committed, what);
            expect(plain.mode()).toBe('write');
          } finally {
            plain.close({ commit: false });
          }
          pool = Pool.open(root, { faults: plan });
          model = cloneModel(committed);
          dirty = [];
        };

        try {
          for (const o of ops) {
            step.push(JSON.stringify(o));
            const before = cloneModel(model);
            const txBefore = pool.status().transactionId;
            const f = 'fault' in o ? o.fault : undefined;
            if (f !== undefined) plan.arm(f.kind, f.nth, f.code);
            let err: unknown;
            let apply: (() => void) | undefined; // what the op does to the model when it succeeds
            let written: DirtyWrite | undefined; // the write this op attempts
            let converting = false; // the write moves an inline block into a pool block
            let firedEarly: IoOp | undefined;
            try {
              switch (o.op) {
                case 'create': {
                  const name = `d${nextName++}`;
                  apply = () => model.set(name, emptyDev());
                  pool.createThin(name);
                  break;
                }
                case 'snapshot': {
                  const src = pick(o.dev, false);
                  if (src === undefined) break;
                  const name = `d${nextName++}`;
                  apply = () => {
                    const m = model.get(src)!;
                    if (!m.readOnly) {
                      // The origin moves onto a new, empty layer of its own.
                      m.inherited = snapshotOf(m);
                      m.own = new Map();
                    }
                    model.set(name, {
                      readOnly: o.readOnly,
                      files: cloneFiles(m.files),
                      mapped: cloneBlocks(m.mapped),
                      own: new Map(),
                      inline: cloneLens(m.inline),
                      inherited: snapshotOf(m),
                    });
                  };
                  pool.createSnapshot(id(src), name, { readOnly: o.readOnly });
                  break;
                }
                case 'freeze': {
                  const name = pick(o.dev, true);
                  if (name === undefined) break;
                  apply = () => {
                    model.get(name)!.readOnly = true;
                  };
                  pool.setReadOnly(id(name));
                  break;
                }
                case 'write': {
                  // grow: from inside an inline block (of any writable device and key) to past
                  // INLINE_MAX, so that it moves into a pool block.
                  const inlineBlocks: [string, number, number][] = [];
                  if (o.grow === true) {
                    for (const [n, d] of model) {
                      if (d.readOnly) continue;
                      for (const k of KEYS) for (const fb of lensOf(d, k).keys()) inlineBlocks.push([n, k, fb]);
                    }
                  }
                  const target = inlineBlocks.length > 0 ? inlineBlocks[o.off % inlineBlocks.length]! : undefined;
                  const name = target?.[0] ?? pick(o.dev, true);
                  if (name === undefined) break;
                  const key = target?.[1] ?? o.key;
                  let off = target !== undefined ? target[2] * BS + Math.min(lensOf(model.get(name)!, key).get(target[2])!, 1400) : inMapped(name, key, o.onMapped, o.off);
                  let len = Math.min(o.len, KEY_BYTES - off);
                  if (o.rewrite === true) {
                    // Into the key's first inline block (at its end, or over its bytes), else at the head of its first hole.
                    const m = model.get(name)!;
                    const lens = lensOf(m, key);
                    const holes = Array.from({ length: MAX_FB }, (_, b) => b).filter((b) => !lens.has(b) && !blocksOf(m.mapped, key).has(b));
                    const fb = [...lens.keys()].sort((x, y) => x - y)[0] ?? holes[0] ?? 0;
                    const at = lens.get(fb) ?? 0;
                    off = fb * BS + (o.byte % 2 === 0 || at === 0 ? at : o.off % at);
                    len = Math.max(1, Math.min(o.len, (inlineMax || BS) - (off - fb * BS)));
                    rewrites++;
                  }
                  const data = new Uint8Array(len).fill(o.byte);
                  written = { name, key, off, len, byte: o.byte };
                  // Noted at once: even a failed write may have overwritten own blocks in place.
                  dirty.push(written);
                  apply = () => {
                    const m = model.get(name)!;
                    content(m, key).set(data, off);
                    for (let fb = Math.floor(off / BS); fb <= Math.floor((off + len - 1) / BS); fb++) {
                      if (!blocksOf(m.own, key).has(fb)) storeByExtent(m, key, fb, extentAfter(m, key, fb, Math.min(BS, off + len - fb * BS))); // else in place
                    }
                  };
                  // A write that turns an inline block into a pool block (counted when it fails).
                  {
                    const m = model.get(name)!;
                    const fb0 = Math.floor(off / BS);
                    converting = inlineMax > 0 && lensOf(m, key).has(fb0) && extentAfter(m, key, fb0, Math.min(BS, off + len - fb0 * BS)) > inlineMax;
                  }
                  const d = pool.openDevice(id(name));
                  try {
                    d.write(key as FileKey, off, data);
                  } finally {
                    d.close();
                  }
                  break;
                }
                case 'discard': {
                  const name = pick(o.dev, true);
                  if (name === undefined) break;
                  apply = () => {
                    const m = model.get(name)!;
                    content(m, o.key).fill(0, o.from * BS, o.to * BS);
                    for (let fb = o.from; fb < o.to; fb++) {
                      blocksOf(m.mapped, o.key).delete(fb);
                      blocksOf(m.own, o.key).delete(fb);
                      lensOf(m, o.key).delete(fb);
                    }
                  };
                  const d = pool.openDevice(id(name));
                  try {
                    d.discard(o.key as FileKey, o.from, o.to);
                  } finally {
                    d.close();
                  }
                  break;
                }
                case 'truncate': {
                  const name = pick(o.dev, true);
                  if (name === undefined) break;
                  const size = inMapped(name, o.key, o.onMapped, o.size);
                  apply = () => {
                    const m = model.get(name)!;
                    content(m, o.key).fill(0, size);
                    const keep = Math.ceil(size / BS);
                    const mapped = blocksOf(m.mapped, o.key);
                    const own = blocksOf(m.own, o.key);
                    const lens = lensOf(m, o.key);
                    for (const fb of [...mapped]) if (fb >= keep) mapped.delete(fb);
                    for (const fb of [...own]) if (fb >= keep) own.delete(fb);
                    for (const fb of [...lens.keys()]) if (fb >= keep) lens.delete(fb);
                    // A pool block as partial last block is rewritten (zeroed tail): the device's own
                    // pool block now, or inline when the tail is within INLINE_MAX; an inline one
                    // longer than the tail is cut to it.
                    const tail = size % BS;
                    if (tail !== 0 && mapped.has(keep - 1)) storeByExtent(m, o.key, keep - 1, tail);
                    else if (tail !== 0 && (lens.get(keep - 1) ?? 0) > tail) lens.set(keep - 1, tail);
                  };
                  const d = pool.openDevice(id(name));
                  try {
                    d.truncate(o.key as FileKey, size);
                  } finally {
                    d.close();
                  }
                  break;
                }
                case 'removeKey': {
                  const name = pick(o.dev, true);
                  if (name === undefined) break;
                  apply = () => {
                    const m = model.get(name)!;
                    const inh = m.inherited.files.get(o.key);
                    m.files.set(o.key, inh === undefined ? new Uint8Array(KEY_BYTES) : inh.slice());
                    m.mapped.set(o.key, new Set(m.inherited.mapped.get(o.key) ?? []));
                    m.inline.set(o.key, new Map(m.inherited.inline.get(o.key) ?? []));
                    m.own.set(o.key, new Set());
                  };
                  const d = pool.openDevice(id(name));
                  try {
                    d.removeKey(o.key as FileKey);
                  } finally {
                    d.close();
                  }
                  break;
                }
                case 'delete': {
                  const name = pick(o.dev, false);
                  if (name === undefined) break;
                  apply = () => model.delete(name);
                  pool.deleteDevice(id(name));
                  break;
                }
                case 'commit':
                  apply = () => {
                    committed = cloneModel(model);
                    dirty = [];
                  };
                  pool.commit();
                  break;
                case 'reopen':
                  apply = () => {
                    committed = cloneModel(model);
                    dirty = [];
                  };
                  try {
                    pool.close();
                  } finally {
                    // close() releases the files even when its commit fails; the open runs without the fault.
                    firedEarly = plan.disarm();
                    pool = Pool.open(root, { faults: plan });
                  }
                  break;
                case 'crash':
                  pool.close({ commit: false });
                  pool = Pool.open(root, { faults: plan });
                  adoptInPlaceWrites(pool, committed, 'crash');
                  model = cloneModel(committed);
                  dirty = [];
                  break;
              }
            } catch (e) {
              err = e;
            }
            const firedOp = plan.disarm() ?? firedEarly;
            if (firedOp !== undefined) fired.set(firedOp, (fired.get(firedOp) ?? 0) + 1);
            const what = `after step ${step.length} (${step.at(-1)}; fault ${firedOp ?? 'none'} fired)`;

            // A commit inside the operation (commit-and-retry to reclaim frees) made the state before it durable.
            if (o.op !== 'commit' && o.op !== 'reopen' && o.op !== 'crash' && pool.status().transactionId > txBefore && pool.mode() !== 'fail') {
              committed = cloneModel(before);
              dirty = written !== undefined ? [written] : [];
            }

            if (err === undefined) {
              if (firedOp !== undefined && firedOp !== 'punch') {
                // Only a retry after a commit may make an operation with a failed call succeed.
                expect(pool.status().transactionId, `${what}: succeeded although ${firedOp} failed`).toBeGreaterThan(txBefore);
              }
              apply?.();
              expectPool(pool, model, what, checkEachStep || ['commit', 'reopen', 'crash'].includes(o.op));
              continue;
            }

            expect(isThinfsError(err), `${what}: threw ${String(err)}`).toBe(true);
            const code = (err as { code: string }).code;
            failedOps.set(o.op, (failedOps.get(o.op) ?? 0) + 1);
            if (converting && firedOp === 'pwrite') failedConversions++;
            if (firedOp === undefined) {
              // Without a fault only a full pool may refuse (a write, or a truncate that moves its last block).
              expect(code, `${what}: ${String(err)}`).toBe('ENOSPC');
              expect(['write', 'truncate'], what).toContain(o.op);
            } else if (pool.mode() === 'fail' && o.op !== 'commit') {
              // E.g. a full pool refused the write, then rolling it back failed: that error, or the fault's.
              expect(['ENOSPC', 'EIO'], `${what}: ${String(err)}`).toContain(code);
            } else {
              expect(code, `${what}: ${String(err)}`).toBe(f!.code);
            }

            if (o.op === 'reopen') {
              // close() failed to commit: the files are released; the reopen shows the last commit.
              expect(pool.mode()).toBe('write');
              pool.close({ commit: false });
              reopenAfterRollback(`${what}: reopen after the failed close`);
              continue;
            }

            if (pool.mode() === 'fail') {
              failModes++;
              const st = pool.status();
              expect(st.failReason, what).toBeTruthy();
              // Reads show the last commit (in-place overwrites aside, crash rule 6).
              adoptInPlaceWrites(pool, committed, `${what}: fail mode`);
              expectPool(pool, committed, `${what}: fail mode`);
              // Later changes are refused (EIO), before any host call.
              plan.recording = true;
              plan.calls = [];
              for (const change of [() => pool.createThin('refused'), () => pool.commit()]) {
                let e: unknown;
                try {
                  change();
                } catch (x) {
                  e = x;
                }
                expect(isThinfsError(e), `${what}: a change in fail mode threw ${String(e)}`).toBe(true);
                expect((e as { code: string }).code, what).toBe('EIO');
              }
              const writable = pick(0, true);
              if (writable !== undefined && committed.has(writable)) {
                const d = pool.openDevice(id(writable));
                expect(() => d.write(1 as FileKey, 0, new Uint8Array(10).fill(7))).toThrow(/^EIO: /);
                d.close();
              }
              expect(plan.calls, `${what}: host calls of refused changes in fail mode`).toEqual([]);
              plan.recording = false;
              pool.close({ commit: false });
              reopenAfterRollback(`${what}: reopen after fail mode`);
              continue;
            }

            // Any other failure: nothing changed and the pool goes on.
            expect(['write', 'out-of-data-space'], what).toContain(pool.mode());
            if (written !== undefined) {
              // Crash rule 6: the write may have overwritten blocks the device owned, in place.
              const m = model.get(written.name)!;
              const got = readKey(pool, written.name, written.key);
              const want = content(m, written.key);
              for (let i = written.off; i < written.off + written.len; i++) {
                if (got[i] === want[i]) continue;
                const fb = Math.floor(i / BS);
                expect(blocksOf(m.own, written.key).has(fb), `${what}: byte ${i} of block ${fb}, which the device did not own, changed`).toBe(true);
                expect(got[i], `${what}: byte ${i} is neither as before nor as written`).toBe(written.byte);
                want[i] = got[i]!;
              }
            }
            expectPool(pool, model, what, checkEachStep || ['commit', 'reopen', 'crash'].includes(o.op));
          }
          // The end: a commit and a reopen give exactly the model.
          pool.commit();
          pool.close();
          pool = Pool.open(root, { faults: plan });
          expectPool(pool, model, 'after the final commit and reopen');
          return true;
        } finally {
          plan.disarm();
          pool.close({ commit: false });
        }
      }),
      { numRuns: 70 },
    );
    // The faults really happened, of every kind, and ended in each kind of outcome.
    // Every kind must really fire; preads are rarer since small blocks live inline (no pread
    // for them), so a run may see only a couple of pread faults.
    for (const kind of ['pwrite', 'sql', 'commit', 'fdatasync']) expect(fired.get(kind) ?? 0, `${kind} faults fired`).toBeGreaterThan(3);
    expect(fired.get('pread') ?? 0, 'pread faults fired').toBeGreaterThan(0);
    expect(failModes).toBeGreaterThan(5);
    console.log(`pool faults: ${failedConversions} inline-to-pool conversions failed at their pwrite, ${failModes} fail modes`);
    // Writes that would move an inline block into a pool block failed at their pwrite (and changed nothing: checked above).
    expect(failedConversions, 'failed inline-to-pool conversions').toBeGreaterThan(4);
    expect(rewrites, 'small writes into inline blocks').toBeGreaterThan(100);
    for (const op of ['write', 'truncate', 'discard', 'snapshot', 'commit']) expect(failedOps.get(op) ?? 0, `failed ${op}s`).toBeGreaterThan(2);
  });
});

// ------------------------------------------------------------------ deterministic regressions

const K1 = 1 as FileKey;
const K2 = 2 as FileKey;
const K3 = 3 as FileKey;

/** What a reopen must give back: counters, devices with their counts, every byte of each key. */
function stateOf(p: Pool): unknown {
  const st = p.status();
  return {
    status: {
      dataUsedBytes: st.dataUsedBytes,
      transactionId: st.transactionId,
      devices: st.devices,
      deferredDeletions: st.deferredDeletions,
      pendingDiscardBlocks: st.pendingDiscardBlocks,
    },
    devices: p.listDevices().map((d) => {
      const dev = p.openDevice(d.id);
      const keys = KEYS.map((k) => {
        const buf = Buffer.alloc(KEY_BYTES);
        dev.read(k, 0, buf);
        return buf.toString('hex');
      });
      dev.close();
      return { name: d.name, state: d.state, mapped: d.mappedBlocks, exclusive: d.exclusiveBlocks, readOnly: d.readOnly, keys };
    }),
  };
}
function poolFiles(p: Pool): string {
  const h = createHash('sha256');
  for (const f of [p.dataFile, p.metadataFile, `${p.metadataFile}-wal`]) {
    h.update(f);
    if (fs.existsSync(f)) h.update(fs.readFileSync(f));
  }
  return h.digest('hex');
}

describe('pool failure rules, one by one', () => {
  let t: { dir: string; cleanup: () => void };
  let root: string;
  let pool: Pool | undefined;
  beforeEach(() => {
    t = tmpDir('thinfs-faults-');
    root = `${t.dir}/pool`;
    Pool.create(root, { blockSizeBytes: BS, dataSizeBytes: 256 * BS, minFreePercent: 0 }).close();
  });
  afterEach(() => {
    try {
      pool?.close({ commit: false });
    } catch {
      /* closed by the test */
    }
    pool = undefined;
    t.cleanup();
  });

  for (const [kind, code] of [
    ['fdatasync', 'EIO'],
    ['fdatasync', 'ENOSPC'],
    ['commit', 'ENOSPC'],
    ['commit', 'EIO'],
  ] as const) {
    it(`a commit whose ${kind} fails (${code}): fail mode, reads show the last commit, nothing more is written, a reopen returns to it`, () => {
      const plan = new FaultPlan();
      pool = Pool.open(root, { faults: plan });
      const a = pool.createThin('a');
      let d = pool.openDevice(a);
      d.write(K1, 0, pattern(4 * BS, 1));
      d.write(K2, 0, pattern(2 * BS, 2));
      d.close();
      pool.commit();
      const last = stateOf(pool);

      // Uncommitted changes of every kind: fresh blocks, a discard (a pending free), a snapshot, a new device.
      d = pool.openDevice(a);
      d.write(K1, 6 * BS, pattern(BS, 3));
      d.write(K3, 0, pattern(3 * BS, 4));
      d.discard(K2, 1, 2);
      d.close();
      const snap = pool.createSnapshot(a, 'snap');
      const s = pool.openDevice(snap);
      s.write(K1, 100, pattern(200, 5));
      s.close();
      pool.createThin('b');
      expect(stateOf(pool)).not.toEqual(last);

      plan.arm(kind, 1, code);
      expect(codeOf(() => pool!.commit())).toBe(code);
      expect(plan.disarm()).toBe(kind);
      expect(pool.mode()).toBe('fail');
      expect(pool.status().failReason).toMatch(code === 'EIO' ? /EIO|I\/O/i : /ENOSPC|full/i);
      expect(stateOf(pool), 'reads in fail mode show the last commit').toEqual(last);
      expect(pool.check().issues).toEqual([]);

      // Every later change is refused with EIO, before any host call is made.
      const files = poolFiles(pool);
      plan.recording = true;
      d = pool.openDevice(a);
      const changes: [string, () => unknown][] = [
        ['commit', () => pool!.commit()],
        ['createThin', () => pool!.createThin('c')],
        ['createSnapshot', () => pool!.createSnapshot(a, 's2')],
        ['setReadOnly', () => pool!.setReadOnly(a)],
        ['renameDevice', () => pool!.renameDevice(a, 'z')],
        ['deleteDevice', () => pool!.deleteDevice(a)],
        ['resize', () => pool!.resize(512 * BS)],
        ['trim', () => pool!.trim()],
        ['check --repair', () => pool!.check({ repair: true })],
        ['write', () => d.write(K1, 0, pattern(10, 6))],
        ['discard', () => d.discard(K1, 0, 1)],
        ['truncate', () => d.truncate(K1, 10)],
        ['removeKey', () => d.removeKey(K1)],
      ];
      for (const [name, change] of changes) expect(codeOf(change), name).toBe('EIO');
      d.close();
      expect(plan.calls, 'host calls made by refused changes').toEqual([]);
      // Reads work (they may read, nothing else).
      expect(stateOf(pool)).toEqual(last);
      expect(plan.calls.filter((c) => c !== 'pread' && c !== 'sql')).toEqual([]);
      plan.recording = false;
      expect(poolFiles(pool), 'the pool files, byte for byte, after the refused changes and the reads').toBe(files);
      pool.close(); // a normal close: no commit in fail mode

      pool = Pool.open(root);
      expect(pool.mode()).toBe('write');
      expect(stateOf(pool), 'after the reopen').toEqual(last);
      expect(pool.check().issues).toEqual([]);
      // And it goes on from there.
      d = pool.openDevice(a);
      d.write(K3, 0, pattern(BS, 7));
      d.close();
      pool.close();
      pool = Pool.open(root);
      expect(pool.check().issues).toEqual([]);
    });
  }

  it('an operation whose SAVEPOINT fails throws the errno (a ThinfsError), and the pool goes on', () => {
    const plan = new FaultPlan();
    pool = Pool.open(root, { faults: plan });
    const a = pool.createThin('a'); // the transaction is open: the next operation's first statement is its SAVEPOINT
    const d = pool.openDevice(a);
    plan.arm('sql', 1, 'ENOSPC');
    expect(codeOf(() => d.write(K1, 0, pattern(BS, 1)))).toBe('ENOSPC');
    expect(plan.disarm()).toBe('sql');
    d.write(K1, 0, pattern(BS, 1));
    d.close();
    expect(pool.check().issues).toEqual([]);
  });

  it('a shrinking truncate of blocks written in this transaction, failed at each statement after it zeroed the tail: the bytes are as before', () => {
    const plan = new FaultPlan();
    pool = Pool.open(root, { faults: plan });
    const d = pool.openDevice(pool.createThin('a'));
    const data = pattern(2 * BS, 1);
    // A dry run on a key of the same shape: which statements come after the tail is zeroed in place.
    d.write(K2, 0, data);
    plan.recording = true;
    d.truncate(K2, 7100); // a tail past the inline threshold (2 KiB): zeroed in place
    plan.recording = false;
    const firstAfter = plan.calls.slice(0, plan.calls.indexOf('pwrite')).filter((c) => c === 'sql').length + 1;
    d.write(K1, 0, data); // not committed: the device's own blocks, allocated in this transaction
    const read = () => {
      const buf = Buffer.alloc(2 * BS);
      d.read(K1, 0, buf);
      return buf;
    };
    let failures = 0;
    for (let nth = firstAfter; ; nth++) {
      plan.arm('sql', nth, 'EIO');
      const code = codeOf(() => d.truncate(K1, 7100));
      if (plan.disarm() === undefined) break;
      failures++;
      expect(code).toBe('EIO');
      const got = read();
      const i = got.findIndex((x, j) => x !== data[j]);
      expect(i, `statement ${nth} failed: byte ${i} reads ${got[i]}, was ${data[i]}`).toBe(-1);
      expect(pool.check().issues).toEqual([]);
    }
    expect(failures).toBeGreaterThan(0);
    const want = Buffer.alloc(2 * BS);
    data.copy(want, 0, 0, 7100);
    expect(read().equals(want)).toBe(true);
    d.close();
  });

  it('a real SQLITE_FULL (the metadata may not grow) in the middle of a big write: ENOSPC, nothing changed, the pool goes on', () => {
    pool = Pool.open(root);
    pool.resize(4096 * BS);
    const a = pool.createThin('a');
    let d = pool.openDevice(a);
    d.write(K1, 0, pattern(2 * BS, 1));
    d.close();
    pool.commit();
    const committed = stateOf(pool);
    d = pool.openDevice(a);
    d.write(K2, 0, pattern(BS, 2)); // an uncommitted change before the failing operation
    const before = stateOf(pool);
    const db = pool.metadataDb();
    const pages = db.pragma('page_count', { simple: true }) as number;
    const spare = db.pragma('freelist_count', { simple: true }) as number;
    db.pragma(`max_page_count = ${pages}`);
    expect(db.pragma('max_page_count', { simple: true })).toBe(pages);
    // 2000 blocks: 2000 mapping rows need new pages of the mappings table and its index.
    const big = 2000 + spare * 100;
    expect(codeOf(() => d.write(K3, 0, Buffer.alloc(big * BS, 9)))).toBe('ENOSPC');
    // SQLite rolls back the statement, or (its choice) the whole transaction: then the state is the last commit's.
    const after = stateOf(pool);
    expect([before, committed]).toContainEqual(after);
    expect(pool.check().issues).toEqual([]);
    db.pragma('max_page_count = 1073741823');
    d.write(K3, 0, Buffer.alloc(big * BS, 9));
    d.close();
    pool.commit();
    const done = stateOf(pool);
    pool.close();
    pool = Pool.open(root);
    expect(stateOf(pool)).toEqual(done);
    expect(pool.check().issues).toEqual([]);
  });
});
