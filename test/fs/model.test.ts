/**
 * Model-based random tests: sequences of filesystem operations (and, for thinfs, device
 * operations: snapshot and continue on the child, commit as a read-only image, delete a
 * device, commit, close/reopen, crash) checked against the in-memory model after every
 * step — errno by errno, attribute by attribute, byte by byte.
 *
 * thinfs runs them twice: through the path-based API, and through the inode-based one
 * as the kernel drives FUSE's low level (adapters.ts: every path walked by lookups, every
 * entry a counted reference kept until a random 'forget' op, listings paged through
 * readdirplus), so unlinked inodes held by lookups live across operations, snapshots,
 * commits and crashes, and the same model must hold.
 *
 * The same single-device sequences also run against a real directory through node:fs,
 * which proves the model (and so the test) right about Linux.
 */
import * as nodefs from 'node:fs';
import * as path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Filesystem } from '../../src/fs/index.js';
import { Pool, MiB, type DevId } from '../../src/pool/index.js';
import { tmpDir } from '../helpers/tmp.js';
import { nodeAdapter, thinfsAdapter, thinfsInoAdapter, type InoFsUnderTest } from './adapters.js';
import { Model, cloneTree, compareTree, errnoOf, type FsUnderTest, type MDir, type MNode } from './model.js';

const BS = 4096;
const ROOT_CALLER = { uid: 0, gid: 0 };

// ------------------------------------------------------------------ operations

// Names are bytes (src/fs/bytes.ts): 'x\xe9' and 'x\xe8' are no UTF-8, and must stay two names.
const name = fc.constantFrom('a', 'b', 'x\xe9', 'x\xe8');
const pathOf = (n: number) =>
  fc.tuple(name, fc.array(fc.constantFrom('a', '\xff'), { minLength: n - 1, maxLength: n - 1 })).map(([h, t]) => `/${[h, ...t].join('/')}`);
const pathArb = fc.oneof({ arbitrary: pathOf(1), weight: 4 }, { arbitrary: pathOf(2), weight: 3 }, { arbitrary: pathOf(3), weight: 1 });
const modeArb = fc.constantFrom(0o644, 0o755, 0o4755, 0o2755, 0o1777, 0o600, 0o2710, 0o000);
const idArb = fc.constantFrom(-1, 0, 1, 1000);

type FsOp =
  | { t: 'mkdir'; p: string; mode: number }
  | { t: 'create'; p: string; mode: number; excl: boolean }
  | { t: 'write'; p: string; off: number; len: number; byte: number; append: boolean }
  | { t: 'truncate'; p: string; size: number }
  | { t: 'link'; a: string; b: string }
  | { t: 'symlink'; target: string; p: string }
  | { t: 'rename'; a: string; b: string }
  | { t: 'unlink'; p: string }
  | { t: 'rmdir'; p: string }
  | { t: 'chmod'; p: string; mode: number }
  | { t: 'chown'; p: string; uid: number; gid: number }
  | { t: 'setxattr'; p: string; name: string; value: number }
  | { t: 'removexattr'; p: string; name: string };

type DevOp =
  | { t: 'snapshot' }
  | { t: 'image' }
  | { t: 'switch'; i: number }
  | { t: 'delete'; i: number }
  | { t: 'commit' }
  | { t: 'reopen' }
  | { t: 'crash' }
  | { t: 'forget' };

const fsOps = (withSymlinks: boolean, withXattrs: boolean): fc.Arbitrary<FsOp>[] => {
  const ops: fc.Arbitrary<FsOp>[] = [
    ...Array.from({ length: 4 }, () => fc.record({ t: fc.constant('mkdir' as const), p: pathArb, mode: modeArb })),
    ...Array.from({ length: 4 }, () => fc.record({ t: fc.constant('create' as const), p: pathArb, mode: modeArb, excl: fc.boolean() })),
    fc.record({
      t: fc.constant('write' as const),
      p: pathArb,
      off: fc.nat(3 * BS + 100),
      len: fc.nat(2 * BS + 10),
      byte: fc.integer({ min: 1, max: 255 }),
      append: fc.boolean(),
    }),
    fc.record({
      t: fc.constant('write' as const),
      p: pathArb,
      off: fc.nat(3 * BS + 100),
      len: fc.nat(300),
      byte: fc.integer({ min: 1, max: 255 }),
      append: fc.constant(false),
    }),
    fc.record({ t: fc.constant('truncate' as const), p: pathArb, size: fc.nat(3 * BS + 100) }),
    fc.record({ t: fc.constant('link' as const), a: pathArb, b: pathArb }),
    fc.record({ t: fc.constant('rename' as const), a: pathArb, b: pathArb }),
    fc.record({ t: fc.constant('rename' as const), a: pathArb, b: pathArb }),
    fc.record({ t: fc.constant('unlink' as const), p: pathArb }),
    fc.record({ t: fc.constant('rmdir' as const), p: pathArb }),
    fc.record({ t: fc.constant('chmod' as const), p: pathArb, mode: modeArb }),
    fc.record({ t: fc.constant('chown' as const), p: pathArb, uid: idArb, gid: idArb }),
  ];
  if (withSymlinks) {
    ops.push(fc.record({ t: fc.constant('symlink' as const), target: fc.constantFrom('a', '../b', '/c/d', 'x'.repeat(100), 't\xe9/\x80'), p: pathArb }));
  }
  if (withXattrs) {
    const xname = fc.constantFrom('user.a', 'trusted.b', 'security.capability', 'user.\xe9');
    ops.push(fc.record({ t: fc.constant('setxattr' as const), p: pathArb, name: xname, value: fc.integer({ min: 0, max: 255 }) }));
    ops.push(fc.record({ t: fc.constant('removexattr' as const), p: pathArb, name: xname }));
  }
  return ops;
};

