/**
 * Failure rules of the filesystem over the pool (issue 7, "Failed writes must not damage
 * data"): each changing Filesystem call is one atomic pool operation, so a call that
 * fails — an injected I/O or SQLite error at any step, or a full pool — leaves every
 * name, attribute and byte as before; a full pool with frees pending commits and retries.
 * Faults are injected through Pool.open(root, { faults }) (test/helpers/faults.ts).
 */
import { constants } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { isThinfsError } from '../../src/errors.js';
import { Filesystem } from '../../src/fs/index.js';
import { KiB, MiB, Pool, type DevId, type IoOp, type PoolCreateOptions } from '../../src/pool/index.js';
import { pattern } from '../helpers/data.js';
import { FaultPlan, type FaultCode } from '../helpers/faults.js';
import { scratchPool } from '../helpers/scratch-pool.js';

const ROOT = { uid: 0, gid: 0 };
const RW = constants.O_RDWR;
const s = scratchPool('thinfs-fs-faults-');
const fsOf = s.fsOf;

/** Pool blocks only (inline blocks: test/pool/inline.test.ts and the pool's fault model). */
function createPool(opts: PoolCreateOptions): void {
  Pool.create(s.root, { minFreePercent: 0, inlineMaxBytes: 0, ...opts }).close();
}
function openPool(faults?: FaultPlan): Pool {
  s.pool = Pool.open(s.root, faults === undefined ? {} : { faults });
  return s.pool;
}
function closePool(): void {
  for (const f of s.open) f.close();
  s.open = [];
  s.pool!.close();
  s.pool = undefined;
}
function closeFs(f: Filesystem): void {
  f.close();
  s.open = s.open.filter((x) => x !== f);
}
function writeFile(f: Filesystem, p: string, data: Buffer): void {
  const fh = f.create(p, 0o644, ROOT, RW | constants.O_CREAT);
  f.write(fh, 0, data);
  f.release(fh);
}
function readFile(f: Filesystem, p: string): Buffer {
  const fh = f.open(p, constants.O_RDONLY);
  try {
    return f.read(fh, 0, f.fgetattr(fh).size);
  } finally {
    f.release(fh);
  }
}
function errnoOf(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (!isThinfsError(err)) throw err;
    return err.code;
  }
}
/** Fill the pool with 4 KiB writes to `p` until ENOSPC; returns the bytes written. */
function fillPool(f: Filesystem, p: string): number {
  const fh = f.create(p, 0o644, ROOT, RW | constants.O_CREAT);
  let off = 0;
  for (;;) {
    const code = errnoOf(() => f.write(fh, off, pattern(4 * KiB, 99)));
    if (code === 'ENOSPC') break;
    expect(code).toBeUndefined();
    off += 4 * KiB;
  }
  f.release(fh);
  return off;
}

/** Every name, attribute (times and st_blocks included), symlink target and file byte under `dir`. */
function namespace(f: Filesystem, dir = '/'): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const walk = (d: string) => {
    for (const e of f.readdir(d)) {
      if (e.name === '.' || e.name === '..') continue;
      const p = d === '/' ? `/${e.name}` : `${d}/${e.name}`;
      const a = f.getattr(p);
      const entry: Record<string, unknown> = { ...a, direntIno: e.ino, direntType: e.type };
      if ((a.mode & constants.S_IFMT) === constants.S_IFREG) entry.data = readFile(f, p).toString('hex');
      if ((a.mode & constants.S_IFMT) === constants.S_IFLNK) entry.target = f.readlink(p);
      out[p] = entry;
      if ((a.mode & constants.S_IFMT) === constants.S_IFDIR) walk(p);
    }
  };
  out['/'] = f.getattr(dir);
  walk(dir);
  return out;
}

/**
 * Fail `op` at its `from`th, next, ... call of `kind` until it gets through without
 * reaching that call; after each failure the errno is `code`'s and `same()` holds.
 * Returns how many failure points there were.
 */
