/**
 * Model-based property test of the pool: random sequences of create-thin, snapshot,
 * write (partial and whole blocks, across block edges), read, discard, truncate,
 * remove-key, delete, commit, abort, close/reopen and crash, over several devices,
 * checked after each step against an in-memory model; `check` stays clean.
 *
 * The model is deliberately naive: each device is a map key -> byte array (its whole
 * visible content) plus the set of mapped blocks; a snapshot copies both. "inherited"
 * is the state a device's own layer started from, which `removeKey` returns to.
 */
import * as fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Pool, KiB, type DevId, type FileKey } from '../../src/pool/index.js';
import { isThinfsError } from '../../src/errors.js';
import { tmpDir } from '../helpers/tmp.js';

const BS = 4 * KiB;
const MAX_FB = 8; // file blocks per key
const KEYS = [1, 2, 3] as FileKey[];
const DATA_BLOCKS = 160;

interface MDev {
  readOnly: boolean;
  files: Map<number, Uint8Array>; // key -> content (MAX_FB * BS bytes, zeros where unmapped)
  mapped: Map<number, Set<number>>; // key -> mapped file blocks
  inherited: { files: Map<number, Uint8Array>; mapped: Map<number, Set<number>> };
  /** The model's layer node this device writes to (see Nodes). */
  node: number;
}
/**
 * Which deletions are deferred follows the snapshot tree: a node with child nodes can't
 * go. Snapshot of a read-only device hangs a new node under it; a read-only snapshot of
 * a writable device takes its node and the device moves onto a new node above it; a
 * writable snapshot of a writable device leaves the old node to nobody, both on new nodes.
 */
interface MNode {
  parent: number | null;
  kids: number;
  owner: string | null;
  deferred: boolean;
}
interface Model {
  devs: Map<string, MDev>;
  nodes: Map<number, MNode>;
}

function cloneFiles(f: Map<number, Uint8Array>): Map<number, Uint8Array> {
  return new Map([...f].map(([k, v]) => [k, v.slice()]));
}
function cloneMapped(m: Map<number, Set<number>>): Map<number, Set<number>> {
  return new Map([...m].map(([k, v]) => [k, new Set(v)]));
}
function cloneDev(d: MDev): MDev {
  return {
    readOnly: d.readOnly,
    files: cloneFiles(d.files),
    mapped: cloneMapped(d.mapped),
    inherited: { files: cloneFiles(d.inherited.files), mapped: cloneMapped(d.inherited.mapped) },
    node: d.node,
  };
}
function cloneModel(m: Model): Model {
  return {
    devs: new Map([...m.devs].map(([k, v]) => [k, cloneDev(v)])),
    nodes: new Map([...m.nodes].map(([k, v]) => [k, { ...v }])),
  };
}
let nodeSeq = 0;
function newNode(m: Model, parent: number | null, owner: string | null): number {
  const id = nodeSeq++;
  m.nodes.set(id, { parent, kids: 0, owner, deferred: false });
  if (parent !== null) m.nodes.get(parent)!.kids++;
  return id;
}
/** Delete device `name`: 'deferred' when its node has kids, else collect nodes upwards. */
function modelDelete(m: Model, name: string): 'deleted' | 'deferred' {
  const dev = m.devs.get(name)!;
  m.devs.delete(name);
  const node = m.nodes.get(dev.node)!;
  if (node.kids > 0) {
    node.deferred = true;
    return 'deferred';
  }
  let id: number | null = dev.node;
  node.owner = null;
  while (id !== null) {
    const n: MNode = m.nodes.get(id)!;
    if (n.kids > 0 || (n.owner !== null && !n.deferred)) break;
    m.nodes.delete(id);
    if (n.parent !== null) m.nodes.get(n.parent)!.kids--;
    id = n.parent;
  }
  return 'deleted';
}
function content(d: MDev, key: number): Uint8Array {
  let c = d.files.get(key);
  if (c === undefined) {
    c = new Uint8Array(MAX_FB * BS);
    d.files.set(key, c);
  }
  return c;
}
function mappedSet(d: MDev, key: number): Set<number> {
  let s = d.mapped.get(key);
  if (s === undefined) {
    s = new Set();
    d.mapped.set(key, s);
  }
  return s;
}
function totalMapped(d: MDev): number {
  let n = 0;
  for (const s of d.mapped.values()) n += s.size;
  return n;
}