const devOps: fc.Arbitrary<DevOp>[] = [
  fc.record({ t: fc.constant('snapshot' as const) }),
  fc.record({ t: fc.constant('image' as const) }),
  fc.record({ t: fc.constant('switch' as const), i: fc.nat(7) }),
  fc.record({ t: fc.constant('delete' as const), i: fc.nat(7) }),
  fc.record({ t: fc.constant('commit' as const) }),
  fc.record({ t: fc.constant('reopen' as const) }),
  fc.record({ t: fc.constant('crash' as const) }),
];
/** The kernel forgetting every inode it holds (inode-based API only). */
const forgetOp: fc.Arbitrary<DevOp> = fc.record({ t: fc.constant('forget' as const) });
const DEV_OPS = ['snapshot', 'image', 'switch', 'delete', 'commit', 'reopen', 'crash', 'forget'];

function pattern(len: number, byte: number): Buffer {
  const b = Buffer.alloc(len);
  for (let i = 0; i < len; i++) b[i] = (byte + i * 7) & 0xff;
  return b;
}

/** Run one fs operation on both the implementation and the model; their errnos must agree. */
function applyFsOp(op: FsOp, fs: FsUnderTest, model: Model, xattr?: { set: (p: string, n: string, v: Buffer) => void; remove: (p: string, n: string) => void }): void {
  const isLink = (p: string) => model.peek(p)?.kind === 'symlink';
  const check = (want: string | undefined, fn: () => void) => expect(errnoOf(fn), `${fs.kind} ${JSON.stringify(op)}`).toBe(want);
  switch (op.t) {
    case 'mkdir':
      return check(model.mkdir(op.p, op.mode), () => fs.mkdir(op.p, op.mode));
    case 'create':
      if (isLink(op.p)) return;
      return check(model.createFile(op.p, op.mode, op.excl), () => fs.createFile(op.p, op.mode, op.excl));
    case 'write': {
      if (isLink(op.p)) return;
      const data = pattern(op.len, op.byte);
      return check(model.writeAt(op.p, op.off, data, op.append), () => fs.writeAt(op.p, op.off, data, op.append));
    }
    case 'truncate':
      if (isLink(op.p)) return;
      return check(model.truncate(op.p, op.size), () => fs.truncate(op.p, op.size));
    case 'link':
      return check(model.link(op.a, op.b), () => fs.link(op.a, op.b));
    case 'symlink':
      return check(model.symlink(op.target, op.p), () => fs.symlink(op.target, op.p));
    case 'rename':
      return check(model.rename(op.a, op.b), () => fs.rename(op.a, op.b));
    case 'unlink':
      return check(model.unlink(op.p), () => fs.unlink(op.p));
    case 'rmdir':
      return check(model.rmdir(op.p), () => fs.rmdir(op.p));
    case 'chmod':
      if (isLink(op.p)) return;
      return check(model.chmod(op.p, op.mode), () => fs.chmod(op.p, op.mode));
    case 'chown':
      return check(model.chown(op.p, op.uid, op.gid), () => fs.chown(op.p, op.uid, op.gid));
    case 'setxattr': {
      const v = Buffer.from([op.value, 1, 2]);
      return check(model.setxattr(op.p, op.name, v), () => xattr!.set(op.p, op.name, v));
    }
    case 'removexattr':
      return check(model.removexattr(op.p, op.name), () => xattr!.remove(op.p, op.name));
  }
}

// ------------------------------------------------------------------ thinfs: many devices

interface Dev {
  id: DevId;
  name: string;
  readOnly: boolean;
  model: Model;
  fs: Filesystem;
}