function failEveryStep(plan: FaultPlan, kind: IoOp, code: FaultCode, op: () => unknown, same: (what: string) => void, from = 1): number {
  for (let nth = from; ; nth++) {
    plan.arm(kind, nth, code);
    let err: unknown;
    try {
      op();
    } catch (e) {
      err = e;
    }
    const fired = plan.disarm();
    if (fired === undefined) {
      expect(err, `no ${kind} fault left to fire, yet the operation failed`).toBeUndefined();
      return nth - from;
    }
    const what = `${kind} #${nth} failed`;
    expect(isThinfsError(err), `${what}: threw ${String(err)}`).toBe(true);
    expect((err as { code: string }).code, what).toBe(code);
    expect(s.pool!.mode(), what).not.toBe('fail');
    same(what);
    expect(s.pool!.check().issues, `${what}: check`).toEqual([]);
  }
}

/** The number (1-based) of the first SQLite statement `op` runs after its first call of `kind`. */
function statementsAfterFirst(plan: FaultPlan, kind: IoOp, op: () => unknown): number {
  plan.calls = [];
  plan.recording = true;
  try {
    op();
  } finally {
    plan.recording = false;
  }
  const at = plan.calls.indexOf(kind);
  expect(at, `${kind} calls of the dry run`).toBeGreaterThanOrEqual(0);
  return plan.calls.slice(0, at).filter((c) => c === 'sql').length + 1;
}

/** In the created pool: an image `base` whose /f holds `image`, and a container `c` of it (returned); the pool is closed again. */
function containerOfImage(image: Buffer): DevId {
  openPool();
  const base = s.pool!.createThin('base');
  const b = fsOf(base);
  writeFile(b, '/f', image);
  closeFs(b);
  s.pool!.setReadOnly(base);
  const c = s.pool!.createSnapshot(base, 'c');
  closePool();
  return c;
}

describe('a failed write changes nothing', () => {
  it('a failed 4 KiB pwrite into a file an image layer maps: after commit and reopen the whole 64 KiB block reads its image bytes', () => {
    createPool({ dataSizeBytes: 64 * MiB }); // 64 KiB blocks, as in the report
    const image = pattern(128 * KiB, 1);
    const c = containerOfImage(image);

    for (const code of ['ENOSPC', 'EIO'] as const) {
      const plan = new FaultPlan();
      openPool(plan);
      const f = fsOf(c);
      const fh = f.open('/f', RW);
      plan.arm('pwrite', 1, code);
      expect(errnoOf(() => f.write(fh, 4 * KiB, Buffer.alloc(4 * KiB, 0xaa)))).toBe(code);
      expect(plan.disarm()).toBe('pwrite');
      expect(f.read(fh, 0, 128 * KiB).equals(image), 'right after the error').toBe(true);
      f.release(fh);
      closePool(); // commits whatever the failed write left in the transaction
      openPool();
      const v = fsOf(c, { readOnly: true });
      expect(readFile(v, '/f').equals(image), `after commit and reopen (${code})`).toBe(true);
      expect(s.pool!.getDevice(c)!.exclusiveBlocks, 'no copy-on-write block survives the failed write').toBe(0);
      expect(s.pool!.check().issues).toEqual([]);
      closePool();
    }

    // The pool goes on: the same write now copies the block, the rest of it from the image.
    openPool();
    const f = fsOf(c);
    const fh = f.open('/f', RW);
    f.write(fh, 4 * KiB, Buffer.alloc(4 * KiB, 0xaa));
    f.release(fh);
    closePool();
    openPool();
    const want = Buffer.from(image);
    want.fill(0xaa, 4 * KiB, 8 * KiB);
    expect(readFile(fsOf(c, { readOnly: true }), '/f').equals(want)).toBe(true);
    expect(s.pool!.getDevice(c)!.exclusiveBlocks).toBe(1);
    expect(s.pool!.check().issues).toEqual([]);
  });

  it('a write into an image-backed file fails at every pwrite, pread and SQLite statement in turn: the file reads as before each time', () => {
    createPool({ blockSizeBytes: 4 * KiB, dataSizeBytes: 16 * MiB });
    const image = pattern(64 * KiB, 2);
    const c = containerOfImage(image);
    const plan = new FaultPlan();
    openPool(plan);
    const f = fsOf(c);
    const fh = f.open('/f', RW);
    const before = namespace(f);
    const used = s.pool!.status().dataUsedBytes;
    // 10 KiB from 3 KiB, past the end too: copy-on-write of partial blocks, a grown size.
    const write = () => f.write(fh, 3 * KiB, Buffer.alloc(10 * KiB, 0xbb));
    const same = (what: string) => {
      expect(namespace(f), what).toEqual(before);
      expect(s.pool!.status().dataUsedBytes, what).toBe(used);
    };
    for (const [kind, code] of [
      ['pwrite', 'EIO'],
      ['pread', 'EIO'],
      ['sql', 'ENOSPC'],
      ['sql', 'EIO'],
    ] as const) {
      expect(failEveryStep(plan, kind, code, write, same), `${kind} calls failed`).toBeGreaterThan(0);
      // The last round got through: roll it back so that the next kind starts from the same state.
      s.pool!.abort();
      same(`after the abort of the write that got through (${kind})`);
    }
    f.release(fh);
  });

  it('a failed shrinking ftruncate of a file written in this transaction leaves its bytes (no zeroed tail)', () => {
    createPool({ blockSizeBytes: 4 * KiB, dataSizeBytes: 16 * MiB });
    const plan = new FaultPlan();
    openPool(plan);
    const f = fsOf(s.pool!.createThin('base'));
    const data = pattern(8 * KiB, 3);
    // A dry run on a file of the same shape: which statements come after the tail is zeroed.
    const g = f.create('/g', 0o644, ROOT, RW | constants.O_CREAT);
    f.write(g, 0, data);
    const after = statementsAfterFirst(plan, 'pwrite', () => f.ftruncate(g, 5000));
    f.release(g);
    const fh = f.create('/f', 0o644, ROOT, RW | constants.O_CREAT);
    f.write(fh, 0, data); // not committed: the blocks are the transaction's own
    const n = failEveryStep(plan, 'sql', 'EIO', () => f.ftruncate(fh, 5000), (what) => {
      expect(f.fgetattr(fh).size, what).toBe(8 * KiB);
      const got = f.read(fh, 0, 8 * KiB);
      const i = got.findIndex((x, j) => x !== data[j]);
      expect(i, `${what}: byte ${i} reads ${got[i]}, was ${data[i]}`).toBe(-1);
    }, after);
    expect(n).toBeGreaterThan(0);
    expect(f.fgetattr(fh).size).toBe(5000);
    expect(f.read(fh, 0, 5000).equals(data.subarray(0, 5000))).toBe(true);
    f.release(fh);
  });
});