type Op =
  | { op: 'create' }
  | { op: 'snapshot'; dev: number; readOnly: boolean }
  | { op: 'freeze'; dev: number }
  | { op: 'write'; dev: number; key: number; off: number; len: number; byte: number }
  | { op: 'read'; dev: number; key: number; off: number; len: number }
  | { op: 'discard'; dev: number; key: number; from: number; to: number }
  | { op: 'truncate'; dev: number; key: number; size: number }
  | { op: 'removeKey'; dev: number; key: number }
  | { op: 'delete'; dev: number }
  | { op: 'commit' }
  | { op: 'abort' }
  | { op: 'reopen' }
  | { op: 'crash' };

const devIdx = fc.nat({ max: 7 });
const keyArb = fc.constantFrom(...KEYS);
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 2, arbitrary: fc.constant({ op: 'create' as const }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('snapshot' as const), dev: devIdx, readOnly: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('freeze' as const), dev: devIdx }) },
  {
    weight: 8,
    arbitrary: fc.record({
      op: fc.constant('write' as const),
      dev: devIdx,
      key: keyArb,
      off: fc.nat({ max: MAX_FB * BS - 1 }),
      len: fc.oneof(fc.integer({ min: 1, max: 100 }), fc.constant(BS), fc.integer({ min: 1, max: 3 * BS })),
      byte: fc.integer({ min: 1, max: 255 }),
    }),
  },
  {
    weight: 4,
    arbitrary: fc.record({
      op: fc.constant('read' as const),
      dev: devIdx,
      key: keyArb,
      off: fc.nat({ max: MAX_FB * BS - 1 }),
      len: fc.integer({ min: 1, max: 3 * BS }),
    }),
  },
  {
    weight: 2,
    arbitrary: fc
      .record({ op: fc.constant('discard' as const), dev: devIdx, key: keyArb, from: fc.nat({ max: MAX_FB }), n: fc.nat({ max: MAX_FB }) })
      .map(({ op, dev, key, from, n }) => ({ op, dev, key, from, to: Math.min(MAX_FB, from + n) })),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), dev: devIdx, key: keyArb, size: fc.nat({ max: MAX_FB * BS }) }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('removeKey' as const), dev: devIdx, key: keyArb }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), dev: devIdx }) },
  { weight: 2, arbitrary: fc.constant({ op: 'commit' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'abort' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'reopen' as const }) },
  { weight: 1, arbitrary: fc.constant({ op: 'crash' as const }) },
);

function errCode(fn: () => void): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (isThinfsError(err)) return err.code;
    throw err;
  }
}