interface Committed {
  devs: { id: DevId; name: string; readOnly: boolean; tree: MDir }[];
  curId: DevId;
}

class World {
  pool: Pool;
  devs: Dev[] = [];
  cur: Dev;
  committed: Committed;
  private counter = 0;

  private readonly adapters = new WeakMap<Dev, FsUnderTest>();

  constructor(
    readonly root: string,
    readonly api: 'path' | 'inode',
  ) {
    this.pool = Pool.create(root, { dataSizeBytes: 256 * MiB, blockSizeBytes: BS, minFreePercent: 0 });
    const id = this.pool.createThin('base', { kind: 'base' });
    this.cur = { id, name: 'base', readOnly: false, model: new Model(), fs: Filesystem.open(this.pool, id) };
    this.devs.push(this.cur);
    this.pool.commit();
    this.committed = this.snapshotState();
  }

  /** The adapter of device `d` (one per device, so the inode adapter keeps its lookups). */
  adapter(d: Dev): FsUnderTest {
    let a = this.adapters.get(d);
    if (a === undefined) {
      a = this.api === 'path' ? thinfsAdapter(() => d.fs) : thinfsInoAdapter(() => d.fs, 2);
      this.adapters.set(d, a);
    }
    return a;
  }

  private inoAdapter(d: Dev): InoFsUnderTest | undefined {
    return this.api === 'inode' ? (this.adapter(d) as InoFsUnderTest) : undefined;
  }

  xattrOps(d: Dev) {
    const a = this.inoAdapter(d);
    if (a !== undefined) {
      return {
        set: (p: string, n: string, v: Buffer) => d.fs.setxattrIno(a.inoOf(p), n, v, 0),
        remove: (p: string, n: string) => d.fs.removexattrIno(a.inoOf(p), n),
      };
    }
    return {
      set: (p: string, n: string, v: Buffer) => d.fs.setxattr(p, n, v, 0),
      remove: (p: string, n: string) => d.fs.removexattr(p, n),
    };
  }

  xattrReader(d: Dev) {
    const a = this.inoAdapter(d);
    if (a !== undefined) {
      return (p: string) => {
        const ino = a.inoOf(p);
        return new Map(d.fs.listxattrIno(ino).map((n) => [n, d.fs.getxattrIno(ino, n)] as const));
      };
    }
    return (p: string) => new Map(d.fs.listxattr(p).map((n) => [n, d.fs.getxattr(p, n)] as const));
  }

  compare(d: Dev): void {
    compareTree(this.adapter(d), d.model.root, { xattrs: this.xattrReader(d) });
  }

  compareAll(): void {
    for (const d of this.devs) this.compare(d);
  }

  /**
   * Inodes whose data was written since the last commit. The pool writes a block this
   * device already owns in place (as dm-thin and any filesystem without data journaling
   * do), so after a crash their bytes may be old or new; sizes and metadata must be old.
   */
  dirty = new Set<number>();

  noteWrite(p: string): void {
    const n = this.cur.model.peek(p);
    if (n?.ino !== undefined) this.dirty.add(n.ino);
  }

  /** After a crash: take the bytes of files written since the commit from the device. */
  private adoptDirtyData(d: Dev): void {
    const walk = (p: string, n: MNode): void => {
      if (n.kind === 'file' && n.ino !== undefined && this.dirty.has(n.ino)) {
        const got = this.adapter(d).readAll(p);
        expect(got.length, `${p} size after crash`).toBe(n.data.length);
        n.data = got;
      } else if (n.kind === 'dir') for (const [name, c] of n.entries) walk(p === '/' ? `/${name}` : `${p}/${name}`, c);
    };
    walk('/', d.model.root);
  }

  snapshotState(): Committed {
    this.dirty.clear();
    return { devs: this.devs.map((d) => ({ id: d.id, name: d.name, readOnly: d.readOnly, tree: cloneTree(d.model.root) })), curId: this.cur.id };
  }