describe('a full pool', () => {
  it('a shrinking truncate whose partial last block needs a fresh block fails with ENOSPC and leaves bytes and size as they were', () => {
    createPool({ blockSizeBytes: 4 * KiB, dataSizeBytes: 64 * 4 * KiB });
    openPool();
    const id = s.pool!.createThin('base');
    const f = fsOf(id);
    const big = pattern(10 * 4 * KiB + 1234, 4); // 11 blocks, the last one partial
    writeFile(f, '/big', big);
    f.commit(); // /big's blocks hold committed data: a shrink must move its last block, not zero it in place
    fillPool(f, '/fill');
    f.commit();
    expect(s.pool!.status().dataAvailableBytes).toBe(0);
    const before = namespace(f);
    const used = s.pool!.status().dataUsedBytes;

    const keep = 5 * 4 * KiB + 100; // inside block 5: its head must be kept
    expect(errnoOf(() => f.truncate('/big', keep))).toBe('ENOSPC');
    expect(namespace(f), 'after truncate').toEqual(before);
    const fh = f.open('/big', RW);
    expect(errnoOf(() => f.ftruncate(fh, keep))).toBe('ENOSPC');
    expect(f.fgetattr(fh).size).toBe(big.length);
    expect(f.read(fh, 0, big.length).equals(big)).toBe(true);
    f.release(fh);
    expect(namespace(f), 'after ftruncate').toEqual(before);
    expect(s.pool!.status().dataUsedBytes).toBe(used);
    expect(s.pool!.check().issues).toEqual([]);

    closePool();
    openPool();
    const v = fsOf(id, { readOnly: true });
    expect(readFile(v, '/big').equals(big), 'after commit and reopen').toBe(true);
    expect(s.pool!.check().issues).toEqual([]);
  });

  it('right after unlinking a big file, a new file needing its blocks is written without an explicit commit (commit and retry)', () => {
    createPool({ blockSizeBytes: 4 * KiB, dataSizeBytes: 64 * 4 * KiB });
    openPool();
    const id = s.pool!.createThin('base');
    const f = fsOf(id);
    writeFile(f, '/big', pattern(40 * 4 * KiB, 5));
    fillPool(f, '/fill');
    f.commit();
    const fill = readFile(f, '/fill');

    f.unlink('/big'); // its 40 blocks are free once this transaction commits
    const data = pattern(40 * 4 * KiB, 6);
    const fh = f.create('/new', 0o644, ROOT, RW | constants.O_CREAT);
    for (let off = 0; off < data.length; off += 16 * KiB) {
      expect(errnoOf(() => f.write(fh, off, data.subarray(off, off + 16 * KiB))), `write at ${off}`).toBeUndefined();
    }
    f.release(fh);
    expect(readFile(f, '/new').equals(data)).toBe(true);
    expect(f.readdir('/').map((e) => e.name).sort()).toEqual(['.', '..', 'fill', 'new']);
    expect(s.pool!.check().issues).toEqual([]);

    closePool();
    openPool();
    const v = fsOf(id, { readOnly: true });
    expect(readFile(v, '/new').equals(data)).toBe(true);
    expect(readFile(v, '/fill').equals(fill)).toBe(true);
    expect(v.readdir('/').map((e) => e.name).sort()).toEqual(['.', '..', 'fill', 'new']);
    expect(s.pool!.check().issues).toEqual([]);
  });
});