describe('pool against a model', () => {
  let t: { dir: string; cleanup: () => void };
  beforeEach(() => {
    t = tmpDir('thinfs-model-');
  });
  afterEach(() => t.cleanup());

  it('random operation sequences agree with the model and keep check clean', () => {
    let run = 0;
    fc.assert(
      fc.property(fc.array(opArb, { minLength: 1, maxLength: 60, size: 'max' }), (ops) => {
        const root = `${t.dir}/run-${run++}`;
        let pool = Pool.create(root, { blockSizeBytes: BS, dataSizeBytes: DATA_BLOCKS * BS, minFreePercent: 0, baseSizeBytes: 1 << 30 });
        let model: Model = { devs: new Map(), nodes: new Map() };
        let committed: Model = cloneModel(model);
        let nextName = 0;
        // Blocks written since the last commit. A block the device already owned is
        // overwritten in place (as dm-thin does): after a crash or abort it may hold the
        // newer bytes; blocks allocated since the commit always read as before.
        let touched = new Set<string>();
        const resyncTouched = () => {
          for (const t of touched) {
            const [name, key, fb] = t.split('|') as [string, string, string];
            const m = model.devs.get(name);
            if (m === undefined || !mappedSet(m, Number(key)).has(Number(fb))) continue;
            const d = pool.openDevice(id(name));
            const buf = Buffer.alloc(BS);
            d.read(Number(key) as FileKey, Number(fb) * BS, buf);
            d.close();
            content(m, Number(key)).set(buf, Number(fb) * BS);
            // The committed mapping points at these very bytes now.
            content(committed.devs.get(name)!, Number(key)).set(buf, Number(fb) * BS);
          }
          touched = new Set();
        };
        const names = () => [...model.devs.keys()];
        const pick = (i: number) => {
          const n = names();
          return n.length === 0 ? undefined : n[i % n.length]!;
        };
        const id = (name: string) => pool.findDevice(name)!.id as DevId;
        try {
          for (const o of ops) {
            switch (o.op) {
              case 'create': {
                const name = `d${nextName++}`;
                pool.createThin(name);
                model.devs.set(name, { readOnly: false, files: new Map(), mapped: new Map(), inherited: { files: new Map(), mapped: new Map() }, node: newNode(model, null, name) });
                break;
              }
              case 'snapshot': {
                const src = pick(o.dev);
                if (src === undefined) break;
                const name = `d${nextName++}`;
                pool.createSnapshot(id(src), name, { readOnly: o.readOnly });
                const m = model.devs.get(src)!;
                let node: number;
                if (m.readOnly) {
                  node = newNode(model, m.node, name);
                } else {
                  m.inherited = { files: cloneFiles(m.files), mapped: cloneMapped(m.mapped) };
                  const old = m.node;
                  if (o.readOnly) {
                    model.nodes.get(old)!.owner = name;
                    node = old;
                  } else {
                    model.nodes.get(old)!.owner = null;
                    node = newNode(model, old, name);
                  }
                  m.node = newNode(model, old, src);
                }
                model.devs.set(name, {
                  readOnly: o.readOnly,
                  files: cloneFiles(m.files),
                  mapped: cloneMapped(m.mapped),
                  inherited: { files: cloneFiles(m.files), mapped: cloneMapped(m.mapped) },
                  node,
                });
                break;
              }
              case 'freeze': {
                const name = pick(o.dev);
                if (name === undefined) break;
                pool.setReadOnly(id(name));
                model.devs.get(name)!.readOnly = true;
                break;
              }
              case 'write': {
                const name = pick(o.dev);
                if (name === undefined) break;
                const len = Math.min(o.len, MAX_FB * BS - o.off);
                const data = new Uint8Array(len).fill(o.byte);
                const m = model.devs.get(name)!;
                const d = pool.openDevice(id(name));
                const code = errCode(() => d.write(o.key as FileKey, o.off, data));
                d.close();
                if (m.readOnly) {
                  expect(code).toBe('EROFS');
                  break;
                }
                if (code === 'ENOSPC') break; // nothing changed: the reads below prove it
                expect(code).toBeUndefined();
                content(m, o.key).set(data, o.off);
                for (let fb = Math.floor(o.off / BS); fb <= Math.floor((o.off + len - 1) / BS); fb++) {
                  mappedSet(m, o.key).add(fb);
                  touched.add(`${name}|${o.key}|${fb}`);
                }
                break;
              }
              case 'read': {
                const name = pick(o.dev);
                if (name === undefined) break;
                const len = Math.min(o.len, MAX_FB * BS - o.off);
                const buf = Buffer.alloc(len, 0xee);
                const d = pool.openDevice(id(name));
                d.read(o.key as FileKey, o.off, buf);
                d.close();
                expect(Buffer.from(content(model.devs.get(name)!, o.key).subarray(o.off, o.off + len)).equals(buf)).toBe(true);
                break;
              }
              case 'discard': {
                const name = pick(o.dev);
                if (name === undefined) break;
                const m = model.devs.get(name)!;
                const d = pool.openDevice(id(name));
                const code = errCode(() => d.discard(o.key as FileKey, o.from, o.to));
                d.close();
                if (m.readOnly) {
                  if (o.to > o.from) expect(code).toBe('EROFS');
                  break;
                }
                expect(code).toBeUndefined();
                content(m, o.key).fill(0, o.from * BS, o.to * BS);
                for (let fb = o.from; fb < o.to; fb++) mappedSet(m, o.key).delete(fb);
                break;
              }
              case 'truncate': {
                const name = pick(o.dev);
                if (name === undefined) break;
                const m = model.devs.get(name)!;
                const d = pool.openDevice(id(name));
                const code = errCode(() => d.truncate(o.key as FileKey, o.size));
                d.close();
                if (m.readOnly) break;
                // A failing truncate changes nothing (one atomic operation): the model stays.
                if (code === 'ENOSPC') break;
                expect(code).toBeUndefined();
                content(m, o.key).fill(0, o.size);
                const keep = Math.ceil(o.size / BS);
                for (const fb of [...mappedSet(m, o.key)]) if (fb >= keep) mappedSet(m, o.key).delete(fb);
                break;
              }
              case 'removeKey': {
                const name = pick(o.dev);
                if (name === undefined) break;
                const m = model.devs.get(name)!;
                const d = pool.openDevice(id(name));
                const code = errCode(() => d.removeKey(o.key as FileKey));
                d.close();
                if (m.readOnly) {
                  expect(code).toBe('EROFS');
                  break;
                }
                expect(code).toBeUndefined();
                const inh = m.inherited.files.get(o.key);
                m.files.set(o.key, inh === undefined ? new Uint8Array(MAX_FB * BS) : inh.slice());
                m.mapped.set(o.key, new Set(m.inherited.mapped.get(o.key) ?? []));
                break;
              }
              case 'delete': {
                const name = pick(o.dev);
                if (name === undefined) break;
                const r = pool.deleteDevice(id(name));
                expect(r).toBe(modelDelete(model, name));
                // Children keep their own copies in the model; their data must survive.
                break;
              }
              case 'commit':
                pool.commit();
                committed = cloneModel(model);
                touched = new Set();
                break;
              case 'abort':
                pool.abort();
                model = cloneModel(committed);
                resyncTouched();
                break;
              case 'reopen':
                pool.close();
                pool = Pool.open(root);
                committed = cloneModel(model);
                touched = new Set();
                break;
              case 'crash':
                pool.close({ commit: false });
                pool = Pool.open(root);
                model = cloneModel(committed);
                resyncTouched();
                break;
            }
            // After every step: device set, contents and counts agree; check is clean.
            const live = pool.listDevices().filter((d) => d.state === 'active').map((d) => d.name).sort();
            expect(live).toEqual(names().sort());
            for (const [name, m] of model.devs) {
              const info = pool.findDevice(name)!;
              expect(info.mappedBlocks, `mapped blocks of ${name}`).toBe(totalMapped(m));
              expect(info.readOnly).toBe(m.readOnly);
            }
            const deferred = [...model.nodes.values()].filter((n) => n.deferred && n.owner !== null).length;
            expect(pool.status().deferredDeletions).toBe(deferred);
            const report = pool.check();
            expect(report.issues).toEqual([]);
          }
          // Full content comparison at the end.
          for (const [name, m] of model.devs) {
            const d = pool.openDevice(id(name));
            for (const key of KEYS) {
              const buf = Buffer.alloc(MAX_FB * BS);
              d.read(key, 0, buf);
              expect(Buffer.from(content(m, key)).equals(buf), `${name} key ${key}`).toBe(true);
            }
            d.close();
          }
          return true;
        } finally {
          pool.close({ commit: false });
        }
      }),
      { numRuns: 300 },
    );
  });
});