  apply(op: DevOp): void {
    switch (op.t) {
      case 'forget':
        this.inoAdapter(this.cur)?.forgetAll();
        return;
      case 'snapshot': {
        const name = `c${this.counter++}`;
        const id = this.pool.createSnapshot(this.cur.id, name, { kind: 'container' });
        const d: Dev = { id, name, readOnly: false, model: new Model(cloneTree(this.cur.model.root)), fs: Filesystem.open(this.pool, id) };
        this.devs.push(d);
        this.cur = d;
        return;
      }
      case 'image': {
        const name = `i${this.counter++}`;
        const id = this.pool.createSnapshot(this.cur.id, name, { readOnly: true });
        const d: Dev = { id, name, readOnly: true, model: new Model(cloneTree(this.cur.model.root)), fs: Filesystem.open(this.pool, id) };
        this.devs.push(d);
        expect(errnoOf(() => d.fs.mkdir('/zz', 0o755, ROOT_CALLER))).toBe('EROFS');
        expect(errnoOf(() => d.fs.chmod('/', 0o700))).toBe('EROFS');
        this.compare(d);
        return;
      }
      case 'switch': {
        const writable = this.devs.filter((d) => !d.readOnly);
        this.cur = writable[op.i % writable.length]!;
        return;
      }
      case 'delete': {
        const others = this.devs.filter((d) => d !== this.cur);
        if (others.length === 0) return;
        const d = others[op.i % others.length]!;
        d.fs.close();
        this.pool.commit();
        this.committed = this.snapshotState();
        this.pool.deleteDevice(d.id);
        this.devs = this.devs.filter((x) => x !== d);
        return;
      }
      case 'commit':
        this.pool.commit();
        this.committed = this.snapshotState();
        return;
      case 'reopen':
        for (const d of this.devs) d.fs.close();
        this.pool.close();
        this.pool = Pool.open(this.root);
        for (const d of this.devs) d.fs = Filesystem.open(this.pool, d.id);
        this.committed = this.snapshotState();
        this.compareAll();
        return;
      case 'crash': {
        this.pool.close({ commit: false }); // the Filesystems are abandoned, as in a kill -9
        this.pool = Pool.open(this.root);
        this.devs = this.committed.devs.map((c) => ({
          id: c.id,
          name: c.name,
          readOnly: c.readOnly,
          model: new Model(cloneTree(c.tree)),
          fs: Filesystem.open(this.pool, c.id),
        }));
        expect(this.pool.listDevices().filter((d) => d.state === 'active').map((d) => d.name).sort()).toEqual(this.devs.map((d) => d.name).sort());
        this.cur = this.devs.find((d) => d.id === this.committed.curId) ?? this.devs.find((d) => !d.readOnly)!;
        for (const d of this.devs) this.adoptDirtyData(d);
        this.committed = this.snapshotState(); // what survived is the durable state now
        this.compareAll();
        return;
      }
    }
  }

  finish(): void {
    this.compareAll();
    for (const d of this.devs) d.fs.close();
    const report = this.pool.check();
    expect(report.issues).toEqual([]);
    this.pool.close();
  }
}

function runWorlds(api: 'path' | 'inode', defaultRuns: number): void {
  const op = fc.oneof(...fsOps(true, true), ...devOps, ...(api === 'inode' ? [forgetOp, forgetOp] : [])) as fc.Arbitrary<FsOp | DevOp>;
  fc.assert(
    fc.property(fc.array(op, { minLength: 10, maxLength: 80, size: 'medium' }), (ops) => {
      const t = tmpDir('thinfs-fsmodel-');
      try {
        const w = new World(path.join(t.dir, 'pool'), api);
        for (const o of ops) {
          if (DEV_OPS.includes(o.t)) w.apply(o as DevOp);
          else {
            if (o.t === 'write' || o.t === 'truncate') w.noteWrite(o.p);
            applyFsOp(o as FsOp, w.adapter(w.cur), w.cur.model, w.xattrOps(w.cur));
            w.compare(w.cur);
          }
        }
        w.finish();
      } finally {
        t.cleanup();
      }
    }),
    { numRuns: Number(process.env.THINFS_MODEL_RUNS ?? defaultRuns) },
  );
}

describe('thinfs against the model', () => {
  it('random operations over several devices, with snapshots, images, deletes, reopen and crash', () => {
    runWorlds('path', 200);
  });

  it('the same through the inode-based API: lookups from the root, counted references, forget, readdirplus pages', () => {
    runWorlds('inode', 100);
  });
});

// ------------------------------------------------------------------ node:fs: proves the model

describe('the model against node:fs (a real directory)', () => {
  let oldMask: number;
  beforeAll(() => {
    oldMask = process.umask(0);
  });
  afterAll(() => {
    process.umask(oldMask);
  });

  it('random single-directory-tree operations agree with Linux', () => {
    const op = fc.oneof(...fsOps(false, false));
    fc.assert(
      fc.property(fc.array(op, { minLength: 10, maxLength: 80, size: 'medium' }), (ops) => {
        const t = tmpDir('thinfs-nodemodel-');
        try {
          nodefs.chmodSync(t.dir, 0o755);
          const fs = nodeAdapter(t.dir);
          const model = new Model();
          for (const o of ops) {
            applyFsOp(o, fs, model);
            compareTree(fs, model.root);
          }
        } finally {
          t.cleanup();
        }
      }),
      { numRuns: Number(process.env.THINFS_MODEL_RUNS ?? 150) },
    );
  });
});