describe('a failing SQL statement in the middle of a namespace operation changes nothing', () => {
  /** A pool with /a/x (a file), /a/d (a directory with a file), /b/y (a file) and /b/e (an empty directory), committed. */
  function setup(): { f: Filesystem; plan: FaultPlan; id: DevId } {
    createPool({ blockSizeBytes: 4 * KiB, dataSizeBytes: 16 * MiB });
    openPool();
    const id = s.pool!.createThin('base');
    let f = fsOf(id);
    f.mkdir('/a', 0o755, ROOT);
    f.mkdir('/b', 0o755, ROOT);
    f.mkdir('/a/d', 0o755, ROOT);
    f.mkdir('/b/e', 0o755, ROOT);
    writeFile(f, '/a/x', pattern(5000, 7));
    writeFile(f, '/a/d/z', pattern(100, 8));
    writeFile(f, '/b/y', pattern(9000, 9));
    closePool();
    const plan = new FaultPlan();
    openPool(plan);
    f = fsOf(id);
    return { f, plan, id };
  }

  const cases: { name: string; op: (f: Filesystem) => unknown }[] = [
    { name: 'rename of a file across directories', op: (f) => f.rename('/a/x', '/b/x2') },
    { name: 'rename of a file across directories over an existing file', op: (f) => f.rename('/a/x', '/b/y') },
    { name: 'rename of a directory across directories over an empty one', op: (f) => f.rename('/a/d', '/b/e') },
    { name: 'create', op: (f) => f.release(f.create('/b/new', 0o600, ROOT, RW | constants.O_CREAT | constants.O_EXCL)) },
    { name: 'mkdir', op: (f) => f.mkdir('/b/sub', 0o700, ROOT) },
    { name: 'unlink', op: (f) => f.unlink('/b/y') },
    { name: 'link', op: (f) => f.link('/a/x', '/b/x-link') },
    { name: 'symlink', op: (f) => f.symlink('../a/x', '/b/sym', ROOT) },
    { name: 'rmdir', op: (f) => f.rmdir('/b/e') },
  ];
  for (const c of cases) {
    it(`${c.name}: at every statement, both directories read as before; the last try goes through and survives a reopen`, () => {
      const { f, plan, id } = setup();
      const before = namespace(f);
      const dirs = () => ({ a: f.readdir('/a').map((e) => e.name).sort(), b: f.readdir('/b').map((e) => e.name).sort() });
      const dirsBefore = dirs();
      const n = failEveryStep(plan, 'sql', 'ENOSPC', () => c.op(f), (what) => {
        expect(dirs(), what).toEqual(dirsBefore);
        expect(namespace(f), what).toEqual(before);
      });
      expect(n, 'statements that were failed').toBeGreaterThan(2);
      const after = namespace(f);
      expect(after).not.toEqual(before);
      closePool();
      openPool();
      expect(namespace(fsOf(id, { readOnly: true }))).toEqual(after);
      expect(s.pool!.check().issues).toEqual([]);
    });
  }
});
